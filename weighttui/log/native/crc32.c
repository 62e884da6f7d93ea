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

#include "crc32_core.h"

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
    crc_init();
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObject(m, "accelerated", PyBool_FromLong(fold_ok)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
