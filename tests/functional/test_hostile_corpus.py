"""The hostile-log corpus (tests/hostile_corpus.py) through everything that reads a log:
`info`, `info --json`, every export format, `weighttui.open()`; the TUI's screens are driven over
the same corpus in tests/tui/test_hostile_values.py. A hostile value costs only its own field or
record: nothing dies, nothing else is lost, no output can be forged."""

from __future__ import annotations

import json
import os
import stat
import zipfile

import pytest
from hostile_corpus import generate

import weighttui
from weighttui import cli


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    made = generate(out)
    for path in made.values():
        os.chmod(path, 0o600)
    return made


def _reject(token):
    raise ValueError(f"not JSON: {token}")


def _cases():
    import tempfile

    return sorted(generate(tempfile.mkdtemp(prefix="corpus-names-")))


@pytest.mark.parametrize("case", _cases())
def test_every_reader_survives_and_keeps_the_rest(corpus, case, tmp_path, capsys):
    path = corpus[case]
    run = weighttui.open(path)  # never raises
    assert run.run is not None and run.tensors
    if not case.startswith("steps_"):
        assert run.n >= 2, "a bad field must not cost the snapshots around it"

    assert cli.main(["info", path]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert sum(ln.startswith("  status: ") for ln in lines) == 1, "a forged status line"
    assert not any(ch in out for ch in "\x1b\r\x07\u202e\u200b\x9b"), "a control character reached the terminal"

    assert cli.main(["info", path, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out, parse_constant=_reject)
    assert doc["snapshots"] == run.snapshot_count and len(doc["tensor_list"]) == len(run.tensor_names)

    out_dir = tmp_path / "exports"
    out_dir.mkdir()
    for fmt, out in (("csv", "s.csv"), ("json", "s.json"), ("npz", "s.npz"), ("changes", "c.csv"),
                     ("tensorboard", "tb"), ("parquet", "s.parquet")):
        if fmt in ("tensorboard", "parquet"):
            pytest.importorskip({"tensorboard": "tensorboard", "parquet": "pyarrow"}[fmt])
        assert cli.main(["export", path, "--format", fmt, "--out", str(out_dir / out)]) == 0, fmt
    if fmt_steps := run.full_steps:
        for fmt in ("npz", "json"):
            assert cli.main(["export", path, "--format", fmt, "--step", str(fmt_steps[-1]),
                             "--out", str(out_dir / f"w.{fmt}")]) == 0
    capsys.readouterr()
    json.loads((out_dir / "s.json").read_text(), parse_constant=_reject)
    for p in out_dir.rglob("*"):
        if p.is_file():
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
        if p.suffix == ".npz":
            with zipfile.ZipFile(p) as zf:
                for member in zf.namelist():
                    assert not member.startswith("/") and ".." not in member.split("/") and "\\" not in member


def test_the_corpus_covers_every_class(corpus):
    classes = {name.split("_")[0] for name in corpus}
    assert classes >= {"times", "pid", "meta", "hist", "stats", "steps", "names", "scalars", "end", "start"}
    assert len(corpus) >= 30


def test_absurd_times_cost_only_the_time(corpus, capsys):
    for case in ("times_created_inf", "times_created_nan", "times_created_huge", "times_snapshot_inf"):
        assert cli.main(["info", corpus[case]]) == 0
        out = capsys.readouterr().out
        assert "snapshots: 4" in out and "status: finished" in out, case
    assert cli.main(["info", corpus["times_created_inf"]]) == 0
    assert "started not a time (inf)" in capsys.readouterr().out


def test_a_pid_no_process_can_have_is_not_asked(corpus, capsys):
    for case in ("pid_2pow40", "pid_int64_max", "pid_negative", "pid_zero"):
        run = weighttui.open(corpus[case])
        assert run.status in ("running", "unfinished"), (case, run.status)
        assert cli.main(["info", corpus[case], "--json"]) == 0
        capsys.readouterr()


def test_tensorboard_histogram_at_the_float_limits_has_finite_bucket_limits():
    import numpy as np

    pytest.importorskip("tensorboard")
    from weighttui.integrations.tensorboard import histogram_proto

    h = histogram_proto(-1.7976931348623157e308, 1.7976931348623157e308, [1, 0, 0, 2])
    assert np.isfinite(h.bucket_limit).all() and list(h.bucket) == [1, 0, 0, 2]
    assert h.bucket_limit[-1] == 1.7976931348623157e308


def test_bytes_keys_in_meta_are_shown_as_text(corpus, capsys):
    assert cli.main(["info", corpus["meta_bytes_keys"], "--json"]) == 0
    meta = json.loads(capsys.readouterr().out, parse_constant=_reject)["run"]["meta"]
    assert meta["bytes-key"] == 1 and meta["7"] == "int key" and meta["float"] is None
