"""An index whose histogram part lags its statistics (`open(index_histograms=False)`, `weighttui info`).

A reader that asks only for statistics indexes only them: each group's histogram edges, counts and
samples stay in the log ({"fromlog": ...} in the manifest) and are read back from the snapshot frames
by any later reader, until a reader that indexes them rewrites that group. Whatever mix of such groups
and full ones an index holds - built light then extended by a full reader, or the other way round, or
damaged - every reader gives the same run as a read without any index.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from test_store import digest, index_dir, indexed, two_runs_with_damage, write_run

import weighttui
from weighttui.data.store import columns as store_columns
from weighttui.data.store import index as store_index
from weighttui.log.format import HEADER_SIZE

assert indexed  # (the fixture, imported for the tests below)


def _fromlog_refs(path) -> int:
    """How many arrays the manifest leaves in the log."""
    text = (index_dir(path) / "manifest.json").read_text()
    return text.count('"fromlog"')


def _lagging_groups(run) -> list[bool]:
    return [any(isinstance(s.counts, store_columns.FromLog) for s in g.kinds.values()) for g in run._run.groups]


def test_an_index_without_histograms_reads_them_back_from_the_log(indexed):
    path = indexed / "run.wtui"
    two_runs_with_damage(path)
    want = digest(weighttui.open(path, cache=False))
    light = weighttui.open(path, index_histograms=False)
    assert light.index_path == str(index_dir(path)) and _fromlog_refs(path) > 0
    assert digest(light) == want
    light_again = weighttui.open(path, index_histograms=False)  # reads them back, indexes nothing
    assert digest(light_again) == want and _fromlog_refs(path) > 0
    again = weighttui.open(path)  # a full reader: each group's histograms indexed as it first reads them
    assert any(_lagging_groups(again))
    refs = _fromlog_refs(path)
    assert digest(again) == want
    assert not any(_lagging_groups(again)) and 0 < _fromlog_refs(path) < refs  # (the other run's lag still)
    want0 = digest(weighttui.open(path, run=0, cache=False))
    assert digest(weighttui.open(path, run=0)) == want0 and _fromlog_refs(path) == 0
    assert not [p for p in index_dir(path).iterdir() if p.name.startswith(".tmp-")]
    named = set(json.loads((index_dir(path) / "manifest.json").read_text())["files"])
    assert {p.name for p in index_dir(path).iterdir() if p.suffix in (".seg", ".bin")} == named
    final = weighttui.open(path)
    assert not any(_lagging_groups(final)) and digest(final) == want


def test_filling_keeps_the_info_summary_and_two_readers_fill_safely(indexed, capsys, monkeypatch):
    """Two readers of one lagging index: the first fills the groups; the second, loaded before, takes
    the files the first wrote (nothing written twice) and reads the same run. The summary `info`
    kept beside the index stays valid (the log's reach did not change)."""
    from weighttui.analysis import diagnose as diagnose_mod
    from weighttui.cli.main import main as cli

    path = indexed / "run.wtui"
    two_runs_with_damage(path)
    want = digest(weighttui.open(path, cache=False))
    assert cli(["info", "--json", str(path)]) in (0, 1)
    summary = capsys.readouterr().out
    first, second = weighttui.open(path), weighttui.open(path)
    assert digest(first) == want and not any(_lagging_groups(first))
    assert digest(second) == want and not any(_lagging_groups(second))
    manifest = json.loads((index_dir(path) / "manifest.json").read_text())
    assert all(len(g.get("more", ())) <= 1 for r in manifest["runs"] for g in r["groups"])
    assert {p.name for p in index_dir(path).iterdir() if p.suffix in (".seg", ".bin")} == set(manifest["files"])
    calls = []
    real = diagnose_mod.diagnose
    monkeypatch.setattr(diagnose_mod, "diagnose", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert cli(["info", "--json", str(path)]) in (0, 1)
    assert capsys.readouterr().out == summary and not calls
    assert digest(weighttui.open(path)) == want


def test_an_unwritable_index_is_not_filled(indexed, monkeypatch):
    path = indexed / "run.wtui"
    write_run(path, 60)
    want = digest(weighttui.open(path, cache=False))
    weighttui.open(path, index_histograms=False)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in index_dir(path).iterdir())
    monkeypatch.setattr(store_index, "writable", lambda d: False)
    run = weighttui.open(path)
    assert digest(run) == want and any(_lagging_groups(run))
    assert sorted((p.name, p.stat().st_mtime_ns) for p in index_dir(path).iterdir()) == before


@pytest.mark.parametrize("modes", [(False, True, False, True), (True, False, True, False), (False, False, True, True)])
def test_histograms_lag_then_the_index_is_extended(indexed, modes):
    """The log grows between readers that index histograms and readers that do not: any mix of groups
    reads the same as no index at all, also reused by a fresh reader of either kind."""
    raw = two_runs_with_damage(indexed / "full.wtui")
    path = indexed / "live.wtui"
    cuts = [len(raw) // 4, len(raw) // 2, len(raw) * 3 // 4, len(raw)]
    path.write_bytes(raw[: HEADER_SIZE + 10])
    at = HEADER_SIZE + 10
    for cut, hist in zip(cuts, modes, strict=True):
        with open(path, "ab") as fh:
            fh.write(raw[at:cut])
        at = cut
        run = weighttui.open(path, index_histograms=hist)
        want = digest(weighttui.open(path, cache=False))
        assert digest(run) == want
        assert digest(weighttui.open(path)) == want
        assert digest(weighttui.open(path, index_histograms=False)) == want


def test_a_live_reader_extends_a_lagging_index(indexed):
    path = indexed / "run.wtui"
    raw = two_runs_with_damage(indexed / "full.wtui")
    path.write_bytes(raw[: len(raw) // 2])
    weighttui.open(path, index_histograms=False)
    live = weighttui.open(path)
    assert any(_lagging_groups(live))
    with open(path, "ab") as fh:
        fh.write(raw[len(raw) // 2:])
    live.refresh()
    want = digest(weighttui.open(path, cache=False))
    assert digest(live) == want and digest(weighttui.open(path)) == want


@pytest.mark.parametrize("bad", [{"dtype": "<f8"}, {"bins": 0}, {"fromlog": "stats"}, {"n": -1}, {"bins": "x"}])
def test_a_damaged_fromlog_reference_is_not_used(indexed, bad):
    path = indexed / "run.wtui"
    write_run(path, 40)
    want = digest(weighttui.open(path, cache=False))
    weighttui.open(path, index_histograms=False)
    manifest = index_dir(path) / "manifest.json"
    m = json.loads(manifest.read_text())
    for group in m["runs"][0]["groups"]:
        counts = group["kinds"]["weights"].get("counts")
        if isinstance(counts, dict) and "fromlog" in counts:
            counts.update(bad)
            break
    else:
        raise AssertionError("no group left its histograms in the log")
    manifest.write_text(json.dumps(m))
    assert digest(weighttui.open(path)) == want
    assert digest(weighttui.open(path)) == want


def test_a_log_rewritten_in_place_under_a_lagging_index_gives_no_wrong_histograms(indexed):
    """A snapshot frame changed in the middle of the log (its identity - start, size, the bytes before
    the point covered - unchanged): its histogram, left in the log, no longer reads back and is absent;
    no other value changes."""
    path = indexed / "run.wtui"
    write_run(path, 300)
    full = weighttui.open(path, cache=False)
    name = full.tensor_names[0]
    want_steps, want_lo, _hi, want_counts = full.histograms(name)
    run = weighttui.open(path, index_histograms=False)
    offsets = run._run.offsets.view
    # (past the first 64 KiB and before the last 4 KiB, which the index's identity hashes)
    off = int(offsets[np.searchsorted(offsets, 70000)])
    assert off < path.stat().st_size - 8192
    raw = bytearray(path.read_bytes())
    raw[off + 40] ^= 0xFF  # inside that frame's payload: its CRC fails
    st = path.stat()
    path.write_bytes(bytes(raw))
    # the mtime put back (a copy with `cp -p`, or a filesystem with a coarse clock): the index's own checks
    # cannot tell, so this is the frames' read-back check alone (tests/unit/test_store.py has the mtime's)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    reader = weighttui.open(path)
    assert reader._run.rows == full._run.rows  # (the index still matched the log)
    steps, lo, _hi, counts = reader.histograms(name)
    keep = np.isin(want_steps, steps)
    assert steps.size < want_steps.size and keep.sum() == steps.size
    assert np.array_equal(steps, want_steps[keep]) and np.array_equal(counts, want_counts[keep])
    assert np.array_equal(lo, want_lo[keep])


def test_first_info_indexes_statistics_only_and_reads_the_same(indexed, capsys):
    """`weighttui info` on a log with no index writes one without histograms; its summary, the next
    info's and `info --no-cache` agree, and a full reader of that index reads every histogram."""
    from weighttui.cli.main import main as cli

    path = indexed / "run.wtui"
    two_runs_with_damage(path)

    def info(*extra):
        assert cli(["info", "--json", *extra, str(path)]) in (0, 1)
        return json.loads(capsys.readouterr().out)

    fresh = info("--no-cache")
    assert not index_dir(path).exists()
    assert info() == fresh and _fromlog_refs(path) > 0
    assert info() == fresh
    assert digest(weighttui.open(path)) == digest(weighttui.open(path, cache=False))
    shutil.rmtree(index_dir(path))


def test_first_nonfinite_reads_only_segments_that_may_hold_one(indexed, monkeypatch):
    """first_nonfinite skips sealed segments whose NaN and Inf counts are one value not above 0 (a
    Const): a NaN in one snapshot of one segment is found, at that snapshot, as when every segment
    is read."""
    from weighttui.data.run import RunData

    path = indexed / "run.wtui"
    rng = np.random.default_rng(3)
    rec = weighttui.Recorder(path, bins=8, sample=3, queue_size=100000)
    for step in range(120):
        a = rng.normal(size=(4, 5))
        if step == 77:
            a[1, 2] = np.nan
        rec.snapshot(step, {"a": a, "b": rng.normal(size=7)})
    rec.close()
    monkeypatch.setattr(RunData, "NONFINITE_BLOCK", 16)
    run = weighttui.open(path, max_rows=8)
    first, nan, _inf = run.first_nonfinite("weights")
    col = run.column("a")
    assert int(first[col]) == 77 and nan[col] == 1 and int(first[run.column("b")]) == -1
    skipped = []
    real = RunData._no_nonfinite
    monkeypatch.setattr(RunData, "_no_nonfinite", staticmethod(lambda *a: skipped.append(real(*a)) or False))
    again = weighttui.open(path, max_rows=8)
    assert [x.tolist() for x in again.first_nonfinite("weights")] == [x.tolist() for x in (first, nan, _inf)]
    assert run._r.groups and len(run._r.groups) > 2
    assert True in skipped and False in skipped  # (segments with no NaN skipped, the one with it read)


def test_filled_groups_survive_the_next_save_and_a_rewrite(indexed):
    """A group filled later names two files (statistics, then histograms): a save that extends the
    index keeps both, and a reader of the extended index reads the same run."""
    raw = two_runs_with_damage(indexed / "full.wtui")
    path = indexed / "live.wtui"
    path.write_bytes(raw[: len(raw) * 2 // 3])
    weighttui.open(path, index_histograms=False)
    live = weighttui.open(path)
    assert digest(live) == digest(weighttui.open(path, cache=False))  # (fills the latest run's groups)
    manifest = json.loads((index_dir(path) / "manifest.json").read_text())
    assert any(g.get("more") for r in manifest["runs"] for g in r["groups"])
    with open(path, "ab") as fh:
        fh.write(raw[len(raw) * 2 // 3:])
    live.refresh()
    want = digest(weighttui.open(path, cache=False))
    assert digest(live) == want
    named = set(json.loads((index_dir(path) / "manifest.json").read_text())["files"])
    assert {p.name for p in index_dir(path).iterdir() if p.suffix in (".seg", ".bin")} == named
    assert digest(weighttui.open(path)) == want
    assert digest(weighttui.open(path, run=0)) == digest(weighttui.open(path, run=0, cache=False))


def test_a_thinned_row_view_reads_back_and_a_range_indexes(indexed):
    """Histograms over a thinned row view (fewer than half of a group's rows) are read back from
    their frames, nothing indexed; a read of a whole range indexes the groups it covers."""
    path = indexed / "run.wtui"
    write_run(path, 200)
    plain = weighttui.open(path, max_rows=8, cache=False)
    weighttui.open(path, index_histograms=False)
    run = weighttui.open(path, max_rows=8)
    name = run.tensor_names[0]
    before = (index_dir(path) / "manifest.json").read_bytes()
    got, want = run.histograms(name), plain.histograms(name)
    assert all(np.array_equal(g, w, equal_nan=True) for g, w in zip(got, want, strict=True))
    assert all(_lagging_groups(run)) and (index_dir(path) / "manifest.json").read_bytes() == before
    steps = run.steps
    lo, hi = int(steps[len(steps) // 2]), int(steps[-1]) + 1
    got, want = run.histograms(name, start=lo, stop=hi), plain.histograms(name, start=lo, stop=hi)
    assert all(np.array_equal(g, w, equal_nan=True) for g, w in zip(got, want, strict=True))
    assert not all(_lagging_groups(run)) and any(_lagging_groups(run))  # (the later groups only)


def test_light_and_full_builders_and_fillers_at_once_in_separate_processes(tmp_path):
    """Six processes at the same moment on a fresh 3 MB log: two index statistics only, two build the
    full index, two read a lagging index's histograms (filling it) once one exists. All agree with a
    read without an index; the index left is valid and holds no stray files."""
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    path = tmp_path / "big.wtui"
    sys.path.insert(0, str(repo / "benchmarks"))
    try:
        from make_big_log import make
    finally:
        sys.path.pop(0)
    make(path, size_mb=3, tensors=20, bins=16, sample=4, full_every=50)
    script = textwrap.dedent("""
        import hashlib, sys, time, weighttui
        mode = sys.argv[2]
        if mode == "fill":
            time.sleep(0.2)  # (an index of some kind is there by then, or being written)
        run = weighttui.open(sys.argv[1], index_histograms=mode != "light", cache=mode != "plain")
        h = hashlib.sha256()
        for name in run.tensor_names:
            for a in run.series(name, "norm") + run.histograms(name)[1:] + run.samples(name)[1:]:
                h.update(a.tobytes())
        h.update(run.stat_matrix("delta", "ratio").tobytes())
        print(h.hexdigest(), run.snapshot_count)
    """)
    env = dict(os.environ, PYTHONPATH=str(repo), XDG_CACHE_HOME=str(tmp_path / "xdg"))

    def start(mode):
        return subprocess.Popen([sys.executable, "-c", script, str(path), mode], stdout=subprocess.PIPE, text=True,
                                env=env)

    procs = [start(m) for m in ("light", "full", "light", "full", "fill", "fill")]
    outs = [p.communicate(timeout=300)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    plain = start("plain").communicate(timeout=300)[0].split()
    assert all(o == plain for o in outs)
    again = [start(m).communicate(timeout=300)[0].split() for m in ("fill", "light", "full")]
    assert all(o == plain for o in again)
    names = set(json.loads((index_dir(path) / "manifest.json").read_text())["files"])
    left = {p.name for p in index_dir(path).iterdir() if p.suffix in (".seg", ".bin") or p.name.startswith(".tmp-")}
    assert left == names


def _snapshot_ends(path) -> list[int]:
    """Where each snapshot frame of the log ends."""
    from weighttui.log.format import FrameType
    from weighttui.log.reader import ScanState, scan_frames

    fd = os.open(path, os.O_RDONLY)
    try:
        return [f.offset + f.size for f in scan_frames(fd, ScanState(), os.fstat(fd).st_size)
                if getattr(f, "type", None) == FrameType.SNAPSHOT]
    finally:
        os.close(fd)


@pytest.fixture
def restores(monkeypatch):
    """The pieces fromlog.restore_tail found with records.Omitted stand-ins, per call."""
    from weighttui.data.store import fromlog
    from weighttui.log.records import Omitted

    calls: list[int] = []
    real = fromlog.restore_tail

    def spy(fd, run):
        calls.append(sum(type(p.get("counts")) is Omitted or type(p.get("samples")) is Omitted
                         for kc in run.kinds.values() for p in kc.tail))
        return real(fd, run)

    monkeypatch.setattr(store_index, "restore_tail", spy)
    return calls


def test_a_light_scan_extending_a_small_group_reads_its_tail_back(indexed, restores):
    """A light read (index_histograms=False: the scan leaves the usual histograms and samples in their
    frames, records.Omitted) that extends an index whose last group is small rewrites that group with
    its new rows and their histograms: those are read back from the log (fromlog.restore_tail), and the
    run, the index and every later reader are as a read without an index gives them."""
    from weighttui.log import format as fmt

    path = indexed / "run.wtui"
    write_run(path, 30)
    whole = path.read_bytes()
    ends = _snapshot_ends(path)
    for cut in (ends[1], ends[3], len(whole)):  # 2 snapshots (a small group), 2 more (its rows again), the rest
        if cut == ends[1]:
            path.write_bytes(whole[:cut])
        else:  # the log grows (the same file)
            with open(path, "ab") as fh:
                fh.write(whole[path.stat().st_size:cut])
        want = digest(weighttui.open(path, cache=False))
        assert digest(weighttui.open(path, index_histograms=False)) == want, cut
    if fmt.frame_at is not None:  # (the C decoder makes the light scan's stand-ins)
        assert restores and max(restores) > 0
    assert digest(weighttui.open(path, index_histograms=False)) == want
    assert digest(weighttui.open(path)) == want  # (indexes the histograms)
    assert digest(weighttui.open(path)) == want


def test_a_light_scan_whose_tail_is_queried_unsealed_reads_it_back(indexed, restores, monkeypatch):
    """A light read whose index is not saved (the tail stays unsealed): a query of the tail reads its
    histograms and samples back; a tail frame that no longer reads back as its snapshot gives no
    histogram and NaN samples there (as a FromLog read), never wrong values."""
    from weighttui.data.store import fromlog
    from weighttui.log import format as fmt

    path = indexed / "run.wtui"
    write_run(path, 30)
    want = digest(weighttui.open(path, cache=False))
    monkeypatch.setattr(store_index, "save_index", lambda *a, **k: None)
    light = weighttui.open(path, index_histograms=False)
    assert digest(light) == want
    if fmt.frame_at is None:
        return
    assert restores and max(restores) > 0
    real = fromlog.snapshot_at
    monkeypatch.setattr(fromlog, "snapshot_at",
                        lambda fd, run, row: None if row == run.rows - 1 else real(fd, run, row))
    gone = weighttui.open(path, index_histograms=False)
    last = gone.steps[-1]
    for name in gone.tensor_names:
        steps, _lo, _hi, _counts = gone.histograms(name, "weights")
        assert last not in steps.tolist()
        s, v = gone.samples(name)
        if s.size and s[-1] == last:
            assert np.isnan(v[-1]).all()
    assert any(gone.histograms(name, "weights")[0].size for name in gone.tensor_names)
