"""`weighttui export`: statistics as tables, or complete weights at a step.

Formats:
- csv: one row per (snapshot, tensor, kind, statistic), the "long" layout that
  pandas and spreadsheets pivot easily; with --step/--epoch, refused (use npz).
- json: {"steps", "epochs", "tensors", "stats": {kind: {stat: [[...]]}}, "scalars"};
  with --step/--epoch, the complete weights as nested lists.
- npz: the same statistics as arrays (`weights.norm` is [snapshots, tensors]),
  or with --step/--epoch the complete weights, one array per tensor name.
- changes: the change table (weighttui.analysis.changes) as CSV.
- parquet: one tidy table (run_id, step, epoch, tensor, kind, stat, value) of every
  snapshot's statistics and the scalars (kind "scalar"), for DuckDB, Polars,
  pandas or Spark over a directory of runs; needs pyarrow (weighttui[parquet]).

Statistic names in every export: the log's `nan` and `inf` counts are called
`nan_count` and `inf_count` (log.schema.export_name), so pandas does not read
them as missing values. Exported files get the log's permission bits (a log
kept 0600 to protect the weights gives 0600 exports). Names from the log never
become paths: npz member names that could leave the target directory when
unzipped are percent-encoded (docs/security.md).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import stat as _stat
import sys
import urllib.parse
import zipfile

import numpy as np

from weighttui.analysis.series import covered
from weighttui.cli.errors import CliError
from weighttui.cli.jsonout import json_number as _json_number
from weighttui.data.run import RunData
from weighttui.log.schema import KINDS, export_name

FORMATS = ("csv", "json", "npz", "changes", "tensorboard", "parquet")
TENSORBOARD_HINT = "pip install 'weighttui[tensorboard]'"


def log_mode(run: RunData) -> int:
    """The log's read/write permission bits, for what is exported from it (0600 if unknown)."""
    if run.path is None:
        return 0o600
    try:
        return _stat.S_IMODE(os.stat(run.path).st_mode) & 0o666
    except (OSError, ValueError):
        return 0o600


@contextlib.contextmanager
def _out_file(out: str, mode: int, *, binary: bool = False):
    """`out` opened for writing with permission bits `mode` (also when it already existed)."""
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), mode)
    try:
        if _stat.S_ISREG(os.fstat(fd).st_mode):  # not /dev/null or a pipe
            os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", newline="")) as fh:
        yield fh


@contextlib.contextmanager
def _text_out(out: str, mode: int = 0o600):
    if out == "-":
        yield sys.stdout
        sys.stdout.flush()
    else:
        with _out_file(out, mode) as fh:
            yield fh


def member_name(name: str) -> str:
    """A zip member name for a key from the log: kept when it is a plain relative path,
    else percent-encoded (`urllib.parse.unquote` gives the name back).

    Kept: no empty, `.` or `..` component, no leading `/`, no backslash, drive
    colon, `%` or control character; so no unzip tool writes it outside the target.
    """
    parts = name.split("/")
    plain = (name and "%" not in name and "\\" not in name and ":" not in name
             and all(p not in ("", ".", "..") for p in parts)
             and all(ch.isprintable() for ch in name))
    return name if plain else urllib.parse.quote(name, safe="")


def _write_npz(out: str, arrays: dict, mode: int) -> int:
    """Like numpy.savez_compressed, for any key (np.savez treats `file` and `allow_pickle` as its
    own arguments) and with member names that stay inside the target (member_name).
    Returns how many keys were encoded."""
    if out == "-":
        raise CliError("npz cannot go to stdout; give a file name with --out")
    encoded = 0
    with _out_file(out, mode, binary=True) as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as zf:
        for key, arr in arrays.items():
            member = member_name(key)
            encoded += member != key
            with zf.open(member + ".npy", "w", force_zip64=True) as m:
                np.lib.format.write_array(m, np.asanyarray(arr), allow_pickle=False)
    return encoded


def _kinds(run: RunData, kinds) -> list[str]:
    present = [k for k in KINDS if run.has_kind(k)]
    if not kinds:
        return present
    missing = [k for k in kinds if k not in present]
    if missing:
        raise CliError(f"this log has no {', '.join(missing)} statistics (it has: {', '.join(present) or 'none'})")
    return list(kinds)


