"""A run's statistics as one tidy table: run_id, step, epoch, tensor, kind, stat, value.

One row per (snapshot, tensor, kind, statistic) that the log holds, at full
resolution, plus the scalars (kind "scalar", tensor missing, stat = the scalar's
name) and, when the run has one, where its first non-finite value was (kind
"nan_origin", stat: what held it, weights / grad / delta / optim, value: its flat
index, NaN when not known). `kinds` chooses the statistics blocks; the scalars and
the nan_origin row come whatever it says, as in every export. Built straight from
the store's tensor-major segments, one segment at a time, so `write_parquet` holds
one segment's rows in memory whatever the log's size. A directory of runs exported
this way is one dataset for DuckDB, Polars, pandas or Spark (`SELECT ... FROM
'runs/*.parquet'`).

`RunData.to_frame()` (alias `to_pandas()`) returns the same table as a pandas
DataFrame; `weighttui export --format parquet` writes it with pyarrow. Neither
library is needed by anything else in weighttui (`pip install 'weighttui[parquet]'`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from weighttui.log.schema import COLUMNS, KINDS, export_name

PARQUET_HINT = "pip install 'weighttui[parquet]'"
COLUMN_NAMES = ("run_id", "step", "epoch", "tensor", "kind", "stat", "value")


def chunks(run, kinds=None) -> Iterator[dict]:
    """Pieces of the tidy table as numpy columns: step, epoch (-1: unknown), tensor (column code or -1),
    kind, stat, value. Stat names are the export names (nan_count, inf_count)."""
    state = run._run
    if state is None:
        return
    steps, epochs = state.steps.view, state.epochs.view
    for kind in kinds or KINDS:
        names = [export_name(s) for s in COLUMNS[kind]]
        has = set(run.columns(kind))  # the store keeps every schema column; rows only for those the log has
        for seg in state.segment_list(kind):
            if not seg.entries:
                continue
            rows, cols = seg.part("rows"), seg.part("cols")
            stats = np.stack([seg.part("stats", s=s) for s in range(len(names))])
            keep = ~np.isnan(stats).all(axis=0)  # a block row for a tensor it did not cover
            if not keep.all():
                rows, cols, stats = rows[keep], cols[keep], stats[:, keep]
            for s, stat in enumerate(names):
                if COLUMNS[kind][s] not in has:
                    continue
                yield {"step": steps[rows], "epoch": epochs[rows], "tensor": cols.astype(np.int32),
                       "kind": kind, "stat": stat, "value": stats[s]}
    for name, (s_steps, s_values) in state.scalars.items():
        st = s_steps.view
        yield {"step": st, "epoch": np.full(st.size, -1, dtype=np.int64),
               "tensor": np.full(st.size, -1, dtype=np.int32), "kind": "scalar", "stat": name,
               "value": s_values.view}
    origin = run.nan_origin
    if origin is not None and origin["step"] is not None:
        col = run.column(origin["tensor"]) if origin["tensor"] in run.tensor_names else -1
        yield {"step": np.array([origin["step"]], np.int64), "epoch": np.array([-1], np.int64),
               "tensor": np.array([col], np.int32), "kind": "nan_origin", "stat": origin["kind"] or "",
               "value": np.array([np.nan if origin["index"] is None else float(origin["index"])])}


def tensor_names_by_column(run) -> list[str]:
    return [t.name for t in run.tensors]


def to_frame(run, kinds=None):
    """The tidy table as a pandas DataFrame (categorical tensor, kind and stat; nullable epoch)."""
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("RunData.to_frame() needs pandas: pip install pandas") from None
    parts = list(chunks(run, kinds))
    names = tensor_names_by_column(run)
    n = [p["step"].size for p in parts]
    step = np.concatenate([p["step"] for p in parts]) if parts else np.zeros(0, np.int64)
    epoch = np.concatenate([p["epoch"] for p in parts]) if parts else np.zeros(0, np.int64)
    tensor = np.concatenate([p["tensor"] for p in parts]) if parts else np.zeros(0, np.int32)
    value = np.concatenate([p["value"] for p in parts]) if parts else np.zeros(0)
    kind_levels = list(dict.fromkeys(p["kind"] for p in parts))
    stat_levels = list(dict.fromkeys(p["stat"] for p in parts))
    kind = np.repeat([kind_levels.index(p["kind"]) for p in parts], n).astype(np.int32)
    stat = np.repeat([stat_levels.index(p["stat"]) for p in parts], n).astype(np.int32)
    run_id = run.run.run_id if run.run is not None else ""
    remap, levels = _levels(names)
    return pd.DataFrame({
        "run_id": pd.Categorical.from_codes(np.zeros(step.size, np.int32), [run_id]),
        "step": step,
        "epoch": pd.arrays.IntegerArray(epoch, epoch < 0),
        "tensor": pd.Categorical.from_codes(remap[tensor], levels),
        "kind": pd.Categorical.from_codes(kind, kind_levels),
        "stat": pd.Categorical.from_codes(stat, stat_levels),
        "value": value,
    })


def write_parquet(run, out, kinds=None, mode: int = 0o600) -> int:
    """Write the tidy table to a Parquet file (one row group per segment); returns the row count."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(f"the parquet export needs pyarrow: {PARQUET_HINT}") from None
    import os
    import stat

    codes_of, levels = _levels(tensor_names_by_column(run))
    tensor_dict = pa.array(levels, pa.string())
    run_id = run.run.run_id if run.run is not None else ""
    schema = pa.schema([("run_id", pa.string()), ("step", pa.int64()), ("epoch", pa.int64()),
                        ("tensor", pa.dictionary(pa.int32(), pa.string())), ("kind", pa.string()),
                        ("stat", pa.string()), ("value", pa.float64())])
    total = 0
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.fchmod(fd, mode)  # an existing file gets the log's mode too, never wider
    except OSError:
        os.close(fd)
        raise
    with os.fdopen(fd, "wb") as fh, pq.ParquetWriter(fh, schema) as writer:
        for p in chunks(run, kinds):
            n = p["step"].size
            tcodes = p["tensor"]
            tensor = pa.DictionaryArray.from_arrays(
                pa.array(codes_of[tcodes], pa.int32(), mask=tcodes < 0), tensor_dict)
            batch = pa.record_batch([
                pa.array(np.broadcast_to(np.array(run_id, dtype=object), n), pa.string()),
                pa.array(p["step"], pa.int64()),
                pa.array(p["epoch"], pa.int64(), mask=p["epoch"] < 0),
                tensor,
                pa.array(np.broadcast_to(np.array(p["kind"], dtype=object), n), pa.string()),
                pa.array(np.broadcast_to(np.array(p["stat"], dtype=object), n), pa.string()),
                pa.array(p["value"], pa.float64()),
            ], schema=schema)
            writer.write_batch(batch)
            total += n
    return total


def _levels(names: list[str]) -> tuple[np.ndarray, list[str]]:
    """Codes of each column into the distinct names (a re-declared name has several columns); -1 stays -1."""
    levels = list(dict.fromkeys(names))
    return np.array([levels.index(n) for n in names] + [-1], dtype=np.int32), levels
