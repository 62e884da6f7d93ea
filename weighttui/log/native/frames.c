/*
 * weighttui._frames: the common snapshot payload of docs/FORMAT.md, decoded in C.
 *
 * Why: a first open of a big log spent about half of its reading thread in Python
 * per snapshot (msgpack's dicts, then seven array maps and three blocks checked
 * field by field). This reads the same msgpack bytes in one call.
 *
 *   snapshot(body, light=False) -> tuple | None  (light: a usual histogram as its bins, a sample as its size)
 *   scalars(body) -> (step, epoch, time, values) | None           (a scalars payload: py_scalars)
 *   frame(buf, pos, prepared) -> (end, type, payload | None) | None   (one verified frame: py_frame; 2: light)
 *   gather_blocks / gather_columns / gather_counts: the store's row-to-tensor transposes (below)
 *
 * It is conservative: it returns a tuple only for a payload that msgpack decodes
 * (one map, string keys, nothing after it) and that passes every check of
 * records.parse_snapshot that does not need the run's tensors; anything else
 * (a repeated key, an unknown key inside a block or array, bf16, an empty array,
 * an int time, a number outside int64, an ext type ...) gives None and the caller takes the Python path,
 * which stays the definition (log/records.py). The tuple:
 *
 *   (step, epoch|None, batch|None, time, ids, weights, delta|None, grad|None, optim|None, sample|None)
 *
 * Top-level keys records.py does not read (the Recorder's "units") are skipped,
 * checked as msgpack would decode them (skip_value).
 *   array:  (dtype str, shape tuple, data bytes)          (the data copied, as msgpack does)
 *           or, once configure() gave numpy.frombuffer, a read-only numpy array over that copy
 *           (the ids stay a tuple: records.parse_prepared keys its id checks by their bytes)
 *   block:  (names list, stats array, None | (lo, hi, counts), stats may hold a NaN)
 *
 * Checked here: the keys, the types, each array's dtype (known, of the kind its
 * place needs), ndim, non-zero dimensions and byte length; the shapes a block must
 * have for the snapshot's ids; bins <= 65536. Left to records.parse_prepared: ids
 * declared and distinct, the sample's length, counts of another dtype than uint32
 * within its range, and "no finite element" rows.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#include "crc32_core.h"

#define MAX_BINS 65536

typedef struct {
    const unsigned char *p;
    const unsigned char *end;
} cur;

static int need(cur *c, Py_ssize_t n) { return n >= 0 && c->end - c->p >= n; }

static uint64_t be(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* the length of a container at the cursor (advanced past its header), -1 if the cursor holds something else:
 * `fix` is its fix-size family's high nibble, w16 / w32 its 16- and 32-bit length markers */
static Py_ssize_t container_len(cur *c, unsigned char fix, unsigned char w16, unsigned char w32) {
    if (!need(c, 1))
        return -1;
    unsigned char b = *c->p;
    if ((b & 0xf0) == fix) {
        c->p++;
        return b & 0x0f;
    }
    if (b == w16 && need(c, 3)) {
        c->p += 3;
        return (Py_ssize_t)be(c->p - 2, 2);
    }
    if (b == w32 && need(c, 5)) {
        c->p += 5;
        return (Py_ssize_t)be(c->p - 4, 4);
    }
    return -1;
}

static Py_ssize_t map_len(cur *c) { return container_len(c, 0x80, 0xde, 0xdf); }

static Py_ssize_t array_len(cur *c) { return container_len(c, 0x90, 0xdc, 0xdd); }

/* the header of a str or bin whose 8-, 16- and 32-bit length markers are m8, m8 + 1, m8 + 2 (one byte is
 * at the cursor): its size h and the length it gives; 0 if the cursor holds another marker or is cut short */
static int sized_header(cur *c, unsigned char m8, Py_ssize_t *h, Py_ssize_t *len) {
    unsigned char b = *c->p;
    if (b == m8 && need(c, 2)) {
        *h = 2;
        *len = c->p[1];
    } else if (b == m8 + 1 && need(c, 3)) {
        *h = 3;
        *len = (Py_ssize_t)be(c->p + 1, 2);
    } else if (b == m8 + 2 && need(c, 5)) {
        *h = 5;
        *len = (Py_ssize_t)be(c->p + 1, 4);
    } else {
        return 0;
    }
    return 1;
}

/* the bytes after a header of size h, len of them (the cursor advanced past them); 0 if cut short */
static int sized_body(cur *c, Py_ssize_t h, Py_ssize_t len, const unsigned char **s, Py_ssize_t *n) {
    if (!need(c, h + len))
        return 0;
    *s = c->p + h;
    *n = len;
    c->p += h + len;
    return 1;
}

/* a str at the cursor: its bytes (not checked as UTF-8 here), or 0 if not a str */
static int str_at(cur *c, const unsigned char **s, Py_ssize_t *n) {
    Py_ssize_t h, len;
    if (!need(c, 1))
        return 0;
    if ((*c->p & 0xe0) == 0xa0) {  /* fixstr */
        h = 1;
        len = *c->p & 0x1f;
    } else if (!sized_header(c, 0xd9, &h, &len)) {
        return 0;
    }
    return sized_body(c, h, len, s, n);
}

static int bin_at(cur *c, const unsigned char **s, Py_ssize_t *n) {
    Py_ssize_t h, len;
    if (!need(c, 1) || !sized_header(c, 0xc4, &h, &len))
        return 0;
    return sized_body(c, h, len, s, n);
}

static int is_nil(cur *c) {
    if (need(c, 1) && *c->p == 0xc0) {
        c->p++;
        return 1;
    }
    return 0;
}

