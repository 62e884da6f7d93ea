/*
 * weighttui._fastats: FORMAT.md statistics of CPU tensors in two fused passes.
 *
 * Why this exists: with separate eager ops (torch or numpy) every statistic is
 * its own pass over memory (extrema, shifted sums, sums of squares, |x|, zeros,
 * the delta, the copy for the next delta, the histogram), about 15 read passes
 * per snapshot before binning (docs/torch.md). Here one pass ("A") reads each
 * value and its previous copy once for every statistic of the value and of the
 * update; a second pass ("B"), once the ranges are known, bins both and copies
 * the value into the previous copy for the next snapshot.
 *
 * Contract (the Python side, weighttui/integrations/torch_native.py, relies on it):
 * - inputs are C-contiguous float32, float16 or bfloat16 (raw uint16 bits) or
 *   float64 runs (16-bit ones are widened to float32, exactly; float64 ones are
 *   read as they are, with float64 lanes and a float64 bin index);
 * - output rows have the raw layout of torch_stats.RAW followed by B histogram
 *   counts, all float64: n, m, lo, hi, c, s1 = sum(x - c), s2 = sum((x - c)^2),
 *   asum, zeros, nan, inf, psq | counts. Delta rows: c = s1 = 0, s2 = sum(d^2),
 *   zeros = count(d == 0), psq = sum(prev^2); d = x - prev in float64 (exact for
 *   the 16/32-bit dtypes, rounded once for float64), as weighttui.stats computes it;
 * - only all-finite inputs are handled: a tensor holding NaN/Inf (or whose
 *   range is so narrow that bin edges nearly coincide) is reported back
 *   (status bits) and left untouched, its previous copy included; the Python
 *   side computes it with the general torch path;
 * - histograms are numpy.histogram's counts against float64 edges
 *   (np.linspace(lo, hi, B + 1), the last bin closed): a fast index in float32
 *   (float64 for a range narrow next to its magnitude), and values within its
 *   rounding error of an edge redone exactly as numpy corrects them.
 * Whole tensors are shared among threads; everything runs without the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

#if defined(_WIN32)
#define HAVE_THREADS 0
#else
#include <pthread.h>
#define HAVE_THREADS 1
#endif

#define LANES 16
#define NRAW 12
enum { R_N, R_M, R_LO, R_HI, R_C, R_S1, R_S2, R_ASUM, R_ZEROS, R_NAN, R_INF, R_PSQ };
enum { DT_F32 = 0, DT_F16 = 1, DT_BF16 = 2, DT_F64 = 3 };
enum { ST_W_NOT_DONE = 1, ST_D_NOT_DONE = 2 };
#define MAX_BINS 4096
/* float16/bfloat16 are widened to float32 this many elements at a time */
#define BLOCK 4096
/* sub-histograms that consecutive elements rotate through (breaks the
 * store-to-load dependency when neighbours fall in the same bin) */
#define SUBH 4
/* sub-histogram counts are uint32: flushed to the totals this often */
#define FLUSH (1u << 28)

/* Hot loops are compiled for AVX-512, AVX2 and the baseline, chosen at load
 * time (GCC/clang function multiversioning: target_clones, GCC 6+ and clang 14+;
 * a compiler without it builds the baseline only). The outputs do not depend on
 * the variant: no fused multiply-adds (-ffp-contract=off), the same lanes and the
 * same order of additions in each. Tests build this file once per variant
 * (-DWEIGHTTUI_FASTATS_BASELINE, or -DWEIGHTTUI_FASTATS_TARGET='"avx2"') and
 * compare their outputs bit for bit with the clones'; ISA says which one runs. */
#if defined(WEIGHTTUI_FASTATS_BASELINE)
#define HOT
#define HOT_ISA "baseline"
#elif defined(WEIGHTTUI_FASTATS_TARGET)
#define HOT __attribute__((target(WEIGHTTUI_FASTATS_TARGET)))
#define HOT_ISA WEIGHTTUI_FASTATS_TARGET
#elif defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__)) && \
    defined(__has_attribute)
#if __has_attribute(target_clones)
#define HOT __attribute__((target_clones("avx512f", "avx2", "default")))
#define HOT_CLONES 1
#endif
#endif
#ifndef HOT
#define HOT
#define HOT_ISA "baseline"
#endif

/* The variant the hot loops run as (the clone the loader picked, by the same test). */
static const char *hot_isa(void) {
#ifdef HOT_CLONES
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        return "avx512f";
    if (__builtin_cpu_supports("avx2"))
        return "avx2";
    return "baseline";
#else
    return HOT_ISA;
#endif
}

/* ------------------------------------------------------------ pass A */

/* Per-lane partial sums of pass A, kept across calls (16-bit inputs come in
 * blocks), folded once per tensor by acc_fold: the same order of additions
 * whatever the input dtype. */
typedef struct {
    /* values */
    double s1[LANES], s2[LANES], as[LANES];
    double lo[LANES], hi[LANES]; /* float32 inputs keep float32 values here */
    /* deltas */
    double ds2[LANES], das[LANES], ps[LANES], dlo[LANES], dhi[LANES];
    /* zeros of the values and of the deltas, counted in the inputs' own type (d = x - p is 0
     * exactly where x == p) into integer lanes: one compare and one add for a vector, where a
     * float64 count took two of each */
    uint32_t z[LANES], dz[LANES];
} acc_t;

/* The folded totals. */
typedef struct {
    double s1, s2, asum, zeros;
    double lo, hi;
    double ds2, dasum, dzeros, psq, dlo, dhi;
} totals_t;

static void acc_init(acc_t *a) {
    memset(a, 0, sizeof *a);
    for (int j = 0; j < LANES; j++) {
        a->lo[j] = INFINITY;
        a->hi[j] = -INFINITY;
        a->dlo[j] = INFINITY;
        a->dhi[j] = -INFINITY;
    }
}

static void acc_fold(const acc_t *a, totals_t *t) {
    memset(t, 0, sizeof *t);
    t->lo = t->dlo = INFINITY;
    t->hi = t->dhi = -INFINITY;
    for (int j = 0; j < LANES; j++) {
        t->s1 += a->s1[j];
        t->s2 += a->s2[j];
        t->asum += a->as[j];
        t->zeros += (double)a->z[j];
        t->lo = a->lo[j] < t->lo ? a->lo[j] : t->lo;
        t->hi = a->hi[j] > t->hi ? a->hi[j] : t->hi;
        t->ds2 += a->ds2[j];
        t->dasum += a->das[j];
        t->dzeros += (double)a->dz[j];
        t->psq += a->ps[j];
        t->dlo = a->dlo[j] < t->dlo ? a->dlo[j] : t->dlo;
        t->dhi = a->dhi[j] > t->dhi ? a->dhi[j] : t->dhi;
    }
}

/* Statistics of x[0:n] (and of d = x - p when p is given) added into a's lanes
 * (element i of a call goes to lane i % LANES: the caller passes blocks whose
 * length is a multiple of LANES, but for the last). NaN/Inf are not masked:
 * they make the sums non-finite, which the caller checks (a float64 sum of
 * finite float32 values cannot overflow; one of float64 values that does is
 * non-finite too, and handed back the same way). One body for float32 and
 * float64 inputs: T is the element type, the extrema lanes are kept in T. */
#define DEFINE_PASS_A(NAME, T)                                                            \
    HOT static void NAME(const T *restrict x, const T *restrict p, size_t n, double c,    \
                         acc_t *restrict a, const T *w0, const T *m0, const T *m1, double *restrict xl) { \
        double s1[LANES], s2[LANES], as[LANES];                                           \
        uint32_t z[LANES], dz[LANES];                                                     \
        T lo[LANES], hi[LANES];                                                           \
        double ds2[LANES], das[LANES], ps[LANES], dlo[LANES], dhi[LANES];                 \
        /* local copies, so that the lanes live in registers during the loop */          \
        memcpy(s1, a->s1, sizeof s1);                                                     \
        memcpy(s2, a->s2, sizeof s2);                                                     \
        memcpy(as, a->as, sizeof as);                                                     \
        memcpy(z, a->z, sizeof z);                                                        \
        memcpy(ds2, a->ds2, sizeof ds2);                                                  \
        memcpy(das, a->das, sizeof das);                                                  \
        memcpy(dz, a->dz, sizeof dz);                                                     \
        memcpy(ps, a->ps, sizeof ps);                                                     \
        memcpy(dlo, a->dlo, sizeof dlo);                                                  \
        memcpy(dhi, a->dhi, sizeof dhi);                                                  \
        for (int j = 0; j < LANES; j++) {                                                 \
            lo[j] = (T)a->lo[j];                                                          \
            hi[j] = (T)a->hi[j];                                                          \
        }                                                                                 \
        const double cd = c;                                                              \
        size_t i = 0;                                                                     \
        if (p == NULL) {                                                                  \
            for (; i + LANES <= n; i += LANES)                                            \
                for (int j = 0; j < LANES; j++)                                           \
                    VALUE_LANE(j, x[i + j]);                                              \
        } else if (w0 == NULL && m0 == NULL && m1 == NULL) {                                 \
            for (; i + LANES <= n; i += LANES)                                            \
                for (int j = 0; j < LANES; j++) {                                         \
                    VALUE_LANE(j, x[i + j]);                                              \
                    DELTA_LANE(j, x[i + j], p[i + j]);                                    \
                }                                                                         \
        } else { /* and the instruments' streams (w0, m0, m1: xl's lanes; a NULL one reads x and     \
                  * is dropped): one loop, their reads hidden behind this loop's arithmetic */    \
            double dd[LANES], q0[LANES], q1[LANES];                                       \
            memcpy(dd, xl, sizeof dd);                                                    \
            memcpy(q0, xl + LANES, sizeof q0);                                            \
            memcpy(q1, xl + 2 * LANES, sizeof q1);                                        \
            const T *restrict z0 = w0 ? w0 : x, *restrict t0 = m0 ? m0 : x, *restrict t1 = m1 ? m1 : x; \
            for (; i + LANES <= n; i += LANES)                                            \
                for (int j = 0; j < LANES; j++) {                                         \
                    VALUE_LANE(j, x[i + j]);                                              \
                    DELTA_LANE(j, x[i + j], p[i + j]);                                    \
                    double e_ = (double)x[i + j] - (double)z0[i + j];                     \
                    dd[j] += e_ * e_;                                                     \
                    q0[j] += (double)t0[i + j] * (double)t0[i + j];                       \
                    q1[j] += (double)t1[i + j] * (double)t1[i + j];                       \
                }                                                                         \
            for (size_t k = i, j = 0; k < n; k++, j++) {                                  \
                double e_ = (double)x[k] - (double)z0[k];                                 \
                dd[j] += e_ * e_;                                                         \
                q0[j] += (double)t0[k] * (double)t0[k];                                   \
                q1[j] += (double)t1[k] * (double)t1[k];                                   \
            }                                                                             \
            if (w0)                                                                       \
                memcpy(xl, dd, sizeof dd);                                                \
            if (m0)                                                                       \
                memcpy(xl + LANES, q0, sizeof q0);                                        \
            if (m1)                                                                       \
                memcpy(xl + 2 * LANES, q1, sizeof q1);                                    \
        }                                                                                 \
        for (int j = 0; i < n; i++, j++) { /* the tail: lanes in order */                \
            VALUE_LANE(j, x[i]);                                                          \
            if (p != NULL)                                                                \
                DELTA_LANE(j, x[i], p[i]);                                                \
        }                                                                                 \
        memcpy(a->s1, s1, sizeof s1);                                                     \
        memcpy(a->s2, s2, sizeof s2);                                                     \
        memcpy(a->as, as, sizeof as);                                                     \
        memcpy(a->z, z, sizeof z);                                                        \
        memcpy(a->ds2, ds2, sizeof ds2);                                                  \
        memcpy(a->das, das, sizeof das);                                                  \
        memcpy(a->dz, dz, sizeof dz);                                                     \
        memcpy(a->ps, ps, sizeof ps);                                                     \
        memcpy(a->dlo, dlo, sizeof dlo);                                                  \
        memcpy(a->dhi, dhi, sizeof dhi);                                                  \
        for (int j = 0; j < LANES; j++) {                                                 \
            a->lo[j] = (double)lo[j];                                                     \
            a->hi[j] = (double)hi[j];                                                     \
        }                                                                                 \
    }

/* |x| of a float64 by its sign bit: written so, the compiler keeps it on the float64 value.
 * fabs((double)v) of a float v is folded into (double)fabsf(v), a second widening of every
 * vector (an extract and two conversions where one and did): 4 of pass A's 52 operations
 * per 16 float32 elements. The same value either way. */
static inline double abs_f64(double x) {
    uint64_t b;
    memcpy(&b, &x, sizeof b);
    b &= ~((uint64_t)1 << 63);
    memcpy(&x, &b, sizeof b);
    return x;
}

