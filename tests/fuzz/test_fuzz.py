"""Fuzzing the reader: frame decoder and payload validation (hypothesis).

A log is input from someone else. Whatever its bytes, the reader must only
yield frames and counted corruptions (never raise anything else), must not
hang, must keep memory bounded by the frame cap, and must recover every frame
whose bytes survived intact. Payloads that are valid msgpack with good CRCs but
break docs/FORMAT.md are rejected frame by frame as counted corruptions, and
the frames after them still count.
"""

from __future__ import annotations

import math
import sys
import tracemalloc

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import weighttui.log.format
from weighttui.data.run import RunData
from weighttui.log.format import (
    HEADER,
    HEADER_SIZE,
    MAX_PAYLOAD,
    SYNC,
    Corruption,
    Frame,
    FrameDecoder,
    FrameType,
    encode_array,
    encode_frame,
    encode_frame_bytes,
)
from weighttui.log.tail import Poll
from weighttui.record.stats import DELTA_STATS, WEIGHT_STATS

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------- a valid log


def _block(names, t, bins=8, seed=0):
    rng = np.random.default_rng(seed)
    return {"names": list(names), "stats": encode_array(rng.normal(size=(t, len(names)))),
            "hist": {"lo": encode_array(np.zeros(t)), "hi": encode_array(np.ones(t)),
                     "counts": encode_array(rng.integers(0, 9, (t, bins)).astype("<u4"))}}


def run_payload():
    return {"run_id": "ab", "created": 1.0, "host": "h", "pid": 1, "argv": ["x"],
            "framework": "numpy", "writer": "weighttui", "bins": 8, "meta": {"m": 1}}


def tensors_payload(ids=(0, 1)):
    return {"tensors": [{"id": i, "name": f"t{i}.weight", "layer": f"t{i}", "shape": [2, 3],
                         "dtype": "float32", "trainable": True,
                         "sample_index": encode_array(np.array([0, 5], dtype="<i8"))} for i in ids]}


def snapshot_payload(step, ids=(0, 1)):
    t = len(ids)
    return {"step": step, "epoch": step // 10, "batch": None, "time": 1.0 + step,
            "ids": encode_array(np.array(ids, dtype="<u4")),
            "weights": _block(WEIGHT_STATS, t, seed=step), "delta": _block(DELTA_STATS, t, seed=step + 1),
            "grad": None, "sample": encode_array(np.arange(2 * t, dtype="<f4"))}


def valid_frames(n_snapshots=12):
    """Distinct frames of every record type (each unique, so it can be found by content)."""
    frames = [encode_frame(FrameType.RUN, run_payload()),
              encode_frame(FrameType.TENSORS, tensors_payload())]
    for step in range(n_snapshots):
        frames.append(encode_frame(FrameType.SNAPSHOT, snapshot_payload(step)))
        frames.append(encode_frame(FrameType.SCALARS, {"step": step, "epoch": None, "time": 2.0,
                                                       "values": {"loss": 1.0 / (step + 1)}}))
        if step % 4 == 3:
            frames.append(encode_frame(FrameType.EVENT, {"step": step, "time": 3.0, "level": "warning",
                                                         "kind": "k", "message": f"m{step}", "tensor": 0}))
            frames.append(encode_frame(FrameType.VALUES, {
                "step": step, "epoch": None, "id": 1, "offset": 0,
                "value": encode_array(np.arange(6, dtype="<f4") + step)}))
    frames.append(encode_frame(FrameType.END, {"time": 9.0, "status": "finished",
                                               "snapshots": n_snapshots, "dropped": 0}))
    return frames


FRAMES = valid_frames()
LOG = b"".join(FRAMES)


def decode_all(data: bytes, cuts=()):
    """Feed data in pieces (cut at the given offsets); every item, in order."""
    dec = FrameDecoder(HEADER_SIZE)
    items, start = [], 0
    for cut in sorted(set(c for c in cuts if 0 < c < len(data))) + [len(data)]:
        dec.feed(data[start:cut])
        start = cut
        items.extend(dec.frames())
    return items, dec


# ------------------------------------------------------------ frame decoder


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, len(LOG) - 1), st.integers(0, 7)),
    st.tuples(st.just("insert"), st.integers(0, len(LOG)), st.binary(min_size=1, max_size=40)),
    st.tuples(st.just("delete"), st.integers(0, len(LOG) - 1), st.integers(1, 300)),
    st.tuples(st.just("sync"), st.integers(0, len(LOG)), st.binary(max_size=20)),
)