/* an int within int64 (msgpack's ints; not bool, not float), or 0 */
static int int_at(cur *c, int64_t *v) {
    if (!need(c, 1))
        return 0;
    unsigned char b = *c->p;
    if (b <= 0x7f) {
        *v = b;
        c->p++;
        return 1;
    }
    if (b >= 0xe0) {
        *v = (int8_t)b;
        c->p++;
        return 1;
    }
    int n;
    int sign;
    switch (b) {
    case 0xcc: n = 1; sign = 0; break;
    case 0xcd: n = 2; sign = 0; break;
    case 0xce: n = 4; sign = 0; break;
    case 0xcf: n = 8; sign = 0; break;
    case 0xd0: n = 1; sign = 1; break;
    case 0xd1: n = 2; sign = 1; break;
    case 0xd2: n = 4; sign = 1; break;
    case 0xd3: n = 8; sign = 1; break;
    default: return 0;
    }
    if (!need(c, 1 + n))
        return 0;
    uint64_t u = be(c->p + 1, n);
    if (sign) {
        if (n < 8) { /* sign-extend */
            uint64_t m = (uint64_t)1 << (8 * n - 1);
            *v = (int64_t)((u ^ m) - m);
        } else {
            *v = (int64_t)u;
        }
    } else {
        if (u > (uint64_t)INT64_MAX)
            return 0; /* outside int64: records.py says why */
        *v = (int64_t)u;
    }
    c->p += 1 + n;
    return 1;
}

static int float_at(cur *c, double *v) {
    if (!need(c, 1))
        return 0;
    unsigned char b = *c->p;
    if (b == 0xcb && need(c, 9)) {
        uint64_t u = be(c->p + 1, 8);
        memcpy(v, &u, 8);
        c->p += 9;
        return 1;
    }
    if (b == 0xca && need(c, 5)) {
        uint32_t u = (uint32_t)be(c->p + 1, 4);
        float f;
        memcpy(&f, &u, 4);
        *v = (double)f;
        c->p += 5;
        return 1;
    }
    return 0;
}

/* Skip one msgpack value that msgpack-python would decode (with raw=False, strict_map_key=False):
   str as strict UTF-8, map keys that are hashable. 1: skipped; 0: not the common shape (ext types,
   a map or array as a key, deep nesting, bad UTF-8: left to the Python path); -1: a Python error. */
static int skip_value(cur *c, int depth) {
    if (!need(c, 1) || depth > 32)
        return 0;
    unsigned char b = *c->p;
    const unsigned char *s;
    Py_ssize_t n;
    int64_t iv;
    double dv;
    if (b <= 0x7f || b >= 0xe0 || (b >= 0xcc && b <= 0xd3)) {
        if (int_at(c, &iv))
            return 1;
        /* a uint64 over int64: still a valid msgpack int */
        if (b == 0xcf && need(c, 9)) {
            c->p += 9;
            return 1;
        }
        return 0;
    }
    if (b == 0xc0 || b == 0xc2 || b == 0xc3) {
        c->p++;
        return 1;
    }
    if (b == 0xca || b == 0xcb)
        return float_at(c, &dv);
    if ((b & 0xe0) == 0xa0 || b == 0xd9 || b == 0xda || b == 0xdb) {
        if (!str_at(c, &s, &n))
            return 0;
        PyObject *u = PyUnicode_DecodeUTF8((const char *)s, n, NULL);
        if (u == NULL) {
            if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
                PyErr_Clear();
                return 0;
            }
            return -1;
        }
        Py_DECREF(u);
        return 1;
    }
    if (b == 0xc4 || b == 0xc5 || b == 0xc6)
        return bin_at(c, &s, &n);
    if ((b & 0xf0) == 0x90 || b == 0xdc || b == 0xdd) {
        n = array_len(c);
        if (n < 0)
            return 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            int r = skip_value(c, depth + 1);
            if (r <= 0)
                return r;
        }
        return 1;
    }
    if ((b & 0xf0) == 0x80 || b == 0xde || b == 0xdf) {
        n = map_len(c);
        if (n < 0)
            return 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            if (!need(c, 1))
                return 0;
            unsigned char k = *c->p;
            int scalar_key = k <= 0x7f || k >= 0xe0 || (k >= 0xcc && k <= 0xd3) || (k & 0xe0) == 0xa0 ||
                             k == 0xd9 || k == 0xda || k == 0xdb || k == 0xc0 || k == 0xc2 || k == 0xc3;
            if (!scalar_key)
                return 0; /* (a float, bin or container key: the Python path decides) */
            int r = skip_value(c, depth + 1);
            if (r <= 0)
                return r;
            r = skip_value(c, depth + 1);
            if (r <= 0)
                return r;
        }
        return 1;
    }
    return 0; /* ext types, and 0xc1 (never used) */
}

static int key_is(const unsigned char *s, Py_ssize_t n, const char *k) {
    return (Py_ssize_t)strlen(k) == n && memcmp(s, k, (size_t)n) == 0;
}

/* dtype strings decode_array accepts without bf16, and their kind and item size */
static const struct {
    const char *name;
    char kind;
    int size;
} DTYPES[] = {
    {"<f8", 'f', 8}, {"<f4", 'f', 4}, {"<f2", 'f', 2}, {"<i8", 'i', 8}, {"<i4", 'i', 4}, {"<i2", 'i', 2},
    {"|i1", 'i', 1}, {"<u8", 'u', 8}, {"<u4", 'u', 4}, {"<u2", 'u', 2}, {"|u1", 'u', 1}, {"|b1", 'b', 1},
};

static PyObject *dtype_strs[sizeof(DTYPES) / sizeof(DTYPES[0])];

