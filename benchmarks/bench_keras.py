"""Keras: what recording costs, measured side by side in one process.

Part 1, one snapshot (stats + 64-bin histograms + exact deltas + samples) of
an MLP of 3.6M parameters and of a CNN of 5M: WeightCallback.record on the
CPU path (variable views into the fused kernel), the same with the kernel
switched off (the numpy reference: what it did before), with TF ops where the
variables live (stats="device", keras_tf_stats.py), and TensorBoard's
tf.summary.histogram of every variable, with a read pass (tf.reduce_sum over
every variable) as the unit.
Part 2, a small real `fit`: no callback, WeightCallback every epoch, every 10
batches, every batch (gradients inside fit included, the default), and
keras.callbacks.TensorBoard(histogram_freq=1), interleaved rounds, median
seconds per fit.

    KERAS_BACKEND=tensorflow python benchmarks/bench_keras.py [--quick] [--fit-only] [--rounds N] [--epochs N]
    KERAS_BACKEND=tensorflow python benchmarks/bench_keras.py --fit-cnn   # part 2 on a 6.5M-parameter CNN
    KERAS_BACKEND=tensorflow python benchmarks/bench_keras.py --hooks     # the callback's hook, thread CPU
    KERAS_BACKEND=tensorflow python benchmarks/bench_keras.py --parts     # a snapshot's CPU by part and thread
    KERAS_BACKEND=tensorflow python benchmarks/bench_keras.py --fit-only --controls  # + fits that only pause
    KERAS_BACKEND=tensorflow python benchmarks/bench_keras.py --split     # a fit's CPU by thread and place
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import tensorflow as tf

from weighttui.integrations.keras import WeightCallback
from weighttui.record import kernel
from weighttui.record.recorder import Recorder


def big_model(width: int) -> keras.Model:
    model = keras.Sequential([
        keras.Input((784,)),
        keras.layers.Dense(width, activation="relu"),
        keras.layers.Dense(width, activation="relu"),
        keras.layers.Dense(10),
    ], name="mlp")
    return model


def cnn_model() -> keras.Model:
    """A VGG-like CNN of about 5M parameters (built, not trained: part 1 needs its weights only)."""
    layers = [keras.Input((32, 32, 3))]
    for width in (64, 128, 256, 256, 512, 512):
        layers.append(keras.layers.Conv2D(width, 3, padding="same", activation="relu"))
    layers += [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(1024, activation="relu"),
               keras.layers.Dense(10)]
    return keras.Sequential(layers, name="cnn")


def timeit(fn, repeat: int) -> float:
    """Least wall seconds of fn() over `repeat` calls after a warm-up (least: the cores are shared)."""
    fn()  # warm-up (tracing, caches)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def measure(fn, repeat: int, cpu_clock, setup=None) -> tuple[float, float, float]:
    """(median wall seconds, median CPU seconds by cpu_clock, least CPU seconds) of fn() over
    `repeat` calls, after a warm-up.

    CPU time is the honest number on a shared machine: other work stretches wall time, not CPU
    time; the median of many calls is steadier than the least of a few for sub-millisecond work.
    """
    fn()
    walls, cpus = [], []
    for _ in range(repeat):
        if setup is not None:
            setup()
        w0, c0 = time.perf_counter(), cpu_clock()
        fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(cpu_clock() - c0)
    return statistics.median(walls), statistics.median(cpus), min(cpus)


def part1(model: keras.Model, repeat: int, other: str | None = None) -> None:
    params = sum(int(np.prod(v.shape)) for v in model.weights)
    variables = list(model.weights)
    tmp = tempfile.mkdtemp()
    rng = np.random.default_rng(0)

    def nudge():
        # a small update between snapshots (what an optimizer step does), outside the clock,
        # then a pause so that the writer thread is done with the previous snapshot
        for v in variables:
            v.assign(v.value + 1e-4 * rng.standard_normal(tuple(v.shape)).astype(np.float32))
        time.sleep(0.2)

    def read_pass():
        for v in variables:
            tf.reduce_sum(v.value).numpy()

    def timed_record(stats, without_kernel=False, build=None, **options):
        # the real thing: a callback recording into a log, as fit would call it; the CPU time is
        # the calling (training) thread's: encoding and writing run on the writer thread
        rec = Recorder(os.path.join(tmp, f"{stats}{time.monotonic_ns()}.wtui"), queue_size=4096, **options)
        cb = WeightCallback(rec, initial=False, stats=stats)
        cb.set_model(model)
        saved = kernel._fastats
        if without_kernel:
            kernel._fastats = None  # the numpy reference path, as before the kernel
        elif build is not None:
            kernel._fastats = build  # another build of the kernel (--other)
        step = [0]

        def run():
            step[0] += 1
            cb.record(step[0])
            rec.drain()  # the writer thread's part (finishing the kernel's rows, encoding, writing) counts
        try:
            # the process's CPU time: the calling thread's, the writer's, TF's threads' (stats="device")
            return measure(run, repeat, time.process_time, nudge)
        finally:
            kernel._fastats = saved
            rec.close()

    writer = tf.summary.create_file_writer(os.path.join(tmp, "tb"))
    tb_step = [0]

    def tensorboard_histograms():
        # what keras.callbacks.TensorBoard(histogram_freq=1) does at each epoch end
        tb_step[0] += 1
        with writer.as_default():
            for v in variables:
                tf.summary.histogram(v.path.replace("/", "_"), v.value, step=tb_step[0])
        writer.flush()

    base = measure(read_pass, repeat, time.process_time)  # TF's threads: the process's CPU time
    rows = [("read pass (tf.reduce_sum each variable)", base)]
    if kernel.available():
        rows.append(("WeightCallback record, CPU: views + fused kernel", timed_record("numpy", instruments=False)))
        if other:
            from bench_kernel import load

            rows.append((f"  the same with the kernel build {os.path.basename(other)}"[:56],
                         timed_record("numpy", build=load(other, "_wt_keras_other"), instruments=False)))
    rows.append(("WeightCallback record, CPU: numpy reference (before)",
                 timed_record("numpy", without_kernel=True, instruments=False)))
    rows.append(("WeightCallback record, stats='device' (TF ops)", timed_record("device", instruments=False)))
    rows.append(("WeightCallback record, CPU, kernel + default instruments", timed_record("numpy")))
    rows.append(("TensorBoard: tf.summary.histogram each variable",
                 measure(tensorboard_histograms, repeat, time.process_time)))
    print(f"\n## one snapshot, {model.name}: {params / 1e6:.2f}M parameters in {len(variables)} tensors, "
          f"median of {repeat}, keras {keras.__version__} ({keras.backend.backend()}), CPU")
    print("(WeightCallback: stats + 64-bin histograms + exact deltas with their histograms + 16 samples "
          "per tensor, written by the writer thread before the clock stops; instruments=False but in the "
          "'default instruments' row (docs/instruments.md); TensorBoard: its histograms of the values only. "
          "CPU ms: the whole process's, every thread (calling, writer, TF's), median and least)")
    print(f"{'method':56s} {'wall ms':>9s} {'CPU ms':>9s} {'least':>7s} {'x read pass (CPU)':>18s}")
    for name, (wall, cpu, least) in rows:
        print(f"{name:56s} {wall * 1e3:9.2f} {cpu * 1e3:9.2f} {least * 1e3:7.2f} {cpu / base[1]:18.1f}")


def fit_cnn() -> keras.Model:
    """A CNN of 6.5M parameters cheap enough to train on a CPU: 16x16 images, pooling after
    each of the first three convolutions, most parameters in the 512-channel convolutions at 2x2."""
    layers = [keras.Input((16, 16, 3))]
    for width in (64, 128, 256):
        layers += [keras.layers.Conv2D(width, 3, padding="same", activation="relu"), keras.layers.MaxPooling2D()]
    layers += [keras.layers.Conv2D(512, 3, padding="same", activation="relu") for _ in range(3)]
    layers += [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(512, activation="relu"),
               keras.layers.Dense(10)]
    return keras.Sequential(layers, name="cnn")


def fit_mlp() -> keras.Model:
    """The fit parts' 83k MLP (64-256-256-1), not compiled."""
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(256, activation="relu"),
                             keras.layers.Dense(256, activation="relu"), keras.layers.Dense(1)], name="mlp")