/* one value v (and its delta from q) into lane j */
#define VALUE_LANE(j, v)                      \
    do {                                      \
        double w_ = (double)(v);              \
        double t_ = w_ - cd;                  \
        s1[j] += t_;                          \
        s2[j] += t_ * t_;                     \
        as[j] += abs_f64(w_);                 \
        z[j] += (v) == 0;                     \
        lo[j] = (v) < lo[j] ? (v) : lo[j];    \
        hi[j] = (v) > hi[j] ? (v) : hi[j];    \
    } while (0)
#define DELTA_LANE(j, v, q)                   \
    do {                                      \
        double q_ = (double)(q);              \
        double d_ = (double)(v) - q_;         \
        ds2[j] += d_ * d_;                    \
        das[j] += fabs(d_);                   \
        dz[j] += (v) == (q);                  \
        ps[j] += q_ * q_;                     \
        dlo[j] = d_ < dlo[j] ? d_ : dlo[j];   \
        dhi[j] = d_ > dhi[j] ? d_ : dhi[j];   \
    } while (0)
DEFINE_PASS_A(pass_a, float)
DEFINE_PASS_A(pass_a64, double)
#undef VALUE_LANE
#undef DELTA_LANE
#undef DEFINE_PASS_A

/* ------------------------------------------------------------ pass B */

/* One histogram being filled: numpy's bins over [lo, hi] with float64 edges. */
typedef struct {
    int bins;
    int constant;          /* lo == hi: every value in bin B // 2, no binning */
    int f32;               /* the float32 index is close enough (else float64) */
    double lo, scale;      /* float64 index: (v - lo) * scale */
    double slack;          /* an index within this of an integer is redone exactly */
    float lof, scalef, slackf;
    /* indices are clamped into [clamp_lo, clamp_hi]: within 2 slacks of 0 or of B
     * the bin is 0 or B - 1 whatever the rounding, and no flag is raised there */
    double clamp_lo, clamp_hi;
    float clamp_lof, clamp_hif;
    int edgy;              /* > 0: groups left to index and correct in one loop (the last had values near an edge) */
    int run;               /* the length of the next run of such groups */
    double step;           /* numpy's edge k < B is k * step + lo (two roundings) */
    double edges[MAX_BINS + 1];
    uint64_t total[MAX_BINS];
} hist_t;

/* Where pass B counts: every histogram has SUBH small tables that neighbouring
 * elements rotate through (an increment is a load and a store; equal bins in a
 * row would otherwise wait on each other), kept in L1 and added up at the end.
 * With both histograms of a large tensor (bins^2 <= MAX_BINS), one joint table
 * of (value bin, delta bin) pairs instead: one increment per element, not two
 * (the increments are what pass B spends most on), its two marginals added into
 * the histograms at the flush; SUBJ tables of bins^2 stay in L1. With one
 * histogram only (values without an update, or the update of constant values), the
 * same tables count pairs of neighbouring elements (element 2j's bin, element 2j+1's):
 * one increment per two elements, both marginals added into that histogram (an odd
 * group's last element goes to sub[1][0]). The increments are bound by the load and
 * store units (about one a cycle here; packing the indices or more tables did not
 * help), so fewer of them is what makes pass B faster. */
enum { TALLY_SPLIT = 0, TALLY_JOINT = 1, TALLY_PAIRS = 2 };
typedef struct {
    uint32_t sub[2][SUBH][MAX_BINS];
    uint64_t pending;      /* increments since the last flush (uint32 tables) */
    int joint;             /* TALLY_*: JOINT and PAIRS count cells of bins^2 in sub[0][0..SUBJ) */
} tally_t;
#define SUBJ 2
/* the joint table pays its flush (bins^2 per table) from this many elements up: 4 bins^2
 * (16384 elements for 64 bins) measured faster than separate tables from there on; at
 * 2 bins^2 the pairs' flush cost more than it saved */
#define JOINT_FACTOR 4
#define JOINT_MIN(bins) ((size_t)JOINT_FACTOR * (size_t)(bins) * (size_t)(bins))

/* np.linspace(lo, hi, bins + 1) in float64, operation for operation: the
 * product goes through a volatile so that it is rounded before the sum, as in
 * numpy (a fused multiply-add would round once and move some edges). */
static void numpy_edges(double lo, double hi, int bins, double *e) {
    double delta = hi - lo;
    double step = delta / bins;
    for (int k = 0; k <= bins; k++) {
        volatile double y = (double)k;
        if (step == 0.0) {
            y = y / bins;
            y = y * delta;
        } else {
            y = y * step;
        }
        e[k] = y + lo;
    }
    e[bins] = hi;
}

/* Sets up h for [lo, hi]; returns 0 if the range is too narrow for a fast
 * index (edges within a few ulps of each other: numpy's "too many bins") or
 * wider than float64 can hold. allow_f32: the values are float32 (a float32
 * index may do); float64 values always get the float64 index. */
static int hist_setup(hist_t *h, int bins, double lo, double hi, int allow_f32) {
    h->bins = bins;
    h->lo = lo;
    memset(h->total, 0, sizeof(uint64_t) * bins);
    h->constant = lo == hi;
    h->edgy = 0;
    h->run = 1;
    if (h->constant)
        return 1;
    if (!isfinite(hi - lo))
        return 0;
    numpy_edges(lo, hi, bins, h->edges);
    for (int k = 0; k < bins; k++)
        if (!(h->edges[k] < h->edges[k + 1]))
            return 0;
    h->step = (hi - lo) / bins;
    if (!(h->step > 0.0)) /* numpy then computes its edges another way */
        return 0;
    h->scale = bins / (hi - lo);
    if (!isfinite(h->scale) || !(h->scale > 0.0))
        return 0;
    /* How far from the exact bin position an index can be, in bins: float64
     * edges are a few ulps of max(|lo|, |hi|) off the ideal ones; a float32
     * index adds the rounding of the value (deltas are rounded to float32),
     * of lo, of the subtraction and of the product, each about 2^-24 of
     * max(|v|, |lo|) or of the index. A factor 4 to spare. */
    double mag = fmax(fabs(lo), fabs(hi)) / (hi - lo);
    double edge_err = 8 * 1.11e-16 * mag * bins;
    h->slack = 4.0 * (4 * 1.11e-16 * bins + edge_err);
    h->lof = (float)lo;
    h->scalef = (float)bins / ((float)hi - (float)lo);
    double slackf = 4.0 * (5.96e-8 * bins * (4.0 + 3.0 * mag) + edge_err);
    h->f32 = allow_f32 && isfinite(h->scalef) && h->scalef > 0.0f && slackf < 0.01;
    h->slackf = (float)slackf;
    h->clamp_lo = 2 * h->slack;
    h->clamp_hi = bins - 2 * h->slack;
    h->clamp_lof = 2 * h->slackf;
    h->clamp_hif = (float)bins - 2 * h->slackf;
    while ((int)h->clamp_hi >= bins) /* rounded up to B: the number just below it */
        h->clamp_hi = nextafter(h->clamp_hi, 0.0);
    while ((int)h->clamp_hif >= bins)
        h->clamp_hif = nextafterf(h->clamp_hif, 0.0f);
    return h->slack < 0.25;
}

static void tally_clear(tally_t *t, int bins) {
    if (t->joint) {
        for (int s = 0; s < SUBJ; s++)
            memset(t->sub[0][s], 0, sizeof(uint32_t) * bins * bins);
        memset(t->sub[1][0], 0, sizeof(uint32_t) * bins);
    } else
        for (int w = 0; w < 2; w++)
            for (int s = 0; s < SUBH; s++)
                memset(t->sub[w][s], 0, sizeof(uint32_t) * bins);
    t->pending = 0;
}

/* Adds the tables into the totals of hv and hd (either may be NULL), clears them. */
static void tally_flush(tally_t *t, int bins, hist_t *hv, hist_t *hd) {
    if (t->joint == TALLY_PAIRS) { /* both marginals into the one histogram */
        hist_t *h = hv ? hv : hd;
        for (int a = 0; a < bins; a++) {
            uint64_t row = 0;
            for (int s = 0; s < SUBJ; s++) {
                const uint32_t *r = t->sub[0][s] + (size_t)a * bins;
                for (int b = 0; b < bins; b++) {
                    row += r[b];
                    h->total[b] += r[b];
                }
            }
            h->total[a] += row + t->sub[1][0][a];
        }
    } else if (t->joint) { /* row sums: the values' counts; column sums: the deltas' */
        for (int a = 0; a < bins; a++) {
            uint64_t row = 0;
            for (int s = 0; s < SUBJ; s++) {
                const uint32_t *r = t->sub[0][s] + (size_t)a * bins;
                for (int b = 0; b < bins; b++) {
                    row += r[b];
                    hd->total[b] += r[b];
                }
            }
            hv->total[a] += row;
        }
    } else {
        hist_t *hs[2] = {hv, hd};
        for (int w = 0; w < 2; w++)
            if (hs[w])
                for (int s = 0; s < SUBH; s++)
                    for (int k = 0; k < bins; k++)
                        hs[w]->total[k] += t->sub[w][s][k];
    }
    tally_clear(t, bins);
}

/* Inputs on the edges group after group (a constant shift, few distinct values) are
 * indexed and corrected in one loop, in runs of up to this many groups with no flags
 * looked at but in the run's last group. */
#define EDGY_RUN 16

/* Pass B computes bin indices GROUP elements at a time, then counts them. */
#define GROUP 256
/* ... and asks for the values (and previous copy) this many groups ahead: a tensor
 * bigger than L2 comes back from L3, faster asked for than as the prefetcher guesses */
#define PREFETCH_GROUPS 4

/* numpy's correction of a bin index q within one bin of v's: down one if v is
 * below edge q, up one if at or above edge q + 1 (not past the last bin, which
 * is closed). The edges are computed as numpy_edges does, k * step rounded,
 * then + lo rounded (-ffp-contract=off: no fused multiply-add), so the loop
 * has no table loads (which compilers turn into scalar gathers). */
#define CORRECT(q, v)                                                   \
    do {                                                                \
        const double v_ = (v);                                          \
        const double below_ = (double)(q) * step_ + e0_;                \
        const double above_ = (double)((q) + 1) * step_ + e0_;          \
        (q) = (q) - (v_ < below_) + (((q) < last_) & (v_ >= above_));   \
    } while (0)

/* x + 1.5 * 2^(p-1) - 1.5 * 2^(p-1): x rounded to the nearest integer (|x| < 2^(p-2)), with
 * plain adds (no rint libcall in the baseline build; -ffp-contract=off, no -ffast-math: kept) */
#define ROUND_MAGIC(T) ((T)(sizeof(T) == 4 ? 12582912.0 : 6755399441055744.0))
#define ABS_(v) (sizeof(v) == 4 ? fabsf((float)(v)) : fabs((double)(v)))

/* Bin indices k[0:m] of the values VALUE(i) (an expression of i), index
 * arithmetic in type T with h's lo, scale and slack for T: one vectorised pass;
 * then, if any index was within slack of an inner bin edge, every index
 * of the group is corrected against numpy's float64 edges with the float64
 * value EXACT(i): one step down if below its bin's lower edge, one up if at or
 * above its upper edge (the guess is within one bin). That correction has no
 * branches (two table loads and compares), so inputs whose values sit on the
 * edges group after group (few distinct values, a constant shift) cost about
 * what any other input costs. Indices within two slacks of 0 or B are clamped
 * first (their bin is 0 or B - 1 however they round) and raise no flag: lo
 * and hi are no inner edges (updates of +-lr sit there, every element).
 * Written for the vector units: the clamps are max/min (the values are finite,
 * so the NaN order of `a > b ? a : b` does not matter; it is the one x86's
 * max/min instructions have), and an index is flagged where its distance from
 * the nearest integer is under the slack. */
#define INDEX_GROUP(T, LO, SC, SL, CLO, CHI, VALUE, EXACT)                \
    do {                                                                \
        const T lo_ = (LO), sc_ = (SC), sl_ = (SL), clo_ = (CLO), chi_ = (CHI); \
        const T mg_ = ROUND_MAGIC(T);                                   \
        const double step_ = h->step, e0_ = h->lo;                      \
        const int32_t last_ = h->bins - 1;                              \
        int32_t any_ = 0;                                               \
        if (h->edgy > 1) { /* within a run of edgy groups: no flags */  \
            for (size_t i = 0; i < m; i++) {                            \
                T f_ = ((T)(VALUE) - lo_) * sc_;                        \
                f_ = clo_ > f_ ? clo_ : f_;                             \
                f_ = chi_ < f_ ? chi_ : f_;                             \
                int32_t q_ = (int32_t)f_;                               \
                CORRECT(q_, (EXACT));                                   \
                k[i] = q_;                                              \
            }                                                           \
            h->edgy--;                                                  \
            break;                                                      \
        }                                                               \
        if (h->edgy) { /* one loop: every index corrected */            \
            for (size_t i = 0; i < m; i++) {                            \
                T f_ = ((T)(VALUE) - lo_) * sc_;                        \
                f_ = clo_ > f_ ? clo_ : f_;                             \
                f_ = chi_ < f_ ? chi_ : f_;                             \
                int32_t q_ = (int32_t)f_;                               \
                T r_ = (f_ + mg_) - mg_;                                \
                any_ |= (T)ABS_(f_ - r_) < sl_;                         \
                CORRECT(q_, (EXACT));                                   \
                k[i] = q_;                                              \
            }                                                           \
        } else {                                                        \
            for (size_t i = 0; i < m; i++) {                            \
                T f_ = ((T)(VALUE) - lo_) * sc_;                        \
                /* lo and hi are no bin boundaries: no flag next to them */ \
                f_ = clo_ > f_ ? clo_ : f_;                             \
                f_ = chi_ < f_ ? chi_ : f_;                             \
                int32_t q_ = (int32_t)f_;                               \
                T r_ = (f_ + mg_) - mg_;                                \
                any_ |= (T)ABS_(f_ - r_) < sl_;                         \
                k[i] = q_;                                              \
            }                                                           \
            if (any_)                                                   \
                for (size_t i = 0; i < m; i++) {                        \
                    int32_t q_ = k[i];                                  \
                    CORRECT(q_, (EXACT));                               \
                    k[i] = q_;                                          \
                }                                                       \
        }                                                               \
        /* edgy groups in a row: the next run (every index corrected, flags looked at in its \
         * last group only) twice as long, up to EDGY_RUN groups */     \
        if (!any_)                                                      \
            h->run = 1;                                                 \
        else if (h->edgy)                                               \
            h->run = h->run * 2 > EDGY_RUN ? EDGY_RUN : h->run * 2;     \
        h->edgy = any_ ? h->run : 0;                                    \
    } while (0)

