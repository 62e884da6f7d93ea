"""Instruments of WeightCallback's TF-ops path (stats="device": TF ops where the variables live, forced on
the CPU) against float64 references from the complete values the same log stores, and against the
numpy path on the same fit (docs/instruments.md)."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")
if keras.backend.backend() != "tensorflow":  # pragma: no cover - another backend
    pytest.skip("the TF-ops path needs the TensorFlow backend", allow_module_level=True)

from instrument_check import check_log  # noqa: E402

import weighttui  # noqa: E402
from weighttui.data.units import unit_norms  # noqa: E402
from weighttui.keras import WeightCallback  # noqa: E402
from weighttui.record import instruments as inst  # noqa: E402


def _fit(tmp_path, epochs=4, nan=False, optimizer=None, **kw):
    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((64, 12)).astype("float32"), rng.standard_normal((64, 3)).astype("float32")
    if nan:
        x[40, 0] = np.nan  # the third batch's gradients go non-finite
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(80, activation="tanh", name="hidden"),
                              keras.layers.Dense(64, activation="relu", name="mid"),  # 80 x 64: sampled cosines
                              keras.layers.Dense(3, name="head")])
    opt = optimizer or keras.optimizers.Adam(3e-3)
    model.compile(optimizer=opt, loss="mse")
    kw = dict(every_batches=1, full_every=1, initial=False, **{"instruments": True, **kw})  # values at every snapshot
    device = WeightCallback(tmp_path / "device.wtui", stats="device", **kw)
    reference = WeightCallback(tmp_path / "numpy.wtui", stats="numpy", **kw)
    model.fit(x, y, batch_size=16, epochs=epochs, verbose=0, shuffle=False, callbacks=[device, reference])
    return model, opt


def test_tf_path_instruments_against_float64_references_and_the_numpy_path(tmp_path):
    model, opt = _fit(tmp_path, instruments={"cos_sample": 1024})
    counts = check_log(tmp_path / "device.wtui", {}, warm_after=10, cos_sample=1024,
                       units_last=inst.units_last_by_name)
    assert counts["sigma_max"] >= 3 * 6 and counts["cos_prev"] >= 6 * 12 and counts["sigma_ratio"] >= 3 * 6
    dev, ref = weighttui.open(tmp_path / "device.wtui"), weighttui.open(tmp_path / "numpy.wtui")
    assert dev.steps.tolist() == ref.steps.tolist() and dev.n >= 16
    for kind in ("weights", "delta", "grad", "optim"):
        assert dev.columns(kind) == ref.columns(kind), kind
    # the gradient's instruments and the optimizer state: the same as the numpy path's (itself held to
    # the float64 references in test_keras_instruments.py / tests/unit/test_instruments.py)
    for name in dev.tensor_names:
        for stat, kind, tol in (("cos_grad", "delta", 1e-6), ("m_norm", "optim", 1e-6), ("v_norm", "optim", 1e-6),
                                ("eff_lr", "optim", 1e-6), ("nonfinite", "optim", 0), ("dead_units", "grad", 0),
                                ("sigma_max", "weights", 1e-4), ("alpha", "weights", 1e-3)):
            a, b = dev.series(name, stat, kind=kind)[1], ref.series(name, stat, kind=kind)[1]
            # the second callback of a fit misses the gradients of an epoch's last batch: compare where it has them
            both = ~np.isnan(b)
            assert np.sum(~np.isnan(a)) >= np.sum(both)
            np.testing.assert_allclose(a[both], b[both], rtol=tol, atol=1e-9, err_msg=f"{name} {stat}")
        if len(dev.tensor(name).shape) == 2:
            ga, gb = unit_norms(tmp_path / "device.wtui", name, "grad")[1], unit_norms(tmp_path / "numpy.wtui",
                                                                                        name, "grad")[1]
            assert np.isfinite(ga[1:]).all()
            both = ~np.isnan(gb[:, 0])
            np.testing.assert_allclose(ga[both], gb[both], rtol=1 / 128)
    assert all(np.isfinite(dev.series(name, "m_norm", kind="optim")[1][-1]) for name in dev.tensor_names)


def test_tf_path_nan_origin(tmp_path):
    _fit(tmp_path, epochs=1, nan=True, instruments="default")
    ev = {}
    for which in ("device", "numpy"):
        run = weighttui.open(tmp_path / f"{which}.wtui")
        origins = [e for e in run.events if e.kind == "nan_origin"]
        assert len(origins) == 1
        ev[which] = (origins[0].step, run.tensors[origins[0].tensor].name, origins[0].message)
    assert ev["device"] == ev["numpy"] and ev["device"][0] == 3 and "gradient of" in ev["device"][2]


def test_tf_path_sgd_momentum_state(tmp_path):
    _model, opt = _fit(tmp_path, epochs=1, optimizer=keras.optimizers.SGD(1e-2, momentum=0.9))
    dev, ref = weighttui.open(tmp_path / "device.wtui"), weighttui.open(tmp_path / "numpy.wtui")
    for var in opt._trainable_variables:
        name = next(n for n in dev.tensor_names if n.endswith("/".join(var.path.split("/")[-2:])))
        m, v, eff = (dev.series(name, s, kind="optim")[1] for s in ("m_norm", "v_norm", "eff_lr"))
        m_ref = np.linalg.norm(np.asarray(opt.momentums[opt._get_variable_index(var)], dtype=np.float64))
        assert m[-1] == pytest.approx(m_ref, rel=1e-6) and np.isnan(v).all() and eff[-1] == pytest.approx(1e-2)
        np.testing.assert_allclose(m, ref.series(name, "m_norm", kind="optim")[1], rtol=1e-6, equal_nan=True)