def export(run: RunData, *, fmt: str, out: str, step=None, epoch=None, kinds=None, marks=None) -> str:
    """Write `run` to `out` in `fmt`; returns a short description of what was written.

    marks: (step A, step B) for the change table's change between two steps (fmt "changes")."""
    if fmt not in FORMATS:
        raise CliError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if marks is not None and fmt != "changes":
        raise CliError("--marks A B goes with --format changes (the change table between two steps)")
    mode = log_mode(run)
    if step is not None or epoch is not None:
        return _export_weights(run, fmt, out, step, epoch, mode)
    if fmt == "csv":
        return _stats_csv(run, out, _kinds(run, kinds), mode)
    if fmt == "json":
        return _stats_json(run, out, _kinds(run, kinds), mode)
    if fmt == "npz":
        return _stats_npz(run, out, _kinds(run, kinds), mode)
    if fmt == "changes":
        return _changes_csv(run, out, mode, marks)
    if fmt == "parquet":
        return _stats_parquet(run, out, kinds, mode)
    try:
        from weighttui.integrations.tensorboard import write_tensorboard
    except ImportError as exc:
        if (exc.name or "").partition(".")[0] not in ("tensorboard", "google"):  # protobuf is google.*
            raise
        raise CliError(f"the tensorboard export needs the tensorboard package: {TENSORBOARD_HINT}") from None
    return write_tensorboard(run, out, kinds=kinds, file_mode=mode)


# ------------------------------------------------------------------ statistics


def _stats_csv(run: RunData, out: str, kinds, mode: int = 0o600) -> str:
    steps, epochs = run.steps, run.epochs
    # every declaration: a tensor reshaped (or cast) mid-run has its history before that under its name too
    names, cols = [t.name for t in run.tensors], list(range(len(run.tensors)))
    rows = 0
    with _text_out(out, mode) as fh:
        w = csv.writer(fh)
        w.writerow(["step", "epoch", "tensor", "kind", "stat", "value"])
        for kind in kinds:
            cover = covered(run, kind)  # NaN in a covered row is a value and is written
            for stat in run.columns(kind):
                m = run.stat_matrix(kind, stat)
                label = export_name(stat)
                for r in range(run.n):
                    ep = "" if epochs[r] < 0 else int(epochs[r])
                    for name, c in zip(names, cols, strict=True):
                        if cover[r, c]:
                            w.writerow([int(steps[r]), ep, name, kind, label, repr(float(m[r, c]))])
                            rows += 1
        for sname in run.scalar_names:
            s_steps, values = run.scalars(sname)
            for s, v in zip(s_steps, values, strict=True):
                w.writerow([int(s), "", "", "scalar", sname, repr(float(v))])
                rows += 1
        origin = run.nan_origin
        if origin is not None and origin["step"] is not None:  # (as data/tidy.chunks: one rule for the row)
            # kind nan_origin, stat: where it was (weights, grad ...), value: its flat index
            w.writerow([origin["step"], "", origin["tensor"] or "", "nan_origin", origin["kind"] or "",
                        "" if origin["index"] is None else origin["index"]])
            rows += 1
    return f"{rows} rows of statistics to {out}"


def _stats_columns(run: RunData, kinds) -> dict:
    out = {}
    for kind in kinds:
        cover = covered(run, kind)
        out[kind] = {export_name(stat): _by_name(run, run.stat_matrix(kind, stat), cover) for stat in run.columns(kind)}
    return out


def _by_name(run: RunData, matrix: np.ndarray, cover: np.ndarray) -> np.ndarray:
    """[rows, tensor_names] of a [rows, declarations] matrix: a name's latest declaration, and where an earlier
    one of that name (before a reshape or a cast) covers a row the latest does not, that one's value."""
    latest = [run.column(n) for n in run.tensor_names]
    out = matrix[:, latest]
    col_of = {n: j for j, n in enumerate(run.tensor_names)}
    for c, info in enumerate(run.tensors):
        j = col_of[info.name]
        if c != latest[j]:
            rows = cover[:, c] & ~cover[:, latest[j]]
            out[rows, j] = matrix[rows, c]
    return out


def _stats_json(run: RunData, out: str, kinds, mode: int = 0o600) -> str:
    stats = _stats_columns(run, kinds)
    doc = {
        "steps": run.steps.tolist(),
        "epochs": [None if e < 0 else int(e) for e in run.epochs],
        "tensors": [{"name": n, "layer": run.tensor(n).layer, "shape": list(run.tensor(n).shape)}
                    for n in run.tensor_names],
        "stats": {k: {s: [[_json_number(float(x)) for x in row] for row in m] for s, m in v.items()}
                  for k, v in stats.items()},
        "scalars": {n: {"steps": run.scalars(n)[0].tolist(),
                        "values": [_json_number(float(x)) for x in run.scalars(n)[1]]}
                    for n in run.scalar_names},
        "nan_origin": run.nan_origin,  # where the first non-finite value was, or null
    }
    with _text_out(out, mode) as fh:
        json.dump(doc, fh)
        fh.write("\n")
    return f"statistics of {len(doc['tensors'])} tensors over {len(doc['steps'])} snapshots to {out}"


