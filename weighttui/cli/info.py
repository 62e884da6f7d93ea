"""`weighttui info`: a summary of a run log, for people (text) and scripts (JSON).

Everything here reads a RunData; nothing touches the file itself, so the same
summary works on a live log and a finished one.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import os
import sys

import numpy as np

from weighttui.analysis.numbers import three_digits
from weighttui.analysis.series import latest_of
from weighttui.data.run import RunData
from weighttui.integrations.importers.base import SOURCE_WORDS
from weighttui.log.schema import KINDS
from weighttui.log.text import inert


def _when(t: float | None) -> str | None:
    """A time from the log as local date and time; one no clock can show (inf, NaN, year 10^292)
    is shown as the number it is, so one bad field costs only itself."""
    if not t:
        return None
    try:
        return _dt.datetime.fromtimestamp(t).isoformat(sep=" ", timespec="seconds")
    except (OverflowError, ValueError, OSError):
        return f"not a time ({t!r})"


def _code_stamp() -> list:
    """Size and mtime of the code a summary comes from: a changed rule or column (also within one
    version, while developing) makes a new key, never a stale summary."""
    import weighttui.analysis.diagnose as diagnose_mod
    import weighttui.analysis.series as series_mod
    import weighttui.data.run as run_mod

    out: list[list | None] = []
    for mod in (diagnose_mod, series_mod, run_mod, sys.modules[__name__]):
        try:
            st = os.stat(mod.__file__ or "")
            out.append([os.path.basename(mod.__file__ or ""), st.st_size, st.st_mtime_ns])
        except OSError:
            out.append(None)
    return out


def _summary_key(run: RunData, what: str, *options) -> str:
    """Everything a cached summary depends on besides the log itself (RunData.derived)."""
    import json

    from weighttui import __version__

    return json.dumps([what, __version__, _code_stamp(), run.run_index, run.max_rows, run.resets, *options],
                      default=repr)


def alerts_of(run: RunData, config=None) -> list:
    """diagnose(run, config), kept beside the log's index for the next `info` on the same log."""
    from weighttui.analysis.diagnose import Alert, diagnose

    options = None if config is None else dataclasses.astuple(config)
    got = run.derived(_summary_key(run, "alerts", options),
                      lambda: [dataclasses.asdict(a) for a in diagnose(run, config)])
    try:
        return [Alert(**a) for a in got]
    except TypeError:  # (kept by a differently shaped Alert)
        return diagnose(run, config)


def tensor_rows(run: RunData) -> list[dict]:
    """tensor_rows_now(run), kept beside the log's index (RunData.derived) for the next `info`."""
    return run.derived(_summary_key(run, "tensor_rows"), lambda: tensor_rows_now(run))


def tensor_rows_now(run: RunData) -> list[dict]:
    """One dict per tensor: declaration and its latest statistics.

    "Latest" is the value at the tensor's latest covered row (analysis.series):
    NaN or Inf there is reported as such (a diverged tensor's norm is NaN, not
    its last finite value); None means no row of that kind covers it.
    """
    instruments = INSTRUMENT_STATS if _has_instruments(run) else ()
    wanted = [("weights", "norm"), ("weights", "std"), ("weights", "nan"), ("weights", "inf"), ("delta", "ratio"),
              ("delta", "ratio/step"), ("grad", "norm"), *instruments]
    by_kind: dict[str, list[str]] = {}
    for kind, stat in wanted:
        if run.has_kind(kind) and stat.partition("/")[0] in run.columns(kind):
            by_kind.setdefault(kind, []).append(stat)
    # the latest value at each tensor's latest covered row (analysis.series), read from the last rows only
    cache = {(kind, stat): values for kind, stats in by_kind.items()
             for stat, values in latest_of(run, kind, stats, sparse={s for k, s in SPARSE_STATS if k == kind}).items()}
    none = [None] * len(run.tensors)

    def last(kind: str, stat: str) -> list:
        return cache.get((kind, stat), none)

    rows = []
    for name in run.tensor_names:
        t = run.tensor(name)
        c = run.column(name)
        rows.append({
            "name": name,
            "layer": t.layer,
            "shape": list(t.shape),
            "dtype": t.dtype,
            "params": t.size,
            "trainable": t.trainable,
            "norm": last("weights", "norm")[c],
            "std": last("weights", "std")[c],
            "nan": last("weights", "nan")[c],
            "inf": last("weights", "inf")[c],
            "update_ratio": last("delta", "ratio")[c],  # between the last two snapshots
            "update_ratio_per_step": last("delta", "ratio/step")[c] if run.has_kind("delta") else None,
            "grad_norm": last("grad", "norm")[c],
            # instruments (docs/instruments.md), when the log has them
            **{INSTRUMENT_KEYS.get((kind, stat), stat): last(kind, stat)[c] for kind, stat in instruments},
        })
    return rows