def fit_mlp_data() -> tuple[np.ndarray, np.ndarray]:
    """The fit parts' data for fit_mlp: 4,096 samples of 64 features, a smooth regression target."""
    x = np.random.default_rng(0).normal(size=(4096, 64)).astype("float32")
    return x, (np.sin(x[:, :8]).sum(axis=1, keepdims=True)).astype("float32")


def part2(rounds: int, epochs: int, only: list[str] | str | None = None, model_kind: str = "mlp",
          controls: bool = False) -> None:
    rng = np.random.default_rng(0)
    if model_kind == "cnn":
        n, batch = 512, 16
        x = rng.normal(size=(n, 16, 16, 3)).astype("float32")
        y = rng.integers(0, 10, size=n)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    else:
        x, y = fit_mlp_data()
        n, batch = len(x), 64
        loss = "mse"
    batches = n // batch
    tmp = tempfile.mkdtemp()

    def make() -> keras.Model:
        if model_kind == "cnn":
            return fit_cnn()
        return fit_mlp()

    def fit(kind: str) -> float:
        keras.utils.set_random_seed(0)
        model = make()
        model.compile(keras.optimizers.Adam(1e-3), loss)

        def wt(name, **options):
            return lambda: [WeightCallback(os.path.join(tmp, f"{name}.wtui"), **options)]

        plain = {"instruments": False}  # the statistics of the table; instruments are docs/instruments.md
        callbacks = {
            "none": [],
            "weighttui every epoch": wt("e", **plain),
            "weighttui every 10 batches": wt("t", every_batches=10, **plain),
            "weighttui every 10 batches, no grads": wt("n", every_batches=10, grads=False, **plain),
            "weighttui every batch": wt("b", every_batches=1, **plain),
            "weighttui every batch, no grads": wt("m", every_batches=1, grads=False, **plain),
            "weighttui every 10 batches, instruments on": wt("i", every_batches=10),
            "TensorBoard(histogram_freq=1)": lambda: [keras.callbacks.TensorBoard(
                os.path.join(tmp, f"tb{time.monotonic_ns()}"), histogram_freq=1)],
            "control: sleep 0.5 ms every 10 batches": lambda: [_Pause(10, "sleep")],
            "control: 0.5 ms of numpy every 10 batches": lambda: [_Pause(10, "work")],
        }[kind]
        # trace outside the clock, with the same kind of callback: a one-time cost (the train function
        # that stores the gradients, traced at its first recorded batch) is not what a long fit pays per batch
        model.fit(x[:4 * batch], y[:4 * batch], batch_size=batch, epochs=1, verbose=0,
                  callbacks=callbacks() if callable(callbacks) else callbacks)
        cbs = callbacks() if callable(callbacks) else callbacks
        t0, c0 = time.perf_counter(), time.process_time()
        model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0, callbacks=cbs)
        written = 0
        for cb in cbs:  # the writer thread's work is part of the cost: wait for it
            rec = getattr(cb, "recorder", None)
            if rec is not None:
                rec.close()
                written += rec.written
        return time.perf_counter() - t0, time.process_time() - c0, written

    kinds = ["none", "weighttui every epoch", "weighttui every 10 batches", "weighttui every 10 batches, no grads",
             "weighttui every batch", "weighttui every batch, no grads",
             "weighttui every 10 batches, instruments on",
             "TensorBoard(histogram_freq=1)"]
    if only and not isinstance(only, list):  # --only: words to look for in the names
        words = [w.strip() for w in str(only).split(",") if w.strip()]
        only = ["none"] + [k for k in kinds if k != "none" and any(w in k for w in words)]
    kinds = only or kinds
    if controls:
        kinds = kinds + ["control: sleep 0.5 ms every 10 batches", "control: 0.5 ms of numpy every 10 batches"]
    times = {k: [] for k in kinds}
    snaps = dict.fromkeys(kinds, 0)
    cpu = {k: [] for k in kinds}
    for r in range(rounds):
        order = kinds if r % 2 == 0 else kinds[::-1]  # interleave against drift
        for k in order:
            wall, used, snaps[k] = fit(k)
            times[k].append(wall)
            cpu[k].append(used)
    base = statistics.median(times["none"])
    cbase = statistics.median(cpu["none"])
    params = sum(int(np.prod(v.shape)) for v in make().weights)
    what = ("CNN 16x16x3, conv 64-128-256-512-512-512, dense 512-10" if model_kind == "cnn" else "MLP 64-256-256-1")
    print(f"\n## fit: {what} ({params / 1e3:.0f}k parameters), {n} samples, batch {batch} "
          f"({batches} batches/epoch), {epochs} epochs, median of {rounds} interleaved rounds")
    print("(weighttui records the gradients fit applies too, unless 'no grads'; instruments=False unless 'on')")
    print("(wall: seconds per fit; CPU: the process's CPU seconds, every thread: TF's, the writer's, "
          "the kernel's; on a shared machine the CPU column is the one to trust)")
    print("(per snapshot: the CPU added over 'none', divided by the snapshots written; a batch is "
          f"{1e3 * statistics.median(cpu['none']) / (batches * epochs):.2f} ms of CPU without callbacks)")
    print("(wall per round: each round's slowdown against that round's 'none', lowest / median / highest:"
          " how far one fit's wall time moves on this machine)")
    print(f"{'callbacks':46s} {'wall s':>8s} {'slowdown':>9s} {'CPU s':>8s} {'slowdown':>9s} {'snapshots':>9s} "
          f"{'ms each':>8s}  wall per round")
    for k in kinds:
        t, c = statistics.median(times[k]), statistics.median(cpu[k])
        each = f"{1e3 * (c - cbase) / snaps[k]:8.2f}" if snaps[k] else f"{'':8s}"
        print(f"{k:46s} {t:8.2f} {100 * (t / base - 1):+8.1f}% {c:8.2f} {100 * (c / cbase - 1):+8.1f}% "
              f"{snaps[k]:9d} {each}  {_round_spread(times[k], times['none'])}")