typedef struct {
    int dtype; /* index into DTYPES */
    int ndim;
    Py_ssize_t dims[2];
    const unsigned char *data;
    Py_ssize_t nbytes;
} arr;

/* an array map {"dtype", "shape", "data"} of ndim dimensions and a dtype of one of `kinds` */
static int array_at(cur *c, int ndim, const char *kinds, arr *a) {
    Py_ssize_t n = map_len(c);
    if (n != 3)
        return 0;
    int seen = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        const unsigned char *k;
        Py_ssize_t kn;
        if (!str_at(c, &k, &kn))
            return 0;
        if (key_is(k, kn, "dtype") && !(seen & 1)) {
            const unsigned char *s;
            Py_ssize_t sn;
            if (!str_at(c, &s, &sn))
                return 0;
            int found = -1;
            for (int j = 0; j < (int)(sizeof(DTYPES) / sizeof(DTYPES[0])); j++) {
                if (key_is(s, sn, DTYPES[j].name)) {
                    found = j;
                    break;
                }
            }
            if (found < 0 || strchr(kinds, DTYPES[found].kind) == NULL)
                return 0;
            a->dtype = found;
            seen |= 1;
        } else if (key_is(k, kn, "shape") && !(seen & 2)) {
            if (array_len(c) != ndim)
                return 0;
            for (int d = 0; d < ndim; d++) {
                int64_t v;
                if (!int_at(c, &v) || v <= 0 || v > PY_SSIZE_T_MAX)
                    return 0;
                a->dims[d] = (Py_ssize_t)v;
            }
            a->ndim = ndim;
            seen |= 2;
        } else if (key_is(k, kn, "data") && !(seen & 4)) {
            if (!bin_at(c, &a->data, &a->nbytes))
                return 0;
            seen |= 4;
        } else {
            return 0;
        }
    }
    if (seen != 7)
        return 0;
    /* each dimension is at least 1, so a product over the data's length stops early (and never
       overflows: count <= nbytes before each step, and the step is taken only if it stays so) */
    Py_ssize_t count = DTYPES[a->dtype].size;
    for (int d = 0; d < ndim; d++) {
        if (a->dims[d] > a->nbytes / count)
            return 0;
        count *= a->dims[d];
    }
    return count == a->nbytes;
}

/* numpy.frombuffer and a numpy dtype per DTYPES entry, given by configure(): then the arrays of a
   snapshot (but its ids) come as numpy arrays (read-only views of a bytes copy, as decode_array
   gives them) instead of (dtype, shape, data) */
static PyObject *np_frombuffer = NULL;
static PyObject *np_dtypes[sizeof(DTYPES) / sizeof(DTYPES[0])];

static PyObject *array_tuple(const arr *a) {
    PyObject *shape = a->ndim == 1 ? Py_BuildValue("(n)", a->dims[0]) : Py_BuildValue("(nn)", a->dims[0], a->dims[1]);
    if (shape == NULL)
        return NULL;
    PyObject *data = PyBytes_FromStringAndSize((const char *)a->data, a->nbytes);
    if (data == NULL) {
        Py_DECREF(shape);
        return NULL;
    }
    PyObject *dt = dtype_strs[a->dtype];
    Py_INCREF(dt);
    return Py_BuildValue("(NNN)", dt, shape, data);
}

static PyObject *array_obj(const arr *a) {
    if (np_frombuffer == NULL)
        return array_tuple(a);
    PyObject *data = PyBytes_FromStringAndSize((const char *)a->data, a->nbytes);
    if (data == NULL)
        return NULL;
    PyObject *out = PyObject_CallFunctionObjArgs(np_frombuffer, data, np_dtypes[a->dtype], NULL);
    Py_DECREF(data);
    if (out == NULL || a->ndim == 1)
        return out;
    PyObject *shaped = PyObject_CallMethod(out, "reshape", "(nn)", a->dims[0], a->dims[1]);
    Py_DECREF(out);
    return shaped;
}

/* whether 8-byte float data may hold a NaN (records._no_finite_is_nan has nothing to do without
   one); 1 for other dtypes (then the rule runs as it would) */
static int maybe_nan(const arr *a) {
    if (strcmp(DTYPES[a->dtype].name, "<f8") != 0)
        return 1;
    const unsigned char *p = a->data;
    for (Py_ssize_t i = 0; i + 8 <= a->nbytes; i += 8) {
        double v;
        memcpy(&v, p + i, 8);
        if (v != v)
            return 1;
    }
    return 0;
}

static PyObject *py_configure(PyObject *self, PyObject *args) {
    PyObject *fb, *dtypes;
    if (!PyArg_ParseTuple(args, "OO!:configure", &fb, &PyDict_Type, &dtypes))
        return NULL;
    PyObject *got[sizeof(DTYPES) / sizeof(DTYPES[0])];
    for (size_t j = 0; j < sizeof(DTYPES) / sizeof(DTYPES[0]); j++) {
        got[j] = PyDict_GetItemString(dtypes, DTYPES[j].name);
        if (got[j] == NULL) {
            PyErr_Format(PyExc_KeyError, "no dtype for %s", DTYPES[j].name);
            return NULL;
        }
    }
    for (size_t j = 0; j < sizeof(DTYPES) / sizeof(DTYPES[0]); j++) {
        Py_INCREF(got[j]);
        Py_XSETREF(np_dtypes[j], got[j]);
    }
    Py_INCREF(fb);
    Py_XSETREF(np_frombuffer, fb);
    Py_RETURN_NONE;
}

typedef struct {
    const unsigned char *names_at; /* the first name's str header */
    Py_ssize_t nnames;
    arr stats, lo, hi, counts;
    int has_hist;
} blk;