/* Bin indices of m <= GROUP values, exact near the edges: a float32 index, or
 * float64 where the range is narrow next to its magnitude (LayerNorm weights
 * early in training: near-edge checks would flag most values in float32). */
HOT static void index_values(const float *restrict x, size_t m, hist_t *h, int32_t *restrict k) {
    if (h->f32)
        INDEX_GROUP(float, h->lof, h->scalef, h->slackf, h->clamp_lof, h->clamp_hif, x[i], x[i]);
    else
        INDEX_GROUP(double, h->lo, h->scale, h->slack, h->clamp_lo, h->clamp_hi, (double)x[i], x[i]);
}

/* The same for m <= GROUP deltas x - p. */
HOT static void index_deltas(const float *restrict x, const float *restrict p, size_t m, hist_t *h,
                             int32_t *restrict k) {
    if (h->f32)
        INDEX_GROUP(float, h->lof, h->scalef, h->slackf, h->clamp_lof, h->clamp_hif, x[i] - p[i],
                    (double)x[i] - (double)p[i]);
    else
        INDEX_GROUP(double, h->lo, h->scale, h->slack, h->clamp_lo, h->clamp_hi, (double)x[i] - (double)p[i],
                    (double)x[i] - (double)p[i]);
}

/* float64 inputs: the float64 index only (hist_setup never allows float32 for them). */
HOT static void index_values64(const double *restrict x, size_t m, hist_t *h, int32_t *restrict k) {
    INDEX_GROUP(double, h->lo, h->scale, h->slack, h->clamp_lo, h->clamp_hi, x[i], x[i]);
}

HOT static void index_deltas64(const double *restrict x, const double *restrict p, size_t m, hist_t *h,
                               int32_t *restrict k) {
    INDEX_GROUP(double, h->lo, h->scale, h->slack, h->clamp_lo, h->clamp_hi, x[i] - p[i], x[i] - p[i]);
}

/* Counts m indices into the SUBH tables of one histogram. */
static inline void count(uint32_t (*sub)[MAX_BINS], const int32_t *k, size_t m) {
    size_t j = 0;
    for (; j + SUBH <= m; j += SUBH)
        for (int s = 0; s < SUBH; s++)
            sub[s][k[j + s]]++;
    for (; j < m; j++)
        sub[0][k[j]]++;
}

/* Counts the m pairs (kv, kd) into the SUBJ joint tables (kd is overwritten). */
static inline void count_joint(uint32_t (*sub)[MAX_BINS], const int32_t *restrict kv, int32_t *restrict kd,
                               size_t m, int bins) {
    for (size_t j = 0; j < m; j++) /* vectorised */
        kd[j] += kv[j] * bins;
    size_t j = 0;
    for (; j + SUBJ <= m; j += SUBJ)
        for (int s = 0; s < SUBJ; s++)
            sub[s][kd[j + s]]++;
    for (; j < m; j++)
        sub[0][kd[j]]++;
}

/* Counts the m indices k as pairs (k[2j], k[2j + 1]) into the SUBJ tables, the last
 * of an odd m into single. */
static inline void count_pairs(uint32_t (*sub)[MAX_BINS], uint32_t *restrict single, const int32_t *restrict k,
                               size_t m, int bins) {
    int32_t kp[GROUP / 2];
    const size_t h = m / 2;
    for (size_t j = 0; j < h; j++) /* vectorised */
        kp[j] = k[2 * j] * bins + k[2 * j + 1];
    size_t j = 0;
    for (; j + SUBJ <= h; j += SUBJ)
        for (int s = 0; s < SUBJ; s++)
            sub[s][kp[j + s]]++;
    for (; j < h; j++)
        sub[0][kp[j]]++;
    if (m & 1)
        single[k[m - 1]]++;
}

/* Bins x[0:n] into hv (NULL: skip) and d = x - p into hd (NULL: skip); with
 * copy, p[0:n] = x[0:n] afterwards (the previous copy for the next delta).
 * The tally is cleared before the first call of a tensor and flushed after its
 * last (run_b): a tensor may come in several calls. */
#define DEFINE_PASS_B(NAME, T, INDEX_V, INDEX_D)                                             \
    HOT static void NAME(const T *restrict x, T *restrict p, size_t n, hist_t *hv, hist_t *hd, \
                         int copy, tally_t *t) {                                             \
        int32_t kv[GROUP], kd[GROUP];                                                        \
        const int bins = hv ? hv->bins : (hd ? hd->bins : 1);                                \
        for (size_t i = 0; i < n; i += GROUP) {                                              \
            size_t m = n - i < GROUP ? n - i : GROUP;                                        \
            if (i + (PREFETCH_GROUPS + 1) * GROUP <= n) { /* the re-read comes from L3 */    \
                const char *xa_ = (const char *)(x + i + PREFETCH_GROUPS * GROUP);           \
                const char *pa_ = p ? (const char *)(p + i + PREFETCH_GROUPS * GROUP) : NULL; \
                for (size_t o_ = 0; o_ < GROUP * sizeof(T); o_ += 64) {                      \
                    __builtin_prefetch(xa_ + o_, 0, 3);                                      \
                    if (pa_)                                                                 \
                        __builtin_prefetch(pa_ + o_, 0, 3);                                  \
                }                                                                            \
            }                                                                                \
            if (t->joint == TALLY_JOINT) {                                                   \
                INDEX_V(x + i, m, hv, kv);                                                   \
                INDEX_D(x + i, p + i, m, hd, kd);                                            \
                count_joint(t->sub[0], kv, kd, m, bins);                                     \
            } else if (t->joint == TALLY_PAIRS) {                                            \
                if (hv)                                                                      \
                    INDEX_V(x + i, m, hv, kv);                                               \
                else                                                                         \
                    INDEX_D(x + i, p + i, m, hd, kv);                                        \
                count_pairs(t->sub[0], t->sub[1][0], kv, m, bins);                           \
            } else {                                                                         \
                if (hv) {                                                                    \
                    INDEX_V(x + i, m, hv, kv);                                               \
                    count(t->sub[0], kv, m);                                                 \
                }                                                                            \
                if (hd) {                                                                    \
                    INDEX_D(x + i, p + i, m, hd, kd);                                        \
                    count(t->sub[1], kd, m);                                                 \
                }                                                                            \
            }                                                                                \
            if (copy)                                                                        \
                memcpy(p + i, x + i, m * sizeof(T));                                         \
            t->pending += m;                                                                 \
            if (t->pending >= FLUSH)                                                         \
                tally_flush(t, bins, hv, hd);                                                \
        }                                                                                    \
    }
DEFINE_PASS_B(pass_b, float, index_values, index_deltas)
DEFINE_PASS_B(pass_b64, double, index_values64, index_deltas64)
#undef DEFINE_PASS_B

/* ------------------------------------------------------------ dtypes */

/* float16 bits -> float32, exact for every value (subnormals, Inf, NaN), branch
 * free so that it vectorises (F. Giesen's half_to_float). */
static inline float half_to_float(uint16_t h) {
    union { uint32_t u; float f; } o, magic = {113u << 23};
    const uint32_t shifted_exp = 0x7c00u << 13;
    o.u = (uint32_t)(h & 0x7fffu) << 13;
    uint32_t exp = shifted_exp & o.u;
    o.u += (127u - 15u) << 23;
    if (exp == shifted_exp) {
        o.u += (128u - 16u) << 23;
    } else if (exp == 0) {
        o.u += 1u << 23;
        o.f -= magic.f;
    }
    o.u |= (uint32_t)(h & 0x8000u) << 16;
    return o.f;
}

HOT static void widen(const uint16_t *restrict src, float *restrict dst, size_t n, int dtype) {
    if (dtype == DT_BF16) {
        for (size_t i = 0; i < n; i++) {
            uint32_t u = (uint32_t)src[i] << 16;
            memcpy(dst + i, &u, 4);
        }
    } else {
        for (size_t i = 0; i < n; i++)
            dst[i] = half_to_float(src[i]);
    }
}

/* ------------------------------------------------------------ instruments */

/* The instruments of one tensor that read every element (docs/instruments.md),
 * folded into the two passes so that memory is read once: in pass A,
 * ||x - x0|| (distance from the initial copy), the sums of squares of up to two
 * other buffers of x's size (optimizer state), the L2 norm of each row of x as a
 * [rows, cols] matrix (per-unit norms) and the power iteration's first
 * matrix-vector product y = W v (and yd = dW vd for the update dW = x - prev);
 * between the passes y is normalised to u; in pass B, b = W^T u (and bd). The
 * passes take the tensor in chunks that stay in the cache while both the
 * statistics and these read them. Sums are float64, in XL lanes. */
#define XL 32
/* elements per chunk of a float32/float64 tensor with instruments (16-bit ones go by BLOCK):
 * a chunk of the value and its previous copy stays in L2 (the 2 MiB of this machine) while
 * the instruments' other buffers stream past; 4x fewer chunks than 16384 took 1.5 ms (4%)
 * less of an all-instruments ResNet-50 snapshot */
#define XCHUNK 65536
/* out[] header: ||x - x0||, ||W v||, ||dW vd||, ||state 0||, ||state 1||, then the parts */
enum { X_DIST, X_YN, X_YDN, X_S0, X_S1, X_HEAD = 8 };

typedef struct {
    const void *x0;       /* initial copy (x's dtype) or NULL */
    const void *st[2];    /* optimizer state (x's dtype) or NULL */
    size_t rows, cols;    /* the matrix (cols = n / rows); rows 0: none */
    int units;
    const double *v, *vd; /* iteration vectors (cols) or NULL */
    const int64_t *idx;   /* coordinates to gather, or NULL */
    size_t k;
    double *out;
    double *un, *y, *b, *yd, *bd, *g; /* parts of out (NULL where not asked) */
    /* 16/32-bit tensors: the products in float32 (an estimate: float32 sums of XL lanes, about
     * 1e-6 relative), with float32 copies of v, vd and float32 b, bd (cols each, allocated) */
    float *vf, *vdf, *bf, *bdf;
    float *fbuf; /* their one allocation */
    size_t brows; /* rows added into bf, bdf since they were last added into b, bd */
    size_t gpos;  /* coordinates gathered in pass A (those of a sorted prefix of idx) */
    size_t sorted_k; /* idx[0:sorted_k] is non-decreasing */
    double dl[XL], sl[2][XL];
    double al[3 * LANES]; /* the same sums when pass A's loop computes them: x0, states 0 and 1 */
} xjob_t;

/* The sum of XL lanes (overwritten), as a tree: a few vector adds, where adding them
 * one after the other is a chain of XL dependent adds, once per matrix row (rows are
 * short: 64 to a few thousand elements). */
static inline double fold_lanes(double *l) {
    for (int w = XL / 2; w > 0; w /= 2)
        for (int j = 0; j < w; j++)
            l[j] += l[j + w];
    return l[0];
}

/* Inlined into their callers without fail: a copy the compiler keeps out of line is built
 * for the baseline ISA, and the callers' AVX-512/AVX2 clones then run it unvectorised (the
 * products W v and dW vd of pass A took 5 of the kernel's 42 ms on the ResNet-50 weights so). */
#if defined(__GNUC__) || defined(__clang__)
#define SEG_INLINE static inline __attribute__((always_inline))
#else
#define SEG_INLINE static inline
#endif

