"""Gradients inside `model.fit`, with no change to the user's model or train_step.

The same idea as the PyTorch optimizer hooks: the innermost Keras optimizer
(a LossScaleOptimizer's inner one) gets a wrapper around the method that
receives the gradients it is about to apply, after unscaling, gradient
accumulation and clipping:

- TensorFlow: `_distributed_tf_update_step(distribution, grads_and_vars, lr)`,
  which runs in cross-replica context with the all-reduced gradients (one
  value per variable under MirroredStrategy too). `fit` runs it inside a
  tf.function, so the wrapper adds graph ops, and only to a train function
  of its own: for a batch that a callback will record, `model.train_function`
  (which `fit` looks up at every batch) is a second train function, traced
  with the wrapper on, that assigns each gradient to a slot variable of its
  own (one extra copy of the trainable weights in memory; a copy of the
  gradients only at those batches; with one replica and one step per call
  made like Keras' own but returning its logs without the
  tf.experimental.Optional around them); every other batch runs the train
  function `fit` made, which the wrapper leaves as it is (no op, no cost).
  The callback reads the slots on the host after the batch. Eagerly
  (run_eagerly=True), the gradients are kept as they are.
- torch: `_backend_update_step(grads, variables, lr)` runs eagerly: the
  gradients of a wanted batch are cloned (the update may reuse their memory).

Other backends (JAX: a stateless, jitted apply) record no gradients inside
`fit`; `capture_for()` says why.

The wrapper stays on the optimizer after `fit` (inert: it adds ops only while
the capture traces its own train function, and `model.train_function` is
`fit`'s own again when no callback wants a batch) and a later `fit` with a
WeightCallback reuses both train functions: neither is traced again. A train
function traced before (a warm-up `fit` without the callback) is kept as the
plain one.

One capture per optimizer, shared by every WeightCallback of the `fit`: each
callback holds a `GradientTap` of its own (its variables, whether it wants the
batch about to run, whether it has taken that batch's gradients). `want` is on
when any attached tap wants the batch, and one tap taking the gradients leaves
them for the others (they stay until the next wanted batch), so two callbacks
never switch each other's gradients off or consume them; a tap released (its
callback closed, or its fit done) no longer counts.
"""

from __future__ import annotations

import weakref
from typing import Any

import keras


def innermost(optimizer):
    """The optimizer that applies the update (a LossScaleOptimizer's inner optimizer)."""
    seen = 0
    while getattr(optimizer, "inner_optimizer", None) is not None and seen < 8:
        optimizer = optimizer.inner_optimizer
        seen += 1
    return optimizer


_ATTR = "_weighttui_grad_capture"
_OUT = "_weighttui_reads"  # the storing train function's extra output, taken out of the logs before fit sees them


def capture_for(model, variables):
    """(GradientTap, None): a tap of its own for one callback on the capture that wraps model's
    optimizer (made on first use, grown to cover these variables); (None, why) where gradients
    cannot be had."""
    opt = innermost(getattr(model, "optimizer", None))
    if opt is None:
        return None, "the model has no optimizer"
    existing = vars(opt).get(_ATTR)
    if existing is not None and existing.model is model:
        return existing.tap(variables), None
    capture = GradientCapture(model, variables)
    why = capture.install()
    if why is not None:
        return None, why
    object.__setattr__(opt, _ATTR, capture)
    return capture.tap(variables), None