/* a block map {"names", "stats", "hist"} (hist nil or {"lo", "hi", "counts"}); 0 if not in that shape */
static int block_at(cur *c, blk *b) {
    Py_ssize_t n = map_len(c);
    if (n < 2 || n > 3)
        return 0;
    int seen = 0;
    b->has_hist = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        const unsigned char *k;
        Py_ssize_t kn;
        if (!str_at(c, &k, &kn))
            return 0;
        if (key_is(k, kn, "names") && !(seen & 1)) {
            b->nnames = array_len(c);
            if (b->nnames < 0)
                return 0;
            b->names_at = c->p;
            for (Py_ssize_t j = 0; j < b->nnames; j++) {
                const unsigned char *s;
                Py_ssize_t sn;
                if (!str_at(c, &s, &sn))
                    return 0;
            }
            seen |= 1;
        } else if (key_is(k, kn, "stats") && !(seen & 2)) {
            if (!array_at(c, 2, "f", &b->stats))
                return 0;
            seen |= 2;
        } else if (key_is(k, kn, "hist") && !(seen & 4)) {
            seen |= 4;
            if (is_nil(c))
                continue;
            if (map_len(c) != 3)
                return 0;
            int hseen = 0;
            for (int j = 0; j < 3; j++) {
                const unsigned char *hk;
                Py_ssize_t hkn;
                if (!str_at(c, &hk, &hkn))
                    return 0;
                if (key_is(hk, hkn, "lo") && !(hseen & 1)) {
                    if (!array_at(c, 1, "f", &b->lo))
                        return 0;
                    hseen |= 1;
                } else if (key_is(hk, hkn, "hi") && !(hseen & 2)) {
                    if (!array_at(c, 1, "f", &b->hi))
                        return 0;
                    hseen |= 2;
                } else if (key_is(hk, hkn, "counts") && !(hseen & 4)) {
                    if (!array_at(c, 2, "iu", &b->counts))
                        return 0;
                    hseen |= 4;
                } else {
                    return 0;
                }
            }
            b->has_hist = 1;
        } else {
            return 0;
        }
    }
    return (seen & 3) == 3;
}

/* the shapes records._block needs for t tensors */
static int block_fits(const blk *b, Py_ssize_t t) {
    if (b->stats.dims[0] != t || b->stats.dims[1] != b->nnames)
        return 0;
    if (b->has_hist && (b->lo.dims[0] != t || b->hi.dims[0] != t || b->counts.dims[0] != t ||
                        b->counts.dims[1] > MAX_BINS))
        return 0;
    return 1;
}

/* light decoding (snapshot(body, True), frame(buf, pos, 2)): a histogram of the usual dtypes (float64
   edges, uint32 counts: nothing records.py would convert or range-check) is given as its number of bins,
   a float32 sample as its number of values - no copy of their data. For a reader that leaves them in the
   log (`weighttui info`: data/store/index.Spiller(histograms=False)); records.parse_prepared gives
   records.Omitted stand-ins for them. */
static int dtype_is(const arr *a, const char *name) { return strcmp(DTYPES[a->dtype].name, name) == 0; }

/* the block as a new tuple; NULL with no error set: a name is not UTF-8 (msgpack refuses that) */
static PyObject *block_obj(const blk *b, const unsigned char *end, int light) {
    PyObject *names = PyList_New(b->nnames);
    if (names == NULL)
        return NULL;
    cur nc = {b->names_at, end};
    for (Py_ssize_t j = 0; j < b->nnames; j++) {
        const unsigned char *s = NULL;
        Py_ssize_t sn = 0;
        str_at(&nc, &s, &sn);
        PyObject *u = PyUnicode_DecodeUTF8((const char *)s, sn, NULL);
        if (u == NULL) {
            Py_DECREF(names);
            if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
                PyErr_Clear();
            return NULL;
        }
        PyList_SET_ITEM(names, j, u);
    }
    PyObject *hist;
    if (b->has_hist && light && dtype_is(&b->lo, "<f8") && dtype_is(&b->hi, "<f8") && dtype_is(&b->counts, "<u4")) {
        hist = PyLong_FromSsize_t(b->counts.dims[1]);
    } else if (b->has_hist) {
        hist = Py_BuildValue("(NNN)", array_obj(&b->lo), array_obj(&b->hi), array_obj(&b->counts));
    } else {
        Py_INCREF(Py_None);
        hist = Py_None;
    }
    if (hist == NULL) {
        Py_DECREF(names);
        return NULL;
    }
    return Py_BuildValue("(NNNO)", names, array_obj(&b->stats), hist, maybe_nan(&b->stats) ? Py_True : Py_False);
}

enum { K_STEP, K_EPOCH, K_BATCH, K_TIME, K_IDS, K_WEIGHTS, K_DELTA, K_GRAD, K_OPTIM, K_SAMPLE, NKEYS };
static const char *KEYS[NKEYS] = {"step", "epoch", "batch", "time", "ids", "weights", "delta", "grad", "optim",
                                  "sample"};

static PyObject *int_or_none(int has, int64_t v) {
    if (!has)
        Py_RETURN_NONE;
    return PyLong_FromLongLong(v);
}

