"""The first-open fast paths (docs/store.md, "Third round") read exactly what the plain paths read.

- scan_frames' read-ahead thread: the same frames, corruptions and ScanState as one
  thread reading, also for a damaged log and a torn tail, and a scan closed early
  leaves no read behind;
- decode_array's fast path: every array the full checks accept or refuse comes out
  the same (value, dtype, shape, or the refusal);
- the column-name and payload-key checks cached per list still refuse a list that
  differs in one item;
- the row tables' list-then-array appends (`_Growing`) read back every value in order.
"""

from __future__ import annotations

import os

import msgpack
import numpy as np
import pytest

from weighttui.data.store.builder import _Growing
from weighttui.log import format as fmt
from weighttui.log import reader
from weighttui.log.format import HEADER, FrameType, decode_array, decode_payload, encode_frame
from weighttui.log.reader import ScanState, scan_frames
from weighttui.log.records import InvalidRecord, _block


def _log(path, n=300, seed=0, damage=(), torn=0):
    rng = np.random.default_rng(seed)
    out = bytearray(HEADER)
    for i in range(n):
        out += encode_frame(FrameType.SCALARS, {"step": i, "values": {"loss": float(i)},
                                                "pad": rng.bytes(int(rng.integers(0, 3000)))})
    for at in damage:
        out[at] ^= 0xFF
    if torn:
        out += encode_frame(FrameType.SCALARS, {"step": n, "values": {}})[:torn]
    path.write_bytes(bytes(out))
    return path


def _scan(path, chunk, ahead: bool, monkeypatch):
    monkeypatch.setattr(reader, "READ_AHEAD_MIN", 0 if ahead else 1 << 62)
    fd = os.open(path, os.O_RDONLY)
    try:
        state = ScanState()
        items = [(type(i).__name__, i.offset, getattr(i, "payload", getattr(i, "reason", None)))
                 for i in scan_frames(fd, state, os.fstat(fd).st_size, chunk=chunk)]
        return items, (state.offset, state.resyncing, state.pending)
    finally:
        os.close(fd)


@pytest.mark.parametrize("damage,torn", [((), 0), ((5000, 5001, 90_000, 300_000), 0), ((70_000,), 9)])
@pytest.mark.parametrize("chunk", [4096, 65536, 1 << 20])
def test_read_ahead_reads_what_one_thread_reads(tmp_path, monkeypatch, damage, torn, chunk):
    path = _log(tmp_path / "run.wtui", damage=damage, torn=torn)
    plain = _scan(path, chunk, False, monkeypatch)
    ahead = _scan(path, chunk, True, monkeypatch)
    assert ahead == plain
    assert sum(1 for kind, _o, _p in plain[0] if kind == "Frame") >= 290
    if damage:
        assert any(kind == "Corruption" for kind, _o, _p in plain[0])
    if torn:
        assert plain[1][2] == torn  # the torn tail is pending, as without the read-ahead


def test_a_scan_closed_early_leaves_no_read_behind(tmp_path, monkeypatch):
    path = _log(tmp_path / "run.wtui", n=600)
    monkeypatch.setattr(reader, "READ_AHEAD_MIN", 0)
    fd = os.open(path, os.O_RDONLY)
    gen = scan_frames(fd, ScanState(), os.fstat(fd).st_size, chunk=4096)
    first = [next(gen) for _ in range(5)]
    gen.close()  # the read-ahead's pending read is waited for here, before the caller closes the fd
    os.close(fd)
    assert [f.payload["step"] for f in first] == [0, 1, 2, 3, 4]
    pool = reader.READ_AHEAD.started
    assert pool is not None and pool.submit(lambda: 1).result() == 1  # the thread is free again


_ARRAYS = [
    {"dtype": "<f8", "shape": [3], "data": np.arange(3.0).tobytes()},
    {"dtype": "<u4", "shape": [2, 3], "data": np.arange(6, dtype="<u4").tobytes()},
    {"dtype": "<i8", "shape": [4], "data": np.arange(4).tobytes()},
    {"dtype": "|u1", "shape": [2, 2], "data": b"abcd"},
    {"dtype": "<f4", "shape": [0], "data": b""},
    {"dtype": "<f4", "shape": [0, 3], "data": b""},
    {"dtype": "<f4", "shape": [2, 0], "data": b""},
    {"dtype": "<f8", "shape": [True], "data": np.arange(1.0).tobytes()},  # a bool is not a dimension
    {"dtype": "<f8", "shape": [1.0], "data": np.arange(1.0).tobytes()},
    {"dtype": "<f8", "shape": [-1], "data": b""},
    {"dtype": "<f8", "shape": [2], "data": np.arange(3.0).tobytes()},  # length mismatch
    {"dtype": "<f8", "shape": [2], "data": bytearray(np.arange(2.0).tobytes())},
    {"dtype": ">f8", "shape": [2], "data": np.arange(2.0).tobytes()},  # big-endian: refused
    {"dtype": ["<f8"], "shape": [2], "data": np.arange(2.0).tobytes()},  # unhashable dtype
    {"dtype": "bf16", "shape": [2], "data": b"\x80\x3f\x00\x40"},
    {"dtype": "<f8", "shape": [1, 1, 2], "data": np.arange(2.0).tobytes()},
    {"dtype": "<f8", "shape": (2,), "data": np.arange(2.0).tobytes()},
    {"dtype": "<f8", "data": np.arange(2.0).tobytes()},
    [1, 2],
]


