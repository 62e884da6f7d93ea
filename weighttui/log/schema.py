"""The column names of docs/FORMAT.md's statistics blocks: what a snapshot's columns mean.

Writers (weighttui.record) fill these columns and readers (weighttui.data) index
them; both import the names from here so that they can never disagree.
"""

WEIGHT_STATS = ("mean", "std", "min", "max", "absmean", "norm", "zero_frac", "nan", "inf")
DELTA_STATS = ("norm", "ratio", "max_abs", "mean_abs", "changed_frac", "exact")
KINDS = ("weights", "delta", "grad")
# The statistics columns of each kind of block (grad blocks use the weights columns).
COLUMNS = {"weights": WEIGHT_STATS, "delta": DELTA_STATS, "grad": WEIGHT_STATS}