/* sum of squares, dot products with a float64 vector, in XL lanes */
#define DEFINE_SEG(SUFFIX, T, VT)                                                              \
    SEG_INLINE double sumsq_##SUFFIX(const T *restrict a, size_t n) {                      \
        double l[XL] = {0};                                                                \
        size_t i = 0;                                                                      \
        for (; i + XL <= n; i += XL)                                                       \
            for (int j = 0; j < XL; j++)                                                   \
                l[j] += (double)a[i + j] * (double)a[i + j];                               \
        for (int j = 0; i < n; i++, j++)                                                   \
            l[j] += (double)a[i] * (double)a[i];                                           \
        return fold_lanes(l);                                                              \
    }                                                                                      \
    SEG_INLINE void sumsq_lanes_##SUFFIX(const T *restrict a, const T *restrict z, size_t n,    \
                                            double *restrict lanes) {                      \
        double l[XL];                                                                      \
        memcpy(l, lanes, sizeof l);                                                        \
        size_t i = 0;                                                                      \
        if (z) {                                                                           \
            for (; i + XL <= n; i += XL)                                                   \
                for (int j = 0; j < XL; j++) {                                             \
                    double t = (double)a[i + j] - (double)z[i + j];                        \
                    l[j] += t * t;                                                         \
                }                                                                          \
            for (int j = 0; i < n; i++, j++) {                                             \
                double t = (double)a[i] - (double)z[i];                                    \
                l[j] += t * t;                                                             \
            }                                                                              \
        } else {                                                                           \
            for (; i + XL <= n; i += XL)                                                   \
                for (int j = 0; j < XL; j++)                                               \
                    l[j] += (double)a[i + j] * (double)a[i + j];                           \
            for (int j = 0; i < n; i++, j++)                                               \
                l[j] += (double)a[i] * (double)a[i];                                       \
        }                                                                                  \
        memcpy(lanes, l, sizeof l);                                                        \
    }                                                                                      \
    SEG_INLINE double dot_##SUFFIX(const T *restrict a, const T *restrict p,               \
                                      const VT *restrict v, size_t n) {                    \
        VT l[XL] = {0};                                                                    \
        size_t i = 0;                                                                      \
        if (p) {                                                                           \
            for (; i + XL <= n; i += XL)                                                   \
                for (int j = 0; j < XL; j++)                                               \
                    l[j] += ((VT)a[i + j] - (VT)p[i + j]) * v[i + j];                      \
            for (int j = 0; i < n; i++, j++)                                               \
                l[j] += ((VT)a[i] - (VT)p[i]) * v[i];                                      \
        } else {                                                                           \
            for (; i + XL <= n; i += XL)                                                   \
                for (int j = 0; j < XL; j++)                                               \
                    l[j] += (VT)a[i + j] * v[i + j];                                       \
            for (int j = 0; i < n; i++, j++)                                               \
                l[j] += (VT)a[i] * v[i];                                                   \
        }                                                                                  \
        double d[XL];                                                                      \
        for (int j = 0; j < XL; j++)                                                       \
            d[j] = (double)l[j];                                                           \
        return fold_lanes(d);                                                              \
    }                                                                                      \
    /* dot_(a, NULL, v) into *yv and dot_(a, p, vd) into *yd, the same lanes, in one loop */ \
    SEG_INLINE void dot2_##SUFFIX(const T *restrict a, const T *restrict p,                \
                                     const VT *restrict v, const VT *restrict vd, size_t n, \
                                     double *restrict yv, double *restrict yd) {           \
        VT l[XL] = {0}, ld[XL] = {0};                                                      \
        size_t i = 0;                                                                      \
        for (; i + XL <= n; i += XL)                                                       \
            for (int j = 0; j < XL; j++) {                                                 \
                l[j] += (VT)a[i + j] * v[i + j];                                           \
                ld[j] += ((VT)a[i + j] - (VT)p[i + j]) * vd[i + j];                        \
            }                                                                              \
        for (int j = 0; i < n; i++, j++) {                                                 \
            l[j] += (VT)a[i] * v[i];                                                       \
            ld[j] += ((VT)a[i] - (VT)p[i]) * vd[i];                                        \
        }                                                                                  \
        double d[XL], dd[XL];                                                              \
        for (int j = 0; j < XL; j++) {                                                     \
            d[j] = (double)l[j];                                                           \
            dd[j] = (double)ld[j];                                                         \
        }                                                                                  \
        *yv += fold_lanes(d);                                                              \
        *yd += fold_lanes(dd);                                                             \
    }                                                                                      \
    /* sumsq_(a) into *un and dot2_ in one loop (the same lanes: the same sums bit for bit) */ \
    SEG_INLINE void dot3_##SUFFIX(const T *restrict a, const T *restrict p,                \
                                  const VT *restrict v, const VT *restrict vd, size_t n,   \
                                  double *restrict un, double *restrict yv, double *restrict yd) { \
        VT l[XL] = {0}, ld[XL] = {0};                                                      \
        double q[XL] = {0};                                                                \
        size_t i = 0;                                                                      \
        for (; i + XL <= n; i += XL)                                                       \
            for (int j = 0; j < XL; j++) {                                                 \
                q[j] += (double)a[i + j] * (double)a[i + j];                               \
                l[j] += (VT)a[i + j] * v[i + j];                                           \
                ld[j] += ((VT)a[i + j] - (VT)p[i + j]) * vd[i + j];                        \
            }                                                                              \
        for (int j = 0; i < n; i++, j++) {                                                 \
            q[j] += (double)a[i] * (double)a[i];                                           \
            l[j] += (VT)a[i] * v[i];                                                       \
            ld[j] += ((VT)a[i] - (VT)p[i]) * vd[i];                                        \
        }                                                                                  \
        double d[XL], dd[XL];                                                              \
        for (int j = 0; j < XL; j++) {                                                     \
            d[j] = (double)l[j];                                                           \
            dd[j] = (double)ld[j];                                                         \
        }                                                                                  \
        *un += fold_lanes(q);                                                              \
        *yv += fold_lanes(d);                                                              \
        *yd += fold_lanes(dd);                                                             \
    }

/* Pass A's instruments over elements [g0, g0 + n) of the tensor (x, p, x0, the
 * states: their chunks; p NULL without an update). */
#define DEFINE_EXTRA_A(NAME, SUFFIX, T, VT, V, VD)                                            \
    DEFINE_SEG(SUFFIX, T, VT)                                                                   \
    HOT static void NAME(const T *restrict x, const T *restrict p, const T *restrict x0,     \
                         const T *restrict s0, const T *restrict s1, size_t g0, size_t n,     \
                         xjob_t *restrict e) {                                                \
        if (x0)                                                                               \
            sumsq_lanes_##SUFFIX(x, x0, n, e->dl);                                            \
        if (s0)                                                                               \
            sumsq_lanes_##SUFFIX(s0, NULL, n, e->sl[0]);                                      \
        if (s1)                                                                               \
            sumsq_lanes_##SUFFIX(s1, NULL, n, e->sl[1]);                                      \
        /* sorted coordinates: gathered from the chunk while it is in the cache */           \
        if (e->gpos < e->sorted_k) { /* locals: the stores to g cannot alias e's fields */    \
            const int64_t *restrict ix_ = e->idx;                                             \
            double *restrict gv_ = e->g;                                                      \
            size_t q_ = e->gpos;                                                              \
            const size_t end_ = e->sorted_k, lim_ = g0 + n;                                   \
            for (; q_ < end_ && (size_t)ix_[q_] < lim_; q_++)                                 \
                gv_[q_] = (double)x[(size_t)ix_[q_] - g0];                                    \
            e->gpos = q_;                                                                     \
        }                                                                                     \
        const int yd = e->vd && p;                                                            \
        if (!e->rows || !(e->units || e->v || yd))                                            \
            return;                                                                           \
        for (size_t i = 0; i < n;) { /* row by row (segments of rows at the chunk's ends) */ \
            size_t g = g0 + i, r = g / e->cols, j = g - r * e->cols;                          \
            size_t seg = e->cols - j < n - i ? e->cols - j : n - i;                           \
            if (e->units && e->v && yd) /* x read once for the three */                     \
                dot3_##SUFFIX(x + i, p + i, e->V + j, e->VD + j, seg, &e->un[r], &e->y[r], &e->yd[r]); \
            else {                                                                            \
                if (e->units)                                                                 \
                    e->un[r] += sumsq_##SUFFIX(x + i, seg);                                   \
                if (e->v && yd)                                                               \
                    dot2_##SUFFIX(x + i, p + i, e->V + j, e->VD + j, seg, &e->y[r], &e->yd[r]); \
                else if (e->v)                                                                \
                    e->y[r] += dot_##SUFFIX(x + i, NULL, e->V + j, seg);                      \
                else if (yd)                                                                  \
                    e->yd[r] += dot_##SUFFIX(x + i, p + i, e->VD + j, seg);                   \
            }                                                                                 \
            i += seg;                                                                         \
        }                                                                                     \
    }

/* float32 b and bd are added into the float64 ones every BFLUSH rows (a float32 sum
 * over tens of thousands of rows would lose digits) */
#define BFLUSH 64
HOT static void add_clear(double *restrict to, float *restrict from, size_t n) {
    for (size_t j = 0; j < n; j++)
        to[j] += (double)from[j];
    memset(from, 0, n * sizeof(float));
}

static void flush_b(xjob_t *e) {
    if (e->bf)
        add_clear(e->b, e->bf, e->cols);
    if (e->bdf)
        add_clear(e->bd, e->bdf, e->cols);
    e->brows = 0;
}

/* Pass B's: b += W^T u and bd += dW^T ud over elements [g0, g0 + n) (before
 * the previous copy is overwritten). */
#define DEFINE_EXTRA_B(NAME, T, VT, B, BD, FLUSH_ROWS)                                                             \
    HOT static void NAME(const T *restrict x, const T *restrict p, size_t g0, size_t n,      \
                         xjob_t *restrict e, int with_d) {                                    \
        for (size_t i = 0; i < n;) {                                                          \
            size_t g = g0 + i, r = g / e->cols, j = g - r * e->cols;                          \
            size_t seg = e->cols - j < n - i ? e->cols - j : n - i;                           \
            const T *restrict xs = x + i;                                                     \
            VT u = e->v ? (VT)e->y[r] : (VT)0;                                                \
            VT ud = with_d && e->vd ? (VT)e->yd[r] : (VT)0;                                   \
            if (u != (VT)0 && ud != (VT)0) { /* both: x and p read once */                  \
                const T *restrict ps = p + i;                                                 \
                VT *restrict b = e->B + j, *restrict bd = e->BD + j;                          \
                for (size_t t = 0; t < seg; t++) {                                            \
                    b[t] += u * (VT)xs[t];                                                    \
                    bd[t] += ud * ((VT)xs[t] - (VT)ps[t]);                                    \
                }                                                                             \
                u = ud = (VT)0;                                                               \
            }                                                                                 \
            if (u != (VT)0) {                                                                 \
                VT *restrict b = e->B + j;                                                    \
                for (size_t t = 0; t < seg; t++)                                              \
                    b[t] += u * (VT)xs[t];                                                    \
            }                                                                                 \
            if (ud != (VT)0) {                                                                \
                const T *restrict ps = p + i;                                                 \
                VT *restrict bd = e->BD + j;                                                  \
                for (size_t t = 0; t < seg; t++)                                              \
                    bd[t] += ud * ((VT)xs[t] - (VT)ps[t]);                                    \
            }                                                                                 \
            i += seg;                                                                         \
            if (FLUSH_ROWS && j + seg == e->cols && ++e->brows >= FLUSH_ROWS)                 \
                flush_b(e);                                                                   \
        }                                                                                     \
    }
DEFINE_EXTRA_A(extra_a, f32, float, float, vf, vdf)
DEFINE_EXTRA_A(extra_a64, f64, double, double, v, vd)
DEFINE_EXTRA_B(extra_b, float, float, bf, bdf, BFLUSH)
DEFINE_EXTRA_B(extra_b64, double, double, b, bd, 0)
#undef DEFINE_SEG
#undef DEFINE_EXTRA_A
#undef DEFINE_EXTRA_B

static double lanes_sum(const double *l) {
    double s = 0;
    for (int j = 0; j < XL; j++)
        s += l[j];
    return s;
}

/* Zeroes the accumulators before pass A. */
static void extra_start(xjob_t *e) {
    memset(e->dl, 0, sizeof e->dl);
    memset(e->al, 0, sizeof e->al);
    e->gpos = 0;
    memset(e->sl, 0, sizeof e->sl);
    memset(e->out, 0, sizeof(double) * X_HEAD);
    if (e->un)
        memset(e->un, 0, sizeof(double) * e->rows);
    if (e->y) {
        memset(e->y, 0, sizeof(double) * e->rows);
        memset(e->b, 0, sizeof(double) * e->cols);
    }
    if (e->yd) {
        memset(e->yd, 0, sizeof(double) * e->rows);
        memset(e->bd, 0, sizeof(double) * e->cols);
    }
    e->brows = 0;
    for (size_t j = 0; e->vf && j < e->cols; j++) {
        e->vf[j] = (float)e->v[j];
        e->bf[j] = 0.0f;
    }
    for (size_t j = 0; e->vdf && j < e->cols; j++) {
        e->vdf[j] = (float)e->vd[j];
        e->bdf[j] = 0.0f;
    }
}

