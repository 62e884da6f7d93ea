"""The column names of docs/FORMAT.md's statistics blocks: what a snapshot's columns mean.

Writers (weighttui.record) fill these columns and readers (weighttui.data) index
them; both import the names from here so that they can never disagree.
"""

WEIGHT_STATS = ("mean", "std", "min", "max", "absmean", "norm", "zero_frac", "nan", "inf")
DELTA_STATS = ("norm", "ratio", "max_abs", "mean_abs", "changed_frac", "exact")
# Instrument columns (docs/instruments.md): appended to a block's columns when the
# writer computes them; a block without them is complete, a reader that does not
# know them ignores them (columns are found by name).
WEIGHT_INSTRUMENTS = ("sigma_max", "stable_rank", "dist_init")
DELTA_INSTRUMENTS = ("cos_prev", "cos_grad", "sigma_ratio")
# WeightWatcher's power-law exponent of the eigenvalues of W^T W, every few snapshots.
ALPHA_STATS = ("alpha",)
# Per-unit health (rows of W as a matrix: output units / channels), counts per tensor.
UNIT_WEIGHT_STATS = ("exploding_units",)
UNIT_GRAD_STATS = ("dead_units",)
# What those two count (docs/FORMAT.md), here so the writers and the readers' unit strip share them:
DEAD_WINDOW = 3  # snapshots in a row with a unit's gradient exactly zero: dead
EXPLODING_FACTOR = 10.0  # a unit's weight norm above this times the tensor's median unit norm: exploding
# The optional optim block: per tensor optimizer state (Adam moments, SGD momentum).
OPTIM_STATS = ("m_norm", "v_norm", "eff_lr", "nonfinite")
KINDS = ("weights", "delta", "grad", "optim")
# Columns every block of a kind has always had (format 1 as first written); the
# others of COLUMNS are optional additions.
BASE_COLUMNS = {"weights": WEIGHT_STATS, "delta": DELTA_STATS, "grad": WEIGHT_STATS, "optim": ()}
# Every column a reader keeps for each kind of block.
COLUMNS = {
    "weights": WEIGHT_STATS + WEIGHT_INSTRUMENTS + UNIT_WEIGHT_STATS + ALPHA_STATS,
    "delta": DELTA_STATS + DELTA_INSTRUMENTS,
    "grad": WEIGHT_STATS + UNIT_GRAD_STATS,
    "optim": OPTIM_STATS,
}

# Outside the log (CSV, JSON, npz, TensorBoard exports), a statistic called "nan" or "inf" reads
# back as a missing value or a number in pandas and spreadsheets: exports name those columns by
# what they count. The log's own column names stay as FORMAT.md defines them.
EXPORT_NAMES = {"nan": "nan_count", "inf": "inf_count"}


def export_name(stat: str) -> str:
    """The name a statistic column has in every export (`nan` -> `nan_count`, `inf` -> `inf_count`)."""
    return EXPORT_NAMES.get(stat, stat)
