"""Gradients inside `model.fit`, with no change to the user's model or train_step.

The same idea as the PyTorch optimizer hooks: the innermost Keras optimizer
(a LossScaleOptimizer's inner one) gets a wrapper around the method that
receives the gradients it is about to apply, after unscaling, gradient
accumulation and clipping:

- TensorFlow: `_distributed_tf_update_step(distribution, grads_and_vars, lr)`,
  which runs in cross-replica context with the all-reduced gradients (one
  value per variable under MirroredStrategy too). `fit` runs it inside a
  tf.function, so the wrapper adds graph ops: when the boolean variable `want`
  is set (the callback sets it before a batch it will record), each gradient
  is assigned to a slot variable of its own (one extra copy of the trainable
  weights in memory; a copy of the gradients only at those batches). The
  callback reads the slots on the host after the batch. Eagerly
  (run_eagerly=True), the gradients are kept as they are.
- torch: `_backend_update_step(grads, variables, lr)` runs eagerly: the
  gradients of a wanted batch are cloned (the update may reuse their memory).

Other backends (JAX: a stateless, jitted apply) record no gradients inside
`fit`; `capture_for()` says why.

The wrapper stays on the optimizer after `fit` (inert: nothing is kept while
`want` is off) and a later `fit` with a WeightCallback reuses it: a train
function traced with it need not be traced again. Installing it where `fit`
traced a train function before (a warm-up `fit` without the callback) makes
Keras trace a new one, once.
"""

from __future__ import annotations

import keras


def innermost(optimizer):
    """The optimizer that applies the update (a LossScaleOptimizer's inner optimizer)."""
    seen = 0
    while getattr(optimizer, "inner_optimizer", None) is not None and seen < 8:
        optimizer = optimizer.inner_optimizer
        seen += 1
    return optimizer


_ATTR = "_weighttui_grad_capture"


def capture_for(model, variables):
    """(GradientCapture, None) wrapping model's optimizer for these variables, reused when
    an earlier fit installed one that covers them; (None, why) where gradients cannot be had."""
    opt = innermost(getattr(model, "optimizer", None))
    if opt is None:
        return None, "the model has no optimizer"
    existing = vars(opt).get(_ATTR)
    if existing is not None and existing.model is model and existing.covers(variables):
        return existing, None
    capture = GradientCapture(model, variables)
    why = capture.install()
    if why is not None:
        return None, why
    object.__setattr__(opt, _ATTR, capture)
    return capture, None


class GradientCapture:
    """Gradients the optimizer applies, for the batches the callback wants them."""

    def __init__(self, model, variables):
        self.model = model
        self.variables = list(variables)  # keras Variables whose gradients are wanted
        self.backend = keras.backend.backend()
        self.optimizer = None
        self._method = None  # the wrapped attribute's name
        self._want = False
        self._want_var = None
        self._slots: dict[int, tuple] = {}  # id(tf variable) -> (keras variable, slot)
        self._eager = None  # [(gradient, keras variable)] of the last wanted batch
        self._fresh = False

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
        if name in vars(opt):  # an earlier capture's wrapper (other variables): ours goes around the method
            object.__delattr__(opt, name)
            original = getattr(opt, name)
            wrapper = self._tf_wrapper(original) if self.backend == "tensorflow" else self._torch_wrapper(original)
        object.__setattr__(opt, name, wrapper)  # an instance attribute shadows the method
        self.optimizer, self._method = opt, name
        if (self.backend == "tensorflow" and not getattr(self.model, "run_eagerly", False)
                and getattr(self.model, "train_function", None) is not None):
            # one traced before (an earlier fit) would not call the wrapper; one fit has just
            # made and not yet traced costs nothing to make again
            self.model.make_train_function(force=True)
        return None

    def covers(self, variables) -> bool:
        ids = {id(v) for v in self.variables}
        return all(id(v) in ids for v in variables)

    def release(self) -> None:
        """After fit: keep nothing more (the wrapper stays, inert, for the next fit)."""
        self.set_wanted(False)
        self._fresh = False
        self._eager = None

    def _make_tf_slots(self) -> None:
        import tensorflow as tf

        strategy = getattr(self.model, "distribute_strategy", None) or tf.distribute.get_strategy()
        with strategy.scope():
            self._want_var = tf.Variable(False, trainable=False, name="weighttui_want_grads",
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
            else:
                pairs = [(g, self._slots[id(v)][1]) for g, v in grads_and_vars
                         if g is not None and id(v) in self._slots]

                def store():
                    for g, slot in pairs:
                        if isinstance(g, tf.IndexedSlices):  # embeddings: dense (per-replica values stay)
                            g = tf.convert_to_tensor(g)
                        distribution.extended.update(slot, lambda s, x: s.assign(tf.cast(x, s.dtype)),
                                                     args=(g,), group=False)
                    return tf.constant(True)

                if pairs:
                    tf.cond(self._want_var.read_value(), store, lambda: tf.constant(False))
            return original(distribution, grads_and_vars, learning_rate)

        return wrapped

    def _torch_wrapper(self, original):
        wanted = {id(v) for v in self.variables}

        def wrapped(grads, trainable_variables, learning_rate):
            if self._want:
                self._eager = [(g.detach().clone(), v) for g, v in zip(grads, trainable_variables, strict=False)
                               if g is not None and id(v) in wanted]
            return original(grads, trainable_variables, learning_rate)

        return wrapped

    # ------------------------------------------------------------ per batch

    def batch_begin(self, wanted: bool) -> None:
        """Before a batch: whether its gradients are kept (a batch not wanted leaves none)."""
        self._fresh = False
        self._eager = None
        self.set_wanted(wanted)

    def set_wanted(self, flag: bool) -> None:
        flag = bool(flag)
        if flag == self._want:
            return
        self._want = flag
        if self._want_var is not None:
            self._want_var.assign(flag, read_value=False)  # (reading it back cost twice the assignment)

    def batch_done(self) -> None:
        """After a batch: its gradients are there if it was wanted."""
        self._fresh = self._want and self.optimizer is not None

    def slots(self) -> list:
        """[(slot variable, keras variable)]: where a compiled train step leaves the gradients
        (TensorFlow; empty elsewhere). The callback reads them with the weights."""
        return [(slot, v) for v, slot in self._slots.values()]

    def take(self):
        """[(gradient, keras variable)] of the last batch if it was wanted, else None."""
        if not self._fresh:
            return None
        self._fresh = False
        if self._eager is not None:
            pairs, self._eager = self._eager, None
            return pairs
        if self._slots:  # the slot variables themselves: the callback reads them with the weights
            return self.slots()
        return None