/* y -> u = y / ||y|| (zero if y is), ||y|| into out[at]. */
static void normalise(double *y, size_t m, double *out) {
    double s = 0;
    for (size_t r = 0; r < m; r++)
        s += y[r] * y[r];
    *out = sqrt(s);
    double inv = s > 0 ? 1.0 / *out : 0.0;
    for (size_t r = 0; r < m; r++)
        y[r] *= inv;
}

/* ------------------------------------------------------------ one tensor */

typedef struct {
    const void *x;
    void *p;            /* NULL: no delta */
    size_t n;
    int dtype;
    double *row_w, *row_d;
    xjob_t *ex;         /* instruments, or NULL */
    int status;
} job_t;

typedef struct {
    float xs[BLOCK], ps[BLOCK], x0s[BLOCK], s0s[BLOCK], s1s[BLOCK];
    hist_t hv, hd;
    tally_t tally;
} scratch_t;

static size_t elem_size(int dtype) { return dtype == DT_F64 ? 8 : (dtype == DT_F32 ? 4 : 2); }

/* base + at elements of the dtype, or NULL */
static const void *at_elem(const void *base, size_t at, int dtype) {
    return base ? (const char *)base + at * elem_size(dtype) : NULL;
}

static void prefetch_chunk(const xjob_t *e, size_t at, size_t m, size_t es) {
    const char *bufs[3] = {e->x0, e->st[0], e->st[1]};
    for (int q = 0; q < 3; q++)
        if (bufs[q])
            for (size_t off = 0; off < m * es; off += 64)
                __builtin_prefetch(bufs[q] + at * es + off, 0, 3);
}

/* Runs pass A over the job's elements, widening 16-bit inputs blockwise; with
 * instruments, chunk by chunk, each chunk's instruments right after its statistics. */
static void run_a(job_t *jb, scratch_t *s, double c, acc_t *a) {
    xjob_t *e = jb->ex;
    /* with an update, pass A's own loop reads x0 and the states (their reads hidden behind its arithmetic) */
    const int in_a = e && jb->p && (e->x0 || e->st[0] || e->st[1]);
    if (jb->dtype == DT_F64 || jb->dtype == DT_F32) {
        size_t chunk = e ? XCHUNK : jb->n;
        for (size_t at = 0; at < jb->n; at += chunk) {
            size_t m = jb->n - at < chunk ? jb->n - at : chunk;
            if (e) /* the instruments' own buffers on their way while pass A computes */
                prefetch_chunk(e, at, m, elem_size(jb->dtype));
            if (jb->dtype == DT_F64) {
                pass_a64(at_elem(jb->x, at, DT_F64), at_elem(jb->p, at, DT_F64), m, c, a,
                         in_a ? at_elem(e->x0, at, DT_F64) : NULL, in_a ? at_elem(e->st[0], at, DT_F64) : NULL,
                         in_a ? at_elem(e->st[1], at, DT_F64) : NULL, in_a ? e->al : NULL);
                if (e)
                    extra_a64(at_elem(jb->x, at, DT_F64), at_elem(jb->p, at, DT_F64), in_a ? NULL : at_elem(e->x0, at, DT_F64),
                              in_a ? NULL : at_elem(e->st[0], at, DT_F64), in_a ? NULL : at_elem(e->st[1], at, DT_F64), at, m,
                              e);
            } else {
                pass_a(at_elem(jb->x, at, DT_F32), at_elem(jb->p, at, DT_F32), m, c, a,
                       in_a ? at_elem(e->x0, at, DT_F32) : NULL, in_a ? at_elem(e->st[0], at, DT_F32) : NULL,
                       in_a ? at_elem(e->st[1], at, DT_F32) : NULL, in_a ? e->al : NULL);
                if (e)
                    extra_a(at_elem(jb->x, at, DT_F32), at_elem(jb->p, at, DT_F32), in_a ? NULL : at_elem(e->x0, at, DT_F32),
                            in_a ? NULL : at_elem(e->st[0], at, DT_F32), in_a ? NULL : at_elem(e->st[1], at, DT_F32), at, m,
                            e);
            }
        }
        return;
    }
    for (size_t at = 0; at < jb->n; at += BLOCK) {
        size_t m = jb->n - at < BLOCK ? jb->n - at : BLOCK;
        widen((const uint16_t *)jb->x + at, s->xs, m, jb->dtype);
        if (jb->p)
            widen((const uint16_t *)jb->p + at, s->ps, m, jb->dtype);
        pass_a(s->xs, jb->p ? s->ps : NULL, m, c, a, NULL, NULL, NULL, NULL);
        if (e) {
            float *w[3] = {s->x0s, s->s0s, s->s1s};
            const void *src[3] = {e->x0, e->st[0], e->st[1]};
            for (int q = 0; q < 3; q++)
                if (src[q])
                    widen((const uint16_t *)src[q] + at, w[q], m, jb->dtype);
            extra_a(s->xs, jb->p ? s->ps : NULL, e->x0 ? s->x0s : NULL, e->st[0] ? s->s0s : NULL,
                    e->st[1] ? s->s1s : NULL, at, m, e);
        }
    }
}

/* Pass B (and, with_x, the instruments' second products, with_d: of the update too). */
static void run_b(job_t *jb, scratch_t *s, hist_t *hv, hist_t *hd, int copy, int with_x, int with_d) {
    xjob_t *e = with_x ? jb->ex : NULL;
    const int bins = hv ? hv->bins : (hd ? hd->bins : 1);
    s->tally.joint = !(hv || hd) || bins * bins > MAX_BINS || jb->n < JOINT_MIN(bins) ? TALLY_SPLIT
                     : hv && hd                                                     ? TALLY_JOINT
                                                                                    : TALLY_PAIRS;
    tally_clear(&s->tally, bins);
    if (jb->dtype == DT_F64 || jb->dtype == DT_F32) {
        size_t chunk = e ? XCHUNK : jb->n;
        for (size_t at = 0; at < jb->n; at += chunk) {
            size_t m = jb->n - at < chunk ? jb->n - at : chunk;
            /* the statistics first (their compute hides the reads from memory), then the
             * products on the chunk in the cache, then the copy (the update needs prev) */
            if (jb->dtype == DT_F64) {
                const double *x = at_elem(jb->x, at, DT_F64);
                double *p = jb->p ? (double *)jb->p + at : NULL;
                pass_b64(x, p, m, hv, hd, copy && !e, &s->tally);
                if (e)
                    extra_b64(x, p, at, m, e, with_d);
            } else {
                const float *x = at_elem(jb->x, at, DT_F32);
                float *p = jb->p ? (float *)jb->p + at : NULL;
                pass_b(x, p, m, hv, hd, copy && !e, &s->tally);
                if (e)
                    extra_b(x, p, at, m, e, with_d);
            }
            if (e && copy)
                memcpy((char *)jb->p + at * elem_size(jb->dtype), at_elem(jb->x, at, jb->dtype),
                       m * elem_size(jb->dtype));
        }
    } else {
        int need_p = hd || (e && with_d);
        for (size_t at = 0; at < jb->n; at += BLOCK) {
            size_t m = jb->n - at < BLOCK ? jb->n - at : BLOCK;
            widen((const uint16_t *)jb->x + at, s->xs, m, jb->dtype);
            if (need_p)
                widen((const uint16_t *)jb->p + at, s->ps, m, jb->dtype);
            if (e)
                extra_b(s->xs, need_p ? s->ps : NULL, at, m, e, with_d);
            pass_b(s->xs, hd ? s->ps : NULL, m, hv, hd, 0, &s->tally);
        }
        if (copy)
            memcpy(jb->p, jb->x, jb->n * elem_size(jb->dtype));
    }
    tally_flush(&s->tally, bins, hv, hd);
}

static double value_at(const void *x, size_t i, int dtype) {
    float v;
    if (dtype == DT_F64)
        return ((const double *)x)[i];
    if (dtype == DT_F32)
        return ((const float *)x)[i];
    widen((const uint16_t *)x + i, &v, 1, dtype);
    return v;
}

static double first_value(const job_t *jb) { return value_at(jb->x, 0, jb->dtype); }

/* The instruments' results once both passes ran (the products' second halves
 * are in b and bd already). */
static void extra_finish(job_t *jb, xjob_t *e) {
    flush_b(e);
    double al[3] = {0, 0, 0}; /* zero unless pass A's loop summed them */
    for (int q = 0; q < 3; q++)
        for (int j = 0; j < LANES; j++)
            al[q] += e->al[q * LANES + j];
    if (e->x0)
        e->out[X_DIST] = sqrt(lanes_sum(e->dl) + al[0]);
    for (int q = 0; q < 2; q++)
        if (e->st[q])
            e->out[X_S0 + q] = sqrt(lanes_sum(e->sl[q]) + al[1 + q]);
    if (e->un)
        for (size_t r = 0; r < e->rows; r++)
            e->un[r] = sqrt(e->un[r]);
    for (size_t i = e->gpos; i < e->k; i++) /* unsorted coordinates: the rest from memory */
        e->g[i] = value_at(jb->x, (size_t)e->idx[i], jb->dtype);
}

static void hist_store(const hist_t *h, double m, double *counts) {
    if (h->constant) {
        memset(counts, 0, sizeof(double) * h->bins);
        counts[h->bins / 2] = m;
        return;
    }
    for (int k = 0; k < h->bins; k++)
        counts[k] = (double)h->total[k];
}

static void do_job(job_t *jb, scratch_t *s, int bins, int copy) {
    jb->status = ST_W_NOT_DONE | (jb->p ? ST_D_NOT_DONE : 0);
    if (jb->n == 0)
        return;
    acc_t lanes;
    acc_init(&lanes);
    double c = first_value(jb);
    if (!isfinite(c))
        return;
    xjob_t *e = jb->ex;
    if (e)
        extra_start(e);
    run_a(jb, s, c, &lanes);
    totals_t a;
    acc_fold(&lanes, &a);
    double n = (double)jb->n;
    int w_ok = isfinite(a.s1) && isfinite(a.s2) && isfinite(a.lo) && isfinite(a.hi);
    int d_ok = jb->p && w_ok && isfinite(a.ds2) && isfinite(a.psq) && isfinite(a.dlo) && isfinite(a.dhi);
    if (!w_ok)
        return; /* NaN/Inf in the values: the general path does all of it */
    int f32 = jb->dtype != DT_F64;
    if (!hist_setup(&s->hv, bins, a.lo, a.hi, f32))
        return;
    if (d_ok && !hist_setup(&s->hd, bins, a.dlo, a.dhi, f32))
        d_ok = 0;
    int with_x = 0;
    if (e) {
        if (e->y)
            normalise(e->y, e->rows, &e->out[X_YN]);
        if (e->yd && d_ok)
            normalise(e->yd, e->rows, &e->out[X_YDN]);
        with_x = e->y || (e->yd && d_ok);
    }
    /* a delta left to the general path keeps its previous copy untouched */
    run_b(jb, s, s->hv.constant ? NULL : &s->hv, d_ok && !s->hd.constant ? &s->hd : NULL, d_ok && copy, with_x,
          d_ok);
    if (e)
        extra_finish(jb, e);
    double *w = jb->row_w;
    w[R_N] = n;
    w[R_M] = n;
    w[R_LO] = a.lo;
    w[R_HI] = a.hi;
    w[R_C] = c;
    w[R_S1] = a.s1;
    w[R_S2] = a.s2;
    w[R_ASUM] = a.asum;
    w[R_ZEROS] = a.zeros;
    w[R_NAN] = 0.0;
    w[R_INF] = 0.0;
    w[R_PSQ] = 0.0;
    hist_store(&s->hv, n, w + NRAW);
    jb->status &= ~ST_W_NOT_DONE;
    if (!d_ok)
        return;
    double *d = jb->row_d;
    d[R_N] = n;
    d[R_M] = n;
    d[R_LO] = a.dlo;
    d[R_HI] = a.dhi;
    d[R_C] = 0.0;
    d[R_S1] = 0.0;
    d[R_S2] = a.ds2;
    d[R_ASUM] = a.dasum;
    d[R_ZEROS] = a.dzeros;
    d[R_NAN] = 0.0;
    d[R_INF] = 0.0;
    d[R_PSQ] = a.psq;
    hist_store(&s->hd, n, d + NRAW);
    jb->status &= ~ST_D_NOT_DONE;
}

/* ------------------------------------------------------------ threads */

/* Whole tensors are shared out among the threads, largest first to the least
 * loaded (LPT): no thread waits on another, and each tensor's second pass finds
 * its values still in the cache. One tensor is never split, so a tensor that
 * holds most of the elements bounds the speed-up. */
typedef struct {
    job_t *jobs;
    size_t *order;  /* job indices of this worker */
    size_t count;
    int bins, copy;
    scratch_t *scratch;
} worker_t;

static void *work(void *arg) {
    worker_t *w = arg;
    for (size_t i = 0; i < w->count; i++)
        do_job(&w->jobs[w->order[i]], w->scratch, w->bins, w->copy);
    return NULL;
}

#define MAX_THREADS 64

typedef struct {
    size_t n, index;
} size_index_t;

