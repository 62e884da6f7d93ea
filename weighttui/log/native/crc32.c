/*
 * weighttui._crc32: the CRC-32 of docs/FORMAT.md (zlib's: reflected polynomial
 * 0xEDB88320, the same values as zlib.crc32), computed with carry-less
 * multiplication (PCLMULQDQ) where the CPU has it.
 *
 * Why: a reader verifies every frame's payload CRC, and the index keeps a CRC
 * per 64 KiB of what it writes; zlib's table CRC runs at about 3 GB/s here,
 * which was a third of the reader's time on a first open (docs/store.md).
 *
 *   crc32(data, value=0) -> int            same as zlib.crc32(data, value)
 *   crc32_blocks(data, block) -> list      zlib.crc32 of each `block` bytes (the last may be short)
 *   accelerated: bool                      whether the folding path is used on this CPU
 *
 * The folding follows "Fast CRC Computation for Generic Polynomials Using
 * PCLMULQDQ Instruction" (Intel, 2009) with the bit-reflected constants for this
 * polynomial, as in zlib-ng, Chromium's zlib and Linux (crc32-pclmul). Without
 * PCLMULQDQ (or on another architecture) it is a byte table, and Python callers
 * use zlib.crc32 instead (`accelerated` False). The GIL is released for large buffers.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stddef.h>
#include <stdint.h>

static uint32_t table[256];

static void make_table(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        table[n] = c;
    }
}

/* crc: the register (already inverted) */
static uint32_t crc_bytes(uint32_t crc, const unsigned char *p, size_t n) {
    while (n--)
        crc = table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return crc;
}

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_FOLD 1
#include <immintrin.h>

/* len >= 64 and a multiple of 16; crc: the register (inverted). */
__attribute__((target("pclmul,sse4.1")))
static uint32_t crc_fold(uint32_t crc, const unsigned char *buf, size_t len) {
    const __m128i k1k2 = _mm_set_epi64x(0x01c6e41596LL, 0x0154442bd4LL);
    const __m128i k3k4 = _mm_set_epi64x(0x00ccaa009eLL, 0x01751997d0LL);
    const __m128i k5k0 = _mm_set_epi64x(0, 0x0163cd6124LL);
    const __m128i poly = _mm_set_epi64x(0x01f7011641LL, 0x01db710641LL);
    __m128i x0, x1, x2, x3, x4, x5, x6, x7, x8, y5, y6, y7, y8;

    x1 = _mm_loadu_si128((const __m128i *)(buf + 0x00));
    x2 = _mm_loadu_si128((const __m128i *)(buf + 0x10));
    x3 = _mm_loadu_si128((const __m128i *)(buf + 0x20));
    x4 = _mm_loadu_si128((const __m128i *)(buf + 0x30));
    x1 = _mm_xor_si128(x1, _mm_cvtsi32_si128((int)crc));
    x0 = k1k2;
    buf += 64;
    len -= 64;
    while (len >= 64) { /* four 128-bit lanes folded 512 bits forward */
        x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
        x6 = _mm_clmulepi64_si128(x2, x0, 0x00);
        x7 = _mm_clmulepi64_si128(x3, x0, 0x00);
        x8 = _mm_clmulepi64_si128(x4, x0, 0x00);
        x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
        x2 = _mm_clmulepi64_si128(x2, x0, 0x11);
        x3 = _mm_clmulepi64_si128(x3, x0, 0x11);
        x4 = _mm_clmulepi64_si128(x4, x0, 0x11);
        y5 = _mm_loadu_si128((const __m128i *)(buf + 0x00));
        y6 = _mm_loadu_si128((const __m128i *)(buf + 0x10));
        y7 = _mm_loadu_si128((const __m128i *)(buf + 0x20));
        y8 = _mm_loadu_si128((const __m128i *)(buf + 0x30));
        x1 = _mm_xor_si128(_mm_xor_si128(x1, x5), y5);
        x2 = _mm_xor_si128(_mm_xor_si128(x2, x6), y6);
        x3 = _mm_xor_si128(_mm_xor_si128(x3, x7), y7);
        x4 = _mm_xor_si128(_mm_xor_si128(x4, x8), y8);
        buf += 64;
        len -= 64;
    }
    x0 = k3k4; /* the four lanes into one */
    x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
    x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
    x1 = _mm_xor_si128(_mm_xor_si128(x1, x2), x5);
    x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
    x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
    x1 = _mm_xor_si128(_mm_xor_si128(x1, x3), x5);
    x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
    x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
    x1 = _mm_xor_si128(_mm_xor_si128(x1, x4), x5);
    while (len >= 16) {
        x2 = _mm_loadu_si128((const __m128i *)buf);
        x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
        x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
        x1 = _mm_xor_si128(_mm_xor_si128(x1, x2), x5);
        buf += 16;
        len -= 16;
    }
    /* 128 bits to 64 */
    x2 = _mm_clmulepi64_si128(x1, x0, 0x10);
    x3 = _mm_setr_epi32(~0, 0, ~0, 0);
    x1 = _mm_srli_si128(x1, 8);
    x1 = _mm_xor_si128(x1, x2);
    x0 = k5k0;
    x2 = _mm_srli_si128(x1, 4);
    x1 = _mm_and_si128(x1, x3);
    x1 = _mm_clmulepi64_si128(x1, x0, 0x00);
    x1 = _mm_xor_si128(x1, x2);
    /* Barrett reduction to 32 bits */
    x0 = poly;
    x2 = _mm_and_si128(x1, x3);
    x2 = _mm_clmulepi64_si128(x2, x0, 0x10);
    x2 = _mm_and_si128(x2, x3);
    x2 = _mm_clmulepi64_si128(x2, x0, 0x00);
    x1 = _mm_xor_si128(x1, x2);
    return (uint32_t)_mm_extract_epi32(x1, 1);
}
#endif