/* snapshot() of the payload buf[0:len] (light: see block_obj) */
static PyObject *snapshot_of(const unsigned char *buf, Py_ssize_t len, int light) {
    cur c = {buf, buf + len};
    blk blocks[NKEYS];
    int has_block[NKEYS] = {0};
    int64_t step = 0, epoch = 0, batch = 0;
    int has_epoch = 0, has_batch = 0, has_sample = 0;
    double time = 0.0;
    arr ids, sample;
    int seen = 0;
    PyObject *result = NULL;
    PyObject *objs[NKEYS] = {NULL};
    Py_ssize_t n = map_len(&c);
    if (n < 0)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        const unsigned char *k;
        Py_ssize_t kn;
        if (!str_at(&c, &k, &kn))
            goto done;
        int which = -1;
        for (int j = 0; j < NKEYS; j++) {
            if (key_is(k, kn, KEYS[j])) {
                which = j;
                break;
            }
        }
        if (which < 0) { /* a key records.py does not read (the Recorder's "units"): skipped */
            PyObject *u = PyUnicode_DecodeUTF8((const char *)k, kn, NULL); /* (msgpack decodes it) */
            if (u == NULL) {
                if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
                    PyErr_Clear();
                goto done;
            }
            Py_DECREF(u);
            if (skip_value(&c, 1) <= 0)
                goto done;
            continue;
        }
        if (seen & (1 << which))
            goto done; /* a repeated key: the Python path */
        seen |= 1 << which;
        switch (which) {
        case K_STEP:
            if (!int_at(&c, &step))
                goto done;
            break;
        case K_EPOCH:
            if (!is_nil(&c)) {
                if (!int_at(&c, &epoch))
                    goto done;
                has_epoch = 1;
            }
            break;
        case K_BATCH:
            if (!is_nil(&c)) {
                if (!int_at(&c, &batch))
                    goto done;
                has_batch = 1;
            }
            break;
        case K_TIME:
            if (!is_nil(&c) && !float_at(&c, &time))
                goto done;
            break;
        case K_IDS:
            if (!array_at(&c, 1, "iu", &ids))
                goto done;
            break;
        case K_SAMPLE:
            if (!is_nil(&c)) {
                if (!array_at(&c, 1, "f", &sample))
                    goto done;
                has_sample = 1;
            }
            break;
        default: /* a block (its shapes are checked once the ids are known) */
            if (!is_nil(&c)) {
                if (!block_at(&c, &blocks[which]))
                    goto done;
                has_block[which] = 1;
            }
        }
    }
    /* one map and nothing after it; step, ids and weights present */
    if (c.p != c.end || !(seen & (1 << K_STEP)) || !(seen & (1 << K_IDS)) || !has_block[K_WEIGHTS])
        goto done;
    for (int j = K_WEIGHTS; j <= K_OPTIM; j++) {
        if (has_block[j] && !block_fits(&blocks[j], ids.dims[0]))
            goto done;
    }
    for (int j = K_WEIGHTS; j <= K_OPTIM; j++) {
        if (!has_block[j]) {
            Py_INCREF(Py_None);
            objs[j] = Py_None;
        } else if ((objs[j] = block_obj(&blocks[j], c.end, light)) == NULL) {
            goto done;
        }
    }
    if (time == 0.0) /* records: `time or 0.0` (-0.0 too) */
        time = 0.0;
    {
        PyObject *sample_obj;
        if (has_sample && light && dtype_is(&sample, "<f4")) {
            sample_obj = PyLong_FromSsize_t(sample.dims[0]);
            if (sample_obj == NULL)
                goto done;
        } else if (has_sample) {
            sample_obj = array_obj(&sample);
            if (sample_obj == NULL)
                goto done;
        } else {
            Py_INCREF(Py_None);
            sample_obj = Py_None;
        }
        result = Py_BuildValue("(LNNdNOOOON)", (long long)step, int_or_none(has_epoch, epoch),
                               int_or_none(has_batch, batch), time, array_tuple(&ids), objs[K_WEIGHTS],
                               objs[K_DELTA], objs[K_GRAD], objs[K_OPTIM], sample_obj);
    }
done:
    for (int j = 0; j < NKEYS; j++)
        Py_XDECREF(objs[j]);
    if (result != NULL)
        return result;
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *py_snapshot(PyObject *self, PyObject *args) {
    Py_buffer view;
    int light = 0;
    if (!PyArg_ParseTuple(args, "y*|p:snapshot", &view, &light))
        return NULL;
    PyObject *out = snapshot_of((const unsigned char *)view.buf, view.len, light);
    PyBuffer_Release(&view);
    return out;
}

/* scalars(body) -> (step, epoch | None, time, {name: float}) | None: a scalars payload of the usual
   shape (records.parse_scalars gives the same record from it: ScalarsRecord(*tuple)); None for
   anything else (then msgpack and parse_scalars) */