static int larger_first(const void *a, const void *b) {
    const size_index_t *x = a, *y = b;
    if (x->n != y->n)
        return x->n < y->n ? 1 : -1;
    return x->index < y->index ? -1 : (x->index > y->index);
}

/* Runs every job on nthreads threads (this one included); 0 on success, -1 if
 * memory ran out before anything was computed. Called without the GIL. */
static int run_jobs(job_t *jobs, size_t t, int bins, int copy, int nthreads) {
    if (!HAVE_THREADS || nthreads < 1)
        nthreads = 1;
    if (nthreads > MAX_THREADS)
        nthreads = MAX_THREADS;
    if ((size_t)nthreads > t)
        nthreads = t ? (int)t : 1;
    int rc = -1;
    size_index_t *by_size = malloc(sizeof(size_index_t) * (t + 1));
    size_t *owner = malloc(sizeof(size_t) * (t + 1));
    size_t *order = malloc(sizeof(size_t) * (t + 1));
    worker_t ws[MAX_THREADS];
    uint64_t load[MAX_THREADS];
    memset(ws, 0, sizeof ws);
    memset(load, 0, sizeof load);
    if (!by_size || !owner || !order)
        goto out;
    for (int k = 0; k < nthreads; k++)
        if (!(ws[k].scratch = malloc(sizeof(scratch_t))))
            goto out;
    for (size_t i = 0; i < t; i++) {
        by_size[i].n = jobs[i].n;
        by_size[i].index = i;
    }
    qsort(by_size, t, sizeof *by_size, larger_first);
    for (size_t i = 0; i < t; i++) { /* largest first, to the least loaded */
        int best = 0;
        for (int k = 1; k < nthreads; k++)
            if (load[k] < load[best])
                best = k;
        owner[by_size[i].index] = (size_t)best;
        load[best] += by_size[i].n + 1024; /* + a per-tensor cost */
        ws[best].count++;
    }
    size_t at = 0;
    for (int k = 0; k < nthreads; k++) {
        ws[k].order = order + at;
        at += ws[k].count;
        ws[k].count = 0;
        ws[k].jobs = jobs;
        ws[k].bins = bins;
        ws[k].copy = copy;
    }
    for (size_t i = 0; i < t; i++) { /* each worker takes its tensors in the caller's order */
        worker_t *w = &ws[owner[i]];
        w->order[w->count++] = i;
    }
#if HAVE_THREADS
    pthread_t tids[MAX_THREADS];
    int started = 0;
    for (int k = 1; k < nthreads; k++) {
        if (pthread_create(&tids[started], NULL, work, &ws[k]) != 0)
            break;
        started++;
    }
    work(&ws[0]);
    for (int k = 1 + started; k < nthreads; k++) /* threads that could not start: done here */
        work(&ws[k]);
    for (int k = 0; k < started; k++)
        pthread_join(tids[k], NULL);
#else
    for (int k = 0; k < nthreads; k++)
        work(&ws[k]);
#endif
    rc = 0;
out:
    for (int k = 0; k < nthreads; k++)
        free(ws[k].scratch);
    free(order);
    free(owner);
    free(by_size);
    return rc;
}

/* ------------------------------------------------------------ chains (weighttui import) */

/* `weighttui import --no-values` reads each tensor's versions x_1, x_2, ... (one per checkpoint) as a
 * chain: one chain() call per version runs pass B of x_k (against x_{k-1}: its histograms, the ranges
 * known from pass A of the call before) and pass A of x_{k+1} (against x_k) together, chunk by chunk,
 * so that x_k's chunk is read from memory once for both: each version is read three times (as the newest,
 * the middle and the oldest of a call), not four (twice per snapshot() call, as x and as prev). Pass A's
 * totals go from one call to the next in a state row of NSTATE float64. The rows, histograms and status
 * are snapshot()'s bit for bit: the same lanes (chunks are multiples of LANES and of GROUP), the same
 * checks in the same order as do_job. */
#define NSTATE 16
enum { S_W, S_D, S_C, S_N, S_S1, S_S2, S_ASUM, S_ZEROS, S_LO, S_HI, S_DS2, S_DASUM, S_DZEROS, S_PSQ, S_DLO, S_DHI };
/* elements per chunk of a 32/64-bit chain call: x_k's chunk is read again from the cache (L2/L3) by pass A;
 * 1 MiB chunks of float32 measured faster than 64-256 KiB ones (the prefetchers restart at each chunk) */
#ifndef CCHUNK
#define CCHUNK 262144
#endif
/* pages of the oldest version given back (drop) at least this many bytes at a time */
#ifndef DROP_BYTES
#define DROP_BYTES ((size_t)2 << 20)
#endif

typedef struct {
    const void *bx, *bp;  /* pass B: x_k and x_{k-1} (NULL: none) */
    const double *bst;    /* pass A's state of x_k */
    const void *ax, *ap;  /* pass A: x_{k+1} and x_k (NULL: none) */
    double *ast;          /* pass A's state of x_{k+1} (written) */
    size_t n;
    int dtype, bins;
    double *row_w, *row_d;
    int drop;             /* give bp's pages back (madvise) once pass B read them: a file mapping */
    int status;
} chain_t;

/* madvise(MADV_DONTNEED) of the whole pages inside [base + from, base + to) (file mappings only) */
static void chain_drop(const void *base, size_t from, size_t to) {
#if defined(__linux__)
    static size_t page = 0;
    if (!page)
        page = (size_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = (uintptr_t)base + from, hi = (uintptr_t)base + to;
    lo = (lo + page - 1) / page * page;
    hi = hi / page * page;
    if (hi > lo)
        madvise((void *)lo, hi - lo, MADV_DONTNEED);
#else
    (void)base, (void)from, (void)to;
#endif
}

/* pass A's totals (or why there are none) into a state row */
static void chain_state(double *st, int ok, double c, size_t n, const totals_t *a, int has_p) {
    memset(st, 0, sizeof(double) * NSTATE);
    if (!ok)
        return;
    st[S_C] = c;
    st[S_N] = (double)n;
    st[S_S1] = a->s1, st[S_S2] = a->s2, st[S_ASUM] = a->asum, st[S_ZEROS] = a->zeros;
    st[S_LO] = a->lo, st[S_HI] = a->hi;
    st[S_DS2] = a->ds2, st[S_DASUM] = a->dasum, st[S_DZEROS] = a->dzeros, st[S_PSQ] = a->psq;
    st[S_DLO] = a->dlo, st[S_DHI] = a->dhi;
    st[S_W] = isfinite(a->s1) && isfinite(a->s2) && isfinite(a->lo) && isfinite(a->hi);
    st[S_D] = has_p && st[S_W] && isfinite(a->ds2) && isfinite(a->psq) && isfinite(a->dlo) && isfinite(a->dhi);
}

/* the rows of pass B from the state and the histograms (do_job's tail) */
static void chain_rows(chain_t *cj, const hist_t *hv, const hist_t *hd, int d_ok) {
    const double *st = cj->bst;
    double n = (double)cj->n;
    double *w = cj->row_w;
    w[R_N] = n, w[R_M] = n, w[R_LO] = st[S_LO], w[R_HI] = st[S_HI], w[R_C] = st[S_C];
    w[R_S1] = st[S_S1], w[R_S2] = st[S_S2], w[R_ASUM] = st[S_ASUM], w[R_ZEROS] = st[S_ZEROS];
    w[R_NAN] = 0.0, w[R_INF] = 0.0, w[R_PSQ] = 0.0;
    hist_store(hv, n, w + NRAW);
    cj->status &= ~ST_W_NOT_DONE;
    if (!d_ok)
        return;
    double *d = cj->row_d;
    d[R_N] = n, d[R_M] = n, d[R_LO] = st[S_DLO], d[R_HI] = st[S_DHI], d[R_C] = 0.0, d[R_S1] = 0.0;
    d[R_S2] = st[S_DS2], d[R_ASUM] = st[S_DASUM], d[R_ZEROS] = st[S_DZEROS];
    d[R_NAN] = 0.0, d[R_INF] = 0.0, d[R_PSQ] = st[S_PSQ];
    hist_store(hd, n, d + NRAW);
    cj->status &= ~ST_D_NOT_DONE;
}

static void chain_run(chain_t *cj, scratch_t *s) {
    const int bins = cj->bins, dt = cj->dtype;
    const size_t n = cj->n, es = elem_size(dt);
    cj->status = ST_W_NOT_DONE | (cj->bp ? ST_D_NOT_DONE : 0);
    /* pass B's setup, as do_job after its pass A */
    hist_t *hv = NULL, *hd = NULL;
    int do_b = cj->bx != NULL && n > 0 && cj->bst[S_W] != 0.0, d_ok = 0;
    if (do_b) {
        int f32 = dt != DT_F64;
        d_ok = cj->bp != NULL && cj->bst[S_D] != 0.0;
        if (!hist_setup(&s->hv, bins, cj->bst[S_LO], cj->bst[S_HI], f32))
            do_b = 0;
        else if (d_ok && !hist_setup(&s->hd, bins, cj->bst[S_DLO], cj->bst[S_DHI], f32))
            d_ok = 0;
    }
    if (do_b) {
        hv = s->hv.constant ? NULL : &s->hv;
        hd = d_ok && !s->hd.constant ? &s->hd : NULL;
        s->tally.joint = !(hv || hd) || bins * bins > MAX_BINS || n < JOINT_MIN(bins) ? TALLY_SPLIT
                         : hv && hd                                                 ? TALLY_JOINT
                                                                                    : TALLY_PAIRS;
        tally_clear(&s->tally, bins);
    }
    /* pass A's start, as do_job's */
    acc_t lanes;
    acc_init(&lanes);
    double c = 0.0;
    int do_a = cj->ax != NULL && n > 0;
    if (do_a) {
        c = value_at(cj->ax, 0, dt);
        do_a = isfinite(c);
    }
    const int wide = dt == DT_F32 || dt == DT_F64;
    const size_t chunk = wide ? CCHUNK : BLOCK;
    size_t dropped = 0;
    if (do_a || do_b) {
        for (size_t at = 0; at < n; at += chunk) {
            size_t m = n - at < chunk ? n - at : chunk;
            if (wide) {
                if (dt == DT_F64) {
                    if (do_b)
                        pass_b64(at_elem(cj->bx, at, dt), cj->bp ? (double *)cj->bp + at : NULL, m, hv, hd, 0,
                                 &s->tally);
                    if (do_a)
                        pass_a64(at_elem(cj->ax, at, dt), at_elem(cj->ap, at, dt), m, c, &lanes, NULL, NULL, NULL,
                                 NULL);
                } else {
                    if (do_b)
                        pass_b(at_elem(cj->bx, at, dt), cj->bp ? (float *)cj->bp + at : NULL, m, hv, hd, 0,
                               &s->tally);
                    if (do_a)
                        pass_a(at_elem(cj->ax, at, dt), at_elem(cj->ap, at, dt), m, c, &lanes, NULL, NULL, NULL,
                               NULL);
                }
            } else { /* 16-bit: widened a block at a time, x_k once when both passes read it */
                const uint16_t *bx = cj->bx, *bp = cj->bp, *ax = cj->ax, *ap = cj->ap;
                if (do_b) {
                    widen(bx + at, s->xs, m, dt);
                    if (hd)
                        widen(bp + at, s->ps, m, dt);
                    pass_b(s->xs, hd ? s->ps : NULL, m, hv, hd, 0, &s->tally);
                }
                if (do_a) {
                    widen(ax + at, s->x0s, m, dt);
                    const float *pw = NULL;
                    if (ap && do_b && ap == bx)
                        pw = s->xs;
                    else if (ap) {
                        widen(ap + at, s->s0s, m, dt);
                        pw = s->s0s;
                    }
                    pass_a(s->x0s, pw, m, c, &lanes, NULL, NULL, NULL, NULL);
                }
            }
            if (cj->drop && cj->bp && ((at + m) * es - dropped >= DROP_BYTES || at + m == n)) {
                chain_drop(cj->bp, dropped, (at + m) * es);
                dropped = (at + m) * es;
            }
        }
    }
    if (do_b) {
        tally_flush(&s->tally, bins, hv, hd);
        chain_rows(cj, &s->hv, &s->hd, d_ok);
    }
    if (cj->ast) {
        totals_t a;
        acc_fold(&lanes, &a);
        chain_state(cj->ast, do_a, c, n, &a, cj->ap != NULL);
    }
}

/* ------------------------------------------------------------ Python */

/* A C-contiguous buffer whose items match the dtype code: float32 ('f') for
 * code 0, float64 ('d') for code 3, 2-byte items (float16 'e', or the raw bits
 * as 'H'/'h') for codes 1 and 2. */
static int get_buffer(PyObject *obj, Py_buffer *view, int writable, int dtype, const char *what, Py_ssize_t i) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) {
        PyErr_Format(PyExc_TypeError, "%s[%zd]: a C-contiguous%s buffer is needed", what, i,
                     writable ? " writable" : "");
        return -1;
    }
    const char *f = view->format ? view->format : "B";
    char kind = f[0] && strchr("@=<>!", f[0]) ? f[1] : f[0];
    int ok = dtype == DT_F32   ? (kind == 'f' && view->itemsize == 4)
             : dtype == DT_F64 ? (kind == 'd' && view->itemsize == 8)
                               : ((kind == 'e' || kind == 'H' || kind == 'h') && view->itemsize == 2);
    if (!ok) {
        PyErr_Format(PyExc_TypeError, "%s[%zd]: items of format '%s' do not match dtype code %d", what, i, f,
                     dtype);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* A C-contiguous float64 ('d') or int64 ('q'/'l', 8 bytes) buffer of at least `need` items. */
static int get_vector(PyObject *obj, Py_buffer *view, int writable, char kind64, size_t need, const char *what,
                      Py_ssize_t i) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) {
        PyErr_Format(PyExc_TypeError, "extras[%zd] %s: a C-contiguous%s buffer is needed", i, what,
                     writable ? " writable" : "");
        return -1;
    }
    const char *f = view->format ? view->format : "B";
    char kind = f[0] && strchr("@=<>!", f[0]) ? f[1] : f[0];
    int ok = view->itemsize == 8 && (kind64 == 'd' ? kind == 'd' : (kind == 'q' || kind == 'l'));
    if (!ok || (size_t)view->len / 8 < need) {
        PyErr_Format(PyExc_ValueError, "extras[%zd] %s: %s of at least %zu items needed (got format '%s', %zd bytes)",
                     i, what, kind64 == 'd' ? "float64" : "int64", need, f, view->len);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* Parses extras[i] = (x0, rows, units, v, vd, idx, states, out) for job jb into e;
 * buffers taken go into views[0..6] (have[] set). See snapshot_doc. */
static int parse_extra(PyObject *item, job_t *jb, xjob_t *e, Py_buffer *views, char *have, Py_ssize_t i) {
    memset(e, 0, sizeof *e);
    if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 8) {
        PyErr_Format(PyExc_TypeError, "extras[%zd]: None or a tuple (x0, rows, units, v, vd, idx, states, out)", i);
        return -1;
    }
    int dt = jb->dtype;
    PyObject *o = PyTuple_GET_ITEM(item, 0);
    if (o != Py_None) {
        if (get_buffer(o, &views[0], 0, dt, "extras x0", i) < 0)
            return -1;
        have[0] = 1;
        if ((size_t)views[0].len != jb->n * elem_size(dt)) {
            PyErr_Format(PyExc_ValueError, "extras[%zd] x0 and xs[%zd] differ in size", i, i);
            return -1;
        }
        e->x0 = views[0].buf;
    }
    Py_ssize_t rows = PyLong_AsSsize_t(PyTuple_GET_ITEM(item, 1));
    if (rows == -1 && PyErr_Occurred())
        return -1;
    int units = PyObject_IsTrue(PyTuple_GET_ITEM(item, 2));
    if (units < 0)
        return -1;
    PyObject *v = PyTuple_GET_ITEM(item, 3), *vd = PyTuple_GET_ITEM(item, 4);
    if (rows < 0 || (rows == 0 && (units || v != Py_None || vd != Py_None)) ||
        (rows > 0 && (jb->n == 0 || jb->n % (size_t)rows))) {
        PyErr_Format(PyExc_ValueError, "extras[%zd]: rows must be >= 1 and divide the size of xs[%zd] "
                     "(0: no matrix, then no units, v or vd)", i, i);
        return -1;
    }
    e->rows = (size_t)rows;
    e->cols = rows ? jb->n / (size_t)rows : 0;
    e->units = units;
    if (v != Py_None) {
        if (get_vector(v, &views[1], 0, 'd', e->cols, "v", i) < 0)
            return -1;
        have[1] = 1;
        e->v = views[1].buf;
    }
    if (vd != Py_None) {
        if (!jb->p) {
            PyErr_Format(PyExc_ValueError, "extras[%zd] vd: needs prevs[%zd]", i, i);
            return -1;
        }
        if (get_vector(vd, &views[2], 0, 'd', e->cols, "vd", i) < 0)
            return -1;
        have[2] = 1;
        e->vd = views[2].buf;
    }
    o = PyTuple_GET_ITEM(item, 5);
    if (o != Py_None) {
        if (get_vector(o, &views[3], 0, 'q', 0, "idx", i) < 0)
            return -1;
        have[3] = 1;
        e->idx = views[3].buf;
        e->k = (size_t)views[3].len / 8;
        e->sorted_k = e->k;
        for (size_t q = 0; q < e->k; q++) {
            if (q && e->idx[q] < e->idx[q - 1] && e->sorted_k == e->k)
                e->sorted_k = q;
            if (e->idx[q] < 0 || (size_t)e->idx[q] >= jb->n) {
                PyErr_Format(PyExc_IndexError, "extras[%zd] idx: %lld out of range for %zu elements", i,
                             (long long)e->idx[q], jb->n);
                return -1;
            }
        }
    }
    o = PyTuple_GET_ITEM(item, 6);
    if (o != Py_None) {
        PyObject *sq = PySequence_Fast(o, "extras states: None or a sequence of at most 2 buffers");
        if (!sq)
            return -1;
        Py_ssize_t ns = PySequence_Fast_GET_SIZE(sq);
        int rc = 0;
        if (ns > 2) {
            PyErr_Format(PyExc_ValueError, "extras[%zd] states: at most 2", i);
            rc = -1;
        }
        for (Py_ssize_t q = 0; q < ns && rc == 0; q++) {
            PyObject *b = PySequence_Fast_GET_ITEM(sq, q);
            if (b == Py_None)
                continue;
            if (get_buffer(b, &views[4 + q], 0, dt, "extras states", i) < 0) {
                rc = -1;
                break;
            }
            have[4 + q] = 1;
            if ((size_t)views[4 + q].len != jb->n * elem_size(dt)) {
                PyErr_Format(PyExc_ValueError, "extras[%zd] states[%zd] and xs[%zd] differ in size", i, q, i);
                rc = -1;
                break;
            }
            e->st[q] = views[4 + q].buf;
        }
        Py_DECREF(sq);
        if (rc < 0)
            return -1;
    }
    size_t need = X_HEAD + (units ? e->rows : 0) + (e->v ? e->rows + e->cols : 0) +
                  (e->vd ? e->rows + e->cols : 0) + e->k;
    if (get_vector(PyTuple_GET_ITEM(item, 7), &views[6], 1, 'd', need, "out", i) < 0)
        return -1;
    have[6] = 1;
    double *out = views[6].buf;
    e->out = out;
    out += X_HEAD;
    if (units) {
        e->un = out;
        out += e->rows;
    }
    if (e->v) {
        e->y = out;
        e->b = out + e->rows;
        out += e->rows + e->cols;
    }
    if (e->vd) {
        e->yd = out;
        e->bd = out + e->rows;
        out += e->rows + e->cols;
    }
    if (e->k)
        e->g = out;
    if (dt != DT_F64 && (e->v || e->vd)) { /* float32 products: the copies (freed by py_snapshot) */
        float *f = PyMem_Calloc(4 * e->cols + 1, sizeof(float));
        if (!f) {
            PyErr_NoMemory();
            return -1;
        }
        e->vf = e->v ? f : NULL;
        e->bf = e->v ? f + e->cols : NULL;
        e->vdf = e->vd ? f + 2 * e->cols : NULL;
        e->bdf = e->vd ? f + 3 * e->cols : NULL;
        e->fbuf = f;
    }
    return 0;
}

