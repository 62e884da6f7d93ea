"""The C snapshot decoder (weighttui/log/native/frames.c) gives the records the Python path gives.

`format.decode_snapshot(body)` returns a tuple for a snapshot payload of the usual shape and None
for anything else; records.parse_prepared finishes the tuple. The Python path (msgpack,
format.decode_payload, records.parse_snapshot) is the definition. Whenever the C decoder returns a
tuple, the Python path must (1) decode the payload (no frame the decoder would have counted as
corrupt is let through) and (2) give an equal SnapshotRecord, or raise the same InvalidRecord with
the same message. Checked on payload variants one field at a time, on random mutations of real
payloads, and end to end: a store built with and without the decoder holds the same.

Without the built extension the module is skipped, unless WEIGHTTUI_REQUIRE_KERNEL=1.
"""

from __future__ import annotations

import math
import os
import random
import struct

import msgpack
import numpy as np
import pytest

from weighttui.log import format as fmt
from weighttui.log.format import FrameType, decode_payload, encode_array
from weighttui.log.records import InvalidRecord, TensorInfo, parse_prepared, parse_snapshot
from weighttui.log.schema import DELTA_STATS, WEIGHT_STATS

try:
    from weighttui import _frames
except ImportError:  # not built
    _frames = None

pytestmark = pytest.mark.skipif(_frames is None and os.environ.get("WEIGHTTUI_REQUIRE_KERNEL") != "1",
                                reason="weighttui._frames not built (python setup.py build_ext --inplace)")

T = 5
TENSORS = {i: TensorInfo(id=i, name=f"t{i}", layer="l", shape=(4, 4), dtype="float32", trainable=True,
                         sample_index=np.arange(2) if i % 2 == 0 else None) for i in range(8)}
SAMPLES = 2 * 3  # ids 0..4: three even ones sample 2 values each


def _payload(rng: np.random.Generator, **over) -> dict:
    ids = np.arange(T, dtype="<u4")
    w = rng.normal(size=(T, len(WEIGHT_STATS)))
    p = {
        "step": 7, "epoch": 1, "batch": 3, "time": 1.7e9, "ids": encode_array(ids),
        "weights": {"names": list(WEIGHT_STATS), "stats": encode_array(w),
                    "hist": {"lo": encode_array(w[:, 2].copy()), "hi": encode_array(w[:, 3].copy()),
                             "counts": encode_array(rng.integers(0, 100, (T, 8)).astype("<u4"))}},
        "delta": {"names": list(DELTA_STATS), "stats": encode_array(rng.normal(size=(T, len(DELTA_STATS)))),
                  "hist": None},
        "grad": None,
        "sample": encode_array(rng.normal(size=SAMPLES).astype("<f4")),
    }
    p.update(over)
    return p


def _python(body: bytes):
    """('record', SnapshotRecord) | ('invalid', message) | ('corrupt', message): the Python path."""
    try:
        p = decode_payload(body)
    except ValueError as exc:
        return "corrupt", str(exc)
    try:
        return "record", parse_snapshot(p, TENSORS, {})
    except (InvalidRecord, ValueError, TypeError, OverflowError) as exc:
        return "invalid", str(exc)


def _c(body: bytes):
    got = fmt.decode_snapshot(body)
    if got is None:
        return None
    try:
        return "record", parse_prepared(got, TENSORS, {})
    except InvalidRecord as exc:
        return "invalid", str(exc)