def _round_spread(walls: list[float], base: list[float]) -> str:
    """Lowest / median / highest of the per-round slowdowns (each fit against the 'none' fit of its round)."""
    ratios = sorted(100 * (w / b - 1) for w, b in zip(walls, base, strict=True))
    return f"{ratios[0]:+.1f} / {statistics.median(ratios):+.1f} / {ratios[-1]:+.1f}%"


class _Pause(keras.callbacks.Callback):
    """--controls: what an interruption of fit's loop costs without any recording: every n batches, 0.5 ms of
    sleep (no work: the training thread gives up its core) or of numpy work on 1.6 MB (about what a snapshot
    of the 83k MLP touches)."""

    def __init__(self, every: int, how: str):
        super().__init__()
        self.every, self.how, self.n = every, how, 0
        self.buf = np.zeros(400_000, dtype=np.float32)

    def on_train_batch_end(self, batch, logs=None):
        self.n += 1
        if self.n % self.every:
            return
        if self.how == "sleep":
            time.sleep(0.0005)
            return
        t0 = time.thread_time()
        while time.thread_time() - t0 < 0.0005:
            self.buf += 1.0


def part5_split(rounds: int, epochs: int) -> None:
    """Where a whole fit's extra CPU goes, by thread and place, next to fits whose callback only pauses every 10
    batches: fit's train-function calls (training-thread CPU between the last batch-begin hook and the first
    batch-end hook), the WeightCallback's hooks, the rest of the training thread (Keras' loop, iterators),
    and every other thread (TF's, the writer). Interleaved rounds in one process, medians."""
    import collections

    x, y = fit_mlp_data()
    tmp = tempfile.mkdtemp()
    spent: collections.defaultdict = collections.defaultdict(float)

    class Begin(keras.callbacks.Callback):  # last in the list: right before the train function
        def on_train_batch_begin(self, batch, logs=None):
            spent["t0"] = time.thread_time()

    class End(keras.callbacks.Callback):  # first in the list: right after it (only reads the clock)
        def on_train_batch_end(self, batch, logs=None):
            spent["train function"] += time.thread_time() - spent["t0"]

    def timed(method):
        def hook(self, *args, **kwargs):
            c0 = time.thread_time()
            try:
                return method(self, *args, **kwargs)
            finally:
                spent["hooks"] += time.thread_time() - c0
        return hook

    class Timed(WeightCallback):  # on_train_begin is left alone: it looks at its caller (fit's CallbackList)
        on_train_batch_begin = timed(WeightCallback.on_train_batch_begin)
        on_train_batch_end = timed(WeightCallback.on_train_batch_end)
        on_epoch_begin = timed(WeightCallback.on_epoch_begin)
        on_epoch_end = timed(WeightCallback.on_epoch_end)
        on_train_end = timed(WeightCallback.on_train_end)
        _train_begin = timed(WeightCallback._train_begin)

    class Paused(_Pause):
        on_train_batch_end = timed(_Pause.on_train_batch_end)

    kinds = {"none": None, "weighttui every epoch": {}, "weighttui every 10 batches": {"every_batches": 10},
             "weighttui every 10 batches, no grads": {"every_batches": 10, "grads": False},
             "weighttui every batch": {"every_batches": 1},
             "control: sleep 0.5 ms every 10 batches": "sleep", "control: 0.5 ms of numpy every 10 batches": "work"}
    cols = ("process", "training thread", "train function", "hooks", "rest", "other threads")
    got: dict = {k: [] for k in kinds}
    for r in range(rounds):
        for kind in (list(kinds) if r % 2 == 0 else list(kinds)[::-1]):
            opts = kinds[kind]

            def make(opts=opts):
                if isinstance(opts, str):
                    mid = [Paused(10, opts)]
                else:
                    mid = [] if opts is None else [Timed(os.path.join(tmp, f"s{time.monotonic_ns()}.wtui"),
                                                         instruments=False, **opts)]
                return [End(), *mid, Begin()]

            keras.utils.set_random_seed(0)
            model = fit_mlp()
            model.compile(keras.optimizers.Adam(1e-3), "mse")
            model.fit(x[:256], y[:256], batch_size=64, epochs=1, verbose=0, callbacks=make())  # traces
            cbs = make()
            spent.clear()
            t0, p0 = time.thread_time(), time.process_time()
            model.fit(x, y, batch_size=64, epochs=epochs, verbose=0, callbacks=cbs)
            for cb in cbs:
                if isinstance(cb, WeightCallback):
                    cb.recorder.close()  # the writer's work counts
            main, proc = time.thread_time() - t0, time.process_time() - p0
            got[kind].append((proc, main, spent["train function"], spent["hooks"],
                              main - spent["train function"] - spent["hooks"], proc - main))
    print(f"\n## where a fit's CPU goes (83k MLP, Adam, {epochs} epochs of 64 batches, instruments off), ms, medians "
          f"of {rounds} interleaved rounds; in brackets: the difference from 'none'")
    print(f"{'callbacks':42s}" + "".join(f"{c:>22s}" for c in cols))
    base = [statistics.median(g[i] for g in got["none"]) for i in range(len(cols))]
    for kind in kinds:
        med = [statistics.median(g[i] for g in got[kind]) for i in range(len(cols))]
        print(f"{kind:42s}" + "".join(f"{1e3 * m:10.1f} ({1e3 * (m - b):+8.1f})" for m, b in zip(med, base,
                                                                                                  strict=True)))