PyDoc_STRVAR(snapshot_doc,
"snapshot(xs, prevs, dtypes, bins, out_w, out_d, copy, threads=1, extras=None) -> bytes\n\n"
"Raw statistics rows of each x in xs (C-contiguous buffers of float32 or float64,\n"
"or of float16/bfloat16 bits as uint16) into out_w, and of x - prev into out_d where\n"
"prevs[i] is not None; with copy, each such prev is overwritten with x.\n"
"dtypes: bytes, one code per tensor (0 float32, 1 float16, 2 bfloat16, 3 float64).\n"
"out_w, out_d: writable float64 buffers of len(xs) * (12 + bins).\n"
"threads: how many threads share the tensors (whole tensors each).\n"
"extras: None or one item per tensor, None or (x0, rows, units, v, vd, idx, states, out),\n"
"the instruments computed in the same passes (weighttui/record/kernel.py):\n"
"  x0: None or a buffer like x: out[0] = ||x - x0||;\n"
"  rows: x as a [rows, n / rows] matrix (0: none); units: out gets each row's L2 norm;\n"
"  v / vd: None or float64 [n / rows]: out[1] = ||W v||, out gets u = W v / ||W v|| and\n"
"    b = W^T u (vd: the same for W - prev, out[2]);\n"
"  idx: None or int64 flat indices: out gets x at each (float64);\n"
"  states: None or up to 2 buffers like x: out[3 + j] = ||states[j]||;\n"
"  out: writable float64: 8 header items, then units [rows], then u [rows], b [n / rows]\n"
"    (with v), then ud [rows], bd [n / rows] (with vd), then the gathered values.\n"
"  A tensor's extras are valid where its weights row was computed (those of vd: where\n"
"  its delta row was).\n"
"Returns one status byte per tensor: bit 0 set = its weights row was not\n"
"computed, bit 1 = its delta row was not (and its prev was not touched).");

/* buffers per tensor: x, prev, then extras' x0, v, vd, idx, states[0], states[1], out */
#define NVIEW 9

