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
 * time (GCC/clang function multiversioning). */
#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__))
#define HOT __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define HOT
#endif

/* ------------------------------------------------------------ pass A */

/* Per-lane partial sums of pass A, kept across calls (16-bit inputs come in
 * blocks), folded once per tensor by acc_fold: the same order of additions
 * whatever the input dtype. */
typedef struct {
    /* values */
    double s1[LANES], s2[LANES], as[LANES], z[LANES];
    double lo[LANES], hi[LANES]; /* float32 inputs keep float32 values here */
    /* deltas */
    double ds2[LANES], das[LANES], dz[LANES], ps[LANES], dlo[LANES], dhi[LANES];
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
        t->zeros += a->z[j];
        t->lo = a->lo[j] < t->lo ? a->lo[j] : t->lo;
        t->hi = a->hi[j] > t->hi ? a->hi[j] : t->hi;
        t->ds2 += a->ds2[j];
        t->dasum += a->das[j];
        t->dzeros += a->dz[j];
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
                         acc_t *restrict a) {                                             \
        double s1[LANES], s2[LANES], as[LANES], z[LANES];                                 \
        T lo[LANES], hi[LANES];                                                           \
        double ds2[LANES], das[LANES], dz[LANES], ps[LANES], dlo[LANES], dhi[LANES];      \
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
        } else {                                                                          \
            for (; i + LANES <= n; i += LANES)                                            \
                for (int j = 0; j < LANES; j++) {                                         \
                    VALUE_LANE(j, x[i + j]);                                              \
                    DELTA_LANE(j, x[i + j], p[i + j]);                                    \
                }                                                                         \
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

/* one value v (and its delta from q) into lane j */
#define VALUE_LANE(j, v)                      \
    do {                                      \
        double t_ = (double)(v) - cd;         \
        s1[j] += t_;                          \
        s2[j] += t_ * t_;                     \
        as[j] += fabs((double)(v));           \
        z[j] += (v) == 0 ? 1.0 : 0.0;         \
        lo[j] = (v) < lo[j] ? (v) : lo[j];    \
        hi[j] = (v) > hi[j] ? (v) : hi[j];    \
    } while (0)
#define DELTA_LANE(j, v, q)                   \
    do {                                      \
        double q_ = (double)(q);              \
        double d_ = (double)(v) - q_;         \
        ds2[j] += d_ * d_;                    \
        das[j] += fabs(d_);                   \
        dz[j] += d_ == 0.0 ? 1.0 : 0.0;       \
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
    int edgy;              /* the last group had values near an edge: index and correct in one loop */
    double step;           /* numpy's edge k < B is k * step + lo (two roundings) */
    double edges[MAX_BINS + 1];
    uint64_t total[MAX_BINS];
} hist_t;

/* Where pass B counts: every histogram has SUBH small tables that neighbouring
 * elements rotate through (an increment is a load and a store; equal bins in a
 * row would otherwise wait on each other), kept in L1 and added up at the end. */
typedef struct {
    uint32_t sub[2][SUBH][MAX_BINS];
    uint64_t pending;      /* increments since the last flush (uint32 tables) */
} tally_t;

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
    for (int w = 0; w < 2; w++)
        for (int s = 0; s < SUBH; s++)
            memset(t->sub[w][s], 0, sizeof(uint32_t) * bins);
    t->pending = 0;
}

/* Adds the tables into the totals of hv and hd (either may be NULL), clears them. */
static void tally_flush(tally_t *t, int bins, hist_t *hv, hist_t *hd) {
    hist_t *hs[2] = {hv, hd};
    for (int w = 0; w < 2; w++)
        if (hs[w])
            for (int s = 0; s < SUBH; s++)
                for (int k = 0; k < bins; k++)
                    hs[w]->total[k] += t->sub[w][s][k];
    tally_clear(t, bins);
}

/* Pass B computes bin indices GROUP elements at a time, then counts them. */
#define GROUP 256

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
 * and hi are no inner edges (updates of +-lr sit there, every element). */