def part3_hooks(epochs: int, rounds: int) -> None:
    """The callback's own cost inside a real fit, on the training thread's CPU clock (steady under
    load, unlike a fit's total): its batch-end hook per recorded batch and per batch not recorded."""
    x, y = fit_mlp_data()
    tmp = tempfile.mkdtemp()

    class Timed(WeightCallback):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.spent = {True: [0.0, 0.0, 0], False: [0.0, 0.0, 0]}  # recorded -> [CPU s, wall s, batches]
            self.begin = [0.0, 0]  # the batch-begin hook (which batches keep their gradients): [CPU s, batches]

        def on_train_batch_begin(self, batch, logs=None):
            c0 = time.thread_time()
            super().on_train_batch_begin(batch, logs)
            self.begin[0] += time.thread_time() - c0
            self.begin[1] += 1

        def on_train_batch_end(self, batch, logs=None):
            c0, w0 = time.thread_time(), time.perf_counter()
            super().on_train_batch_end(batch, logs)
            spent = self.spent[self._last_recorded == self.step]
            spent[0] += time.thread_time() - c0
            spent[1] += time.perf_counter() - w0
            spent[2] += 1

    print(f"\n## the callback's batch-end hook inside fit (83k MLP, Adam, {epochs} epochs of 64 batches, gradients "
          f"on, instruments off), training thread; median of {rounds} fits")
    print(f"{'every':>6s} {'recorded: CPU ms':>17s} {'wall ms':>8s} {'not recorded: CPU ms':>21s} "
          f"{'batch begin: CPU ms':>20s}")
    for every in (1, 10):
        rows = []
        for _ in range(rounds):
            keras.utils.set_random_seed(0)
            model = fit_mlp()
            model.compile(keras.optimizers.Adam(1e-3), "mse")
            cb = Timed(os.path.join(tmp, f"h{time.monotonic_ns()}.wtui"), every_batches=every, instruments=False)
            model.fit(x, y, batch_size=64, epochs=epochs, verbose=0, callbacks=[cb])
            rec, rest = cb.spent[True], cb.spent[False]
            rows.append((rec[0] / max(rec[2], 1), rec[1] / max(rec[2], 1), rest[0] / max(rest[2], 1),
                         cb.begin[0] / max(cb.begin[1], 1)))
        med = [statistics.median(r[i] for r in rows) for i in range(4)]
        print(f"{every:6d} {med[0] * 1e3:17.3f} {med[1] * 1e3:8.3f} {med[2] * 1e3:21.4f} {med[3] * 1e3:20.4f}")