def mutate(data: bytes, mutations) -> bytes:
    buf = bytearray(data)
    for kind, pos, arg in mutations:
        pos = min(pos, len(buf))
        if kind == "flip" and pos < len(buf):
            buf[pos] ^= 1 << arg
        elif kind == "insert":
            buf[pos:pos] = arg
        elif kind == "delete":
            del buf[pos : pos + arg]
        elif kind == "sync":  # a fake frame start: sync, then junk
            buf[pos:pos] = SYNC + arg
    return bytes(buf)


@FUZZ
@given(muts=st.lists(mutation, min_size=1, max_size=6),
       cuts=st.lists(st.integers(0, len(LOG) + 400), max_size=8),
       truncate=st.integers(0, 400))
def test_damaged_log_yields_only_intact_frames_and_all_of_them(muts, cuts, truncate):
    data = mutate(LOG, muts)
    data = data[: max(0, len(data) - truncate)]
    items, dec = decode_all(data, cuts)
    assert all(isinstance(i, (Frame, Corruption)) for i in items)
    offsets = [i.offset for i in items]
    assert offsets == sorted(offsets)
    got = {i.offset: i for i in items if isinstance(i, Frame)}
    # every original frame whose bytes are still there, whole, is decoded where it is
    intact = {}
    for fb in FRAMES:
        at = data.find(fb)
        if at >= 0:
            intact[at + HEADER_SIZE] = fb
    for off, fb in intact.items():
        assert off in got, f"intact frame at {off} lost"
        assert got[off].size == len(fb)
        assert got[off].payload == msgpack.unpackb(fb[16:-4], raw=False)
    # and nothing else passes for a frame
    assert set(got) <= set(intact)
    # what is left over can only be an unfinished frame at the end
    assert dec.pending <= len(data)


@FUZZ
@given(st.binary(max_size=4000), st.lists(st.integers(0, 4000), max_size=6))
def test_random_bytes_never_raise(data, cuts):
    items, _dec = decode_all(data, cuts)
    assert all(isinstance(i, (Frame, Corruption)) for i in items)


def decode_file(data: bytes, cuts=()):
    """Feed a whole file (header first) in pieces; every item, in order, and the decoder."""
    dec = FrameDecoder(0, file_start=True)
    items, start = [], 0
    for cut in sorted(set(c for c in cuts if 0 < c < len(data))) + [len(data)]:
        dec.feed(data[start:cut])
        start = cut
        items.extend(dec.frames())
    dec.end_of_data()
    return items, dec


@FUZZ
@given(damage=st.binary(max_size=600), cut=st.integers(0, 700), cuts=st.lists(st.integers(0, len(LOG)), max_size=6))
def test_a_damaged_start_costs_only_the_frames_it_touched(damage, cut, cuts):
    """Whatever replaces the start of a file, every frame wholly after the damage is read where it
    is, the damage is reported once at offset 0, and nothing else passes for a frame."""
    whole = HEADER + LOG
    data = damage + whole[cut:]
    if data[:8] == HEADER[:8]:
        return  # the magic bytes survived: not a damaged start (the version decides: check_header)
    items, dec = decode_file(data, cuts)
    assert isinstance(items[0], Corruption) and items[0].offset == 0 and "bad magic bytes" in items[0].reason
    offsets = [i.offset for i in items]
    assert offsets == sorted(offsets)
    got = {i.offset for i in items if isinstance(i, Frame)}
    at, intact = HEADER_SIZE, set()
    for fb in FRAMES:  # frames wholly after the replaced bytes, where they now are
        if at >= cut:
            intact.add(at - cut + len(damage))
        at += len(fb)
    assert intact <= got
    # a frame before them is one whose whole bytes are still there (one that the damage left whole)
    for item in items:
        if isinstance(item, Frame) and item.offset not in intact:
            assert data[item.offset:item.offset + item.size] in FRAMES


@FUZZ
@given(st.binary(max_size=4000), st.lists(st.integers(0, 4000), max_size=6))
def test_random_bytes_read_as_a_file_are_a_log_or_refused_with_one_message(data, cuts):
    try:
        items, _dec = decode_file(data, cuts)
    except weighttui.log.format.LogFormatError as exc:
        assert str(exc).startswith(("not a weighttui run log", "written by a newer weighttui"))
        return
    assert all(isinstance(i, (Frame, Corruption)) for i in items)


@FUZZ
@given(st.binary(max_size=3000))
def test_random_payload_behind_good_crcs_is_a_frame_or_a_corruption(body):
    items, _ = decode_all(encode_frame_bytes(FrameType.SNAPSHOT, body) + FRAMES[0])
    assert len(items) >= 2
    assert isinstance(items[-1], Frame) and items[-1].type == FrameType.RUN  # read on after it
    if isinstance(items[0], Frame):
        assert isinstance(items[0].payload, dict)