# the instrument columns `info` shows, latest value per tensor
INSTRUMENT_STATS = (("weights", "sigma_max"), ("weights", "stable_rank"), ("weights", "dist_init"),
                    ("delta", "cos_prev"), ("delta", "cos_grad"), ("delta", "sigma_ratio"),
                    ("optim", "m_norm"), ("optim", "v_norm"), ("optim", "eff_lr"),
                    ("weights", "alpha"), ("weights", "exploding_units"), ("grad", "dead_units"),
                    ("optim", "nonfinite"))
# the text table's instrument columns: (heading, key of tensor_rows)
INSTRUMENT_HEADS = (("sigma_max", "sigma_max"), ("stab.rank", "stable_rank"), ("dist_init", "dist_init"),
                    ("cos_prev", "cos_prev"), ("cos_grad", "cos_grad"), ("sig.ratio", "sigma_ratio"),
                    ("|m|", "m_norm"), ("|v|", "v_norm"), ("eff_lr", "eff_lr"), ("alpha", "alpha"),
                    ("dead u.", "dead_units"), ("expl. u.", "exploding_units"), ("state NaN", "optim_nonfinite"))
# columns shown only where some tensor's value is not 0 (a healthy run's are all 0)
INSTRUMENT_IF_NONZERO = {"optim_nonfinite"}
# keys of tensor_rows for stats whose bare name would not say what they count
INSTRUMENT_KEYS = {("optim", "nonfinite"): "optim_nonfinite"}
# columns written only on some snapshots (alpha: every alpha_every-th); NaN elsewhere means "not fitted"
SPARSE_STATS = {("weights", "alpha")}


def _has_instruments(run: RunData) -> bool:
    return any(run.has_kind(k) and s in run.columns(k) for k, s in INSTRUMENT_STATS)


def damage(run: RunData) -> dict:
    return {
        "corruptions": len(run.corruptions),
        "corrupt_offsets": list(run.corruptions[:20]),
        "corrupt_reasons": list(run.corruption_reasons[:20]),
        "torn_tail_bytes": run.torn_tail,
        "unknown_frames": run.unknown_frames,
    }


def info_dict(run: RunData, alerts=()) -> dict:
    """The summary as plain data (what `weighttui info --json` prints)."""
    rec = run.run
    steps = run.steps
    epochs = [int(e) for e in run.epochs if e >= 0]
    origin = run.nan_origin
    return {
        "path": run.path,
        "file_size": run.file_size,
        "status": run.status,
        "ended_by": None if run.end is None else run.end.reason,  # the exception or signal, if any
        "run": None if rec is None else {
            "run_id": rec.run_id, "created": _when(rec.created), "host": rec.host, "pid": rec.pid,
            "framework": rec.framework, "writer": rec.writer, "bins": rec.bins, "meta": rec.meta,
            "argv": rec.argv,
        },
        "runs_in_log": len(run.runs),
        "steps": run.snapshot_count,  # the number of snapshots (the name for it)
        "snapshots": run.snapshot_count,
        "first_step": int(steps[0]) if steps.size else None,
        "last_step": int(steps[-1]) if steps.size else None,
        "last_epoch": max(epochs) if epochs else None,
        "last_record": _when(run.last_time),
        "time_span_s": _span(run),
        "kinds": [k for k in KINDS if run.has_kind(k)],
        "nan_origin": origin["message"] if origin else None,
        "nan_origin_at": _origin_fields(origin),  # the same, for scripts: step, tensor, kind, flat index
        "tensors": len(run.tensor_names),
        "tensor_list": tensor_rows(run),
        "parameters": sum(t.size for t in (run.tensor(n) for n in run.tensor_names)),
        "scalars": {name: float(run.scalars(name)[1][-1]) for name in run.scalar_names},
        "full_values_steps": run.full_steps,
        "events": [{"step": e.step, "level": e.level, "kind": e.kind, "message": e.message}
                   for e in run.events],
        "dropped": None if run.end is None else run.end.dropped,
        "corruptions": list(run.corruptions),
        "torn_tail": run.torn_tail,
        "damage": damage(run),
        "alerts": [_alert_dict(a) for a in alerts],
    }