def part4_parts(epochs: int, every: int) -> None:
    """Where a recorded batch's CPU goes inside a real fit (83k MLP, Adam, gradients on): each thread's CPU
    in the callback's hooks and the parts under them, and the writer thread's per snapshot, summed over one
    fit by wrapping the functions (thread CPU clock: steady under load). Names that a checkout lacks are left
    out, so that the same script measures an older checkout (PYTHONPATH=OLD python bench_keras.py --parts)."""
    import collections
    import functools

    from weighttui.integrations import keras as wk
    from weighttui.integrations import keras_grads as kg
    from weighttui.record import numpy_path as npth
    from weighttui.record import recorder as rmod
    from weighttui.record import writer as wmod

    spent = collections.defaultdict(lambda: [0.0, 0])

    def wrap(owner, name, label):
        fn = getattr(owner, name, None)
        if fn is None:
            return

        @functools.wraps(fn)
        def timed(*a, **k):
            c0 = time.thread_time()
            try:
                return fn(*a, **k)
            finally:
                e = spent[label]
                e[0] += time.thread_time() - c0
                e[1] += 1

        setattr(owner, name, timed)

    parts = [(wk.WeightCallback, "on_train_batch_end", "training: batch-end hook (all of the below)"),
             (wk.WeightCallback, "on_train_batch_begin", "training: batch-begin hook"),
             (wk.WeightCallback, "on_epoch_end", "training: epoch-end hook"),
             # (_train_begin: on_train_begin itself looks at its caller, fit's CallbackList, not at a wrapper)
             (wk.WeightCallback, "_train_begin", "training: train-begin hook (log, first snapshot)"),
             (wk.WeightCallback, "on_train_end", "training: train-end hook (last snapshot, close)"),
             (wk, "_read_host", "training:   eager reads and views (_read_host)"),
             (npth.NumpyStats, "snapshot", "training:   statistics (NumpyStats.snapshot)"),
             (kernel._fastats, "snapshot", "training:     the fused kernel"),
             (rmod.Recorder, "submit", "training:   queueing (Recorder.submit)"),
             (kg.GradientTap, "batch_begin", "training: gradient routing (GradientTap.batch_begin)"),
             (wmod.LogWriter, "_do", "writer: one job (all of the below)"),
             (npth.RawBlock, "block", "writer:   finishing raw rows (RawBlock.block)"),
             (wmod.LogWriter, "_write", "writer:   os.write")]
    saved = [(owner, name, getattr(owner, name, None)) for owner, name, _l in parts]
    for owner, name, label in parts:
        wrap(owner, name, label)
    x, y = fit_mlp_data()
    tmp = tempfile.mkdtemp()
    try:
        keras.utils.set_random_seed(0)
        model = fit_mlp()
        model.compile(keras.optimizers.Adam(1e-3), "mse")
        model.fit(x[:256], y[:256], batch_size=64, epochs=1, verbose=0,
                  callbacks=[WeightCallback(os.path.join(tmp, "warm.wtui"), every_batches=every, instruments=False)])
        spent.clear()
        cb = _TrainCalls(os.path.join(tmp, "parts.wtui"), every_batches=every, instruments=False)
        model.fit(x, y, batch_size=64, epochs=epochs, verbose=0, callbacks=[cb])
        n = max(cb.recorder.written, 1)
    finally:
        for owner, name, fn in saved:
            if fn is not None:
                setattr(owner, name, fn)
    calls = cb.calls
    if calls["storing"] and calls["plain"]:  # the train function's own cost: what storing adds over fit's own
        extra = (statistics.median(calls["storing"]) - statistics.median(calls["plain"])) * len(calls["storing"])
        spent["training: train function, recorded batch minus another (medians)"] = [extra, len(calls["storing"])]
    elif calls["storing"]:
        spent["training: train function, recorded batch (all are; no other to compare)"] = [
            statistics.median(calls["storing"]) * len(calls["storing"]), len(calls["storing"])]
    print(f"\n## where a snapshot's CPU goes inside fit (83k MLP, Adam, every {every} batches, gradients on, "
          f"{epochs} epochs, {n} snapshots): thread CPU per snapshot, summed over the fit")
    print(f"{'part':66s} {'us per snapshot':>16s} {'calls':>7s}")
    for label in [label for _o, _n, label in parts] + [k for k in spent if k.startswith("training: train fun")]:
        if label in spent:
            t, count = spent[label]
            print(f"{label:66s} {1e6 * t / n:16.1f} {count:7d}")
    for kind, times in cb.calls.items():
        if times:
            print(f"  (train function, {kind}: median {1e6 * statistics.median(times):.1f} us of the training thread, "
                  f"{len(times)} batches)")