static int fold_ok = 0;

static uint32_t crc_update(uint32_t value, const unsigned char *p, size_t n) {
    uint32_t crc = ~value;
#ifdef HAVE_FOLD
    if (fold_ok && n >= 64) {
        size_t bulk = n & ~(size_t)15;
        crc = crc_fold(crc, p, bulk);
        p += bulk;
        n -= bulk;
    }
#endif
    return ~crc_bytes(crc, p, n);
}

/* As zlib.crc32 (5 KiB there): a reader's frames (a snapshot is ~86 KB) release the GIL, which
 * is how the index's writer thread (and the read-ahead) get it back while the reader decodes. */
#define GIL_FREE_BYTES (16 * 1024)

static PyObject *py_crc32(PyObject *self, PyObject *args) {
    Py_buffer view;
    unsigned int value = 0;
    if (!PyArg_ParseTuple(args, "y*|I:crc32", &view, &value))
        return NULL;
    uint32_t out;
    if (view.len >= GIL_FREE_BYTES) {
        Py_BEGIN_ALLOW_THREADS
        out = crc_update(value, view.buf, (size_t)view.len);
        Py_END_ALLOW_THREADS
    } else {
        out = crc_update(value, view.buf, (size_t)view.len);
    }
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(out);
}

static PyObject *py_crc32_blocks(PyObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t block;
    if (!PyArg_ParseTuple(args, "y*n:crc32_blocks", &view, &block))
        return NULL;
    if (block <= 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "block must be positive");
        return NULL;
    }
    Py_ssize_t count = (view.len + block - 1) / block;
    uint32_t *crcs = PyMem_RawMalloc((size_t)(count ? count : 1) * sizeof(uint32_t));
    if (crcs == NULL) {
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    const unsigned char *p = view.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t at = i * block;
        Py_ssize_t n = view.len - at < block ? view.len - at : block;
        crcs[i] = crc_update(0, p + at, (size_t)n);
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    PyObject *out = PyList_New(count);
    if (out == NULL) {
        PyMem_RawFree(crcs);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *v = PyLong_FromUnsignedLong(crcs[i]);
        if (v == NULL) {
            Py_DECREF(out);
            PyMem_RawFree(crcs);
            return NULL;
        }
        PyList_SET_ITEM(out, i, v);
    }
    PyMem_RawFree(crcs);
    return out;
}

static PyMethodDef methods[] = {
    {"crc32", py_crc32, METH_VARARGS, "crc32(data, value=0): zlib.crc32's value, folded with PCLMULQDQ."},
    {"crc32_blocks", py_crc32_blocks, METH_VARARGS,
     "crc32_blocks(data, block): [zlib.crc32(data[i:i + block]) for i in range(0, len(data), block)]."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "weighttui._crc32", "CRC-32 (zlib's) with carry-less multiplication.", -1, methods,
};

PyMODINIT_FUNC PyInit__crc32(void) {
    make_table();
#ifdef HAVE_FOLD
    __builtin_cpu_init();
    fold_ok = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
#endif
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObject(m, "accelerated", PyBool_FromLong(fold_ok)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
