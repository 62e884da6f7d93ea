"""`weighttui export`: statistics as tables, or complete weights at a step.

Formats:
- csv: one row per (snapshot, tensor, kind, statistic), the "long" layout that
  pandas and spreadsheets pivot easily; with --step/--epoch, refused (use npz).
- json: {"steps", "epochs", "tensors", "stats": {kind: {stat: [[...]]}}, "scalars"};
  with --step/--epoch, the complete weights as nested lists.
- npz: the same statistics as arrays (`weights.norm` is [snapshots, tensors]),
  or with --step/--epoch the complete weights, one array per tensor name.
- changes: the change table (weighttui.analysis.changes) as CSV.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import sys

import numpy as np

from weighttui.data.run import RunData
from weighttui.log.schema import KINDS

FORMATS = ("csv", "json", "npz", "changes", "tensorboard")


@contextlib.contextmanager
def _text_out(out: str):
    if out == "-":
        yield sys.stdout
        sys.stdout.flush()
    else:
        with open(out, "w", newline="") as fh:
            yield fh


def _kinds(run: RunData, kinds) -> list[str]:
    present = [k for k in KINDS if run.has_kind(k)]
    if not kinds:
        return present
    missing = [k for k in kinds if k not in present]
    if missing:
        raise ValueError(f"this log has no {', '.join(missing)} statistics (it has: {', '.join(present) or 'none'})")
    return list(kinds)


def _json_number(x: float):
    """JSON has no NaN/Inf: write them as null and strings so nothing is silently lost."""
    if math.isnan(x):
        return None
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def export(run: RunData, *, fmt: str, out: str, step=None, epoch=None, kinds=None) -> str:
    """Write `run` to `out` in `fmt`; returns a short description of what was written."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if step is not None or epoch is not None:
        return _export_weights(run, fmt, out, step, epoch)
    if fmt == "csv":
        return _stats_csv(run, out, _kinds(run, kinds))
    if fmt == "json":
        return _stats_json(run, out, _kinds(run, kinds))
    if fmt == "npz":
        return _stats_npz(run, out, _kinds(run, kinds))
    if fmt == "changes":
        return _changes_csv(run, out)
    from weighttui.integrations.tensorboard import write_tensorboard  # needs the tensorboard package

    return write_tensorboard(run, out, kinds=kinds)


# ------------------------------------------------------------------ statistics


def _stats_csv(run: RunData, out: str, kinds) -> str:
    steps, epochs, names = run.steps, run.epochs, run.tensor_names
    cols = _name_cols(run)
    present = run.present
    rows = 0
    with _text_out(out) as fh:
        w = csv.writer(fh)
        w.writerow(["step", "epoch", "tensor", "kind", "stat", "value"])
        for kind in kinds:
            covered = present & _covered(run, kind)
            for stat in run.columns(kind):
                m = run.stat_matrix(kind, stat)
                for r in range(run.n):
                    ep = "" if epochs[r] < 0 else int(epochs[r])
                    for name, c in zip(names, cols):
                        if covered[r, c]:
                            w.writerow([int(steps[r]), ep, name, kind, stat, repr(float(m[r, c]))])
                            rows += 1
        for sname in run.scalar_names:
            s_steps, values = run.scalars(sname)
            for s, v in zip(s_steps, values):
                w.writerow([int(s), "", "", "scalar", sname, repr(float(v))])
                rows += 1
    return f"{rows} rows of statistics to {out}"


def _covered(run: RunData, kind: str) -> np.ndarray:
    """[rows, tensors]: where the block has a row (FORMAT.md: uncovered rows are all NaN)."""
    stacked = np.stack([run.stat_matrix(kind, s) for s in run.columns(kind)], axis=-1)
    return ~np.isnan(stacked).all(axis=-1)


def _stats_columns(run: RunData, kinds) -> dict:
    return {kind: {stat: run.stat_matrix(kind, stat)[:, _name_cols(run)] for stat in run.columns(kind)}
            for kind in kinds}


def _name_cols(run: RunData) -> list[int]:
    return [run.column(n) for n in run.tensor_names]


def _stats_json(run: RunData, out: str, kinds) -> str:
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
    }
    with _text_out(out) as fh:
        json.dump(doc, fh)
        fh.write("\n")
    return f"statistics of {len(doc['tensors'])} tensors over {len(doc['steps'])} snapshots to {out}"


def _stats_npz(run: RunData, out: str, kinds) -> str:
    if out == "-":
        raise ValueError("npz cannot go to stdout; give a file name with --out")
    arrays = {"steps": run.steps, "epochs": run.epochs, "tensors": np.array(run.tensor_names, dtype=str)}
    for kind, by_stat in _stats_columns(run, kinds).items():
        for stat, m in by_stat.items():
            arrays[f"{kind}.{stat}"] = np.ascontiguousarray(m)
    for sname in run.scalar_names:
        s_steps, values = run.scalars(sname)
        arrays[f"scalar.{sname}.steps"] = s_steps
        arrays[f"scalar.{sname}.values"] = values
    np.savez_compressed(out, **arrays)
    return f"{len(arrays)} arrays to {out}"


def _changes_csv(run: RunData, out: str) -> str:
    from weighttui.analysis.changes import COLUMNS, change_table

    rows = change_table(run)
    with _text_out(out) as fh:
        w = csv.DictWriter(fh, fieldnames=["tensor", *COLUMNS, "flag"], extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow(row)
    return f"change table of {len(rows)} tensors to {out}"


# ------------------------------------------------------------------ weights


def _export_weights(run: RunData, fmt: str, out: str, step, epoch) -> str:
    weights = run.weights(step=step, epoch=epoch)  # KeyError lists what exists
    where = f"step {step}" if step is not None else f"epoch {epoch}"
    if fmt == "npz":
        if out == "-":
            raise ValueError("npz cannot go to stdout; give a file name with --out")
        np.savez_compressed(out, **weights)
    elif fmt == "json":
        with _text_out(out) as fh:
            json.dump({name: arr.tolist() for name, arr in weights.items()}, fh)
            fh.write("\n")
    else:
        raise ValueError(f"complete weights export as npz or json, not {fmt}")
    return f"{len(weights)} tensors at {where} to {out}"