class GradientCapture:
    """Gradients the optimizer applies, for the batches that some attached tap wants."""

    def __init__(self, model, variables):
        self.model = model
        self.variables = list(variables)  # keras Variables whose gradients are wanted (every tap's)
        self._ids = {id(v) for v in self.variables}
        self.backend = keras.backend.backend()
        self.optimizer = None
        self._method = None  # the wrapped attribute's name
        self._want = False
        # TensorFlow, compiled: the train function `fit` made (`plain`), one of ours that also stores
        # the gradients (`storing`), and whether the wrapper is tracing the latter (read at trace time)
        self._plain = None
        self._storing = None
        self._tracing_store = False
        self._slots: dict[int, tuple] = {}  # id(tf variable) -> (keras variable, slot)
        self._eager = None  # [(gradient, keras variable)] of the last wanted batch
        # TF: counts the wanted batches whose gradients reached the slots. A LossScaleOptimizer skips
        # the update of a batch whose scaled gradients overflowed (gradient accumulation applies only
        # every n-th batch): the slots then still hold an earlier batch's, which must not be logged
        self.fills = None
        self._fills_seen = 0
        self._judged: tuple[int, bool] | None = None  # (batch generation, applied) of the last judgement
        self._gen = 0  # moves at every batch_begin of any tap: which batch a judgement is about
        # TF, compiled, one replica: the storing train function also returns reads of the gradient slots,
        # `fills`, the weights and the learning rate variable made after the update, with the batch generation
        # it ran in (outputs()): the snapshot does not read them eagerly (14 eager reads of a 3-layer MLP's
        # snapshot were ~0.1 ms of the training thread)
        self._outputs: list[Any] | None = None
        self._out_ids: list[int] = []  # id() of each item the storing train function reads, in its order
        self._n_slot_reads = 0  # how many of them are slots (and fills), first
        self._taps: list = []  # weak references: a callback dropped without release stops counting

    # ------------------------------------------------------------ setup

    def install(self) -> str | None:
        """Wrap the optimizer; None on success, else why gradients cannot be recorded."""
        opt = innermost(getattr(self.model, "optimizer", None))
        if opt is None:
            return "the model has no optimizer"
        if self.backend == "tensorflow" and hasattr(opt, "_distributed_tf_update_step"):
            self._make_tf_slots()
            name, wrapper = "_distributed_tf_update_step", self._tf_wrapper(opt._distributed_tf_update_step)
        elif self.backend == "torch" and hasattr(opt, "_backend_update_step"):
            name, wrapper = "_backend_update_step", self._torch_wrapper(opt._backend_update_step)
        else:
            return (f"gradients are not recorded inside fit on the {self.backend} backend "
                    "(record(grads=...) from a custom loop records them)")
        if name in vars(opt):  # an earlier capture's wrapper (another model's): ours goes around the method
            object.__delattr__(opt, name)
            original = getattr(opt, name)
            wrapper = self._tf_wrapper(original) if self.backend == "tensorflow" else self._torch_wrapper(original)
        object.__setattr__(opt, name, wrapper)  # an instance attribute shadows the method
        self.optimizer, self._method = opt, name
        return None

    def covers(self, variables) -> bool:
        return all(id(v) in self._ids for v in variables)

    def tap(self, variables) -> GradientTap:
        """A tap for one callback, the capture grown first where it lacks some of these variables."""
        variables = list(variables)
        new = [v for v in variables if id(v) not in self._ids]
        if new:
            self.variables += new
            self._ids.update(id(v) for v in new)
            if self.backend == "tensorflow":
                self._make_tf_slots()
                self._storing = None  # a traced one fills the slots it knew when traced: made again
        for other in self._live_taps():
            # taps are made as a fit begins, when no batch is in flight: a tap still wanting one is
            # left from a fit that raised before on_train_end, and must not keep `want` on
            other.wanted = other._fresh = False
        tap = GradientTap(self, variables)
        self._taps = [r for r in self._taps if r() is not None] + [weakref.ref(tap)]
        return tap

    def _live_taps(self) -> list:
        return [t for t in (r() for r in self._taps) if t is not None and t.attached]

    def _make_tf_slots(self) -> None:
        import tensorflow as tf

        strategy = getattr(self.model, "distribute_strategy", None) or tf.distribute.get_strategy()
        with strategy.scope():
            if self.fills is None:
                self.fills = tf.Variable(0, dtype=tf.int64, trainable=False, name="weighttui_grad_fills",
                                         aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
            for v in self.variables:
                tv = v.value
                key = id(tv)
                if key not in self._slots:
                    slot = tf.Variable(tf.zeros(tuple(v.shape), dtype=tv.dtype), trainable=False,
                                       name="weighttui_grad",
                                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
                    self._slots[key] = (v, slot)

    # ------------------------------------------------------------ wrappers

    def _tf_wrapper(self, original):
        import tensorflow as tf

        def wrapped(distribution, grads_and_vars, learning_rate):
            grads_and_vars = list(grads_and_vars)
            if tf.executing_eagerly():  # run_eagerly=True: tensors are immutable, keep them
                if self._want:
                    self._eager = [(g, self._slots[id(v)][0]) for g, v in grads_and_vars
                                   if g is not None and id(v) in self._slots]
            elif self._tracing_store:  # tracing the capture's own train function: store the gradients
                for g, v in grads_and_vars:
                    if g is None or id(v) not in self._slots:
                        continue
                    if isinstance(g, tf.IndexedSlices):  # embeddings: dense (per-replica values stay)
                        g = tf.convert_to_tensor(g)
                    distribution.extended.update(self._slots[id(v)][1], lambda s, x: s.assign(tf.cast(x, s.dtype)),
                                                 args=(g,), group=False)
                distribution.extended.update(self.fills, lambda s: s.assign_add(1), group=False)
            return original(distribution, grads_and_vars, learning_rate)

        return wrapped

    def _torch_wrapper(self, original):
        def wrapped(grads, trainable_variables, learning_rate):
            if self._want:
                wanted = self._ids  # read at each call: a later tap may add variables
                self._eager = [(g.detach().clone(), v) for g, v in zip(grads, trainable_variables, strict=False)
                               if g is not None and id(v) in wanted]
            return original(grads, trainable_variables, learning_rate)

        return wrapped

    # ------------------------------------------------------------ per batch

    def _update_want(self) -> None:
        """`want` on when any attached tap wants the batch about to run."""
        flag = any(t.wanted for t in self._live_taps())
        if not flag:
            self._eager = None  # nothing wants the last batch's any more (every tap has moved on)
        self._want = flag
        if self._slots:
            self._route(flag)

    def _route(self, flag: bool) -> None:
        """TensorFlow, compiled: the train function the next batch runs (`fit` looks up
        `model.train_function` at every batch): ours, which stores the gradients, for a batch some
        tap wants; `fit`'s own, untouched, for every other (a tf.cond on a flag variable in one
        function cost 0.03-0.045 ms a batch, recorded or not, and each flip of the flag 0.065 ms)."""
        model = self.model
        current = getattr(model, "train_function", None)
        if current is None or getattr(model, "run_eagerly", False):
            return  # no fit under way, or an eager one (the wrapper keeps the tensors)
        if current is not self._plain and current is not self._storing:
            self._plain, self._storing = current, None  # fit made a new one (a first fit, compile() again)
        if flag and self._storing is None:
            self._storing = self._storing_function()
        target = self._storing if flag else self._plain
        if current is not target:
            # as Keras' own assignment leaves it (an attribute of the model), without Keras' and TF's attribute
            # tracking, which a function does not need: ~35 us a switch inside fit, two switches a recorded batch
            object.__setattr__(model, "train_function", target)

    def _storing_function(self):
        """A train function of its own, traced (at its first call) with the wrapper storing the gradients
        and, where outputs_ok(), returning reads of the variables after the update (outputs())."""
        model = self.model
        plain = model.train_function
        outputs = self._outputs_ok()
        own_step = "train_step" in vars(model)
        if outputs:
            original = model.train_step

            def train_step(data):  # _make_function takes model.train_step as it is when called
                logs = original(data)
                if self._tracing_store and isinstance(logs, dict) and _OUT not in logs:
                    logs = {**logs, _OUT: self._output_reads()}
                return logs

            object.__setattr__(model, "train_step", train_step)
        try:
            model.make_train_function(force=True)
            traced = model.train_function
        finally:
            model.train_function = plain
            if outputs:
                if own_step:
                    object.__setattr__(model, "train_step", original)
                else:
                    object.__delattr__(model, "train_step")
        # one replica, one step per call: a function of its own for tf.data iterators (_direct_function)
        direct = self._direct_function(train_step) if outputs else None

        def storing(iterator):
            self._tracing_store = True  # read by the wrapper only while tracing
            try:
                if direct is not None and isinstance(iterator, direct[1]):
                    logs = direct[0](iterator)
                else:  # another kind of iterator: Keras' own function (traced at its first call)
                    logs = traced(iterator)
            finally:
                self._tracing_store = False
            if isinstance(logs, dict) and _OUT in logs:
                logs = dict(logs)  # fit and the other callbacks see the logs they always did
                self._outputs = [self._gen, logs.pop(_OUT), None]  # (generation, reads, outputs() made of them)
            return logs

        return storing

    def _direct_function(self, step):
        """(function, iterator types) or None: a train function for a tf.data iterator, one replica and one step
        per call (outputs_ok()), that returns the step's logs as they are. Keras' own wraps them in a
        tf.experimental.Optional whose get_value() checks every component's spec in Python: ~13 us of the training
        thread for each of the ~15 reads this function returns (0.2 ms a recorded batch for the 83k MLP).
        The same steps as Keras' (`_make_function` with steps_per_execution=1): one_step_on_data under
        tf.function (jit_compile as compiled) with the model's optional-input conversion, on iterator.get_next()."""
        import tensorflow as tf

        model = self.model
        convert = getattr(model, "_autoconvert_optionals", None)
        if convert is None:  # another Keras: its own function
            return None
        strategy = model.distribute_strategy

        @tf.autograph.experimental.do_not_convert
        def one_step_on_data(data):
            return strategy.run(step, args=(data,))  # the default strategy (outputs_ok): nothing to reduce

        one_step = convert(tf.function(one_step_on_data, reduce_retracing=True, jit_compile=bool(model.jit_compile)))

        @tf.autograph.experimental.do_not_convert
        def one_step_on_iterator(iterator):
            return one_step(iterator.get_next())  # out of data: OutOfRangeError, as from Keras' own

        return tf.function(one_step_on_iterator, reduce_retracing=True), (tf.data.Iterator,)

    def _outputs_ok(self) -> bool:
        """Whether the storing train function can return its reads: one replica (under a strategy the
        reads are per replica: the callback reads the variables eagerly) and one step per call."""
        import tensorflow as tf

        model = self.model
        strategy = getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()
        return (type(strategy).__name__ == "_DefaultDistributionStrategy" and not tf.distribute.has_strategy()
                and getattr(model, "steps_per_execution", 1) == 1 and not getattr(model, "run_eagerly", False))

    def _output_reads(self) -> tuple:
        """Reads of every gradient slot and `fills`, then of every weight and the learning rate variable,
        in the graph being traced, after the update (automatic control dependencies order them after it)."""
        slots = [slot for _v, slot in self._slots.values()] + ([self.fills] if self.fills is not None else [])
        weights = [v.value for v, _slot in self._slots.values()]  # the tf.Variable of each Keras variable
        keys = [id(v) for v, _slot in self._slots.values()]
        opt = getattr(self.model, "optimizer", None)
        try:
            lr = opt.learning_rate if opt is not None else None
        except Exception:  # an optimizer without a readable learning rate
            lr = None
        if isinstance(lr, keras.Variable) and hasattr(lr.value, "read_value"):
            weights.append(lr.value)
            keys.append(id(lr))
        self._out_ids = [id(x) for x in slots] + keys
        self._n_slot_reads = len(slots)
        return tuple(x.read_value() if hasattr(x, "read_value") else x  # (x: a value, not a tf.Variable)
                     for x in slots + weights)  # a tuple: tf.experimental.Optional takes no list

    def outputs(self, weights: bool = False) -> dict | None:
        """{id(item): EagerTensor} read by the storing train function after the batch just done: the
        gradient slots and `fills` (id of each), and with `weights` also the weights and the learning rate
        variable (id of the Keras variable), or None (not this batch, or not returned). The weights and the
        learning rate only where nothing can have changed them since (WeightCallback decides)."""
        out = self._outputs
        if out is None or out[0] != self._gen:
            return None
        if out[2] is None:  # made once per batch, when first asked
            every = list(zip(self._out_ids, out[1], strict=True))
            out[2] = (dict(every[:self._n_slot_reads]), dict(every))
        return out[2][1] if weights else out[2][0]

    def slots(self, ids=None) -> list:
        """[(slot variable, keras variable)] (of the variables with these ids): where a compiled
        train step leaves the gradients (TensorFlow; empty elsewhere)."""
        return [(slot, v) for v, slot in self._slots.values() if ids is None or id(v) in ids]

    def pairs(self, ids):
        """[(gradient, keras variable)] of the last wanted batch, for the variables with these ids."""
        if self._eager is not None:
            return [(g, v) for g, v in self._eager if id(v) in ids]
        if self._slots and not getattr(self.model, "run_eagerly", False):
            # the slot variables themselves: the callback reads them with the weights and `fills`, and
            # asks applied() (eagerly the slots are never filled: an update not applied left no gradients)
            return self.slots(ids)
        return None

    def applied(self, fills: int) -> bool:
        """Whether the slots hold the last wanted batch's gradients, given `fills` read after it.
        Every tap that takes the same batch gets the same answer."""
        if self._judged is None or self._judged[0] != self._gen:
            self._judged = (self._gen, fills != self._fills_seen)
            self._fills_seen = fills
        return self._judged[1]


class GradientTap:
    """One callback's view of the shared GradientCapture: the batches it wants, the gradients it takes."""

    def __init__(self, capture: GradientCapture, variables):
        self.capture = capture
        self._ids = {id(v) for v in variables}
        self.wanted = False
        self.attached = True
        self._fresh = False
        # a batch begun and not done: fit asks one batch more than data of unknown length holds (the call
        # that runs out of it never ends); then the batch before is the last, and its gradients stay
        self._running = False
        self._kept: tuple | None = None  # (whether that batch's gradients were fresh, its outputs, its eager ones)

    def batch_begin(self, wanted: bool, may_be_past_the_end: bool = False) -> None:
        """Before a batch: whether this callback wants its gradients (others may want them too).
        may_be_past_the_end: the data's length is unknown, so this batch may not exist (batch_never_ran)."""
        cap = self.capture
        self._kept = (self._fresh, cap._outputs, cap._eager) if may_be_past_the_end else None
        self._running = True
        self._fresh = False
        wanted = bool(wanted) and self.attached
        cap._gen += 1
        if not (wanted or self.wanted or cap._want) and cap._outputs is None and cap._eager is None:
            return  # not wanted now nor before, by any tap: fit's own train function runs on, nothing to drop
        self.wanted = wanted
        cap._outputs = None  # the reads alias the variables: held, the next update would copy them
        if self.attached:
            # every tap has taken the last batch's gradients by now (on_train_batch_end and
            # on_epoch_end of all callbacks run before the next batch begins)
            self.capture._eager = None
            self.capture._update_want()

    def batch_done(self) -> None:
        """After a batch: its gradients are there if this tap wanted it."""
        self._running = False
        self._kept = None
        self._fresh = self.wanted and self.capture.optimizer is not None

    def batch_never_ran(self) -> None:
        """At an epoch's end: a batch begun and never done was the call past the end of the data (unknown
        length): the batch before it is the last, its gradients (still in the slots, or the reads the storing
        function returned) are this tap's again."""
        if not self._running:
            return
        self._running = False
        kept, self._kept = self._kept, None
        if kept is None:
            return
        fresh, outputs, eager = kept
        cap = self.capture
        self._fresh = fresh
        if outputs is not None and cap._outputs is None:
            outputs[0] = cap._gen  # (the generation the failed call would have had: outputs() takes it)
            cap._outputs = outputs
        if eager is not None and cap._eager is None:
            cap._eager = eager

    def slots(self) -> list:
        """[(slot variable, keras variable)] of this tap's variables (TensorFlow; empty elsewhere).
        The callback reads them with the weights."""
        return self.capture.slots(self._ids)

    def take(self):
        """[(gradient, keras variable)] of the last batch if this tap wanted it, else None.
        The gradients stay for the other taps."""
        if not self._fresh:
            return None
        self._fresh = False
        return self.capture.pairs(self._ids)

    def release(self) -> None:
        """The callback is done (its fit ended, or it was closed): it no longer counts."""
        self.wanted = self._fresh = False
        if self.attached:
            self.attached = False
            self.capture._update_want()
