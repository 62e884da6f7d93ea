"""A store with no index (cache=False, or nowhere to write one): statistics in memory, histograms
and samples read back from their frames in the log (data/store/fromlog.py), giving the same run
as through an index, bit for bit; and `torn_tail` meaning the same for a RunData fed by ingest()
as for one read by refresh().

Logs here are small, so segments are sealed small (test_store's `indexed` fixture): every test
reads sealed segments back from the log, not only the in-memory tail.
"""

from __future__ import annotations

import os

import numpy as np
import test_store
from test_store import digest, two_runs_with_damage, write_run

import weighttui
from weighttui.data.run import RunData
from weighttui.data.store import index as store_index
from weighttui.data.store.columns import FromLog
from weighttui.data.store.fromlog import LogSource
from weighttui.log.format import FRAME_HEADER_SIZE, parse_frame_header
from weighttui.log.tail import LogTail

indexed = test_store.indexed  # the fixture: an index for tiny logs, in small segments


def reads(run, ranges=True) -> dict:
    """Every histogram and sample of every tensor, as bits: the whole run and (ranges) step ranges."""
    out = {}
    steps = run.steps
    spans = [(None, None)]
    if ranges and steps.size > 2:
        mid = int(steps[steps.size // 2])
        spans += [(int(steps[1]), mid), (mid, None), (mid, mid + 1)]
    for start, stop in spans:
        for name in run.tensor_names:
            for kind in ("weights", "delta", "grad"):
                if not run.has_kind(kind):
                    continue
                s, lo, hi, counts = run.histograms(name, kind, start=start, stop=stop)
                out[f"h/{kind}/{name}/{start}/{stop}"] = (s.tolist(), lo.view(np.int64).tolist(),
                                                          hi.view(np.int64).tolist(), counts.tolist())
            s, v = run.samples(name, start=start, stop=stop)
            out[f"s/{name}/{start}/{stop}"] = (s.tolist(), v.view(np.int32).tolist())
    return out


def sealed(run):
    return [seg for g in run._run.groups for seg in g.kinds.values()]


def test_without_an_index_histograms_and_samples_are_read_back_from_the_log(indexed):
    path = indexed / "run.wtui"
    write_run(path, 60)
    run = weighttui.open(path, cache=False)
    source = run._store.spill
    assert isinstance(source, LogSource)
    segs = sealed(run)
    assert segs and any(seg.counts is not None for seg in segs)
    for seg in segs:  # nothing of a histogram or a sample is held: they stay in the log
        assert seg.counts is None or isinstance(seg.counts, FromLog)
        assert seg.samples is None or isinstance(seg.samples, FromLog)
        assert not isinstance(seg.lo, np.ndarray) and not isinstance(seg.hi, np.ndarray)
    assert source.reads == 0
    want = reads(weighttui.open(path))  # through the index just built
    assert reads(run) == want
    assert source.reads > 0
    before = source.reads
    assert reads(run) == want and source.reads == before  # ranges read back once are kept (bounded)
    assert digest(run) == digest(weighttui.open(path))


def test_a_log_that_grows_between_reads(indexed):
    raw = two_runs_with_damage(indexed / "full.wtui")  # two runs, a damaged frame, a torn tail
    path = indexed / "live.wtui"
    cuts = [len(raw) // 7, len(raw) // 3, len(raw) // 2, len(raw) * 5 // 6, len(raw)]
    path.write_bytes(raw[:cuts[0]])
    live = weighttui.open(path, cache=False)
    for a, b in zip(cuts, cuts[1:], strict=False):
        before = reads(live)  # (what was read back before the log grew is kept and still right)
        with open(path, "ab") as fh:
            fh.write(raw[a:b])
        live.refresh()
        indexed_run = weighttui.open(path)
        assert reads(live) == reads(indexed_run) and digest(live) == digest(indexed_run)
        assert before  # (every round read something back)
    assert live.resets == 0 and live.corruptions and live.torn_tail > 0
    for run_index in (0, 1):  # the other run of the log too
        assert reads(weighttui.open(path, run=run_index, cache=False)) == reads(weighttui.open(path, run=run_index))


def _frame_length(fd: int, offset: int) -> int:
    length, _type = parse_frame_header(os.pread(fd, FRAME_HEADER_SIZE, offset), 0)
    return FRAME_HEADER_SIZE + length + 4


def test_a_frame_changed_under_the_reader_is_left_out_never_guessed(indexed):
    """After open(cache=False) one snapshot frame is damaged in place and another is overwritten
    by a valid frame of another snapshot of the same length: reading them back leaves both out
    (their histograms absent, samples NaN); every other value is the log's."""
    path = indexed / "run.wtui"
    write_run(path, 60)
    want = reads(weighttui.open(path), ranges=False)
    run = weighttui.open(path, cache=False)
    r = run._run
    fd = os.open(path, os.O_RDONLY)
    try:
        lengths = [_frame_length(fd, int(o)) for o in r.offsets.view]
    finally:
        os.close(fd)
    damaged = 10
    # a row with a frame of the same length as another's (steps 3 and 6 cover the same tensors)
    moved, source = next((i, j) for i in range(20, r.sealed_rows) for j in range(i + 1, r.sealed_rows)
                         if lengths[i] == lengths[j])
    raw = bytearray(path.read_bytes())
    at = int(r.offsets.a[damaged]) + lengths[damaged] // 2
    raw[at] ^= 0x55
    so, mo = int(r.offsets.a[source]), int(r.offsets.a[moved])
    raw[mo:mo + lengths[moved]] = raw[so:so + lengths[source]]  # verifies, but holds step `source`
    with open(path, "r+b") as fh:  # in place: the reader's file and its size stay the same
        fh.write(bytes(raw))
    got = reads(run, ranges=False)
    gone = {int(r.steps.a[damaged]), int(r.steps.a[moved])}
    assert got.keys() == want.keys()
    for key, (steps, *rest) in want.items():
        if key.startswith("h/"):
            keep = [i for i, s in enumerate(steps) if s not in gone]
            assert got[key][0] == [steps[i] for i in keep]
            assert [[x[i] for i in keep] for x in rest] == list(got[key][1:])
        else:
            values = np.array(got[key][1], dtype=np.int32).view(np.float32)
            for i, s in enumerate(steps):
                if s in gone:
                    assert np.isnan(values[i]).all()
                else:
                    assert got[key][1][i] == rest[0][i]


def test_a_log_replaced_at_its_path_is_read_back_from_the_file_first_read(indexed):
    path = indexed / "run.wtui"
    write_run(path, 60)
    want = reads(weighttui.open(path))
    run = weighttui.open(path, cache=False)
    other = indexed / "other.wtui"
    write_run(other, 60, seed=7)
    os.replace(other, path)
    assert reads(run) == want
    run.refresh()  # now it reads the new file
    assert run.resets == 1 and reads(run) == reads(weighttui.open(path))


def test_nowhere_to_write_an_index_reads_back_from_the_log(indexed, monkeypatch):
    path = indexed / "run.wtui"
    two_runs_with_damage(path)
    want = digest(weighttui.open(path, cache=False)), reads(weighttui.open(path, cache=False))
    monkeypatch.setattr(store_index, "writable", lambda d: False)
    run = weighttui.open(path)
    assert run.index_path is None and isinstance(run._store.spill, LogSource)
    assert (digest(run), reads(run)) == want
    assert run.save_index() is None and run.index_save() is None


def feed(data: RunData, tail: LogTail) -> list[int]:
    """Polls until the end of the file, as a viewer's follower hands them over; torn_tail after each."""
    seen = []
    while True:
        poll = tail.poll()
        data.ingest(poll)
        seen.append(data.torn_tail)
        if not poll.frames and not poll.corruptions and poll.offset + poll.pending >= poll.size:
            return seen


def test_ingest_reads_the_same_run_as_refresh_without_an_index(indexed):
    path = indexed / "run.wtui"
    two_runs_with_damage(path)
    for cache in (False, True):
        data = RunData(path, cache=cache)
        with LogTail(path, max_bytes_per_poll=700) as tail:
            feed(data, tail)
        want = weighttui.open(path, cache=False)
        assert digest(data) == digest(want) and reads(data) == reads(want)


def test_torn_tail_means_the_same_fed_by_ingest_as_read_by_refresh(tmp_path):
    """A real torn tail: a log cut inside its last frame. ingest() says it once the whole file is read
    (not while a big log is read in parts), as refresh() does; appending the rest of the frame clears it,
    and damage being skipped at the end is no torn tail on either path."""
    full = tmp_path / "full.wtui"
    write_run(full, 30)
    raw = full.read_bytes()
    run = weighttui.open(full)
    last = int(run._run.offsets.view[-1])  # the last snapshot frame's start (scalars and an end frame follow)
    cut = last + 40
    path = tmp_path / "run.wtui"
    path.write_bytes(raw[:cut])
    refreshed = weighttui.open(path)
    assert refreshed.torn_tail == cut - last
    fed = RunData(path)
    with LogTail(path, max_bytes_per_poll=512) as tail:
        seen = feed(fed, tail)
        assert fed.torn_tail == refreshed.torn_tail
        assert seen[0] == 0 and len(seen) > 3  # read in parts: nothing torn until the end is reached
        with open(path, "ab") as fh:  # the writer finishes the frame
            fh.write(raw[cut:])
        feed(fed, tail)
    refreshed.refresh()
    assert fed.torn_tail == refreshed.torn_tail == 0 and fed.snapshot_count == refreshed.snapshot_count == 30
    # damage at the end: skipped (a corruption), not a torn frame
    path.write_bytes(raw + b"\x00garbage that is no frame" * 3)
    refreshed = weighttui.open(path)
    fed = RunData(path)
    with LogTail(path) as tail:
        feed(fed, tail)
    assert fed.torn_tail == refreshed.torn_tail
    assert (fed.corruptions, fed.torn_tail) == (refreshed.corruptions, refreshed.torn_tail)


def test_the_change_table_between_marks_reads_back_only_the_marked_snapshots(indexed):
    """The change between two marks from samples: two snapshots read back per tensor, not every row."""
    from weighttui.analysis.changes import change_table

    path = indexed / "run.wtui"
    write_run(path, 60)
    want = change_table(weighttui.open(path), mark_a=9, mark_b=40)  # (no complete values at 9 or 40)
    run = weighttui.open(path, cache=False)
    source = run._store.spill
    got = change_table(run, mark_a=9, mark_b=40)
    assert [r["change_ab_from"] for r in got] == ["samples"] * len(got)
    assert np.array_equal([r["change_ab"] for r in got], [r["change_ab"] for r in want], equal_nan=True)
    assert 0 < source.reads <= 2 * len(run.tensor_names)


def test_a_thinned_row_view_reads_back_only_its_rows(indexed):
    path = indexed / "run.wtui"
    write_run(path, 90)
    run = weighttui.open(path, cache=False, max_rows=8)
    source = run._store.spill
    assert reads(run, ranges=False) == reads(weighttui.open(path, max_rows=8), ranges=False)
    per_tensor = len(run.tensor_names) * 3  # weights and grad histograms, samples
    assert 0 < source.reads <= 8 * per_tensor < run.row_count


def test_what_is_read_back_is_kept_within_one_budget_for_every_store(indexed, monkeypatch):
    """Entries read back are kept up to fromlog.CACHE_BYTES for the whole process, not per store (a
    viewer of many runs); a segment that died is never answered for by its id."""
    import gc

    from weighttui.data.store import fromlog

    monkeypatch.setattr(fromlog, "CACHE_BYTES", 4096)
    paths = []
    for seed in range(3):
        paths.append(indexed / f"run{seed}.wtui")
        write_run(paths[-1], 60, seed=seed)
    wants = [reads(weighttui.open(p), ranges=False) for p in paths]
    for _round in range(2):
        for p, want in zip(paths, wants, strict=True):
            run = weighttui.open(p, cache=False)  # (the last round's store of this log has died)
            assert reads(run, ranges=False) == want
            assert fromlog._cached_bytes <= 4096 or len(fromlog._CACHE) == 1
            del run
            gc.collect()


def test_statistics_past_the_budget_are_read_back_from_the_log(indexed, monkeypatch):
    """With no index the statistics held in memory are bounded (fromlog.STATS_BYTES for the whole
    process, the newest sealed segments first): the others are read back from their frames, every
    series, matrix and row the same as through an index, also with nothing kept between reads."""
    from weighttui.data.store import fromlog

    monkeypatch.setattr(fromlog, "CACHE_BYTES", 0)  # every read of a segment not held reads its frames
    path = indexed / "run.wtui"
    write_run(path, 90)
    run = weighttui.open(path, cache=False)
    source = run._store.spill
    segs = [seg for seg in sealed(run) if seg.width]
    assert len(segs) > 3
    held = [seg for seg in segs if fromlog._stats_held(seg) is not None]
    assert len(held) <= 1 and fromlog.resident_bytes() <= max(fromlog._nbytes(h.stats) for h in segs) + 64 * 16
    indexed_run = weighttui.open(path)
    before = source.reads
    name = run.tensor_names[0]
    for kind in ("weights", "grad"):
        for stat in run.columns(kind):
            got, want = run.series(name, stat, kind), indexed_run.series(name, stat, kind)
            assert got[0].tolist() == want[0].tolist()
            assert got[1].view(np.int64).tolist() == want[1].view(np.int64).tolist()  # bit for bit
    assert source.reads > before
    assert digest(run) == digest(indexed_run)
    mid = int(run.steps[run.n // 2])
    for start, stop in ((None, mid), (mid, mid + 1), (mid, None)):
        got = run.series(name, "norm", "grad", start=start, stop=stop)
        want = indexed_run.series(name, "norm", "grad", start=start, stop=stop)
        assert got[1].view(np.int64).tolist() == want[1].view(np.int64).tolist()
    # one frame read back gives every kind of its group: a grad series after a weights one is free
    fresh = weighttui.open(path, cache=False)  # (what leaves the budget while it opens is not kept)
    monkeypatch.setattr(fromlog, "CACHE_BYTES", 64 << 20)
    fresh.series(name, "norm", "weights")
    first = fresh._store.spill.reads
    assert 0 < first <= fresh.snapshot_count
    fresh.series(name, "norm", "grad")
    fresh.series(run.tensor_names[-1], "mean", "weights")
    assert fresh._store.spill.reads == first


def test_memory_for_statistics_does_not_grow_with_the_log(indexed, monkeypatch):
    from weighttui.data.store import fromlog

    monkeypatch.setattr(fromlog, "STATS_BYTES", 4096)
    monkeypatch.setattr(fromlog, "CACHE_BYTES", 0)
    held = []
    for steps in (60, 240):
        path = indexed / f"run{steps}.wtui"
        write_run(path, steps)
        run = weighttui.open(path, cache=False)
        resident = [seg for seg in sealed(run) if id(seg) in fromlog._RESIDENT]
        assert resident and fromlog.resident_bytes() <= 4096 + max(fromlog._RESIDENT[id(s)][2] for s in resident)
        held.append(len(resident))
        assert digest(run) == digest(weighttui.open(path))
        del run
    assert held[1] <= held[0] + 1  # four times the log, the same few segments held


def test_statistics_of_a_frame_changed_under_the_reader_read_as_nan(indexed, monkeypatch):
    from weighttui.data.store import fromlog

    monkeypatch.setattr(fromlog, "CACHE_BYTES", 0)
    path = indexed / "run.wtui"
    write_run(path, 60)
    want = weighttui.open(path)
    run = weighttui.open(path, cache=False)
    r = run._run
    damaged = 10
    fd = os.open(path, os.O_RDONLY)
    try:
        length = _frame_length(fd, int(r.offsets.a[damaged]))
    finally:
        os.close(fd)
    raw = bytearray(path.read_bytes())
    raw[int(r.offsets.a[damaged]) + length // 2] ^= 0x55
    with open(path, "r+b") as fh:
        fh.write(bytes(raw))
    name = run.tensor_names[0]
    steps, got = run.series(name, "norm")
    wsteps, wvals = want.series(name, "norm")
    assert steps.tolist() == wsteps.tolist()
    bad = steps == int(r.steps.a[damaged])
    assert bad.sum() == 1 and np.isnan(got[bad]).all()
    assert got[~bad].view(np.int64).tolist() == wvals[~bad].view(np.int64).tolist()


def test_a_thinned_row_view_reads_back_the_statistics_of_its_rows_only(indexed, monkeypatch):
    from weighttui.data.store import fromlog

    monkeypatch.setattr(fromlog, "CACHE_BYTES", 0)
    path = indexed / "run.wtui"
    write_run(path, 120)
    run = weighttui.open(path, cache=False, max_rows=8)
    want = weighttui.open(path, max_rows=8)
    source = run._store.spill
    for kind in ("weights", "grad"):
        before = source.reads
        for stat in run.columns(kind):
            got = run.stat_matrix(kind, stat, keep=False)
            assert got.view(np.int64).tolist() == want.stat_matrix(kind, stat).view(np.int64).tolist()
        for name in run.tensor_names:  # a series over the row view: its rows only
            got, exp = run.series(name, "norm", kind), want.series(name, "norm", kind)
            assert got[0].tolist() == exp[0].tolist()
            assert got[1].view(np.int64).tolist() == exp[1].view(np.int64).tolist()
        calls = len(run.columns(kind)) + len(run.tensor_names)
        assert 0 < source.reads - before <= calls * run.n < calls * run.snapshot_count // 2
    assert digest(run) == digest(want)


def test_a_row_table_never_read_holds_no_python_object_per_value():
    """A scalar's table is appended to for every frame and may never be read while a log is opened:
    its values join the numpy array every 4,096 appends (they were Python objects until read:
    ~20 MB on the 10 GiB log)."""
    from weighttui.data.store.builder import _Growing

    g = _Growing(np.float64, np.nan)
    for i in range(10_000):
        g.append(i * 0.5)
        assert len(g._more) < 4096
    assert g.n == 10_000 and g.last == 4999.5
    assert g.view.tolist() == [i * 0.5 for i in range(10_000)]