#define INDEX_GROUP(T, LO, SC, SL, CLO, CHI, VALUE, EXACT)                \
    do {                                                                \
        const T lo_ = (LO), sc_ = (SC), sl_ = (SL), clo_ = (CLO), chi_ = (CHI); \
        const double step_ = h->step, e0_ = h->lo;                      \
        const int32_t last_ = h->bins - 1;                              \
        int32_t any_ = 0;                                               \
        if (h->edgy) { /* one loop: every index corrected */            \
            for (size_t i = 0; i < m; i++) {                            \
                T f_ = ((T)(VALUE) - lo_) * sc_;                        \
                f_ = f_ < clo_ ? clo_ : (f_ > chi_ ? chi_ : f_);        \
                int32_t q_ = (int32_t)f_;                               \
                T fr_ = f_ - (T)q_;                                     \
                any_ |= (fr_ < sl_) | (fr_ > (T)1 - sl_);               \
                CORRECT(q_, (EXACT));                                   \
                k[i] = q_;                                              \
            }                                                           \
        } else {                                                        \
            for (size_t i = 0; i < m; i++) {                            \
                T f_ = ((T)(VALUE) - lo_) * sc_;                        \
                /* lo and hi are no bin boundaries: no flag next to them */ \
                f_ = f_ < clo_ ? clo_ : (f_ > chi_ ? chi_ : f_);        \
                int32_t q_ = (int32_t)f_;                               \
                T fr_ = f_ - (T)q_;                                     \
                any_ |= (fr_ < sl_) | (fr_ > (T)1 - sl_);               \
                k[i] = q_;                                              \
            }                                                           \
            if (any_)                                                   \
                for (size_t i = 0; i < m; i++) {                        \
                    int32_t q_ = k[i];                                  \
                    CORRECT(q_, (EXACT));                               \
                    k[i] = q_;                                          \
                }                                                       \
        }                                                               \
        h->edgy = any_ != 0;                                            \
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

/* Bins x[0:n] into hv (NULL: skip) and d = x - p into hd (NULL: skip); with
 * copy, p[0:n] = x[0:n] afterwards (the previous copy for the next delta). */
#define DEFINE_PASS_B(NAME, T, INDEX_V, INDEX_D)                                             \
    HOT static void NAME(const T *restrict x, T *restrict p, size_t n, hist_t *hv, hist_t *hd, \
                         int copy, tally_t *t) {                                             \
        int32_t kv[GROUP], kd[GROUP];                                                        \
        const int bins = hv ? hv->bins : (hd ? hd->bins : 1);                                \
        tally_clear(t, bins);                                                                \
        for (size_t i = 0; i < n; i += GROUP) {                                              \
            size_t m = n - i < GROUP ? n - i : GROUP;                                        \
            if (hv) {                                                                        \
                INDEX_V(x + i, m, hv, kv);                                                   \
                count(t->sub[0], kv, m);                                                     \
            }                                                                                \
            if (hd) {                                                                        \
                INDEX_D(x + i, p + i, m, hd, kd);                                            \
                count(t->sub[1], kd, m);                                                     \
            }                                                                                \
            if (copy)                                                                        \
                memcpy(p + i, x + i, m * sizeof(T));                                         \
            t->pending += m;                                                                 \
            if (t->pending >= FLUSH)                                                         \
                tally_flush(t, bins, hv, hd);                                                \
        }                                                                                    \
        tally_flush(t, bins, hv, hd);                                                        \
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

/* ------------------------------------------------------------ one tensor */

typedef struct {
    const void *x;
    void *p;            /* NULL: no delta */
    size_t n;
    int dtype;
    double *row_w, *row_d;
    int status;
} job_t;

typedef struct {
    float xs[BLOCK], ps[BLOCK];
    hist_t hv, hd;
    tally_t tally;
} scratch_t;

static size_t elem_size(int dtype) { return dtype == DT_F64 ? 8 : (dtype == DT_F32 ? 4 : 2); }

/* Runs pass A or B over the job's elements, widening 16-bit inputs blockwise. */
static void run_a(job_t *jb, scratch_t *s, double c, acc_t *a) {
    if (jb->dtype == DT_F64) {
        pass_a64((const double *)jb->x, (const double *)jb->p, jb->n, c, a);
        return;
    }
    if (jb->dtype == DT_F32) {
        pass_a((const float *)jb->x, (const float *)jb->p, jb->n, c, a);
        return;
    }
    for (size_t at = 0; at < jb->n; at += BLOCK) {
        size_t m = jb->n - at < BLOCK ? jb->n - at : BLOCK;
        widen((const uint16_t *)jb->x + at, s->xs, m, jb->dtype);
        if (jb->p)
            widen((const uint16_t *)jb->p + at, s->ps, m, jb->dtype);
        pass_a(s->xs, jb->p ? s->ps : NULL, m, c, a);
    }
}

static void run_b(job_t *jb, scratch_t *s, hist_t *hv, hist_t *hd, int copy) {
    if (jb->dtype == DT_F64) {
        pass_b64((const double *)jb->x, (double *)jb->p, jb->n, hv, hd, copy, &s->tally);
        return;
    }
    if (jb->dtype == DT_F32) {
        pass_b((const float *)jb->x, (float *)jb->p, jb->n, hv, hd, copy, &s->tally);
        return;
    }
    for (size_t at = 0; at < jb->n; at += BLOCK) {
        size_t m = jb->n - at < BLOCK ? jb->n - at : BLOCK;
        widen((const uint16_t *)jb->x + at, s->xs, m, jb->dtype);
        if (hd)
            widen((const uint16_t *)jb->p + at, s->ps, m, jb->dtype);
        pass_b(s->xs, hd ? s->ps : NULL, m, hv, hd, 0, &s->tally);
    }
    if (copy)
        memcpy(jb->p, jb->x, jb->n * elem_size(jb->dtype));
}

static double first_value(const job_t *jb) {
    float v;
    if (jb->dtype == DT_F64)
        return ((const double *)jb->x)[0];
    if (jb->dtype == DT_F32)
        return ((const float *)jb->x)[0];
    widen((const uint16_t *)jb->x, &v, 1, jb->dtype);
    return v;
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
    /* a delta left to the general path keeps its previous copy untouched */
    run_b(jb, s, s->hv.constant ? NULL : &s->hv, d_ok && !s->hd.constant ? &s->hd : NULL, d_ok && copy);
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

PyDoc_STRVAR(snapshot_doc,
"snapshot(xs, prevs, dtypes, bins, out_w, out_d, copy, threads=1) -> bytes\n\n"
"Raw statistics rows of each x in xs (C-contiguous buffers of float32 or float64,\n"
"or of float16/bfloat16 bits as uint16) into out_w, and of x - prev into out_d where\n"
"prevs[i] is not None; with copy, each such prev is overwritten with x.\n"
"dtypes: bytes, one code per tensor (0 float32, 1 float16, 2 bfloat16, 3 float64).\n"
"out_w, out_d: writable float64 buffers of len(xs) * (12 + bins).\n"
"threads: how many threads share the tensors (whole tensors each).\n"
"Returns one status byte per tensor: bit 0 set = its weights row was not\n"
"computed, bit 1 = its delta row was not (and its prev was not touched).");

static PyObject *py_snapshot(PyObject *self, PyObject *args) {
    PyObject *xs, *prevs, *out_w_obj, *out_d_obj;
    Py_buffer dts, ow, od;
    int bins, copy, nthreads = 1;
    if (!PyArg_ParseTuple(args, "OOy*iOOp|i", &xs, &prevs, &dts, &bins, &out_w_obj, &out_d_obj, &copy,
                          &nthreads))
        return NULL;
    PyObject *result = NULL;
    PyObject *xseq = NULL, *pseq = NULL;
    Py_buffer *views = NULL;
    char *have = NULL;
    job_t *jobs = NULL;
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
    views = PyMem_Calloc(2 * (size_t)t + 1, sizeof(Py_buffer));
    have = PyMem_Calloc(2 * (size_t)t + 1, 1);
    jobs = PyMem_Calloc((size_t)t + 1, sizeof(job_t));
    if (!views || !have || !jobs) {
        PyErr_NoMemory();
        goto done;
    }
    for (i = 0; i < t; i++) {
        int dt = ((const unsigned char *)dts.buf)[i];
        if (dt != DT_F32 && dt != DT_F16 && dt != DT_BF16 && dt != DT_F64) {
            PyErr_Format(PyExc_ValueError, "dtypes[%zd]: unknown code %d", i, dt);
            goto done;
        }
        if (get_buffer(PySequence_Fast_GET_ITEM(xseq, i), &views[2 * i], 0, dt, "xs", i) < 0)
            goto done;
        have[2 * i] = 1;
        size_t es = elem_size(dt);
        if (views[2 * i].len % es) {
            PyErr_Format(PyExc_ValueError, "xs[%zd]: length is not a multiple of the element size", i);
            goto done;
        }
        jobs[i].x = views[2 * i].buf;
        jobs[i].n = (size_t)views[2 * i].len / es;
        jobs[i].dtype = dt;
        jobs[i].row_w = (double *)ow.buf + (size_t)i * (NRAW + bins);
        jobs[i].row_d = (double *)od.buf + (size_t)i * (NRAW + bins);
        PyObject *p = PySequence_Fast_GET_ITEM(pseq, i);
        if (p != Py_None) {
            if (get_buffer(p, &views[2 * i + 1], copy, dt, "prevs", i) < 0)
                goto done;
            have[2 * i + 1] = 1;
            if (views[2 * i + 1].len != views[2 * i].len) {
                PyErr_Format(PyExc_ValueError, "prevs[%zd] and xs[%zd] differ in size", i, i);
                goto done;
            }
            jobs[i].p = views[2 * i + 1].buf;
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
        for (i = 0; i < 2 * t; i++)
            if (have[i])
                PyBuffer_Release(&views[i]);
    PyMem_Free(views);
    PyMem_Free(have);
    PyMem_Free(jobs);
    if (have_ow)
        PyBuffer_Release(&ow);
    if (have_od)
        PyBuffer_Release(&od);
    PyBuffer_Release(&dts);
    Py_XDECREF(xseq);
    Py_XDECREF(pseq);
    return result;
}

static PyMethodDef methods[] = {
    {"snapshot", py_snapshot, METH_VARARGS, snapshot_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "weighttui._fastats",
    "Fused FORMAT.md statistics of CPU tensors (see weighttui/record/native/fastats.c).", -1, methods,
};

PyMODINIT_FUNC PyInit__fastats(void) {
    PyObject *m = PyModule_Create(&module);
    /* DTYPES: how many dtype codes this build reads (3 before float64: a stale build) */
    if (m && (PyModule_AddIntConstant(m, "NRAW", NRAW) < 0 || PyModule_AddIntConstant(m, "DTYPES", 4) < 0)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