def _stats_npz(run: RunData, out: str, kinds, mode: int = 0o600) -> str:
    arrays = {"steps": run.steps, "epochs": run.epochs, "tensors": np.array(run.tensor_names, dtype=str)}
    for kind, by_stat in _stats_columns(run, kinds).items():
        for stat, m in by_stat.items():
            arrays[f"{kind}.{stat}"] = np.ascontiguousarray(m)
    for sname in run.scalar_names:
        s_steps, values = run.scalars(sname)
        arrays[f"scalar.{sname}.steps"] = s_steps
        arrays[f"scalar.{sname}.values"] = values
    origin = run.nan_origin
    if origin is not None:  # where the first non-finite value was (index -1: not known)
        arrays["nan_origin.step"] = np.array(origin["step"] if origin["step"] is not None else -1)
        arrays["nan_origin.tensor"] = np.array(origin["tensor"] or "", dtype=str)
        arrays["nan_origin.kind"] = np.array(origin["kind"] or "", dtype=str)
        arrays["nan_origin.index"] = np.array(origin["index"] if origin["index"] is not None else -1)
    encoded = _write_npz(out, arrays, mode)
    return f"{len(arrays)} arrays to {out}{_encoded_note(encoded)}"


def _stats_parquet(run: RunData, out: str, kinds, mode: int = 0o600) -> str:
    from weighttui.data.tidy import PARQUET_HINT, write_parquet

    if out == "-":
        raise CliError("parquet cannot go to stdout; give a file name with --out")
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise CliError(f"the parquet export needs pyarrow: {PARQUET_HINT}") from None
    rows = write_parquet(run, out, _kinds(run, kinds) if kinds else None, mode)
    return f"{rows} rows (run_id, step, epoch, tensor, kind, stat, value) to {out}"


def _encoded_note(encoded: int) -> str:
    return (f" ({encoded} name(s) percent-encoded to stay inside the archive; urllib.parse.unquote reads them)"
            if encoded else "")


def _changes_csv(run: RunData, out: str, mode: int = 0o600, marks=None) -> str:
    from weighttui.analysis.changes import COLUMNS, change_table, snapshot_step

    mark_a, mark_b = marks if marks is not None else (None, None)
    if marks is not None and run.n and min(marks) < int(run.steps[0]):  # no snapshot at or before it
        raise CliError(f"--marks: step {min(marks)} is before the run's first snapshot (step {int(run.steps[0])})")
    rows = change_table(run, mark_a=mark_a, mark_b=mark_b)
    note = ""
    if marks is not None:  # a mark between or after snapshots is the last snapshot at or before it: say so
        used = [snapshot_step(run, m) for m in marks]
        if used != [int(m) for m in marks]:
            note = f" (--marks {marks[0]} {marks[1]} read as the snapshots at steps {used[0]} and {used[1]}" + (
                ": the same snapshot, so no change" if used[0] == used[1] else "") + ")"
    with _text_out(out, mode) as fh:
        # change_ab_from: "values" (complete tensors at both marks), "samples", or "" (no marks)
        w = csv.DictWriter(fh, fieldnames=["tensor", *COLUMNS, "flag", "change_ab_from"], extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow(row)
    return f"change table of {len(rows)} tensors to {out}{note}"


# ------------------------------------------------------------------ weights


def _export_weights(run: RunData, fmt: str, out: str, step, epoch, mode: int = 0o600) -> str:
    if fmt not in ("npz", "json"):
        raise CliError(f"complete weights export as npz or json, not {fmt}")
    try:
        weights = run.weights(step=step, epoch=epoch)
    except KeyError as exc:  # no values there: the message lists where they exist
        raise CliError(exc.args[0] if exc.args else str(exc)) from None  # (says when an import left them out)
    where = f"step {step}" if step is not None else f"epoch {epoch}"
    if not weights:  # (weights() warned which tensors' values are incomplete there)
        raise CliError(f"no tensor's complete values at {where} could be read: nothing exported")
    encoded = 0
    if fmt == "npz":
        encoded = _write_npz(out, weights, mode)
    else:
        with _text_out(out, mode) as fh:
            json.dump({name: _json_values(arr) for name, arr in weights.items()}, fh)
            fh.write("\n")
    return f"{len(weights)} tensors at {where} to {out}{_encoded_note(encoded)}"


def _json_values(arr: np.ndarray):
    """Nested lists of a tensor's values; NaN/Inf as null/"inf"/"-inf" (JSON has neither)."""
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        return np.vectorize(_json_number, otypes=[object])(arr.astype(np.float64)).tolist()
    return arr.tolist()
