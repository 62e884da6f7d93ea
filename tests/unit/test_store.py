"""The run store and its index: every way of reading a log gives the same run.

A run read through a fresh index, a reused one, one extended from a shorter
prefix, one built from another log at the same path, a damaged one, or none at
all (cache=False) must be identical, down to every statistic, histogram, sample,
scalar, event and the damage reported. Logs here are small, so the index size
threshold and the segment size are lowered (fixture `indexed`).

Read-only directories: the tests run as root, for whom chmod does not stop
writes, so they replace `weighttui.data.store.index.writable` (the one check the
store makes before writing) to simulate read-only media.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import weighttui
from weighttui.data.store import builder as store_builder
from weighttui.data.store import columns as store_columns
from weighttui.data.store import fromlog as store_fromlog
from weighttui.data.store import index as store_index
from weighttui.log.format import HEADER, HEADER_SIZE, FrameDecoder, FrameType, encode_array, encode_frame

DATA = Path(__file__).resolve().parents[1] / "data"
EXPECTED = json.loads((DATA / "expected.json").read_text())
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def indexed(monkeypatch, tmp_path):
    """Index even tiny logs, in small segments; the user cache under tmp_path."""
    monkeypatch.setattr(store_index, "MIN_LOG_BYTES", 0)
    monkeypatch.setattr(store_columns, "SEAL_ENTRIES", 40)
    monkeypatch.setattr(store_index, "SEAL_ENTRIES", 40)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    # with no index, the statistics of every sealed segment but the newest are read back from the log
    monkeypatch.setattr(store_fromlog, "STATS_BYTES", 0)
    assert store_builder  # (imported for the layering it documents)
    return tmp_path


def write_run(path, steps, *, mode="w", start=0, seed=0):
    rng = np.random.default_rng(seed)
    rec = weighttui.Recorder(path, mode=mode, bins=8, sample=3, full_every=7, queue_size=100000)
    for step in range(start, start + steps):
        ts = {"a": rng.normal(size=(4, 5)), "b": rng.normal(size=7)}
        if step % 3 == 0:
            ts["c"] = rng.normal(size=3)  # covered by every third snapshot only
        rec.snapshot(step, ts, grads={"a": rng.normal(size=(4, 5))}, scalars={"loss": 1 / (step + 1)},
                     epoch=step // 10)
    rec.close()


def two_runs_with_damage(path):
    write_run(path, 40)
    write_run(path, 30, mode="a", start=1000, seed=1)
    raw = bytearray(path.read_bytes())
    raw[len(raw) * 3 // 4] ^= 0x40  # a damaged frame inside the second run
    raw += raw[HEADER_SIZE:HEADER_SIZE + 50]  # and a torn tail
    path.write_bytes(bytes(raw))
    return bytes(raw)


def digest(run) -> dict:
    """Everything a reader can ask of a RunData, as plain values."""
    out = {
        "runs": [(r.index, r.record.run_id, r.offset, r.snapshots, r.first_step, r.last_step, r.status)
                 for r in run.runs],
        "corruptions": list(zip(run.corruptions, run.corruption_reasons, strict=True)),
        "torn": run.torn_tail, "unknown": run.unknown_frames, "counts": dict(run.record_counts),
        "n": run.n, "snapshots": run.snapshot_count, "steps": run.steps.tolist(), "epochs": run.epochs.tolist(),
        "times": run.times.tolist(), "index": run.snapshot_index.tolist(), "names": run.tensor_names,
        "present": run.present.tolist(), "status": run.end.status if run.end else None,
        "events": [(e.step, e.kind, e.message) for e in run.events],
        "scalars": {s: [a.tolist() for a in run.scalars(s)] for s in run.scalar_names},
        "full": run.full_steps,
    }
    for kind in ("weights", "delta", "grad"):
        out[f"has_{kind}"] = run.has_kind(kind)
        for stat in run.columns(kind):
            out[f"m_{kind}_{stat}"] = np.nan_to_num(run.stat_matrix(kind, stat), nan=-7.0).tolist()
        for name in run.tensor_names:
            for stat in run.columns(kind):
                s, v = run.series(name, stat, kind)
                out[f"s_{kind}_{name}_{stat}"] = (s.tolist(), np.nan_to_num(v, nan=-7.0).tolist())
            out[f"h_{kind}_{name}"] = [np.nan_to_num(a, nan=-7.0).tolist() for a in run.histograms(name, kind)]
    for name in run.tensor_names:
        out[f"sample_{name}"] = [np.nan_to_num(a, nan=-7.0).tolist() for a in run.samples(name)]
        if run.snapshot_count:
            lo = int(run.steps[0]) if run.n else None
            out[f"range_{name}"] = run.series(name, "norm", start=lo, stop=None)[0].tolist()
    if run.full_steps:
        out["weights"] = {k: v.tolist() for k, v in run.weights(step=run.full_steps[-1]).items()}
    return out


def index_dir(path) -> Path:
    return Path(path).parent / f".{Path(path).name}.wtuidx"


# ------------------------------------------------------------------ conformance


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_conformance_logs_read_the_same_through_a_fresh_and_a_reused_index(indexed, name):
    path = indexed / name
    shutil.copy(DATA / name, path)
    plain = weighttui.open(path, cache=False)
    assert not index_dir(path).exists()
    first = weighttui.open(path)
    assert first.index_path == str(index_dir(path)) and (index_dir(path) / "manifest.json").exists()
    again = weighttui.open(path)
    assert again.index_path == str(index_dir(path))
    want = EXPECTED[name]
    for run in (first, again):
        assert {k: v for k, v in run.record_counts.items() if v} == want["records"]
        assert run.corruptions == want["corrupt_offsets"] and run.torn_tail == want["torn_tail_bytes"]
        assert run.steps.tolist() == want["snapshot_steps"] and run.full_steps == want["full_values_steps"]
        for tensor, stats in want["last_weights_stats"].items():
            for stat, value in stats.items():
                assert run.series(tensor, stat)[1][-1] == pytest.approx(value, rel=1e-12, abs=0)
        assert digest(run) == digest(plain)


def test_small_logs_get_no_index_by_default(tmp_path):
    path = tmp_path / "small.wtui"
    write_run(path, 5)
    run = weighttui.open(path)
    assert run.index_path is None and not index_dir(path).exists()


# ------------------------------------------------------------------ prefixes


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_prefix_reads_the_same_with_or_without_an_index(indexed, data):
    """A prefix read through an index built from a shorter prefix, or from another log at the same path."""
    src = indexed / "src.wtui"
    if not src.exists():
        two_runs_with_damage(src)
        write_run(indexed / "other.wtui", 25, seed=5)
    raw = src.read_bytes()
    other = (indexed / "other.wtui").read_bytes()
    cut2 = data.draw(st.integers(0, len(raw)), label="prefix")
    how = data.draw(st.sampled_from(["shorter", "other-inplace", "other-replaced", "none"]), label="index from")
    path = indexed / "p.wtui"
    shutil.rmtree(index_dir(path), ignore_errors=True)
    if how == "shorter":
        cut1 = data.draw(st.integers(0, cut2), label="shorter")
        path.write_bytes(raw[:cut1])
        weighttui.open(path)
        with open(path, "ab") as fh:  # the same file grows, as a live log does
            fh.write(raw[cut1:cut2])
    elif how.startswith("other"):
        path.write_bytes(other)
        weighttui.open(path)
        if how == "other-inplace":
            with open(path, "r+b") as fh:  # same inode, other bytes
                fh.truncate(0)
                fh.write(raw[:cut2])
        else:
            tmp = indexed / "p.tmp"
            tmp.write_bytes(raw[:cut2])
            os.replace(tmp, path)
    else:
        path.write_bytes(raw[:cut2])
    if cut2 < 12:
        assert weighttui.open(path).n == 0
        return
    for run_index in (None, 0):
        for max_rows in (None, 8):
            got = weighttui.open(path, run=run_index, max_rows=max_rows)
            want = weighttui.open(path, run=run_index, max_rows=max_rows, cache=False)
            assert digest(got) == digest(want)


def test_live_refresh_extends_the_index(indexed):
    path = indexed / "live.wtui"
    raw = two_runs_with_damage(indexed / "full.wtui")
    cuts = [HEADER_SIZE + 10, len(raw) // 5, len(raw) // 2, len(raw) * 4 // 5, len(raw)]
    path.write_bytes(raw[: cuts[0]])
    live = weighttui.open(path)
    covered = []
    for a, b in zip(cuts, cuts[1:], strict=False):
        with open(path, "ab") as fh:
            fh.write(raw[a:b])
        live.refresh()
        assert digest(live) == digest(weighttui.open(path, cache=False))
        covered.append(json.loads((index_dir(path) / "manifest.json").read_text())["log"]["covered"])
    assert covered == sorted(covered) and covered[-1] > covered[0]
    assert live.resets == 0


# ------------------------------------------------------------------ damaged or foreign index


def _files(path):
    return sorted(p for p in index_dir(path).iterdir() if p.suffix == ".seg")


@pytest.mark.parametrize("damage", ["flip", "truncate", "manifest-garbage", "manifest-other-log", "delete-seg",
                                    "manifest-truncated"])
def test_damaged_or_foreign_index_never_gives_wrong_numbers(indexed, damage):
    path = indexed / "run.wtui"
    two_runs_with_damage(path)
    want = digest(weighttui.open(path, cache=False))
    weighttui.open(path)
    seg = _files(path)[0]
    manifest = index_dir(path) / "manifest.json"
    if damage == "flip":
        b = bytearray(seg.read_bytes())
        for i in range(0, len(b), 97):
            b[i] ^= 0xFF
        seg.write_bytes(bytes(b))
    elif damage == "truncate":
        seg.write_bytes(seg.read_bytes()[: seg.stat().st_size // 2])
    elif damage == "manifest-garbage":
        manifest.write_bytes(b"\x00{not json")
    elif damage == "manifest-truncated":
        manifest.write_bytes(manifest.read_bytes()[:100])
    elif damage == "delete-seg":
        seg.unlink()
    else:
        other = indexed / "other.wtui"
        write_run(other, 12, seed=9)
        weighttui.open(other)
        shutil.copy(index_dir(other) / "manifest.json", manifest)
    assert digest(weighttui.open(path)) == want
    assert digest(weighttui.open(path)) == want  # and after whatever the first reader rewrote


# ------------------------------------------------------------------ where the index goes


def test_read_only_directory_uses_the_user_cache_then_nothing(indexed, monkeypatch):
    path = indexed / "ro" / "run.wtui"
    path.parent.mkdir()
    write_run(path, 30)
    want = digest(weighttui.open(path, cache=False))
    real = store_index.writable
    monkeypatch.setattr(store_index, "writable", lambda d: real(d) and not d.startswith(str(path.parent)))
    run = weighttui.open(path)
    assert run.index_path is not None and run.index_path.startswith(str(indexed / "xdg" / "weighttui" / "index"))
    assert not index_dir(path).exists() and digest(run) == want
    assert weighttui.open(path).index_path == run.index_path
    monkeypatch.setattr(store_index, "writable", lambda d: False)
    shutil.rmtree(indexed / "xdg")
    run = weighttui.open(path)
    assert run.index_path is None and digest(run) == want


def test_cache_false_touches_no_disk(indexed):
    path = indexed / "run.wtui"
    write_run(path, 30)
    before = sorted(os.listdir(indexed))
    weighttui.open(path, cache=False)
    assert sorted(os.listdir(indexed)) == before and not (indexed / "xdg").exists()


def test_reader_never_writes_the_log(indexed):
    path = indexed / "run.wtui"
    two_runs_with_damage(path)
    before = (path.read_bytes(), os.stat(path).st_mtime_ns)
    weighttui.open(path)
    weighttui.open(path, max_rows=8).refresh()
    assert (path.read_bytes(), os.stat(path).st_mtime_ns) == before


def test_log_replaced_while_open_is_read_again(indexed):
    path = indexed / "run.wtui"
    write_run(path, 30)
    run = weighttui.open(path)
    write_run(path, 12, start=500, seed=3)  # mode="w": truncated and rewritten in place
    run.refresh()
    assert run.resets == 1 and run.steps.tolist() == list(range(500, 512))
    assert digest(run) == digest(weighttui.open(path, cache=False))
    tmp = indexed / "new.wtui"
    write_run(tmp, 4, start=7, seed=4)
    os.replace(tmp, path)  # replaced by another file
    run.refresh()
    assert run.resets == 2 and run.steps.tolist() == [7, 8, 9, 10]


def test_two_builders_at_once_in_separate_processes(tmp_path):
    """Four processes open a fresh 3 MB log at the same moment; all agree, the index ends valid."""
    path = tmp_path / "big.wtui"
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from make_big_log import make
    finally:
        sys.path.pop(0)
    make(path, size_mb=3, tensors=20, bins=16, sample=4, full_every=50)
    script = textwrap.dedent("""
        import hashlib, sys, weighttui
        run = weighttui.open(sys.argv[1])
        h = hashlib.sha256()
        for name in run.tensor_names:
            for a in run.series(name, "norm") + run.histograms(name)[1:]:
                h.update(a.tobytes())
        h.update(run.stat_matrix("delta", "ratio").tobytes())
        print(h.hexdigest(), run.snapshot_count)
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO), XDG_CACHE_HOME=str(tmp_path / "xdg"))
    procs = [subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(4)]
    outs = [p.communicate(timeout=300)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    plain = subprocess.run([sys.executable, "-c", script.replace("open(sys.argv[1])",
                                                                "open(sys.argv[1], cache=False)"), str(path)],
                           stdout=subprocess.PIPE, text=True, env=env, check=True).stdout.split()
    assert all(o == plain for o in outs)
    assert (index_dir(path) / "manifest.json").exists()
    reread = subprocess.run([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True, env=env,
                            check=True).stdout.split()
    assert reread == plain
    leftovers = [n for n in os.listdir(index_dir(path)) if n.startswith(".tmp-")]
    assert leftovers == []


# ------------------------------------------------------------------ issue 19, items 5, 6 and 17


def test_torn_frame_then_appended_run_reads_the_same_on_every_path(tmp_path):
    """A writer killed mid-frame, restarted with mode="a": the old run is not finished, no new frame lost."""
    path = tmp_path / "torn.wtui"
    write_run(path, 20)
    full = path.read_bytes()
    dec = FrameDecoder(HEADER_SIZE)
    dec.feed(full[HEADER_SIZE:])
    end = [f for f in dec.frames() if f.type == FrameType.END][0]
    raw = full[: end.offset]  # as if the writer were killed before its end record
    snap = encode_frame(FrameType.SNAPSHOT, {"step": 99, "time": 0.0, "ids": encode_array(np.zeros(1, "<u4")),
                                             "weights": {"names": ["mean"], "stats": encode_array(np.zeros((1, 1)))}})
    path.write_bytes(raw + snap[: len(snap) // 2])  # the torn frame
    torn_at = len(raw)
    write_run(path, 15, mode="a", start=0, seed=2)
    runs = [weighttui.open(path), weighttui.open(path, max_rows=8), weighttui.open(path, cache=False)]
    for run in runs:
        assert [r.snapshots for r in run.runs] == [20, 15]
        assert [r.status for r in run.runs] == ["unfinished", "finished"]
        assert run.corruptions == [torn_at]
    info = subprocess.run([sys.executable, "-m", "weighttui.cli", "info", "--json", str(path)], capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=str(REPO)), check=True)
    doc = json.loads(info.stdout)
    assert doc["corruptions"] == [torn_at] and doc["runs_in_log"] == 2
    assert doc["snapshots"] == 15 and doc["status"] == "finished"  # the latest run, all of it


def _huge_declarations_log(path, tensors=100_000, bins=65536):
    decls = [{"id": i, "name": f"t{i}", "shape": [2], "dtype": "float32", "trainable": True} for i in range(tensors)]
    frames = [encode_frame(FrameType.RUN, {"run_id": "huge", "created": 1.0, "bins": bins}),
              encode_frame(FrameType.TENSORS, {"tensors": decls})]
    for step in range(3):
        counts = np.zeros((1, bins), "<u4")
        counts[0, 5] = 2
        frames.append(encode_frame(FrameType.SNAPSHOT, {
            "step": step, "time": 1.0 + step, "ids": encode_array(np.array([tensors - 1 - step], "<u4")),
            "weights": {"names": ["mean", "norm"], "stats": encode_array(np.ones((1, 2))),
                        "hist": {"lo": encode_array(np.array([-1e308])), "hi": encode_array(np.array([1e308])),
                                 "counts": encode_array(counts)}}}))
    path.write_bytes(HEADER + b"".join(frames))


def test_declared_sizes_do_not_choose_reader_memory(tmp_path):
    """65,536 bins and 100k declared tensors in a few-MB log: readers stay small (RSS from outside)."""
    path = tmp_path / "huge.wtui"
    _huge_declarations_log(path)
    script = textwrap.dedent("""
        import json, resource, sys, weighttui
        from weighttui.cli.info import info_dict
        run = weighttui.open(sys.argv[1])
        steps, lo, hi, counts = run.histograms(run.tensor_names[-1])
        doc = json.dumps(info_dict(run), default=str)
        run.stat_matrix("weights", "norm"); run.present
        # VmHWM: this process's own peak (ru_maxrss keeps the forking parent's across exec)
        hwm = [ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:")]
        rss = int(hwm[0].split()[1]) / 1024 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"rss_mb": rss,
                          "hist": [steps.tolist(), lo.tolist(), hi.tolist(), counts.shape],
                          "tensors": len(run.tensor_names), "snapshots": run.snapshot_count}))
    """)
    out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=str(REPO), XDG_CACHE_HOME=str(tmp_path / "xdg")))
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["tensors"] == 100_000 and got["snapshots"] == 3
    assert got["hist"][0] == [0] and got["hist"][1] == [-1e308] and got["hist"][3] == [1, 65536]
    assert got["rss_mb"] < 400, got["rss_mb"]  # (the old dense store asked for rows x 100k x 65,536 x 4 bytes)


def test_edge_shapes_and_ranges_do_not_break_readers(tmp_path):
    """A declared shape (0, 2**64-1) costs only that tensor's reshape; histograms over +-1e308 read back."""
    path = tmp_path / "edge.wtui"
    decls = [{"id": 0, "name": "odd", "shape": [0, 2**64 - 1], "dtype": "float32", "trainable": True},
             {"id": 1, "name": "w", "shape": [2], "dtype": "float32", "trainable": True}]
    frames = [encode_frame(FrameType.RUN, {"run_id": "edge", "created": 1.0, "bins": 4}),
              encode_frame(FrameType.TENSORS, {"tensors": decls}),
              encode_frame(FrameType.SNAPSHOT, {
                  "step": 0, "time": 1.0, "ids": encode_array(np.array([0, 1], "<u4")),
                  "weights": {"names": ["mean"], "stats": encode_array(np.array([[np.nan], [1.0]])),
                              "hist": {"lo": encode_array(np.array([-1e308, -1e308])),
                                       "hi": encode_array(np.array([1e308, 1e308])),
                                       "counts": encode_array(np.array([[0, 0, 0, 0], [1, 0, 0, 1]], "<u4"))}}}),
              encode_frame(FrameType.VALUES, {"step": 0, "id": 0, "offset": 0,
                                              "value": encode_array(np.zeros(0, "<f4"))}),
              encode_frame(FrameType.VALUES, {"step": 0, "id": 1, "offset": 0,
                                              "value": encode_array(np.array([1.0, 2.0], "<f4"))})]
    path.write_bytes(HEADER + b"".join(frames))
    run = weighttui.open(path)
    assert not run.corruptions
    w = run.weights(step=0)
    assert w["w"].tolist() == [1.0, 2.0] and w["odd"].size == 0
    steps, lo, hi, counts = run.histograms("w")
    assert lo.tolist() == [-1e308] and hi.tolist() == [1e308] and counts.tolist() == [[1, 0, 0, 1]]
    from weighttui.cli.info import info_dict

    json.dumps(info_dict(run), default=str)


# ------------------------------------------------------------------ tidy table: pandas, parquet, duckdb


def test_to_frame_and_the_parquet_export_give_the_same_tidy_table(tmp_path):
    pd = pytest.importorskip("pandas")
    duckdb = pytest.importorskip("duckdb")
    pytest.importorskip("pyarrow")
    path = tmp_path / "run.wtui"
    write_run(path, 20)
    run = weighttui.open(path)
    frame = run.to_frame()
    assert list(frame.columns) == ["run_id", "step", "epoch", "tensor", "kind", "stat", "value"]
    # every statistic a reader can ask for is a row, and nothing else is
    for kind in ("weights", "delta", "grad"):
        for name in run.tensor_names:
            steps, values = run.series(name, "norm", kind)
            keep = ~np.isnan(values)
            rows = frame[(frame.tensor == name) & (frame.kind == kind) & (frame.stat == "norm")]
            assert len(steps) and rows.step.tolist() == steps[keep].tolist()  # (the log has no NaN statistics)
            np.testing.assert_array_equal(rows.value.to_numpy(), values[keep])
    loss = frame[(frame.kind == "scalar") & (frame.stat == "loss")]
    assert loss.step.tolist() == run.scalars("loss")[0].tolist() and loss.tensor.isna().all()
    assert frame[frame.kind == "weights"].epoch.tolist() == [int(s) // 10 for s in frame[frame.kind == "weights"].step]
    assert "nan_count" in set(frame.stat) and "nan" not in set(frame.stat)

    out = tmp_path / "run.parquet"
    from weighttui.cli.main import main

    assert main(["export", str(path), "--format", "parquet", "--out", str(out)]) == 0
    back = duckdb.sql(f"SELECT run_id, step, epoch, CAST(tensor AS VARCHAR) AS tensor, kind, stat, value "
                      f"FROM '{out}'").df()
    assert len(back) == len(frame)
    pd.testing.assert_series_equal(back.value, frame.value, check_names=False)
    assert back.step.tolist() == frame.step.tolist()
    assert back.tensor.fillna("").tolist() == frame.tensor.astype(object).fillna("").tolist()
    assert set(back.run_id) == {run.run.run_id}
    # one query over a directory of runs
    write_run(tmp_path / "b.wtui", 5, seed=4)
    assert main(["export", str(tmp_path / "b.wtui"), "--format", "parquet", "--out", str(tmp_path / "b.parquet")]) == 0
    per_run = duckdb.sql(f"SELECT run_id, max(step) FROM '{tmp_path}/*.parquet' WHERE kind = 'weights' "
                         f"GROUP BY run_id ORDER BY 2").fetchall()
    assert [m for _r, m in per_run] == [4, 19]


@pytest.mark.parametrize("source", ["format example", "instruments"])
def test_the_tidy_table_has_the_statistics_the_log_has_and_no_others(tmp_path, source):
    """The store keeps a column for every statistic of the schema; the tidy table (to_frame, parquet)
    has rows only for those the log carries, as csv does: an old log gets no NaN instrument rows."""
    pytest.importorskip("pandas")
    from weighttui.log.schema import export_name

    if source == "format example":
        path = Path(__file__).parents[1] / "data" / "clean.wtui"
    else:
        path = tmp_path / "run.wtui"
        rng = np.random.default_rng(0)
        with weighttui.Recorder(path) as rec:  # the default instruments: no spectral ones
            for step in range(4):
                rec.snapshot(step, {"w": rng.normal(size=(8, 8))}, grads={"w": rng.normal(size=(8, 8))})
    run = weighttui.open(path)
    frame = run.to_frame()
    kinds = set(frame.kind)
    assert {"weights", "delta"} <= kinds
    for kind in {"weights", "delta", "grad"} & kinds:  # (the format example has no gradients)
        assert set(frame[frame.kind == kind].stat) == {export_name(c) for c in run.columns(kind)}, kind
    assert "sigma_max" not in set(frame.stat)


def test_parquet_export_without_pyarrow_says_what_to_install(tmp_path, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_pyarrow(name, *a, **k):
        if name.startswith("pyarrow"):
            raise ImportError(name)
        return real_import(name, *a, **k)

    path = tmp_path / "run.wtui"
    write_run(path, 3)
    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    from weighttui.cli.main import main

    assert main(["export", str(path), "--format", "parquet", "--out", str(tmp_path / "x.parquet")]) != 0
    err = capsys.readouterr().err
    assert "pip install 'weighttui[parquet]'" in err and len(err.strip().splitlines()) == 1


def test_columns_a_block_adds_later_or_reorders_read_back_by_name(indexed):
    """Snapshots with the base columns, then with instrument columns, then reordered: NaN where absent."""
    from weighttui.log.schema import WEIGHT_INSTRUMENTS, WEIGHT_STATS

    path = indexed / "cols.wtui"
    decl = [{"id": i, "name": f"t{i}", "shape": [3], "dtype": "float32", "trainable": True} for i in range(3)]
    frames = [encode_frame(FrameType.RUN, {"run_id": "cols", "created": 1.0}),
              encode_frame(FrameType.TENSORS, {"tensors": decl})]
    ids = encode_array(np.arange(3, dtype="<u4"))
    for step in range(60):
        if step < 25:
            names = list(WEIGHT_STATS)
        elif step < 45:
            names = list(WEIGHT_STATS + WEIGHT_INSTRUMENTS)
        else:
            names = list(reversed(WEIGHT_STATS + WEIGHT_INSTRUMENTS))
        stats = np.array([[step * 100 + i * 10 + WEIGHT_STATS.index(n) if n in WEIGHT_STATS else
                           -(step * 100 + i) for n in names] for i in range(3)], dtype=float)
        frames.append(encode_frame(FrameType.SNAPSHOT, {"step": step, "time": 1.0, "ids": ids,
                                                         "weights": {"names": names, "stats": encode_array(stats)}}))
    path.write_bytes(HEADER + b"".join(frames))
    want = digest(weighttui.open(path, cache=False))
    weighttui.open(path)
    run = weighttui.open(path)
    assert run.index_path is not None and digest(run) == want
    steps, norm = run.series("t2", "norm")
    assert norm.tolist() == [s * 100 + 20 + WEIGHT_STATS.index("norm") for s in range(60)]
    _s, sigma = run.series("t1", "sigma_max")
    assert np.isnan(sigma[:25]).all() and sigma[25:].tolist() == [-(s * 100 + 1) for s in range(25, 60)]


@pytest.mark.parametrize("uniform", [True, False])
@pytest.mark.parametrize("ordered", [True, False])
def test_sealing_a_grid_of_snapshots_equals_the_general_merge(monkeypatch, ordered, uniform):
    """The transpose fast path (same tensors in every snapshot) and concatenate+gather agree exactly."""
    rng = np.random.default_rng(3)
    t, bins = 7, 5
    cols = np.arange(t, dtype=np.int32) if ordered else rng.permutation(t).astype(np.int32)
    slen = np.full(t, 3, np.int64) if uniform else rng.integers(0, 4, t).astype(np.int64)
    parts = [{"rows": np.full(t, r, np.int32), "cols": cols, "stats": rng.normal(size=(t, 9)),
              "lo": rng.normal(size=t), "hi": rng.normal(size=t),
              "counts": rng.integers(0, 300, (t, bins)).astype(np.uint32),
              "samples": rng.normal(size=int(slen.sum())).astype(np.float32), "slen": slen} for r in range(11)]
    fast = store_columns.merge(parts, 0, 11, 9, bins, True)
    monkeypatch.setattr(store_columns, "_grid", lambda *a, **k: None)
    slow = store_columns.merge(parts, 0, 11, 9, bins, True)
    for name in ("rows", "cols", "lo", "hi", "counts", "samples", "soff"):
        a, b = fast.part(name), slow.part(name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    assert fast.width == slow.width == 9
    for s in range(9):
        assert np.array_equal(fast.part("stats", s=s), slow.part("stats", s=s))


def test_compact_segments_keep_every_bit(indexed):
    """Sealed segments keep constant, integer and float32-exact statistics and lo/hi equal to min/max in
    smaller forms (columns.compact): what the index gives back is the log's values bit for bit (a NaN's
    payload, -0.0), and a column that only looks narrow (a fraction, a -0.0 among counts) stays exact."""
    from weighttui.log.schema import WEIGHT_STATS

    path = indexed / "bits.wtui"
    rng = np.random.default_rng(5)
    decl = [{"id": i, "name": f"t{i}", "shape": [4], "dtype": "float32",
             "sample_index": encode_array(np.arange(2, dtype="<i8"))} for i in range(3)]
    frames = [encode_frame(FrameType.RUN, {"run_id": "bits", "created": 1.0, "bins": 4}),
              encode_frame(FrameType.TENSORS, {"tensors": decl})]
    payload_nan = np.array([0x7FF8000000000123], dtype="<i8").view("<f8")[0]
    col = {n: i for i, n in enumerate(WEIGHT_STATS)}
    for step in range(70):
        stats = np.empty((3, len(WEIGHT_STATS)))
        stats[:, col["mean"]] = rng.normal(size=3)  # float64
        stats[:, col["std"]] = rng.normal(size=3).astype(np.float32)  # float32-exact
        stats[:, col["min"]] = -rng.random(3).astype(np.float32)
        stats[:, col["max"]] = rng.random(3)
        stats[:, col["absmean"]] = payload_nan  # one NaN with a payload, every row
        stats[:, col["norm"]] = [-0.0, 0.0, 3.0] if step % 2 else [0.0, 0.0, 0.0]  # not uint8: -0.0
        stats[:, col["zero_frac"]] = 0.25 * (step % 5)  # a fraction: float32, not an integer
        stats[:, col["nan"]] = step * 7  # integral, above 255 by the end: uint16
        stats[:, col["inf"]] = step % 3  # integral, small: uint8
        lo, hi = stats[:, col["min"]].copy(), stats[:, col["max"]].copy()
        if step == 33:
            lo[1] -= 1.0  # edges that differ from min in one segment: stored as they are there
        frames.append(encode_frame(FrameType.SNAPSHOT, {
            "step": step, "time": 1.0 + step, "ids": encode_array(np.arange(3, dtype="<u4")),
            "weights": {"names": list(WEIGHT_STATS), "stats": encode_array(stats),
                        "hist": {"lo": encode_array(lo), "hi": encode_array(hi),
                                 "counts": encode_array(rng.integers(0, 9, (3, 4)).astype("<u4"))}},
            "sample": encode_array(rng.normal(size=6).astype("<f4"))}))
    path.write_bytes(HEADER + b"".join(frames))

    def bits(run):
        out = {s: run.stat_matrix("weights", s).view(np.int64).tolist() for s in WEIGHT_STATS}
        for name in run.tensor_names:
            for s in WEIGHT_STATS:
                out[f"{name}/{s}"] = run.series(name, s)[1].view(np.int64).tolist()
            steps, lo, hi, counts = run.histograms(name)
            out[f"{name}/hist"] = (steps.tolist(), lo.view(np.int64).tolist(), hi.view(np.int64).tolist(),
                                   counts.tolist())
            out[f"{name}/samples"] = run.samples(name)[1].view(np.int32).tolist()
        return out

    want = bits(weighttui.open(path, cache=False))
    built = weighttui.open(path)
    again = weighttui.open(path)
    assert again.index_path is not None and bits(built) == want and bits(again) == want
    seg = again._run.groups[0].kinds["weights"]
    stats = {name: seg.stats[col[name]] for name in WEIGHT_STATS}
    assert isinstance(stats["absmean"], store_columns.Const)
    assert stats["std"].dtype == np.float32 and stats["zero_frac"].dtype == np.float32
    assert stats["norm"].dtype == np.float32 and stats["mean"].dtype == np.float64
    assert stats["inf"].dtype == np.uint8
    assert isinstance(seg.lo, store_columns.Alias) and isinstance(seg.hi, store_columns.Alias)
    assert isinstance(seg.rows, store_columns.Tiled) and isinstance(seg.soff, store_columns.Uniform)
    assert any(not isinstance(g.kinds["weights"].lo, store_columns.Alias) for g in again._run.groups)
    assert max(g.kinds["weights"].stats[col["nan"]].dtype.itemsize for g in again._run.groups) == 2


def test_info_summary_is_kept_beside_the_index_and_never_stale(indexed, capsys, monkeypatch):
    """`info` keeps its alerts and latest values beside the index (RunData.derived): the next `info` on
    the same log reads them without diagnosing again, and a log that grew or was replaced is summarised
    afresh - every time equal to `info --no-cache`."""
    from weighttui.analysis import diagnose as diagnose_mod
    from weighttui.cli.main import main as cli

    path = indexed / "run.wtui"

    def info(*extra):
        assert cli(["info", "--json", *extra, str(path)]) == 0
        return json.loads(capsys.readouterr().out)

    write_run(path, 40)
    fresh = info("--no-cache")
    assert info() == fresh and fresh["alerts"] is not None
    assert any(p.name.startswith("derived-") for p in index_dir(path).iterdir())
    calls = []
    real = diagnose_mod.diagnose
    monkeypatch.setattr(diagnose_mod, "diagnose", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert info() == fresh and not calls  # read back, not computed
    write_run(path, 25, mode="a", start=1000, seed=4)  # the log grows: a new summary
    grown = info("--no-cache")
    assert grown != fresh and info() == grown and calls
    path.unlink()
    write_run(path, 30, seed=8)  # another log at the same path
    other = info("--no-cache")
    assert info() == other and info(*["--threshold", "ratio_high=0.5"]) == info("--no-cache", "--threshold",
                                                                                  "ratio_high=0.5")


def test_segments_the_spiller_cannot_write_stay_in_memory_and_are_saved_later(indexed, monkeypatch):
    """A group whose file the background writer fails to write (a full disk for a moment) is kept in
    memory and written by the save; the result is the same run, and the index that is left works."""
    path = indexed / "run.wtui"
    two_runs_with_damage(path)
    want = digest(weighttui.open(path, cache=False))
    real = store_index._Writer.write
    failed = []

    def flaky(self, directory, as_name=None):
        if as_name is not None:  # the spiller's writes (temporary names); the save's own go through
            failed.append(as_name)
            raise OSError(28, "No space left on device")
        return real(self, directory, as_name)

    monkeypatch.setattr(store_index._Writer, "write", flaky)
    run = weighttui.open(path)
    assert failed and run.index_path is not None and digest(run) == want
    assert not [p for p in index_dir(path).iterdir() if p.name.startswith(".tmp-")]
    monkeypatch.setattr(store_index._Writer, "write", real)
    again = weighttui.open(path)
    assert again._run.groups and all(g.ref is not None for g in again._run.groups)
    assert digest(again) == want


def test_a_writer_behind_the_reader_has_groups_sealed_on_the_readers_thread(indexed, monkeypatch):
    """When the index writer is still writing a group as the next one is due (a slow disk, two busy
    cores), the reading thread seals that group itself instead of waiting (Spiller.__call__): the
    same run and the same index as when the writer keeps up."""
    import threading
    import time as time_mod

    path = indexed / "run.wtui"
    two_runs_with_damage(path)
    want = digest(weighttui.open(path, cache=False))
    real_write, real_seal = store_index.Spiller._write, store_index.sealed_segment
    sealed_on: list[str] = []

    def slow_write(self, g, name):
        time_mod.sleep(0.05)  # the writer falls behind
        return real_write(self, g, name)

    def seal(*job):
        sealed_on.append(threading.current_thread().name)
        return real_seal(*job)

    monkeypatch.setattr(store_index.Spiller, "_write", slow_write)
    monkeypatch.setattr(store_index, "sealed_segment", seal)
    run = weighttui.open(path)
    assert digest(run) == want and run.index_path is not None
    assert "MainThread" in sealed_on  # (some groups were sealed here, the writer being behind)
    monkeypatch.setattr(store_index.Spiller, "_write", real_write)
    again = weighttui.open(path)
    assert again._run.groups and all(g.ref is not None for g in again._run.groups)
    assert digest(again) == want


def test_counts_of_small_tensors_are_kept_narrow_beside_big_ones(indexed):
    """A segment's histogram counts are stored per tensor in the dtype that tensor's counts need
    (columns.Split): a bias's counts in uint8 beside a big matrix's in uint16/uint32. Reads give the
    same counts as without an index, also after the log grew and the last segment was rewritten."""
    from weighttui.log.schema import WEIGHT_STATS

    path = indexed / "mixed.wtui"
    rng = np.random.default_rng(11)
    big = {0: 70000, 2: 300}  # tensor id -> its largest count (uint32, uint16); ids 1 and 3 stay under 256
    decl = [{"id": i, "name": f"t{i}", "shape": [4], "dtype": "float32"} for i in range(4)]

    def frames(steps):
        out = []
        for step in steps:
            counts = rng.integers(0, 250, (4, 6)).astype("<u4")
            for tid, top in big.items():
                counts[tid, step % 6] = top - step % 7
            stats = rng.normal(size=(4, 9))
            out.append(encode_frame(FrameType.SNAPSHOT, {
                "step": step, "time": 1.0, "ids": encode_array(np.arange(4, dtype="<u4")),
                "weights": {"names": list(WEIGHT_STATS), "stats": encode_array(stats),
                            "hist": {"lo": encode_array(stats[:, 2].copy()), "hi": encode_array(stats[:, 3].copy()),
                                     "counts": encode_array(counts)}}}))
        return out

    path.write_bytes(HEADER + encode_frame(FrameType.RUN, {"run_id": "mixed", "created": 1.0, "bins": 6})
                     + encode_frame(FrameType.TENSORS, {"tensors": decl}) + b"".join(frames(range(50))))

    def hists(run):
        return {name: [a.tolist() for a in run.histograms(name)] + [a.tolist() for a in
                                                                     run.histograms(name, start=7, stop=31)]
                for name in run.tensor_names}

    for grow in (None, range(50, 63)):
        if grow is not None:
            with open(path, "ab") as fh:
                fh.write(b"".join(frames(grow)))
        want = hists(weighttui.open(path, cache=False))
        assert hists(weighttui.open(path)) == want
        again = weighttui.open(path)
        assert again.index_path is not None and hists(again) == want
        split = [g.kinds["weights"].counts for g in again._run.groups]
        assert all(isinstance(c, store_columns.Split) for c in split)
        assert [p is not None for p in split[0].parts] == [True, True, True]
        assert split[0].parts[0].dtype == np.uint8 and split[0].dtype == np.uint32
        seg = again._run.groups[0].kinds["weights"]
        assert np.array_equal(seg.part("counts"), np.concatenate([seg.part("counts", *seg.span(c)) for c in range(4)]))


def test_a_relative_xdg_cache_home_is_ignored(tmp_path, monkeypatch):
    """XDG_CACHE_HOME=relcache put index trees under the directory a reader ran in; the XDG specification
    says a relative value is ignored (~/.cache then), for the index, the remote mirrors and watched imports."""
    from weighttui.data.remote import default_cache_path, parse_remote
    from weighttui.data.store.index import cache_root
    from weighttui.log.paths import user_cache_dir

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", "relcache")
    home_cache = os.path.join(str(tmp_path / "home"), ".cache", "weighttui")
    assert cache_root() == os.path.join(home_cache, "index")
    assert user_cache_dir("import") == os.path.join(home_cache, "import")
    spec = parse_remote("box:/runs/a.wtui")
    assert spec is not None and default_cache_path(spec).startswith(os.path.join(home_cache, "remote"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == os.path.join(str(tmp_path / "xdg"), "weighttui", "index")


def test_an_index_is_not_served_for_a_log_written_to_in_place_since(tmp_path):
    """A byte flipped in the middle of an indexed log (same size: the index's checks of its first bytes and of
    those before the covered point pass): the index kept serving the old statistics and no corruption, while a
    read without it reported one. The log's mtime, kept when the index covers the whole file, tells."""
    import weighttui

    path = tmp_path / "big.wtui"
    rng = np.random.default_rng(0)
    with weighttui.Recorder(path) as rec:
        for step in range(400):
            rec.snapshot(step, {f"w{i}": rng.standard_normal((32, 32)).astype(np.float32) for i in range(4)})
    assert os.path.getsize(path) > (1 << 20)
    first = weighttui.open(path)  # builds the index beside the log
    assert first.index_path is not None and first.corruptions == []
    size = os.path.getsize(path)
    with open(path, "r+b") as fh:
        fh.seek(size // 2)
        byte = fh.read(1)
        fh.seek(size // 2)
        fh.write(bytes([byte[0] ^ 0xFF]))
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # (a coarse clock: the write's own mtime)
    plain = weighttui.open(path, cache=False)
    cached = weighttui.open(path)
    assert len(plain.corruptions) == 1
    assert cached.corruptions == plain.corruptions and cached.snapshot_count == plain.snapshot_count