def _same_array(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes() \
        and a.flags.writeable == b.flags.writeable


def _same_block(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if a.names != b.names or type(a.names) is not type(b.names) or not _same_array(a.stats, b.stats):
        return False
    if a.hist is None or b.hist is None:
        return a.hist is None and b.hist is None
    return all(_same_array(x, y) for x, y in zip(a.hist, b.hist, strict=True))


def _same_record(a, b) -> bool:
    def same_num(x, y):
        return type(x) is type(y) and (x == y or (isinstance(x, float) and math.isnan(x) and math.isnan(y))) \
            and (not isinstance(x, float) or math.copysign(1, x) == math.copysign(1, y))

    return (same_num(a.step, b.step) and same_num(a.epoch, b.epoch) and same_num(a.batch, b.batch)
            and same_num(a.time, b.time) and _same_array(a.ids, b.ids) and _same_array(a.sample, b.sample)
            and all(_same_block(getattr(a, k), getattr(b, k)) for k in ("weights", "delta", "grad", "optim")))


def _agree(body: bytes) -> bool:
    """Assert the C path agrees with the Python path on body; True if the C decoder took it."""
    c = _c(body)
    if c is None:
        return False
    py = _python(body)
    assert py[0] != "corrupt", f"C decoded a payload the Python path refuses: {py[1]}"
    assert c[0] == py[0], (c, py)
    if c[0] == "invalid":
        assert c[1] == py[1]
    else:
        assert _same_record(c[1], py[1]), (c[1], py[1])
    return True


def _pack(p) -> bytes:
    return msgpack.packb(p, use_bin_type=True)


def _variants(rng: np.random.Generator):
    """(name, payload body, whether the C decoder is expected to take it)."""
    base = _payload(rng)
    yield "usual", _pack(base), True
    w = base["weights"]
    ids = np.arange(T)
    for name, over, fast in [
        ("no epoch, batch, time", {"epoch": None, "batch": None, "time": None}, True),
        ("negative and big ints", {"step": -5, "epoch": 2**63 - 1, "batch": -(2**63)}, True),
        ("step over int64", {"step": 2**63}, False),
        ("bool step", {"step": True}, False),
        ("float step", {"step": 1.0}, False),
        ("string epoch", {"epoch": "1"}, False),
        ("int time", {"time": 5}, False),
        ("negative zero time", {"time": -0.0}, True),
        ("zero time", {"time": 0.0}, True),
        ("nan time", {"time": float("nan")}, True),
        ("ids uint8", {"ids": encode_array(ids.astype("|u1"))}, True),
        ("ids int64", {"ids": encode_array(ids.astype("<i8"))}, True),
        ("ids float", {"ids": encode_array(ids.astype("<f8"))}, False),
        ("ids undeclared", {"ids": encode_array(np.array([0, 1, 2, 3, 99], "<u4"))}, True),
        ("ids twice", {"ids": encode_array(np.array([0, 1, 2, 3, 3], "<u4"))}, True),
        ("ids 2-D", {"ids": encode_array(ids.astype("<u4").reshape(1, T))}, False),
        ("no ids", {"ids": None}, False),
        ("sample wrong size", {"sample": encode_array(np.zeros(5, "<f4"))}, True),
        ("sample float64", {"sample": encode_array(np.zeros(SAMPLES, "<f8"))}, True),
        ("sample ints", {"sample": encode_array(np.zeros(SAMPLES, "<i4"))}, False),
        ("no sample", {"sample": None}, True),
        ("no weights", {"weights": None}, False),
        ("weights float32 stats", {"weights": dict(w, stats=encode_array(np.ones((T, 9), "<f4")))}, True),
        ("weights float16 stats", {"weights": dict(w, stats=encode_array(np.ones((T, 9), "<f2")))}, True),
        ("weights int stats", {"weights": dict(w, stats=encode_array(np.ones((T, 9), "<i8")))}, False),
        ("stats shape off", {"weights": dict(w, stats=encode_array(np.ones((T, 8))))}, False),
        ("stats rows off", {"weights": dict(w, stats=encode_array(np.ones((T + 1, 9))))}, False),
        ("fewer names", {"weights": dict(w, names=list(WEIGHT_STATS[:6]), stats=encode_array(np.ones((T, 6))))},
         True),
        ("unknown names", {"weights": dict(w, names=["x", "é", "norm"], stats=encode_array(np.ones((T, 3))))},
         True),
        ("non-str name", {"weights": dict(w, names=[1, 2], stats=encode_array(np.ones((T, 2))))}, False),
        ("no hist key", {"weights": {"names": w["names"], "stats": w["stats"]}}, True),
        ("extra block key", {"weights": dict(w, extra=1)}, False),
        ("counts uint16", {"weights": dict(w, hist=dict(w["hist"], counts=encode_array(
            np.full((T, 8), 3, "<u2"))))}, True),
        ("counts int64 negative", {"weights": dict(w, hist=dict(w["hist"], counts=encode_array(
            np.full((T, 8), -3, "<i8"))))}, True),
        ("counts int64 huge", {"weights": dict(w, hist=dict(w["hist"], counts=encode_array(
            np.full((T, 8), 2**40, "<i8"))))}, True),
        ("counts float", {"weights": dict(w, hist=dict(w["hist"], counts=encode_array(
            np.full((T, 8), 3.0))))}, False),
        ("counts rows off", {"weights": dict(w, hist=dict(w["hist"], counts=encode_array(
            np.full((T - 1, 8), 3, "<u4"))))}, False),
        ("lo float32", {"weights": dict(w, hist=dict(w["hist"], lo=encode_array(np.zeros(T, "<f4"))))}, True),
        ("lo rows off", {"weights": dict(w, hist=dict(w["hist"], lo=encode_array(np.zeros(T + 1))))}, False),
        ("bf16 stats", {"weights": dict(w, stats={"dtype": "bf16", "shape": [T, 9], "data": bytes(T * 18)})},
         False),
        ("bytes dtype", {"weights": dict(w, stats={"dtype": b"<f8", "shape": [T, 9], "data": bytes(T * 72)})},
         False),
        ("short data", {"weights": dict(w, stats={"dtype": "<f8", "shape": [T, 9], "data": bytes(T * 72 - 1)})},
         False),
        ("str data", {"weights": dict(w, stats={"dtype": "<f8", "shape": [1, 1], "data": "x" * 8})}, False),
        ("extra array key", {"weights": dict(w, stats=dict(w["stats"], order="C"))}, False),
        ("delta and grad and optim", {"grad": dict(w), "optim": {"names": ["m_norm"],
                                                                  "stats": encode_array(np.ones((T, 1)))}}, True),
        ("delta not a map", {"delta": [1, 2]}, False),
        ("unknown keys", {"extra": 1, "units": {"ids": encode_array(ids), "w": [1.5, None, True, "é", b"x",
                                                                           {"k": -1, 3: [2**64 - 1]}]}}, True),
        ("unknown key, ext value", {"extra": msgpack.ExtType(5, b"x")}, False),
        ("unknown key, float map key", {"extra": {1.5: 1}}, False),
    ]:
        yield name, _pack(_payload(rng, **over)), fast
    # no-finite rows: NaN means with NaN counts (weights), NaN mean_abs with changed_frac (delta)
    stats = np.ones((T, 9))
    stats[1, 0], stats[1, 7] = np.nan, 16
    d = np.ones((T, 6))
    d[2, 3] = np.nan
    yield "no finite rows", _pack(_payload(rng, weights=dict(w, stats=encode_array(stats)),
                                           delta=dict(base["delta"], stats=encode_array(d)))), True
    # encodings msgpack never writes but reads: a map16 for a small map, a uint64 for a small int
    body = _pack(base)
    assert body[0] == 0x89  # fixmap of 9
    yield "map16", b"\xde\x00\x09" + body[1:], True
    i = body.index(b"\xa4step") + 5
    assert body[i] == 0x07
    yield "uint64 step", body[:i] + b"\xcf" + struct.pack(">Q", 7) + body[i + 1:], True
    yield "float32 time", _pack(base).replace(b"\xcb" + struct.pack(">d", 1.7e9), b"\xca" + struct.pack(">f", 1.7e9)), \
        True
    # a repeated key (msgpack keeps the last): C leaves it to Python
    yield "repeated key", b"\x8a" + body[1:] + b"\xa4step\x08", False
    yield "trailing byte", body + b"\xc0", False
    yield "truncated", body[:-1], False
    names_at = body.index(b"\xa4mean")
    yield "name not UTF-8", body[:names_at + 1] + b"\xff" + body[names_at + 2:], False
    extra = _pack(_payload(rng, zzzz={"yyyy": "xxxx"}))
    for what in (b"zzzz", b"yyyy", b"xxxx"):  # an unknown key, a nested key, a value: not UTF-8
        at = extra.index(what)
        yield f"{what!r} not UTF-8", extra[:at] + b"\xed\xa0\x80" + extra[at + 3:], False
    at = extra.index(b"\xa4xxxx")
    yield "unknown key, bad timestamp", extra[:at] + b"\xc7\x03\xffxyz" + extra[at + 5:], False
    yield "deep nesting", extra[:at] + b"\x91" * 40 + b"\xc0" + extra[at + 5:], False
    yield "nesting within bounds", extra[:at] + b"\x91" * 20 + b"\xc0" + extra[at + 5:], True
    yield "zero-size ids", _pack(_payload(rng, ids=encode_array(np.zeros(0, "<u4")))), False


def test_variants_agree_and_the_usual_shapes_take_the_fast_path():
    assert _frames is not None, "WEIGHTTUI_REQUIRE_KERNEL=1 and weighttui._frames is not built"
    rng = np.random.default_rng(0)
    for name, body, fast in _variants(rng):
        took = _agree(body)
        assert took == fast, (name, took)


def test_random_mutations_of_payloads_agree():
    """Bytes flipped, cut or inserted anywhere: whatever C takes, Python reads the same."""
    assert _frames is not None
    rng = np.random.default_rng(1)
    r = random.Random(1)
    bodies = [b for _n, b, _f in _variants(rng)]
    taken = 0
    for _ in range(6000):
        body = bytearray(r.choice(bodies))
        for _k in range(r.choice((1, 1, 2, 4))):
            at = r.randrange(len(body))
            op = r.random()
            if op < 0.6:
                body[at] = r.randrange(256)
            elif op < 0.8:
                del body[at:at + r.randrange(1, 9)]
            else:
                body[at:at] = bytes(r.randrange(256) for _ in range(r.randrange(1, 5)))
        taken += _agree(bytes(body))
    assert taken > 500  # (many mutations hit bin data, which C reads as the Python path does)


def test_any_buffer_and_no_crash_on_garbage():
    assert _frames is not None
    body = _pack(_payload(np.random.default_rng(2)))
    want = parse_prepared(_frames.snapshot(body), TENSORS)
    for buf in (bytearray(body), memoryview(b"xx" + body)[2:]):
        assert _same_record(parse_prepared(_frames.snapshot(buf), TENSORS), want)
    r = random.Random(3)
    for n in range(0, 200):
        assert _frames.snapshot(bytes(r.randrange(256) for _ in range(n))) is None or n > 0
    assert _frames.snapshot(b"") is None
    with pytest.raises(TypeError):
        _frames.snapshot("not bytes")


def _store(path, mode: str, monkeypatch, cache=False):
    """RunData of path read by mode: "python" (no C at all), "frames" (C frame checks, no snapshot
    decoding) or "c" (both)."""
    from weighttui.data.run import RunData

    monkeypatch.setattr(fmt, "decode_snapshot", _frames.snapshot if mode == "c" else None)
    monkeypatch.setattr(fmt, "decode_scalars", _frames.scalars if mode == "c" else None)
    monkeypatch.setattr(fmt, "frame_at", None if mode == "python" else _frames.frame)
    d = RunData(path, cache=cache)
    d.refresh()
    return d


def _summary(d) -> dict:
    out = {"n": d.snapshot_count, "corruptions": list(zip(d.corruptions, d.corruption_reasons, strict=True)),
           "torn": d.torn_tail, "steps": d.steps.tolist(), "epochs": d.epochs.tolist(),
           "times": d.times.tobytes(),
           "scalars": {s: [a.tobytes() for a in d.scalars(s)] for s in d.scalar_names}}
    for name in d.tensor_names:
        for kind in ("weights", "delta", "grad"):
            if d.has_kind(kind):
                for stat in d.columns(kind):
                    s, v = d.series(name, stat, kind)
                    out[name, kind, stat] = (s.tolist(), v.tobytes())
                if kind != "grad":
                    h = d.histograms(name, kind)
                    out[name, kind, "hist"] = [a.tobytes() for a in h]
        s, v = d.samples(name)
        out[name, "samples"] = (s.tolist(), v.tobytes())
    return out


def _recorded_log(path, snapshots=12):
    import weighttui

    rng = np.random.default_rng(5)
    w = {"a.weight": rng.normal(size=(16, 8)).astype(np.float32), "b.bias": rng.normal(size=8).astype(np.float32)}
    rec = weighttui.Recorder(path, bins=16, sample=4)
    for step in range(snapshots):
        g = {k: rng.normal(0, 1e-2, v.shape).astype(np.float32) for k, v in w.items()}
        for k in w:
            w[k] -= g[k]
        if step == 7:
            w["b.bias"][3] = np.nan
        rec.snapshot(step, w, grads=g, scalars={"loss": 1.0 / (1 + step)})
    rec.close()
    return path


def test_store_reads_the_same_with_and_without_the_decoder(tmp_path, monkeypatch):
    """The conformance logs, a Recorder's log with a NaN, and damaged copies of it: the same store."""
    assert _frames is not None
    data = os.path.join(os.path.dirname(__file__), "..", "data")
    logs = [os.path.join(data, f) for f in sorted(os.listdir(data)) if f.endswith(".wtui")]
    rec = _recorded_log(str(tmp_path / "rec.wtui"))
    logs.append(rec)
    raw = bytearray(open(rec, "rb").read())
    r = random.Random(4)
    for k in range(6):
        bad = bytearray(raw)
        for _ in range(3):
            bad[r.randrange(12, len(bad))] ^= 1 << r.randrange(8)
        p = tmp_path / f"bad{k}.wtui"
        p.write_bytes(bytes(bad))
        logs.append(str(p))
    for path in logs:
        want = _summary(_store(path, "python", monkeypatch))
        assert _summary(_store(path, "frames", monkeypatch)) == want, path
        assert _summary(_store(path, "c", monkeypatch)) == want, path


def test_prepared_frames_only_where_asked(tmp_path):
    """scan_frames gives dicts unless prepared=True (LogTail, read-back and other readers keep dicts)."""
    from weighttui.log.reader import ScanState, scan_frames

    path = _recorded_log(str(tmp_path / "rec.wtui"), snapshots=3)
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        plain = [f for f in scan_frames(fd, ScanState(), size) if getattr(f, "type", None) == FrameType.SNAPSHOT]
        fast = [f for f in scan_frames(fd, ScanState(), size, prepared=True)
                if getattr(f, "type", None) == FrameType.SNAPSHOT]
    finally:
        os.close(fd)
    assert len(plain) == len(fast) == 3
    assert all(type(f.payload) is dict for f in plain)
    assert all(type(f.payload) is tuple for f in fast)


def test_frame_checks_match_the_decoders_on_damaged_streams(tmp_path, monkeypatch):
    """FrameDecoder with and without frame_at: the same frames and corruptions (offsets, reasons),
    fed in pieces of every size, with flipped bits, a torn tail and a payload msgpack refuses."""
    assert _frames is not None
    from weighttui.log.format import HEADER, FrameDecoder, encode_frame, encode_frame_bytes

    raw = bytearray(open(_recorded_log(str(tmp_path / "rec.wtui"), snapshots=6), "rb").read())
    raw += encode_frame_bytes(FrameType.EVENT, b"\xc1")  # verified frame, payload not msgpack
    raw += encode_frame_bytes(FrameType.EVENT, b"\x81\x01\x02")  # a map with an int key
    raw += encode_frame(FrameType.SCALARS, {"step": 1, "values": {}})[:-3]  # torn
    r = random.Random(6)
    streams = [bytes(raw)]
    for _ in range(8):
        bad = bytearray(raw)
        for _k in range(r.choice((1, 3))):
            bad[r.randrange(len(HEADER), len(bad))] ^= 1 << r.randrange(8)
        streams.append(bytes(bad))

    def read(stream: bytes, piece: int, fast: bool) -> list:
        monkeypatch.setattr(fmt, "frame_at", _frames.frame if fast else None)
        dec = FrameDecoder(0, file_start=True, prepared=True)
        out = []
        for at in range(0, len(stream), piece):
            dec.feed(stream[at:at + piece])
            for item in dec.frames():
                p = getattr(item, "payload", None)
                out.append((type(item).__name__, item.offset, getattr(item, "reason", None),
                            repr(p) if not isinstance(p, tuple) else repr(p[:4])))
        return out + [(dec.offset, dec.pending, dec.resyncing)]

    for stream in streams:
        for piece in (7, 4096, len(stream)):
            assert read(stream, piece, True) == read(stream, piece, False)


@pytest.mark.parametrize("top", [200, 60_000, 2**31])
@pytest.mark.parametrize("order", ["sorted", "shuffled"])
def test_sealed_segments_are_the_same_with_the_c_transposes(monkeypatch, top, order):
    """columns._grid with gather_blocks / gather_columns / gather_counts and with numpy: the same
    segments (every array, dtype and stand-in, histogram counts split per tensor), for tensors given
    in column order or not, and counts that need uint8, uint16 or uint32."""
    assert _frames is not None
    from weighttui.data.store import columns
    from weighttui.log.records import BlockRecord

    rng = np.random.default_rng(top)
    t, k, bins, rows = 7, 3, 5, 40
    cols = np.arange(t, dtype=np.int32) if order == "sorted" else rng.permutation(t).astype(np.int32)
    slen = np.full(t, k, np.int64)

    def build():
        kc = columns.KindColumns("weights")
        r2 = np.random.default_rng(1)
        for row in range(rows):
            stats = r2.normal(size=(t, len(WEIGHT_STATS)))
            stats[:, 6] = 0.25  # a constant column (a Const stand-in)
            counts = r2.integers(0, 100, (t, bins)).astype(np.uint32)
            counts[2] = r2.integers(0, top, bins)  # one tensor needs the widest dtype
            hist = (stats[:, 2].copy(), stats[:, 3].copy(), counts)
            kc.add(row, cols, BlockRecord(list(WEIGHT_STATS), stats, hist),
                   r2.normal(size=t * k).astype(np.float32), slen)
        return columns.sealed_segment(*kc.take(0, rows, True))

    def arrays(seg):
        out = {n: seg.part(n).tobytes() for n in ("rows", "cols", "lo", "hi", "counts", "samples", "soff")}
        out["types"] = [type(getattr(seg, n)).__name__ for n in ("rows", "cols", "lo", "hi", "counts", "soff")]
        out["stats"] = [(type(x).__name__, seg.part("stats", s=i).tobytes()) for i, x in enumerate(seg.stats)]
        out["dtype"] = seg.part("counts").dtype.str
        if isinstance(seg.counts, columns.Split):
            out["split"] = [None if p is None else (p.dtype.str, p.tobytes()) for p in seg.counts.parts]
            out["cls"] = seg.counts.cls.tobytes()
        return out

    calls: list = []
    monkeypatch.setattr(columns, "_gather_counts", lambda *a: calls.append(1) or _frames.gather_counts(*a))
    fast = arrays(build())
    assert calls  # (the C path was taken)
    monkeypatch.setattr(columns, "_gather_blocks", None)
    assert arrays(build()) == fast
    assert ("split" in fast) == (top > 2**8)


def _scalars_python(body: bytes):
    from weighttui.log.records import parse_scalars

    try:
        p = decode_payload(body)
    except ValueError as exc:
        return "corrupt", str(exc)
    try:
        return "record", parse_scalars(p)
    except (InvalidRecord, ValueError, TypeError, OverflowError) as exc:
        return "invalid", str(exc)


def _scalars_agree(body: bytes) -> bool:
    """Assert frames.scalars agrees with msgpack + parse_scalars on body; True if C took it."""
    from weighttui.log.records import ScalarsRecord

    got = _frames.scalars(body)
    if got is None:
        return False
    kind, want = _scalars_python(body)
    assert kind == "record", want
    rec = ScalarsRecord(*got)
    assert type(rec.step) is type(want.step) and rec.step == want.step and rec.epoch == want.epoch
    assert struct.pack("<d", rec.time) == struct.pack("<d", want.time)
    assert list(rec.values) == list(want.values)
    assert [struct.pack("<d", v) for v in rec.values.values()] == [struct.pack("<d", v) for v in want.values.values()]
    return True


def test_scalars_payloads_agree():
    """frames.scalars (a scalars frame in C, for prepared readers) against msgpack + parse_scalars: the
    same record for what it takes, variants and random mutations."""
    assert _frames is not None
    base = {"step": 5, "epoch": 1, "time": 1.7e9, "values": {"loss": 0.25, "lr": 1e-3, "n": 7, "big": 2**62 + 1}}
    cases = [
        (base, True),
        (dict(base, epoch=None, time=None), True),
        ({"step": 5, "values": {}}, True),
        (dict(base, time=-0.0), True),
        (dict(base, time=float("nan")), True),
        (dict(base, extra=[1, "x", {"a": None}]), True),
        (dict(base, values={"é": float("inf"), "x": -3}), True),
        (dict(base, step=2**63), False),
        (dict(base, step=True), False),
        (dict(base, time=3), False),
        (dict(base, values={"a": True}), False),
        (dict(base, values={"a": "1"}), False),
        (dict(base, values={1: 1.0}), False),
        (dict(base, values={"a": 2**64 - 1}), False),
        (dict(base, values=[1.0]), False),
        ({"values": {}}, False),
        ({"step": 1}, False),
    ]
    bodies = []
    for payload, fast in cases:
        body = _pack(payload)
        bodies.append(body)
        assert _scalars_agree(body) == fast, payload
    body = _pack(base)
    assert _scalars_agree(b"\xde\x00\x04" + body[1:])  # a map16 for the small map
    assert not _scalars_agree(b"\x85" + body[1:] + b"\xa4step\x06")  # a repeated key
    r = random.Random(8)
    taken = 0
    for _ in range(4000):
        b = bytearray(r.choice(bodies))
        for _k in range(r.choice((1, 2))):
            at = r.randrange(len(b))
            if r.random() < 0.7:
                b[at] = r.randrange(256)
            else:
                del b[at:at + r.randrange(1, 4)]
        taken += _scalars_agree(bytes(b))
    assert taken > 200


def _light_as(a, b) -> bool:
    """Whether a light record's array `a` (records.Omitted where the usual dtypes let it) stands for b."""
    from weighttui.log.records import Omitted

    if type(a) is Omitted:
        return b is not None and a.shape == b.shape and a.dtype == b.dtype and a.nbytes == b.nbytes \
            and a.size == b.size
    return _same_array(a, b)


def _light_agrees(full_tuple, light_tuple) -> bool:
    """parse_prepared of a light decode: the full decode's record (or its InvalidRecord, the same
    message), its usual histograms and sample as Omitted stand-ins of their shapes; True if it left any."""
    from weighttui.log.records import Omitted

    try:
        want = parse_prepared(full_tuple, TENSORS, {})
    except InvalidRecord as exc:
        with pytest.raises(InvalidRecord) as got:
            parse_prepared(light_tuple, TENSORS, {})
        assert str(got.value) == str(exc)
        return False
    got = parse_prepared(light_tuple, TENSORS, {})
    assert (got.step, got.epoch, got.batch, got.time) == (want.step, want.epoch, want.batch, want.time) \
        or math.isnan(want.time)
    assert _same_array(got.ids, want.ids) and _light_as(got.sample, want.sample)
    left = type(got.sample) is Omitted
    for k, raw in zip(("weights", "delta", "grad", "optim"), full_tuple[5:9], strict=True):
        a, b = getattr(got, k), getattr(want, k)
        if a is None or b is None:
            assert a is None and b is None
            continue
        assert a.names == b.names and _same_array(a.stats, b.stats)
        assert (a.hist is None) == (b.hist is None)
        if a.hist is not None:
            assert all(_light_as(x, y) for x, y in zip(a.hist, b.hist, strict=True))
            # only float64 edges with uint32 counts are left out (nothing to convert or range-check)
            lo, hi, counts = raw[2]  # (as the payload has them)
            assert (type(a.hist[2]) is Omitted) == (lo.dtype == hi.dtype == np.float64 and counts.dtype == np.uint32)
            left = left or type(a.hist[2]) is Omitted
    if want.sample is not None:
        assert (type(got.sample) is Omitted) == (full_tuple[9].dtype == np.float32)
    return left


def test_light_decoding_leaves_out_only_the_usual_histograms_and_samples():
    """snapshot(body, True) and frame(buf, pos, 2): the same record as the full decode, or the same
    InvalidRecord, but with the usual histograms and samples as records.Omitted (no data copied)."""
    assert _frames is not None
    from weighttui.log.format import encode_frame_bytes

    rng = np.random.default_rng(8)
    left = 0
    for name, body, fast in _variants(rng):
        full, light = _frames.snapshot(body), _frames.snapshot(body, True)
        assert (full is None) == (light is None) == (not fast), name
        if full is None:
            continue
        left += _light_agrees(full, light)
        frame = encode_frame_bytes(FrameType.SNAPSHOT, body)
        end, ftype, framed = _frames.frame(frame, 0, 2)
        assert (end, ftype) == (len(frame), FrameType.SNAPSHOT)
        _light_agrees(full, framed)
        if _python(body)[0] == "record":
            assert _same_record(parse_prepared(_frames.frame(frame, 0, 1)[2], TENSORS), parse_prepared(full, TENSORS))
        assert _frames.frame(frame, 0, 0)[2] is None
    assert left > 10


def test_a_light_read_is_the_same_with_and_without_the_decoder(tmp_path, monkeypatch):
    """index_histograms=False (`weighttui info`: the C decoder's light scan leaves histograms and samples
    in their frames) with the C decoder, with only its frame checks, and in Python: the same run as a
    read without an index, and so is the full reader after it (which indexes them)."""
    assert _frames is not None
    from weighttui.data.run import RunData
    from weighttui.data.store import columns as store_columns
    from weighttui.data.store import index as store_index

    monkeypatch.setattr(store_index, "MIN_LOG_BYTES", 0)
    monkeypatch.setattr(store_columns, "SEAL_ENTRIES", 40)
    monkeypatch.setattr(store_index, "SEAL_ENTRIES", 40)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    log = _recorded_log(str(tmp_path / "rec.wtui"), snapshots=45)
    want = _summary(_store(log, "python", monkeypatch))
    for mode in ("python", "frames", "c"):
        path = tmp_path / mode / "rec.wtui"
        path.parent.mkdir()
        path.write_bytes(open(log, "rb").read())
        _store(str(path), mode, monkeypatch)  # (sets the decoders of the mode)
        light = RunData(str(path), index_histograms=False)
        light.refresh()
        assert light.index_path is not None
        assert _summary(light) == want, mode
        full = RunData(str(path))
        full.refresh()
        assert _summary(full) == want, mode
