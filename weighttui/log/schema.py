"""The column names of docs/FORMAT.md's statistics blocks: what a snapshot's columns mean.

Writers (weighttui.record) fill these columns and readers (weighttui.data) index
them; both import the names from here so that they can never disagree.
"""

WEIGHT_STATS = ("mean", "std", "min", "max", "absmean", "norm", "zero_frac", "nan", "inf")
DELTA_STATS = ("norm", "ratio", "max_abs", "mean_abs", "changed_frac", "exact")
KINDS = ("weights", "delta", "grad")
# The statistics columns of each kind of block (grad blocks use the weights columns).
COLUMNS = {"weights": WEIGHT_STATS, "delta": DELTA_STATS, "grad": WEIGHT_STATS}

# Outside the log (CSV, JSON, npz, TensorBoard exports), a statistic called "nan" or "inf" reads
# back as a missing value or a number in pandas and spreadsheets: exports name those columns by
# what they count. The log's own column names stay as FORMAT.md defines them.
EXPORT_NAMES = {"nan": "nan_count", "inf": "inf_count"}


def export_name(stat: str) -> str:
    """The name a statistic column has in every export (`nan` -> `nan_count`, `inf` -> `inf_count`)."""
    return EXPORT_NAMES.get(stat, stat)
