"""HDF5 read through the memory map (docs/import.md "Memory and speed"): files written by h5py and Keras
import bit for bit, contiguous datasets come from the map (h5py reads none of them), chunked, compressed and
big-endian ones through h5py."""

from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest

import weighttui
from weighttui.integrations.importers import hdf5_file
from weighttui.integrations.importers.base import Unit
from weighttui.integrations.importers.driver import import_source
from weighttui.integrations.importers.readers import open_reader

h5py = pytest.importorskip("h5py")


@pytest.fixture
def h5py_reads(monkeypatch):
    """The dataset paths h5py reads values of (Dataset.__getitem__ / read_direct)."""
    seen: list[str] = []
    real_get, real_direct = h5py.Dataset.__getitem__, h5py.Dataset.read_direct

    def get(self, *a, **k):
        seen.append(self.name)
        return real_get(self, *a, **k)

    def direct(self, *a, **k):
        seen.append(self.name)
        return real_direct(self, *a, **k)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", get)
    monkeypatch.setattr(h5py.Dataset, "read_direct", direct)
    return seen


def _keras_files(tmp_path):
    """Two epochs of a small Keras model saved with save_weights and model.save; the weights after each."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((24,)), keras.layers.Dense(300), keras.layers.Dense(5)])
    model.compile("sgd", "mse")
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((32, 24)), rng.standard_normal((32, 5))
    dumped = []
    for epoch in range(2):
        model.fit(x, y, epochs=1, verbose=0)
        model.save_weights(str(tmp_path / f"w_epoch_{epoch}.weights.h5"))
        dumped.append([np.array(w) for w in model.get_weights()])
    model.fit(x, y, epochs=1, verbose=0)
    model.save(str(tmp_path / "model_epoch_2.keras"))
    dumped.append([np.array(w) for w in model.get_weights()])
    return dumped


NAMES = ("dense/vars/0", "dense/vars/1", "dense_1/vars/0", "dense_1/vars/1")


@pytest.mark.parametrize("settled", [True, False])
def test_keras_files_import_bit_for_bit_from_the_map(tmp_path, h5py_reads, settled):
    dumped = _keras_files(tmp_path)
    with zipfile.ZipFile(tmp_path / "model_epoch_2.keras") as zf:  # Keras stores its .h5 uncompressed
        assert hdf5_file._keras_member(zf).compress_type == zipfile.ZIP_STORED
    if settled:  # unchanged for long: mapped in place; else a private copy is mapped
        for f in os.listdir(tmp_path):
            os.utime(tmp_path / f, (1e9, 1e9))
    for f in ("w_epoch_0.weights.h5", "model_epoch_2.keras"):
        reader = open_reader(Unit(str(tmp_path / f), "hdf5", f), mapped=True)
        try:
            assert reader.in_place is settled
            assert set(reader.mapped) == set(NAMES)
        finally:
            reader.close()
    out = str(tmp_path / "run.wtui")
    del h5py_reads[:]
    import_source(str(tmp_path), out)
    assert h5py_reads == []  # every weight came from the map
    run = weighttui.open(out)
    assert list(run.steps) == [0, 1, 2]
    for epoch, ws in enumerate(dumped):
        got = run.weights(epoch=epoch)
        for k, w in zip(NAMES, ws, strict=True):
            assert got[k].dtype == w.dtype and got[k].tobytes() == w.tobytes(), (epoch, k)
    _s, norm = run.series("dense/vars/0", "norm", kind="delta")
    want = np.linalg.norm(dumped[2][0].astype(np.float64) - dumped[1][0].astype(np.float64))
    assert norm[2] == pytest.approx(want, rel=1e-9)


def test_layouts_h5py_writes(tmp_path, h5py_reads):
    """Contiguous (also behind a user block, and inside groups) from the map; chunked, gzip, big-endian, bool
    and a never-written (fill value) dataset through h5py; values equal either way."""
    rng = np.random.default_rng(5)
    data = {"g/contig": rng.standard_normal((64, 33)).astype(np.float32),
            "g/f16": rng.standard_normal(1001).astype(np.float16),
            "g/i64": np.arange(77, dtype=np.int64),
            "chunked": rng.standard_normal((50, 40)),
            "gzip": rng.standard_normal((30, 30)).astype(np.float32),
            "big_endian": rng.standard_normal(99).astype(">f4"),
            "flags": rng.standard_normal(20) > 0}
    path = tmp_path / "a.h5"
    with h5py.File(path, "w", userblock_size=512) as f:
        for k, v in data.items():
            kw = {"chunks": (10, 10)} if k == "chunked" else {"compression": "gzip"} if k == "gzip" else {}
            f.create_dataset(k, data=v, **kw)
        f.create_dataset("empty", shape=(5, 5), dtype="f4")  # never written: no storage, the fill value
    os.utime(path, (1e9, 1e9))
    reader = open_reader(Unit(str(path), "hdf5", "a.h5"), mapped=True)
    try:
        assert reader.in_place
        assert set(reader.mapped) == {"g/contig", "g/f16", "g/i64"}
        del h5py_reads[:]
        for k in ("g/contig", "g/f16", "g/i64"):
            arr, bf16 = reader.raw(k)
            assert not bf16 and arr.tobytes() == data[k].tobytes() and arr.dtype == data[k].dtype
            reader.release(k)
            assert arr.tobytes() == data[k].tobytes()  # given-back pages are read again from the file
        assert h5py_reads == []
        for k in ("chunked", "gzip", "big_endian", "flags"):
            arr, _bf16 = reader.raw(k)
            assert np.array_equal(arr, data[k]) and arr.dtype.isnative, k
        assert np.array_equal(reader.raw("empty")[0], np.zeros((5, 5), np.float32))
        assert sorted(h5py_reads) == ["/big_endian", "/chunked", "/empty", "/flags", "/gzip"]
    finally:
        reader.close()


def test_compressed_keras_archive_is_read_through_h5py(tmp_path, h5py_reads):
    """A .keras archive whose .h5 member was deflated (re-zipped by hand) cannot be mapped: h5py reads it."""
    dumped = _keras_files(tmp_path)
    src, dst = tmp_path / "model_epoch_2.keras", tmp_path / "deflated" / "model_epoch_2.keras"
    dst.parent.mkdir()
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename))
    os.utime(dst, (1e9, 1e9))
    reader = open_reader(Unit(str(dst), "hdf5", dst.name), mapped=True)
    try:
        assert reader.mapped == {}
        for k, w in zip(NAMES, dumped[2], strict=True):
            assert reader.raw(k)[0].tobytes() == w.tobytes()
        assert len(h5py_reads) == 4
    finally:
        reader.close()


def test_legacy_keras_full_model_h5_from_the_map(tmp_path, h5py_reads):
    """Keras' legacy full-model `.h5` (model_weights/...) is mapped too."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(40), keras.layers.Dense(3)])
    path = tmp_path / "legacy_epoch_1.h5"
    model.save(str(path))
    os.utime(path, (1e9, 1e9))
    reader = open_reader(Unit(str(path), "hdf5", path.name), mapped=True)
    try:
        assert reader.in_place and set(reader.mapped) == set(reader.specs()) and len(reader.mapped) == 4
        got = {(name.split("/", 1)[0], name.rsplit("/", 1)[-1]): reader.raw(name)[0] for name in reader.specs()}
        for layer in model.layers:  # named dense_N after the number of Dense layers made so far
            kernel, bias = layer.get_weights()
            assert got[(layer.name, "kernel")].tobytes() == np.asarray(kernel).tobytes()
            assert got[(layer.name, "bias")].tobytes() == np.asarray(bias).tobytes()
        assert h5py_reads == []
    finally:
        reader.close()