def test_length_at_the_cap_waits_without_allocating():
    """A verified header claiming 256 MiB allocates nothing until those bytes exist."""
    head = encode_frame_bytes(FrameType.VALUES, b"\x80")[:16]
    forged = bytearray(head)
    forged[4:8] = MAX_PAYLOAD.to_bytes(4, "little")
    import zlib

    forged[12:16] = zlib.crc32(bytes(forged[:12])).to_bytes(4, "little")
    tracemalloc.start()
    try:
        items, dec = decode_all(bytes(forged) + b"\0" * 1000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert items == [] and dec.pending == 1016
    assert dec.wanted() == MAX_PAYLOAD + 20 - 1016  # a reader fetches this, bounded by the file
    assert peak < 1_000_000


def test_many_fake_syncs_do_not_hang():
    """Resynchronising through a megabyte of sync markers stays linear."""
    data = SYNC * 250_000 + FRAMES[0]
    items, _ = decode_all(data, cuts=range(0, len(data), 65536))
    assert [i.type for i in items if isinstance(i, Frame)] == [FrameType.RUN]
    assert sum(isinstance(i, Corruption) for i in items) == 1  # one damaged stretch, one count


# ------------------------------------------------------- payload validation

msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=8) | st.binary(max_size=16),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4),
    max_leaves=12,
)