def _origin_fields(origin: dict | None) -> dict | None:
    """RunData.nan_origin without its message (info says that one on its own line)."""
    return None if origin is None else {k: v for k, v in origin.items() if k != "message"}


def _span(run: RunData) -> float | None:
    times = run.times
    times = times[np.isfinite(times)]
    # from the earliest to the latest: an imported run's times are its files' and need not be in step order
    return float(times.max() - times.min()) if times.size else None


def _alert_dict(alert) -> dict:
    fields = ("rule", "tensor", "step", "severity", "message", "advice")
    return {f: getattr(alert, f, None) for f in fields}


def _fmt(x: float | None) -> str:
    """None (no value) as "-"; a NaN that the log holds as "nan", as any other value."""
    if x is not None and math.isnan(x):
        return "nan"
    return three_digits(x)


def print_info(run: RunData, alerts, out) -> None:
    """The summary for a person, as a few aligned blocks of text.

    Every string that comes from the log (names, host, meta, messages, the end
    record's status ...) goes through log.text.inert where it is put in a line,
    so a newline in a tensor name cannot print a forged `status:` line and an
    escape cannot drive the terminal: the line breaks are this function's own.
    """
    d = info_dict(run, alerts)
    w = out.write
    w(f"{inert(d['path'])}  ({d['file_size']:,} bytes)\n")
    if d["run"] is None:
        w("  no run yet: the log is empty or holds only the header (has the writer started?)\n")
    else:
        r = d["run"]
        w(f"  run {inert(r['run_id'][:12]) or '?'}  written by {inert(r['writer']) or '?'} "
          f"({inert(r['framework']) or '?'}) on {inert(r['host']) or '?'} pid {r['pid'] or '?'}, "
          f"started {r['created'] or '?'}\n")
        if d["runs_in_log"] > 1:
            shown = ("the latest" if run.run_index is None or run.run_index == d["runs_in_log"] - 1
                     else f"run {run.run_index}")
            w(f"  this log holds {d['runs_in_log']} runs (appended); showing {shown} (--run N for others)\n")
        meta = r["meta"]
        imported = run.import_meta
        if imported is not None:  # `weighttui import`: where steps and epochs came from, said plainly
            w(f"  imported: {inert(_import_line(imported))}\n")
            meta = {k: v for k, v in meta.items() if k != "import"}
        if meta:
            w(f"  meta: {inert(meta)}\n")
    status = inert(d["status"])
    if d.get("ended_by"):
        status += f" ({inert(d['ended_by'])})"
    if d["dropped"]:
        status += f", {inert(d['dropped'])} snapshots dropped (the events say why)"
    w(f"  status: {status}\n")
    if d["snapshots"]:
        epoch = "" if d["last_epoch"] is None else f", last epoch {d['last_epoch']}"
        w(f"  snapshots: {d['snapshots']} (steps {d['first_step']}..{d['last_step']}{epoch}); "
          f"last record {d['last_record']} ({_duration(d['time_span_s'])} of snapshots); "
          f"blocks: {', '.join(d['kinds'])}\n")
    else:
        w("  snapshots: none yet\n")
    if d["full_values_steps"]:
        w(f"  complete weights stored at steps: {_short_list(d['full_values_steps'])}\n")
    if d["scalars"]:
        w("  scalars (latest): " + ", ".join(f"{_clip(inert(k))}={_fmt(v)}" for k, v in d["scalars"].items())
          + "\n")

    dmg = d["damage"]
    if dmg["corruptions"]:
        w(f"  DAMAGE: {dmg['corruptions']} corrupt record(s) skipped, first at byte "
          f"{dmg['corrupt_offsets'][0]} ({inert(dmg['corrupt_reasons'][0])}); everything else was read\n")
    if dmg["torn_tail_bytes"]:
        w(f"  incomplete final record, {dmg['torn_tail_bytes']} bytes ignored\n")
    if dmg["unknown_frames"]:
        w(f"  {dmg['unknown_frames']} record(s) of a type this version does not know were skipped\n")

    tensors = d["tensor_list"]
    if tensors:
        w(f"\n  {len(tensors)} tensors, {d['parameters']:,} parameters\n")
        names = [inert(t["name"]) for t in tensors]
        name_w = min(48, max(len(n) for n in names))
        w(f"  {'tensor':<{name_w}}  {'shape':>14}  {'norm':>9}  {'std':>9}  {'upd/step':>9}  {'grad norm':>9}\n")
        for t, name in zip(tensors, names, strict=True):
            name = name if len(name) <= name_w else "…" + name[-(name_w - 1):]
            shape = "x".join(map(str, t["shape"])) or "scalar"
            flag = "" if t["trainable"] else "  (frozen)"
            bad = (t["nan"] or 0) + (t["inf"] or 0)
            if bad and not math.isnan(bad):  # a count from the log: may be anything a float can be;
                # NaN is no count (an imported TensorBoard histogram does not know its NaN/Inf)
                flag += f"  {int(bad) if math.isfinite(bad) and bad == int(bad) else _fmt(bad)} non-finite"
            w(f"  {name:<{name_w}}  {shape:>14}  {_fmt(t['norm']):>9}  {_fmt(t['std']):>9}  "
              f"{_fmt(t['update_ratio_per_step']):>9}  {_fmt(t['grad_norm']):>9}{flag}\n")
        if _has_instruments(run):
            # only the columns the log has a value for (the default set records few of them)
            columns = [(h, k) for h, k in INSTRUMENT_HEADS
                       if any(t.get(k) is not None and not math.isnan(t[k])
                              and (k not in INSTRUMENT_IF_NONZERO or t[k] != 0) for t in tensors)]
            if columns:
                keys = {k for _h, k in columns}
                notes = (["alpha: latest fit"] if "alpha" in keys else []) + (
                    ["dead u., expl. u.: units counted"] if keys & {"dead_units", "exploding_units"} else []) + (
                    ["state NaN: NaN/Inf elements of the optimizer state"] if "optim_nonfinite" in keys else [])
                w("\n  instruments (latest)" + "".join(f" · {n}" for n in notes) + "\n"
                  f"  {'tensor':<{name_w}}  " + "  ".join(f"{h:>9}" for h, _k in columns) + "\n")
                for t, name in zip(tensors, names, strict=True):
                    name = name if len(name) <= name_w else "…" + name[-(name_w - 1):]
                    w(f"  {name:<{name_w}}  " + "  ".join(f"{three_digits(t[k]):>9}" for _h, k in columns) + "\n")
    if d["nan_origin"]:
        w(f"\n  NaN origin: {inert(d['nan_origin'])}\n")

    warn_events = [e for e in d["events"] if e["level"] != "info"]
    if warn_events:
        w(f"\n  events ({len(warn_events)} warnings/errors):\n")
        for e in warn_events[:10]:
            at = "" if e["step"] is None else f"step {e['step']}: "
            w(f"    {at}[{inert(e['kind'])}] {inert(e['message'])}\n")
    if d["alerts"]:
        w(f"\n  alerts ({len(d['alerts'])}):\n")
        for a in d["alerts"]:  # alert texts quote names from the log
            w(f"    {a['severity'] or 'warning'}: {inert(a['tensor']) if a['tensor'] is not None else '(run)'} "
              f"from step {a['step']}: {inert(a['message'])}\n")
            if a["advice"]:
                w(f"      -> {inert(a['advice'])}\n")
    elif d["snapshots"]:
        w("\n  alerts: none\n")