static PyObject *py_scalars(PyObject *self, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    cur c = {(const unsigned char *)view.buf, (const unsigned char *)view.buf + view.len};
    int64_t step = 0, epoch = 0;
    int has_step = 0, has_epoch = 0, seen = 0;
    double time = 0.0;
    PyObject *values = NULL, *result = NULL;
    Py_ssize_t n = map_len(&c);
    if (n < 0)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        const unsigned char *k;
        Py_ssize_t kn;
        if (!str_at(&c, &k, &kn))
            goto done;
        int which = key_is(k, kn, "step") ? 0 : key_is(k, kn, "epoch") ? 1 : key_is(k, kn, "time") ? 2
                    : key_is(k, kn, "values") ? 3 : -1;
        if (which < 0) { /* a key parse_scalars does not read: skipped, checked as msgpack would */
            PyObject *u = PyUnicode_DecodeUTF8((const char *)k, kn, NULL);
            if (u == NULL) {
                if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
                    PyErr_Clear();
                goto done;
            }
            Py_DECREF(u);
            if (skip_value(&c, 1) <= 0)
                goto done;
            continue;
        }
        if (seen & (1 << which))
            goto done;
        seen |= 1 << which;
        if (which == 0) {
            if (!int_at(&c, &step))
                goto done;
            has_step = 1;
        } else if (which == 1) {
            if (!is_nil(&c)) {
                if (!int_at(&c, &epoch))
                    goto done;
                has_epoch = 1;
            }
        } else if (which == 2) {
            if (!is_nil(&c) && !float_at(&c, &time))
                goto done;
        } else {
            Py_ssize_t m = map_len(&c);
            if (m < 0)
                goto done;
            values = PyDict_New();
            if (values == NULL)
                goto done;
            for (Py_ssize_t j = 0; j < m; j++) {
                const unsigned char *vk;
                Py_ssize_t vkn;
                int64_t iv;
                double dv;
                if (!str_at(&c, &vk, &vkn))
                    goto done;
                if (float_at(&c, &dv)) {
                } else if (int_at(&c, &iv)) {
                    dv = (double)iv; /* float(int), as parse_scalars */
                } else {
                    goto done;
                }
                PyObject *key = PyUnicode_DecodeUTF8((const char *)vk, vkn, NULL);
                if (key == NULL) {
                    if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
                        PyErr_Clear();
                    goto done;
                }
                PyObject *val = PyFloat_FromDouble(dv);
                int bad = val == NULL || PyDict_SetItem(values, key, val) < 0;
                Py_DECREF(key);
                Py_XDECREF(val);
                if (bad)
                    goto done;
            }
        }
    }
    if (c.p != c.end || !has_step || values == NULL)
        goto done;
    if (time == 0.0)
        time = 0.0;
    result = Py_BuildValue("(LNdO)", (long long)step, int_or_none(has_epoch, epoch), time, values);
done:
    Py_XDECREF(values);
    PyBuffer_Release(&view);
    if (result != NULL)
        return result;
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

#define FRAME_HEADER_SIZE 16
#define MAX_PAYLOAD (256 * 1024 * 1024)
#define GIL_FREE_BYTES (16 * 1024) /* as weighttui._crc32: the index writer gets the GIL while a CRC runs */

static uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* frame(buf, pos, prepared) -> (end, type, payload | None) | None

   The complete, verified frame at buf[pos:] (sync, header CRC, reserved bytes, LEN within the cap,
   payload CRC), as format.FrameDecoder checks it: `end` is where it ends in buf, `payload` the
   snapshot decoded (with prepared true, for a snapshot of the usual shape) or None (decode it).
   None for anything else at pos (too few bytes, not a verified header, an incomplete frame, a
   payload CRC mismatch): FrameDecoder's own steps then say what it is. */
static PyObject *py_frame(PyObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t pos;
    int prepared; /* 0: no payload decoded, 1: a snapshot's or scalars', 2: the same, light (block_obj) */
    if (!PyArg_ParseTuple(args, "y*ni:frame", &view, &pos, &prepared))
        return NULL;
    PyObject *out = NULL;
    const unsigned char *b = (const unsigned char *)view.buf;
    if (pos < 0 || view.len - pos < FRAME_HEADER_SIZE)
        goto none;
    const unsigned char *h = b + pos;
    uint32_t length = le32(h + 4);
    if (memcmp(h, "\xd7WTR", 4) != 0 || h[9] || h[10] || h[11] || length > MAX_PAYLOAD ||
        crc_update(0, h, 12) != le32(h + 12))
        goto none;
    Py_ssize_t end = pos + FRAME_HEADER_SIZE + (Py_ssize_t)length + 4;
    if (end > view.len)
        goto none;
    const unsigned char *body = h + FRAME_HEADER_SIZE;
    uint32_t crc;
    if (length >= GIL_FREE_BYTES) {
        Py_BEGIN_ALLOW_THREADS
        crc = crc_update(0, body, length);
        Py_END_ALLOW_THREADS
    } else {
        crc = crc_update(0, body, length);
    }
    if (crc != le32(body + length))
        goto none;
    PyObject *payload = NULL;
    if (prepared && (h[8] == 3 || h[8] == 4)) { /* a snapshot, or its scalars */
        if (h[8] == 3) {
            payload = snapshot_of(body, length, prepared == 2);
        } else {
            PyObject *mv = PyMemoryView_FromMemory((char *)body, length, PyBUF_READ);
            if (mv == NULL)
                goto done;
            payload = py_scalars(NULL, mv);
            Py_DECREF(mv);
        }
        if (payload == NULL)
            goto done;
    } else {
        Py_INCREF(Py_None);
        payload = Py_None;
    }
    out = Py_BuildValue("(niN)", end, (int)h[8], payload);
    goto done;
none:
    Py_INCREF(Py_None);
    out = Py_None;
done:
    PyBuffer_Release(&view);
    return out;
}

/* ---------------------------------------------------------------- the store's transposes

   A sealed segment holds a run's rows tensor by tensor (data/store/columns._grid): r snapshots
   that each carry [t, ...] values become [t, r, ...]. numpy did that as a join of the r pieces,
   then a transposing copy (and for histogram counts a pass for their largest value, another for
   each tensor's, and a narrowing copy); these read each piece once, or twice for counts, and
   write the result in place. Run on the index writer's thread, without the GIL. */

typedef struct {
    Py_buffer *views;
    Py_ssize_t r;
} pieces;

static void pieces_release(pieces *p) {
    for (Py_ssize_t i = 0; i < p->r; i++)
        PyBuffer_Release(&p->views[i]);
    PyMem_Free(p->views);
}