static PyObject *py_snapshot(PyObject *self, PyObject *args) {
    PyObject *xs, *prevs, *out_w_obj, *out_d_obj, *extras = Py_None;
    Py_buffer dts, ow, od;
    int bins, copy, nthreads = 1;
    if (!PyArg_ParseTuple(args, "OOy*iOOp|iO", &xs, &prevs, &dts, &bins, &out_w_obj, &out_d_obj, &copy,
                          &nthreads, &extras))
        return NULL;
    PyObject *result = NULL;
    PyObject *xseq = NULL, *pseq = NULL, *eseq = NULL;
    Py_buffer *views = NULL;
    char *have = NULL;
    job_t *jobs = NULL;
    xjob_t *xjobs = NULL;
    Py_ssize_t t = 0, i;
    int have_ow = 0, have_od = 0;

    if (bins < 1 || bins > MAX_BINS) {
        PyErr_Format(PyExc_ValueError, "bins must be in 1..%d", MAX_BINS);
        goto done;
    }
    xseq = PySequence_Fast(xs, "xs must be a sequence");
    pseq = xseq ? PySequence_Fast(prevs, "prevs must be a sequence") : NULL;
    if (!pseq)
        goto done;
    t = PySequence_Fast_GET_SIZE(xseq);
    if (PySequence_Fast_GET_SIZE(pseq) != t || dts.len != t) {
        PyErr_SetString(PyExc_ValueError, "xs, prevs and dtypes must have the same length");
        goto done;
    }
    if (extras != Py_None) {
        eseq = PySequence_Fast(extras, "extras must be None or a sequence");
        if (!eseq)
            goto done;
        if (PySequence_Fast_GET_SIZE(eseq) != t) {
            PyErr_SetString(PyExc_ValueError, "extras must have the length of xs");
            goto done;
        }
    }
    if (PyObject_GetBuffer(out_w_obj, &ow, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0)
        goto done;
    have_ow = 1;
    if (PyObject_GetBuffer(out_d_obj, &od, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0)
        goto done;
    have_od = 1;
    size_t need = (size_t)t * (NRAW + bins) * sizeof(double);
    if ((size_t)ow.len < need || (size_t)od.len < need) {
        PyErr_SetString(PyExc_ValueError, "out_w/out_d are smaller than len(xs) * (12 + bins) float64");
        goto done;
    }
    views = PyMem_Calloc(NVIEW * (size_t)t + 1, sizeof(Py_buffer));
    have = PyMem_Calloc(NVIEW * (size_t)t + 1, 1);
    jobs = PyMem_Calloc((size_t)t + 1, sizeof(job_t));
    xjobs = eseq ? PyMem_Calloc((size_t)t + 1, sizeof(xjob_t)) : NULL;
    if (!views || !have || !jobs || (eseq && !xjobs)) {
        PyErr_NoMemory();
        goto done;
    }
    for (i = 0; i < t; i++) {
        int dt = ((const unsigned char *)dts.buf)[i];
        if (dt != DT_F32 && dt != DT_F16 && dt != DT_BF16 && dt != DT_F64) {
            PyErr_Format(PyExc_ValueError, "dtypes[%zd]: unknown code %d", i, dt);
            goto done;
        }
        if (get_buffer(PySequence_Fast_GET_ITEM(xseq, i), &views[NVIEW * i], 0, dt, "xs", i) < 0)
            goto done;
        have[NVIEW * i] = 1;
        size_t es = elem_size(dt);
        if (views[NVIEW * i].len % es) {
            PyErr_Format(PyExc_ValueError, "xs[%zd]: length is not a multiple of the element size", i);
            goto done;
        }
        jobs[i].x = views[NVIEW * i].buf;
        jobs[i].n = (size_t)views[NVIEW * i].len / es;
        jobs[i].dtype = dt;
        jobs[i].row_w = (double *)ow.buf + (size_t)i * (NRAW + bins);
        jobs[i].row_d = (double *)od.buf + (size_t)i * (NRAW + bins);
        PyObject *p = PySequence_Fast_GET_ITEM(pseq, i);
        if (p != Py_None) {
            if (get_buffer(p, &views[NVIEW * i + 1], copy, dt, "prevs", i) < 0)
                goto done;
            have[NVIEW * i + 1] = 1;
            if (views[NVIEW * i + 1].len != views[NVIEW * i].len) {
                PyErr_Format(PyExc_ValueError, "prevs[%zd] and xs[%zd] differ in size", i, i);
                goto done;
            }
            jobs[i].p = views[NVIEW * i + 1].buf;
        }
        PyObject *ex = eseq ? PySequence_Fast_GET_ITEM(eseq, i) : Py_None;
        if (ex != Py_None) {
            if (parse_extra(ex, &jobs[i], &xjobs[i], &views[NVIEW * i + 2], &have[NVIEW * i + 2], i) < 0)
                goto done;
            jobs[i].ex = &xjobs[i];
        }
    }
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = run_jobs(jobs, (size_t)t, bins, copy, nthreads);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        PyErr_NoMemory();
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, t);
    if (result) {
        char *st = PyBytes_AS_STRING(result);
        for (i = 0; i < t; i++)
            st[i] = (char)jobs[i].status;
    }
done:
    if (views)
        for (i = 0; i < NVIEW * t; i++)
            if (have[i])
                PyBuffer_Release(&views[i]);
    PyMem_Free(views);
    PyMem_Free(have);
    PyMem_Free(jobs);
    if (xjobs)
        for (i = 0; i < t; i++)
            PyMem_Free(xjobs[i].fbuf);
    PyMem_Free(xjobs);
    if (have_ow)
        PyBuffer_Release(&ow);
    if (have_od)
        PyBuffer_Release(&od);
    PyBuffer_Release(&dts);
    Py_XDECREF(xseq);
    Py_XDECREF(pseq);
    Py_XDECREF(eseq);
    return result;
}

PyDoc_STRVAR(chain_doc,
"chain(bx, bp, bstate, ax, ap, dtype, bins, out_w, out_d, astate, drop=False) -> int\n\n"
"One step along the versions of one tensor (weighttui import): pass B of bx against bp\n"
"(x_k and x_{k-1}: histograms with the ranges of bstate, the state that pass A of bx wrote\n"
"in the call before; raw rows into out_w and out_d as snapshot() writes them) and pass A\n"
"of ax against ap (x_{k+1} and x_k: its totals into astate) in one pass over memory.\n"
"Buffers as snapshot()'s xs (all of one dtype code and size), any of them None (bx None:\n"
"no pass B; ax None: no pass A; bp / ap None: no delta). bstate, astate: float64 of NSTATE.\n"
"drop: bp is a view of a file mapping whose pages are given back (madvise) as pass B reads them.\n"
"Returns snapshot()'s status bits for bx's rows (3 when there is no pass B).");

/* a float64 buffer of at least need items (writable or not), or None where allowed */
static int get_doubles(PyObject *obj, Py_buffer *view, int writable, size_t need, const char *what) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0)) < 0)
        return -1;
    const char *f = view->format ? view->format : "B";
    char kind = f[0] && strchr("@=<>!", f[0]) ? f[1] : f[0];
    if (kind != 'd' || view->itemsize != 8 || (size_t)view->len / 8 < need) {
        PyErr_Format(PyExc_ValueError, "%s: float64 of at least %zu items needed", what, need);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *py_chain(PyObject *self, PyObject *args) {
    PyObject *objs[4], *bst_o, *ast_o, *ow_o, *od_o;
    int dt, bins, drop = 0;
    if (!PyArg_ParseTuple(args, "OOOOOiiOOO|p", &objs[0], &objs[1], &bst_o, &objs[2], &objs[3], &dt, &bins, &ow_o,
                          &od_o, &ast_o, &drop))
        return NULL;
    static const char *names[4] = {"bx", "bp", "ax", "ap"};
    Py_buffer v[4], bst, ast, ow, od;
    int have[4] = {0, 0, 0, 0}, have_bst = 0, have_ast = 0, have_ow = 0, have_od = 0;
    PyObject *result = NULL;
    chain_t cj;
    memset(&cj, 0, sizeof cj);
    if (bins < 1 || bins > MAX_BINS) {
        PyErr_Format(PyExc_ValueError, "bins must be in 1..%d", MAX_BINS);
        return NULL;
    }
    if (dt != DT_F32 && dt != DT_F16 && dt != DT_BF16 && dt != DT_F64) {
        PyErr_Format(PyExc_ValueError, "dtype: unknown code %d", dt);
        return NULL;
    }
    size_t es = elem_size(dt), n = 0;
    int sized = 0;
    const void *ptr[4] = {NULL, NULL, NULL, NULL};
    for (int q = 0; q < 4; q++) {
        if (objs[q] == Py_None)
            continue;
        if (get_buffer(objs[q], &v[q], 0, dt, names[q], 0) < 0)
            goto done;
        have[q] = 1;
        size_t nq = (size_t)v[q].len / es;
        if ((size_t)v[q].len % es || (sized && nq != n)) {
            PyErr_Format(PyExc_ValueError, "%s: not of the others' size", names[q]);
            goto done;
        }
        n = nq, sized = 1;
        ptr[q] = v[q].buf;
    }
    if ((ptr[1] && !ptr[0]) || (ptr[3] && !ptr[2])) {
        PyErr_SetString(PyExc_ValueError, "bp needs bx, ap needs ax");
        goto done;
    }
    if (ptr[0]) {
        if (get_doubles(bst_o, &bst, 0, NSTATE, "bstate") < 0)
            goto done;
        have_bst = 1;
        if (get_doubles(ow_o, &ow, 1, NRAW + (size_t)bins, "out_w") < 0)
            goto done;
        have_ow = 1;
        if (get_doubles(od_o, &od, 1, NRAW + (size_t)bins, "out_d") < 0)
            goto done;
        have_od = 1;
        cj.bst = bst.buf, cj.row_w = ow.buf, cj.row_d = od.buf;
    }
    if (ptr[2]) {
        if (get_doubles(ast_o, &ast, 1, NSTATE, "astate") < 0)
            goto done;
        have_ast = 1;
        cj.ast = ast.buf;
    }
    cj.bx = ptr[0], cj.bp = ptr[1], cj.ax = ptr[2], cj.ap = ptr[3];
    cj.n = n, cj.dtype = dt, cj.bins = bins, cj.drop = drop;
    scratch_t *s = malloc(sizeof(scratch_t));
    if (!s) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    chain_run(&cj, s);
    Py_END_ALLOW_THREADS
    free(s);
    result = PyLong_FromLong(cj.bx ? cj.status : (ST_W_NOT_DONE | ST_D_NOT_DONE));
done:
    for (int q = 0; q < 4; q++)
        if (have[q])
            PyBuffer_Release(&v[q]);
    if (have_bst)
        PyBuffer_Release(&bst);
    if (have_ast)
        PyBuffer_Release(&ast);
    if (have_ow)
        PyBuffer_Release(&ow);
    if (have_od)
        PyBuffer_Release(&od);
    return result;
}

/* finish(raw, kind, bins, stats, lo, hi, counts): raw rows -> FORMAT.md statistics rows, the
 * histogram bounds and counts, as record/raw_rows.py's weight_rows / delta_rows (prev_sumsq: the
 * rows' psq) and hist_parts compute them, with the same float64 operations in the same order
 * (-ffp-contract=off: bit for bit). Done by the writer thread for every snapshot: some fifty small
 * numpy operations there cost 50-200 us a snapshot of a small model, this a few. */
static const char finish_doc[] =
    "finish(raw, kind, bins, stats, lo, hi, counts) -> None: kind 0 weights rows (9 columns), 1 delta rows (6)";

static double np_max(double a, double b) { return (a >= b || isnan(a)) ? a : b; } /* numpy.maximum */

static PyObject *py_finish(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer raw, st, lob, hib, cb;
    int kind, bins;
    if (!PyArg_ParseTuple(args, "y*iiw*w*w*w*", &raw, &kind, &bins, &st, &lob, &hib, &cb))
        return NULL;
    const Py_ssize_t width = NRAW + (Py_ssize_t)bins, ncol = kind == 0 ? 9 : 6;
    const Py_ssize_t rows = bins >= 0 && width > 0 ? raw.len / (Py_ssize_t)sizeof(double) / width : -1;
    PyObject *result = NULL;
    if ((kind != 0 && kind != 1) || bins < 1 || rows < 0 || raw.len != rows * width * (Py_ssize_t)sizeof(double) ||
        st.len != rows * ncol * (Py_ssize_t)sizeof(double) || lob.len != rows * (Py_ssize_t)sizeof(double) ||
        hib.len != rows * (Py_ssize_t)sizeof(double) || cb.len != rows * bins * (Py_ssize_t)sizeof(uint32_t)) {
        PyErr_SetString(PyExc_ValueError, "finish: buffer sizes do not match the rows");
        goto done;
    }
    const double *r = (const double *)raw.buf;
    double *out = (double *)st.buf, *lo = (double *)lob.buf, *hi = (double *)hib.buf;
    uint32_t *counts = (uint32_t *)cb.buf;
    for (Py_ssize_t i = 0; i < rows; i++, r += width, out += ncol) {
        const double n = r[R_N], m = r[R_M], c = r[R_C], s1 = r[R_S1], s2 = r[R_S2];
        const int has = m > 0;
        const double mean = c + s1 / m;
        const double m2 = np_max(s2 - s1 * s1 / m, 0.0);
        const double sq = has ? m2 + m * mean * mean : 0.0;
        if (kind == 0) {
            out[0] = has ? mean : NAN;
            out[1] = has ? sqrt(m2 / m) : NAN;
            out[2] = has ? r[R_LO] : NAN;
            out[3] = has ? r[R_HI] : NAN;
            out[4] = has ? r[R_ASUM] / m : NAN;
            out[5] = has ? sqrt(sq) : 0.0;
            out[6] = n > 0 ? r[R_ZEROS] / n : NAN;
            out[7] = r[R_NAN];
            out[8] = r[R_INF];
        } else {
            const double dnorm = sqrt(sq), pnorm = sqrt(np_max(r[R_PSQ], 0.0));
            out[0] = dnorm;
            /* an empty tensor has no ratio (NaN, as the reference's delta_stats) */
            out[1] = n == 0 ? NAN : pnorm > 0 ? dnorm / pnorm : (dnorm > 0 ? INFINITY : 0.0);
            out[2] = has ? np_max(-r[R_LO], r[R_HI]) : NAN;
            out[3] = has ? r[R_ASUM] / m : NAN;
            out[4] = n > 0 ? (m - r[R_ZEROS]) / n : NAN;
            out[5] = 1.0;
        }
        lo[i] = has ? r[R_LO] : NAN;
        hi[i] = has ? r[R_HI] : NAN;
        for (int b = 0; b < bins; b++)
            counts[i * bins + b] = (uint32_t)nearbyint(r[NRAW + b]);
    }
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&raw);
    PyBuffer_Release(&st);
    PyBuffer_Release(&lob);
    PyBuffer_Release(&hib);
    PyBuffer_Release(&cb);
    return result;
}

static PyMethodDef methods[] = {
    {"snapshot", py_snapshot, METH_VARARGS, snapshot_doc},
    {"chain", py_chain, METH_VARARGS, chain_doc},
    {"finish", py_finish, METH_VARARGS, finish_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "weighttui._fastats",
    "Fused FORMAT.md statistics of CPU tensors (see weighttui/record/native/fastats.c).", -1, methods,
};

PyMODINIT_FUNC PyInit__fastats(void) {
    PyObject *m = PyModule_Create(&module);
    /* DTYPES: how many dtype codes this build reads (3 before float64: a stale build) */
    /* XCHUNK, BLOCK: the chunk sizes (tests put coordinates and rows across their boundaries);
     * JOINT_FACTOR: tensors of at least JOINT_FACTOR * bins^2 elements count into bins^2 tables;
     * ISA: the variant of the hot loops that runs (baseline, avx2, avx512f) */
    if (m && (PyModule_AddIntConstant(m, "NRAW", NRAW) < 0 || PyModule_AddIntConstant(m, "DTYPES", 4) < 0 ||
              PyModule_AddIntConstant(m, "EXTRAS", 1) < 0 || PyModule_AddIntConstant(m, "XCHUNK", XCHUNK) < 0 ||
              PyModule_AddIntConstant(m, "BLOCK", BLOCK) < 0 || PyModule_AddIntConstant(m, "NSTATE", NSTATE) < 0 ||
              PyModule_AddIntConstant(m, "CCHUNK", CCHUNK) < 0 ||
              PyModule_AddIntConstant(m, "JOINT_FACTOR", JOINT_FACTOR) < 0 ||
              PyModule_AddStringConstant(m, "ISA", hot_isa()) < 0)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