@pytest.mark.parametrize("ndim", [None, 1, 2])
@pytest.mark.parametrize("obj", _ARRAYS)
def test_decode_array_fast_path_agrees_with_the_full_checks(obj, ndim):
    for _ in range(2):  # (the second time, every dtype string is known to the fast path)
        try:
            want = fmt._decode_array_checked(obj, ndim)
        except ValueError as exc:
            with pytest.raises(ValueError) as got:
                decode_array(obj, ndim=ndim)
            assert str(got.value) == str(exc)
            continue
        got = decode_array(obj, ndim=ndim)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


def test_cached_name_and_key_checks_still_refuse_a_different_list():
    stats = {"dtype": "<f8", "shape": [2, 2], "data": np.zeros(4).tobytes()}
    ok = {"names": ["norm", "mean"], "stats": stats}
    assert _block(ok, "weights", 2, True).names == ["norm", "mean"]
    assert _block(ok, "weights", 2, True).names == ["norm", "mean"]  # from the cache
    with pytest.raises(InvalidRecord, match="names is not a list of strings"):
        _block({"names": ["norm", 1], "stats": stats}, "weights", 2, True)
    with pytest.raises(InvalidRecord, match="names is not a list of strings"):
        _block({"names": ["norm", ["mean"]], "stats": stats}, "weights", 2, True)  # unhashable
    with pytest.raises(InvalidRecord, match=r"weights stats has shape \(2, 2\), expected \(3, 2\)"):
        _block(ok, "weights", 3, True)
    with pytest.raises(InvalidRecord, match="delta hist lo: array"):
        _block(dict(ok, hist={"lo": {"dtype": "<f8"}}), "delta", 2, True)
    body = msgpack.packb({"step": 1, "values": {}}, use_bin_type=True)
    assert decode_payload(body) == decode_payload(body) == {"step": 1, "values": {}}
    for bad in ({"step": 1, 2: {}}, {1: 1, "values": {}}):
        with pytest.raises(ValueError, match="string keys"):
            decode_payload(msgpack.packb(bad, use_bin_type=True))


def test_row_table_appends_read_back_in_order():
    g = _Growing(np.int64, -1)
    want: list[int] = []
    for i in range(1000):
        g.append(i * 3)
        want.append(i * 3)
        assert g.last == i * 3 and g.n == len(want)
        if i % 97 == 0:  # reads in between join the pending values to the array
            np.testing.assert_array_equal(g.view, want)
            assert int(g.a[g.n - 1]) == want[-1]
    np.testing.assert_array_equal(g.view, want)
    loaded = _Growing(np.float64, data=np.array([1.5, 2.5]))
    assert loaded.n == 2 and loaded.last == 2.5
    loaded.append(np.nan)
    loaded.append(7)
    np.testing.assert_array_equal(loaded.view, [1.5, 2.5, np.nan, 7.0])
    assert loaded.view.dtype == np.float64
    empty = _Growing(np.float64)
    assert empty.n == 0 and empty.last is None and empty.view.size == 0


def test_a_forked_child_reads_and_indexes_with_threads_of_its_own(tmp_path, monkeypatch):
    """The read-ahead and the index writer are one thread each per process; a child forked after
    the parent used them (a DataLoader worker opening a log) must start its own, not wait forever
    on the parent's executors, which have no thread in the child."""
    import signal

    import weighttui
    from tests.logbuilder import fixed_log
    from weighttui.data.store import index as store_index

    monkeypatch.setattr(reader, "READ_AHEAD_MIN", 0)
    monkeypatch.setattr(store_index, "MIN_LOG_BYTES", 0)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    fixed_log(tmp_path / "a.wtui", steps=40)
    fixed_log(tmp_path / "b.wtui", steps=40)
    want = weighttui.open(tmp_path / "a.wtui").series("head.weight", "norm")[1]
    # both used in the parent
    assert reader.READ_AHEAD.started is not None and store_index.INDEX_WRITER.started is not None
    pid = os.fork()
    if pid == 0:  # the child: a hang is ended by the alarm (exit status 14), a wrong value by 3
        code = 1
        try:
            signal.alarm(60)
            got = weighttui.open(tmp_path / "b.wtui").series("head.weight", "norm")[1]
            code = 0 if np.array_equal(got, want) else 3
        finally:
            os._exit(code)
    _pid, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert weighttui.open(tmp_path / "b.wtui").index_path is not None  # the child left its index


def test_the_check_caches_keep_no_hostile_log_in_memory():
    """What the key and column-name checks remember is bounded: big maps, long names and many
    distinct lists are checked every time instead of kept (a payload's memory stays its own)."""
    from weighttui.log import records

    stats = {"dtype": "<f8", "shape": [1, 1], "data": np.zeros(1).tobytes()}
    for i in range(400):
        decode_payload(msgpack.packb({f"k{i}": 1, "x" * 5000: 2}, use_bin_type=True))
        decode_payload(msgpack.packb({str(j): j for j in range(40 + i)}, use_bin_type=True))
        _block({"names": [f"n{i}" + "y" * 5000], "stats": stats}, "weights", 1, True)
        _block({"names": [f"m{i}"], "stats": stats}, "weights", 1, True)
    assert len(fmt._KEY_LISTS) <= 256 and all(len(k) <= 32 and sum(map(len, k)) <= 1024 for k in fmt._KEY_LISTS)
    assert len(records._STRING_LISTS) <= 256
    assert all(sum(map(len, k)) <= 4096 for k in records._STRING_LISTS)