def _import_line(imp: dict) -> str:
    """The run meta's `import` record (docs/import.md) as one line: source, what was kept, and where the
    steps and epochs came from (`{"name": 3}`: from 3 file names; "metadata", "epoch", "order" ...)."""
    def origin(v) -> str:
        if isinstance(v, dict):
            return ", ".join(f"{SOURCE_WORDS.get(k, k)} ({n})" if isinstance(n, int) else str(k)
                             for k, n in v.items()) or "?"
        return str(v)

    parts = [f"{imp.get('kind', '?')} from {imp.get('source', '?')}"]
    if "checkpoints" in imp:
        parts[0] += f" ({imp['checkpoints']} checkpoints)"
    if imp.get("kind") == "tensorboard":
        parts.append("histograms and scalars, no complete values")
    elif "values" in imp:
        parts.append("complete values kept" if imp["values"] else "no complete values (--no-values)")
    if "step_from" in imp:
        parts.append(f"steps from: {origin(imp['step_from'])}")
    if "epoch_from" in imp:
        parts.append(f"epochs from: {origin(imp['epoch_from'])}")
    if "scalars_from" in imp:
        parts.append(f"scalars from: {origin(imp['scalars_from'])}")
    approx = imp.get("approximate")
    if isinstance(approx, list) and approx:
        parts.append("approximate: " + "; ".join(map(str, approx)))
    return "; ".join(parts)


def _clip(text: str, width: int = 48) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _short_list(xs, k: int = 12) -> str:
    if len(xs) <= k:
        return ", ".join(map(str, xs))
    return ", ".join(map(str, xs[: k // 2])) + ", ..., " + ", ".join(map(str, xs[-k // 2:]))