def _paths(obj, prefix=()):
    """Every key path into nested dicts/lists of a payload."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _replace(obj, path, value):
    if not path:
        return value
    obj = obj.copy() if isinstance(obj, (dict, list)) else obj
    obj[path[0]] = _replace(obj[path[0]], path[1:], value)
    return obj


BASES = {FrameType.RUN: run_payload(), FrameType.TENSORS: tensors_payload((2,)),
         FrameType.SNAPSHOT: snapshot_payload(5),
         FrameType.SCALARS: {"step": 5, "epoch": 0, "time": 1.0, "values": {"a": 1.0}},
         FrameType.EVENT: {"step": 5, "time": 1.0, "level": "info", "kind": "k", "message": "m", "tensor": 0},
         FrameType.VALUES: {"step": 5, "epoch": None, "id": 0, "offset": 0,
                            "value": encode_array(np.zeros(6, dtype="<f4"))},
         FrameType.END: {"time": 1.0, "status": "finished", "snapshots": 1, "dropped": 0}}


def ingest_frames(payloads):
    """Encode (type, payload) frames after a header and ingest them whole."""
    body = b"".join(encode_frame(t, p) for t, p in payloads)
    items, _ = decode_all(body)
    data = RunData(None)
    poll = Poll(frames=[i for i in items if isinstance(i, Frame)],
                corruptions=[i for i in items if isinstance(i, Corruption)], size=len(body) + 12)
    data.ingest(poll)
    return data, items


@FUZZ
@given(ftype=st.sampled_from(sorted(BASES)), pick=st.integers(0, 10_000), value=msgpack_values)
@example(ftype=FrameType.SNAPSHOT, pick=0, value=8)  # a valid step above the next snapshot's (found by the fuzzer)
def test_schema_violations_are_counted_frame_by_frame(ftype, pick, value):
    base = BASES[ftype]
    paths = list(_paths(base))[1:]
    path = paths[pick % len(paths)]
    bad = _replace(base, path, value)
    frames = [(FrameType.RUN, run_payload()), (FrameType.TENSORS, tensors_payload()),
              (FrameType.SNAPSHOT, snapshot_payload(1)), (ftype, bad),
              (FrameType.SNAPSHOT, snapshot_payload(7))]
    if ftype == FrameType.RUN:  # a new run: the last snapshot needs declared tensors again
        frames.insert(4, (FrameType.TENSORS, tensors_payload()))
    data, items = ingest_frames(frames)
    offsets = [i.offset for i in items]
    rejected = offsets[3] in data.corruptions
    expected = [offsets[3]] if rejected else []
    if ftype == FrameType.RUN and rejected:  # still the old run: the re-declaration clashes
        expected.append(offsets[4])
    # a valid fuzzed step above the next snapshot's 7: that next snapshot is the one that goes back
    went_back = (ftype == FrameType.SNAPSHOT and not rejected and path == ("step",)
                 and isinstance(value, int | float) and not isinstance(value, bool) and value > 7)
    if went_back:
        expected.append(offsets[4])
    # nothing escapes; the fuzzed frame is either valid or one counted corruption
    assert data.corruptions == expected, data.corruption_reasons
    # and the frames after it still count
    assert data.steps[-1] == (value if went_back else 7)
    assert data.tensor_names[:2] == ["t0.weight", "t1.weight"]
    for kind in ("weights", "delta"):
        for stat in data.columns(kind):
            m = data.stat_matrix(kind, stat)
            assert m.shape[0] == data.n
    if not rejected and ftype == FrameType.SNAPSHOT:
        assert data.snapshot_count in (2, 3)


def _bad_array(**over):
    arr = encode_array(np.zeros((2, len(WEIGHT_STATS))))
    arr.update(over)
    return arr


def _snap(**over):
    p = snapshot_payload(3)
    for k, v in over.items():
        p[k] = v
    return p


SCHEMA_CASES = {
    "step is a string": _snap(step="3"),
    "step is NaN": _snap(step=math.nan),
    "step is a bool": _snap(step=True),
    "step beyond int64": _snap(step=2**64 - 1),
    "step goes backwards": _snap(step=0),
    "ids never declared": _snap(ids=encode_array(np.array([0, 9], dtype="<u4"))),
    "ids twice": _snap(ids=encode_array(np.array([1, 1], dtype="<u4"))),
    "ids are floats": _snap(ids=encode_array(np.array([0.0, 1.0]))),
    "byte length short": _snap(weights={"names": list(WEIGHT_STATS), "stats": _bad_array(data=b"\0" * 7)}),
    "huge shape": _snap(weights={"names": list(WEIGHT_STATS), "stats": _bad_array(shape=[2**62, 2**62])}),
    "negative shape": _snap(weights={"names": list(WEIGHT_STATS), "stats": _bad_array(shape=[-2, -9])}),
    "object dtype": _snap(weights={"names": list(WEIGHT_STATS), "stats": _bad_array(dtype="|O")}),
    "big-endian dtype": _snap(weights={"names": list(WEIGHT_STATS), "stats": _bad_array(dtype=">f8")}),
    "pickle dtype": _snap(weights={"names": list(WEIGHT_STATS), "stats": _bad_array(dtype="V8")}),
    "weights missing": _snap(weights=None),
    "names not strings": _snap(weights={"names": [1] * 9, "stats": _bad_array()}),
    "rows do not match ids": _snap(weights={"names": list(WEIGHT_STATS),
                                            "stats": encode_array(np.zeros((3, 9)))}),
    "negative histogram counts": _snap(delta={"names": list(DELTA_STATS),
                                              "stats": encode_array(np.zeros((2, 6))),
                                              "hist": {"lo": encode_array(np.zeros(2)),
                                                       "hi": encode_array(np.ones(2)),
                                                       "counts": encode_array(np.full((2, 8), -5, "<i8"))}}),
    "sample of wrong length": _snap(sample=encode_array(np.zeros(3, dtype="<f4"))),
}


@pytest.mark.parametrize("case", sorted(SCHEMA_CASES))
def test_schema_violation_is_one_corruption_and_reading_goes_on(case):
    frames = [(FrameType.RUN, run_payload()), (FrameType.TENSORS, tensors_payload()),
              (FrameType.SNAPSHOT, snapshot_payload(1)), (FrameType.SNAPSHOT, SCHEMA_CASES[case]),
              (FrameType.SNAPSHOT, snapshot_payload(7))]
    data, items = ingest_frames(frames)
    assert data.corruptions == [items[3].offset], data.corruption_reasons
    assert data.steps.tolist() == [1, 7] and data.snapshot_count == 2
    assert data.present.all()


@pytest.mark.parametrize("case", ["huge declared shape", "too many dims", "sample index outside",
                                  "bins absurd", "values outside tensor", "a million histogram bins"])
def test_other_schema_violations(case):
    frames = [(FrameType.RUN, run_payload()), (FrameType.TENSORS, tensors_payload())]
    if case == "huge declared shape":
        t = tensors_payload((5,))
        t["tensors"][0]["shape"] = [2**40, 2**40]
        frames.append((FrameType.TENSORS, t))
    elif case == "too many dims":
        t = tensors_payload((5,))
        t["tensors"][0]["shape"] = [1] * 100
        t["tensors"][0]["sample_index"] = None
        frames.append((FrameType.TENSORS, t))
    elif case == "sample index outside":
        t = tensors_payload((5,))
        t["tensors"][0]["sample_index"] = encode_array(np.array([0, 6], dtype="<i8"))
        frames.append((FrameType.TENSORS, t))
    elif case == "bins absurd":
        frames.append((FrameType.RUN, dict(run_payload(), bins=10**12)))
    elif case == "a million histogram bins":  # the first histogram sets a reader's bin count
        frames.append((FrameType.SNAPSHOT, _snap(delta={
            "names": list(DELTA_STATS), "stats": encode_array(np.zeros((2, 6))),
            "hist": {"lo": encode_array(np.zeros(2)), "hi": encode_array(np.ones(2)),
                     "counts": encode_array(np.zeros((2, 1 << 20), "<u1"))}})))
    elif case == "values outside tensor":
        frames.append((FrameType.VALUES, {"step": 1, "epoch": None, "id": 0, "offset": 4,
                                          "value": encode_array(np.zeros(6, dtype="<f4"))}))
    data, items = ingest_frames(frames + [(FrameType.SNAPSHOT, snapshot_payload(2))])
    assert data.corruptions == [items[2].offset], data.corruption_reasons
    assert data.snapshot_count == 1


def _map_keys(obj):
    """Every key of every map in a decoded msgpack object (the strings msgpack interns)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from _map_keys(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _map_keys(v)


@settings(max_examples=25, deadline=None)
@given(kind=st.sampled_from(["nested lists", "long list", "map", "strings"]), n=st.integers(1000, 50_000))
def test_decoded_payload_memory_is_bounded_by_its_length(kind, n):
    """msgpack objects cost more than their bytes; check how much more (for docs/security.md)."""
    if kind == "nested lists":
        obj = {"x": [[] for _ in range(n)]}
    elif kind == "long list":
        obj = {"x": [None] * n}
    elif kind == "map":
        obj = {"x": {str(i): i for i in range(n)}}
    else:
        obj = {"x": [str(i) for i in range(n)]}
    frame = encode_frame(FrameType.EVENT, obj)
    # msgpack interns map keys, and inserting new ones may resize the interpreter's table of interned
    # strings: a table the whole process filled, counted here at once (18 MB in a full run, 2 MB in a
    # fresh one), and not memory the payload holds. So the keys are interned before counting (kept
    # alive by `first`: the counted decode finds them and inserts nothing) and their own sizes, which
    # the counted decode then does not allocate, are added to its count.
    first, _ = decode_all(frame)
    tracemalloc.start(4)  # deep enough to reach decode_all, in this file
    try:
        items, _ = decode_all(frame)
        # only what this decode allocated (and the frame still holds): allocations made in the
        # decoder's module by other threads (a follower left by an earlier test, decoding its own
        # frames) are not this call's, and made the count flaky in the full suite
        snap = (tracemalloc.take_snapshot()
                .filter_traces([tracemalloc.Filter(True, __file__, all_frames=True)])
                .filter_traces([tracemalloc.Filter(True, weighttui.log.format.__file__)]))
        held = sum(stat.size for stat in snap.statistics("filename"))
    finally:
        tracemalloc.stop()
    assert isinstance(items[0], Frame)
    held += sum(sys.getsizeof(k) for k in _map_keys(items[0].payload))
    del first
    assert held <= 80 * len(frame) + 100_000


# ------------------------------------------------------------------ atheris

ATHERIS_HARNESS = '''
import sys, atheris
with atheris.instrument_imports():
    from weighttui.log.tail import Poll
    from weighttui.log.format import Corruption, Frame, FrameDecoder
    from weighttui.data.run import RunData

def one(data: bytes):
    dec = FrameDecoder(12)
    half = len(data) // 2
    items = []
    for part in (data[:half], data[half:]):
        dec.feed(part)
        items.extend(dec.frames())
    run = RunData(None, max_rows=8)
    run.ingest(Poll(frames=[i for i in items if isinstance(i, Frame)],
                    corruptions=[i for i in items if isinstance(i, Corruption)]))
    run.steps, run.tensor_names, run.status

atheris.Setup(sys.argv, one)
atheris.Fuzz()
'''


def test_atheris_coverage_guided_fuzzing(tmp_path):
    """libFuzzer-driven bytes through decoder and RunData, seeded with real frames."""
    pytest.importorskip("atheris")
    import subprocess
    import sys

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(min(6, len(FRAMES))):
        (corpus / f"seed{i}").write_bytes(b"".join(FRAMES[: i + 1]))
    proc = subprocess.run([sys.executable, "-c", ATHERIS_HARNESS, "-runs=3000", "-max_len=4096",
                           "-rss_limit_mb=2048", f"-artifact_prefix={tmp_path}/", str(corpus)],
                          capture_output=True, text=True, timeout=240, cwd=tmp_path)
    report = proc.stderr[-4000:]
    assert proc.returncode == 0, report
    assert "Done 3000 runs" in proc.stderr, report