/* every item of seq as a C-contiguous buffer of exactly `nbytes` bytes */
static int pieces_get(PyObject *seq, Py_ssize_t nbytes, pieces *p) {
    PyObject *fast = PySequence_Fast(seq, "pieces must be a sequence");
    if (fast == NULL)
        return -1;
    Py_ssize_t r = PySequence_Fast_GET_SIZE(fast);
    p->views = PyMem_Calloc((size_t)(r ? r : 1), sizeof(Py_buffer));
    p->r = 0;
    if (p->views == NULL) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < r; i++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(fast, i), &p->views[i], PyBUF_C_CONTIGUOUS) < 0)
            goto fail;
        p->r = i + 1;
        if (p->views[i].len != nbytes) {
            PyErr_SetString(PyExc_ValueError, "pieces of different sizes");
            goto fail;
        }
    }
    Py_DECREF(fast);
    return 0;
fail:
    Py_DECREF(fast);
    pieces_release(p);
    return -1;
}

/* perm: None (identity) or a buffer of t int64 source positions, each in [0, t) */
static int perm_get(PyObject *obj, Py_ssize_t t, Py_buffer *view, const int64_t **perm) {
    *perm = NULL;
    if (obj == Py_None)
        return 0;
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    if (view->len != t * (Py_ssize_t)sizeof(int64_t)) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_ValueError, "perm must hold t int64");
        return -1;
    }
    *perm = (const int64_t *)view->buf;
    for (Py_ssize_t j = 0; j < t; j++) {
        if ((*perm)[j] < 0 || (*perm)[j] >= t) {
            PyBuffer_Release(view);
            PyErr_SetString(PyExc_ValueError, "perm out of range");
            return -1;
        }
    }
    return 0;
}

/* gather_blocks(pieces, t, block, perm) -> bytearray: pieces are r buffers of t blocks of `block`
   bytes; out[j, i] = pieces[i][perm[j]] (a [t, r, block] array). */
static PyObject *py_gather_blocks(PyObject *self, PyObject *args) {
    PyObject *seq, *perm_obj;
    Py_ssize_t t, block;
    if (!PyArg_ParseTuple(args, "OnnO:gather_blocks", &seq, &t, &block, &perm_obj))
        return NULL;
    if (t < 0 || block < 0 || (block && t > PY_SSIZE_T_MAX / block)) {
        PyErr_SetString(PyExc_ValueError, "bad sizes");
        return NULL;
    }
    pieces p;
    if (pieces_get(seq, t * block, &p) < 0)
        return NULL;
    Py_buffer pv;
    const int64_t *perm;
    if (perm_get(perm_obj, t, &pv, &perm) < 0) {
        pieces_release(&p);
        return NULL;
    }
    Py_ssize_t r = p.r;
    PyObject *out = (t * block != 0 && r > PY_SSIZE_T_MAX / (t * block)) ? PyErr_NoMemory()
                    : PyByteArray_FromStringAndSize(NULL, t * block * r);
    if (out != NULL) {
        char *o = PyByteArray_AS_STRING(out);
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t j = 0; j < t; j++) {
            Py_ssize_t src = (perm ? (Py_ssize_t)perm[j] : j) * block;
            for (Py_ssize_t i = 0; i < r; i++, o += block)
                memcpy(o, (const char *)p.views[i].buf + src, (size_t)block);
        }
        Py_END_ALLOW_THREADS
    }
    if (perm)
        PyBuffer_Release(&pv);
    pieces_release(&p);
    return out;
}

/* gather_columns(pieces, t, s, perm) -> bytearray: pieces are r buffers of [t, s] 8-byte values;
   out[c, j, i] = pieces[i][perm[j], c] (an [s, t, r] array: one column per statistic). */
static PyObject *py_gather_columns(PyObject *self, PyObject *args) {
    PyObject *seq, *perm_obj;
    Py_ssize_t t, s;
    if (!PyArg_ParseTuple(args, "OnnO:gather_columns", &seq, &t, &s, &perm_obj))
        return NULL;
    if (t < 0 || s < 0 || (s && t > PY_SSIZE_T_MAX / 8 / s)) {
        PyErr_SetString(PyExc_ValueError, "bad sizes");
        return NULL;
    }
    pieces p;
    if (pieces_get(seq, t * s * 8, &p) < 0)
        return NULL;
    Py_buffer pv;
    const int64_t *perm;
    if (perm_get(perm_obj, t, &pv, &perm) < 0) {
        pieces_release(&p);
        return NULL;
    }
    Py_ssize_t r = p.r;
    PyObject *out = (t * s != 0 && r > PY_SSIZE_T_MAX / 8 / (t * s)) ? PyErr_NoMemory()
                    : PyByteArray_FromStringAndSize(NULL, t * s * 8 * r);
    if (out != NULL) {
        uint64_t *o = (uint64_t *)PyByteArray_AS_STRING(out);
        Py_BEGIN_ALLOW_THREADS
        /* tensor by tensor: the s output columns of a tensor are s sequential streams */
        for (Py_ssize_t j = 0; j < t; j++) {
            Py_ssize_t at = (perm ? (Py_ssize_t)perm[j] : j) * s * 8;
            for (Py_ssize_t i = 0; i < r; i++) {
                const char *row = (const char *)p.views[i].buf + at;
                for (Py_ssize_t c = 0; c < s; c++) {
                    uint64_t v;
                    memcpy(&v, row + c * 8, 8);
                    o[(c * t + j) * r + i] = v;
                }
            }
        }
        Py_END_ALLOW_THREADS
    }
    if (perm)
        PyBuffer_Release(&pv);
    pieces_release(&p);
    return out;
}

/* gather_counts(pieces, t, bins, perm) -> (bytearray, itemsize, maxima): pieces are r buffers of
   [t, bins] uint32 counts; out[j, i] = pieces[i][perm[j]] as uint8, uint16 or uint32, the
   narrowest that holds every count (columns.count_dtype); maxima: each output tensor's largest. */
