# Type stub of the C extension weighttui._fastats (weighttui/record/native/fastats.c, built by setup.py;
# optional: without a C compiler it is absent and weighttui.integrations.torch_native uses torch ops).
from collections.abc import Sequence

from typing_extensions import Buffer

NRAW: int  # raw statistics per row before the histogram counts (12)
DTYPES: int  # how many dtype codes this build reads (4: float32, float16, bfloat16, float64)
EXTRAS: int  # 1: snapshot() takes `extras` (the instruments computed in its passes; absent in older builds)
XCHUNK: int  # elements per chunk of a 32/64-bit tensor with extras (absent in older builds: 16384 there)
BLOCK: int  # elements per block of a 16-bit tensor, widened to float32 (absent in older builds: 4096)
JOINT_FACTOR: int  # tensors of at least JOINT_FACTOR * bins**2 elements count into one joint (value, delta) table
NSTATE: int  # float64 items of a chain() state row (pass A's totals of one version)
CCHUNK: int  # elements per chunk of a 32/64-bit chain() call
ISA: str  # which build of the hot loops runs: "avx512f", "avx2" or "baseline" (chosen when the module loads)

def snapshot(
    xs: Sequence[Buffer],
    prevs: Sequence[Buffer | None],
    dtypes: bytes,
    bins: int,
    out_w: Buffer,
    out_d: Buffer,
    copy: bool,
    threads: int = 1,
    extras: Sequence[tuple | None] | None = None,
    /,
) -> bytes:
    """Raw statistics rows of each x in xs into out_w, and of x - prev into out_d where prevs[i] is not None;
    with copy, each such prev is overwritten with x.

    xs: C-contiguous buffers of float32 or float64, or of float16/bfloat16 bits as 2-byte items.
    dtypes: one code per tensor (0 float32, 1 float16, 2 bfloat16, 3 float64).
    out_w, out_d: writable float64 buffers of len(xs) * (NRAW + bins).
    threads: how many threads share the tensors (whole tensors each).
    extras: None or per tensor None or (x0, rows, units, v, vd, idx, states, out): the instruments
    computed in the same passes (weighttui.record.kernel.Extras documents them and the layout of out).
    Returns one status byte per tensor: bit 0 set = its weights row was not computed,
    bit 1 = its delta row was not (and its prev was not touched).
    """

def chain(
    bx: Buffer | None,
    bp: Buffer | None,
    bstate: Buffer | None,
    ax: Buffer | None,
    ap: Buffer | None,
    dtype: int,
    bins: int,
    out_w: Buffer,
    out_d: Buffer,
    astate: Buffer | None,
    drop: bool = False,
    /,
) -> int:
    """One step along the versions of one tensor (weighttui import): pass B of bx against bp (histograms
    with the ranges in bstate; raw rows into out_w and out_d as snapshot() writes them) and pass A of ax
    against ap (its totals into astate), in one pass over memory (weighttui.record.kernel.chain).

    drop: bp is a view of a file mapping whose pages are given back as pass B reads them.
    Returns snapshot()'s status bits for bx's rows (3 when there is no pass B).
    """

def finish(raw: Buffer, kind: int, bins: int, stats: Buffer, lo: Buffer, hi: Buffer, counts: Buffer, /) -> None:
    """Raw rows (float64 [R, NRAW + bins]) finished into stats (float64 [R, 9] for kind 0, weights rows;
    [R, 6] for kind 1, delta rows against each row's psq), lo, hi (float64 [R]) and counts (uint32 [R, bins]),
    bit for bit as weighttui.record.raw_rows.weight_rows / delta_rows and hist_parts (absent in older builds)."""