class _TrainCalls(WeightCallback):
    """WeightCallback timing the train function `fit` calls between its batch hooks (training-thread CPU), by
    whether it is the one that stores the gradients (recorded batches) or `fit`'s own."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: dict[str, list[float]] = {"storing": [], "plain": []}
        self._kind, self._t0 = "plain", None

    def on_train_batch_begin(self, batch, logs=None):
        super().on_train_batch_begin(batch, logs)
        capture = getattr(getattr(self, "_capture", None), "capture", None)
        storing = getattr(capture, "_storing", None)
        self._kind = "storing" if storing is not None and self.model.train_function is storing else "plain"
        self._t0 = time.thread_time() if batch else None  # a first batch of an epoch makes its iterator

    def on_train_batch_end(self, batch, logs=None):
        if self._t0 is not None:
            self.calls[self._kind].append(time.thread_time() - self._t0)
        super().on_train_batch_end(batch, logs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller and fewer runs (a smoke test)")
    ap.add_argument("--fit-only", action="store_true", help="part 2 only (the fit slowdowns)")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds of part 2 (median)")
    ap.add_argument("--epochs", type=int, default=10, help="epochs of part 2's MLP fit (64 batches each)")
    ap.add_argument("--hooks", action="store_true",
                    help="the callback's batch-end hook inside fit, training-thread CPU (steady under load)")
    ap.add_argument("--fit-cnn", action="store_true",
                    help="part 2 on a 6.5M-parameter CNN (2 epochs of 32 batches, 3 rounds unless --rounds)")
    ap.add_argument("--other", help="another build of weighttui._fastats (.so): part 1's kernel row with it too")
    ap.add_argument("--record-only", action="store_true", help="part 1 only, on the 3.6M MLP (the record ratio)")
    ap.add_argument("--only", help="part 2's rows whose names contain one of these comma-separated words "
                                   "('none' is always run), e.g. --only 'every batch,TensorBoard'")
    ap.add_argument("--controls", action="store_true",
                    help="part 2 also with a callback that only pauses (sleeps, or does 0.5 ms of numpy) every "
                         "10 batches: what any interruption of the loop costs the batches after it")
    ap.add_argument("--split", action="store_true",
                    help="a whole fit's CPU by thread and place (train function, hooks, rest, other threads), "
                         "with the pausing controls")
    ap.add_argument("--parts", action="store_true",
                    help="where a snapshot's CPU goes inside fit (every batch and every 10), per thread and part")
    args = ap.parse_args()
    t0 = time.perf_counter()
    print(f"load (uptime) at the start: {os.getloadavg()} on {os.cpu_count()} cores")
    cnn_kinds = ["none", "weighttui every epoch", "weighttui every 10 batches", "weighttui every batch",
                 "TensorBoard(histogram_freq=1)"]
    if args.quick:
        part1(big_model(512), repeat=3, other=args.other)
        part2(rounds=1, epochs=2)
    elif args.split:
        part5_split(rounds=args.rounds if args.rounds != 7 else 5, epochs=args.epochs)
    elif args.parts:
        for every in (1, 10):
            part4_parts(epochs=args.epochs, every=every)
    elif args.hooks:
        part3_hooks(epochs=args.epochs, rounds=args.rounds if args.rounds != 7 else 3)
    elif args.fit_cnn:
        part2(rounds=args.rounds if args.rounds != 7 else 3, epochs=2, only=cnn_kinds, model_kind="cnn")
    else:
        if not args.fit_only:
            part1(big_model(1536), repeat=15, other=args.other)
            if not args.record_only:
                part1(cnn_model(), repeat=9, other=args.other)
        if not args.record_only:
            part2(rounds=args.rounds, epochs=args.epochs, only=args.only, controls=args.controls)
    print(f"\nload (uptime) at the end: {os.getloadavg()} on {os.cpu_count()} cores (shared with other work); "
          f"{time.perf_counter() - t0:.0f} s in all")


if __name__ == "__main__":
    main()