static PyObject *py_gather_counts(PyObject *self, PyObject *args) {
    PyObject *seq, *perm_obj;
    Py_ssize_t t, bins;
    if (!PyArg_ParseTuple(args, "OnnO:gather_counts", &seq, &t, &bins, &perm_obj))
        return NULL;
    if (t < 0 || bins < 0 || (bins && t > PY_SSIZE_T_MAX / 4 / bins)) {
        PyErr_SetString(PyExc_ValueError, "bad sizes");
        return NULL;
    }
    pieces p;
    if (pieces_get(seq, t * bins * 4, &p) < 0)
        return NULL;
    Py_buffer pv;
    const int64_t *perm;
    if (perm_get(perm_obj, t, &pv, &perm) < 0) {
        pieces_release(&p);
        return NULL;
    }
    Py_ssize_t r = p.r, n = t * bins;
    PyObject *out = NULL, *maxima = NULL, *result = NULL;
    uint32_t *tmax = PyMem_Calloc((size_t)(t ? t : 1), sizeof(uint32_t));
    if (tmax == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    uint32_t top = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < r; i++) { /* pass 1: each source tensor's largest count */
        const uint32_t *src = (const uint32_t *)p.views[i].buf;
        for (Py_ssize_t j = 0; j < t; j++) {
            uint32_t m = tmax[j];
            const uint32_t *row = src + j * bins;
            for (Py_ssize_t b = 0; b < bins; b++)
                m = row[b] > m ? row[b] : m;
            tmax[j] = m;
        }
    }
    for (Py_ssize_t j = 0; j < t; j++)
        top = tmax[j] > top ? tmax[j] : top;
    Py_END_ALLOW_THREADS
    int size = top < 256u ? 1 : top < 65536u ? 2 : 4;
    if (n && r > PY_SSIZE_T_MAX / size / n) {
        PyErr_NoMemory();
        goto done;
    }
    out = PyByteArray_FromStringAndSize(NULL, n * r * size);
    maxima = PyList_New(t);
    if (out == NULL || maxima == NULL)
        goto done;
    char *o = PyByteArray_AS_STRING(out);
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t j = 0; j < t; j++) { /* pass 2: tensor by tensor, narrowed */
        Py_ssize_t at = (perm ? (Py_ssize_t)perm[j] : j) * bins;
        for (Py_ssize_t i = 0; i < r; i++) {
            const uint32_t *row = (const uint32_t *)p.views[i].buf + at;
            if (size == 1) {
                uint8_t *d = (uint8_t *)o;
                for (Py_ssize_t b = 0; b < bins; b++)
                    d[b] = (uint8_t)row[b];
            } else if (size == 2) {
                uint16_t *d = (uint16_t *)o;
                for (Py_ssize_t b = 0; b < bins; b++)
                    d[b] = (uint16_t)row[b];
            } else {
                memcpy(o, row, (size_t)bins * 4);
            }
            o += bins * size;
        }
    }
    Py_END_ALLOW_THREADS
    for (Py_ssize_t j = 0; j < t; j++) {
        PyObject *v = PyLong_FromUnsignedLong(tmax[perm ? (Py_ssize_t)perm[j] : j]);
        if (v == NULL)
            goto done;
        PyList_SET_ITEM(maxima, j, v);
    }
    result = Py_BuildValue("(OiO)", out, size, maxima);
done:
    Py_XDECREF(out);
    Py_XDECREF(maxima);
    PyMem_Free(tmax);
    if (perm)
        PyBuffer_Release(&pv);
    pieces_release(&p);
    return result;
}

/* buffer(n) -> bytearray of n bytes, not zeroed (bytearray(n) writes n zeros first: a pass over
   every chunk a reader then reads into) */
static PyObject *py_buffer(PyObject *self, PyObject *arg) {
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "negative size");
        return NULL;
    }
    return PyByteArray_FromStringAndSize(NULL, n);
}

static PyMethodDef methods[] = {
    {"snapshot", py_snapshot, METH_VARARGS,
     "snapshot(body, light=False): the common snapshot payload decoded, or None (light: histograms and a "
     "sample of the usual dtypes as their sizes)."},
    {"scalars", py_scalars, METH_O, "scalars(body): (step, epoch, time, values) of a usual scalars payload, or None."},
    {"configure", py_configure, METH_VARARGS,
     "configure(numpy.frombuffer, {dtype string: numpy dtype}): snapshot() gives numpy arrays from then on."},
    {"gather_blocks", py_gather_blocks, METH_VARARGS, "gather_blocks(pieces, t, block, perm): [t, r, block]."},
    {"gather_columns", py_gather_columns, METH_VARARGS, "gather_columns(pieces, t, s, perm): [s, t, r] of 8-byte values."},
    {"gather_counts", py_gather_counts, METH_VARARGS,
     "gather_counts(pieces, t, bins, perm): ([t, r, bins] narrowed, itemsize, each tensor's largest count)."},
    {"buffer", py_buffer, METH_O, "buffer(n): a bytearray of n bytes, not zeroed."},
    {"frame", py_frame, METH_VARARGS, "frame(buf, pos, prepared): (end, type, payload | None) of the verified "
                                      "frame at buf[pos:], or None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "weighttui._frames", "The common snapshot payload of a run log, decoded in C.", -1,
    methods,
};

PyMODINIT_FUNC PyInit__frames(void) {
    crc_init();
    for (size_t j = 0; j < sizeof(DTYPES) / sizeof(DTYPES[0]); j++) {
        dtype_strs[j] = PyUnicode_InternFromString(DTYPES[j].name);
        if (dtype_strs[j] == NULL)
            return NULL;
    }
    return PyModule_Create(&module);
}
