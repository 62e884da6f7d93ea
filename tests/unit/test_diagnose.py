"""Every alert rule on synthetic runs written by the real Recorder, and no alert on healthy ones."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import weighttui
from weighttui import Recorder
from weighttui.analysis.diagnose import RULES, Alert, DiagnoseConfig, diagnose, per_step_ratio, step_interval
from weighttui.cli.demo import train
from weighttui.data.run import RunData
from weighttui.log.tail import LogTail


class Sim:
    """Weights that take random steps of a set size relative to their norm (the update ratio)."""

    def __init__(self, shapes: dict, *, ratio: float = 1e-3, seed: int = 0, steady: bool = False):
        self.rng = np.random.default_rng(seed)
        # steady: every step goes the same way (momentum-like), else a random walk
        self.direction = {n: self.rng.normal(size=s) for n, s in shapes.items()} if steady else None
        self.w = {n: self.rng.normal(0, 0.5, s) for n, s in shapes.items()}
        self.ratio = {n: ratio for n in shapes}
        self.grad_scale = {n: 1e-2 for n in shapes}

    def step(self) -> None:
        for n, w in self.w.items():
            d = self.direction[n] if self.direction else self.rng.normal(size=w.shape)
            norm = np.linalg.norm(w)
            w += d * (self.ratio[n] * norm / np.linalg.norm(d))

    def grads(self) -> dict:
        return {n: self.rng.normal(0, self.grad_scale[n], w.shape) for n, w in self.w.items()}


SHAPES = {"a.weight": (16, 8), "a.bias": (16,), "b.weight": (8, 16), "c.weight": (4, 8)}


def record(path, steps: int, sim: Sim, *, hook=None, every: int = 1, frozen=(), **kw) -> RunData:
    """Train `sim` for `steps` steps, recording every `every`; hook(step, params, grads) may edit copies."""
    # a queue longer than the run: the writer thread never drops a snapshot on a busy machine
    with Recorder(path, every=every, bins=16, sample=4, queue_size=4096, **kw) as rec:
        for name in frozen:
            rec.declare(name, sim.w[name].shape, "float64", trainable=False)
        for s in range(steps):
            params = {n: w.copy() for n, w in sim.w.items()}
            grads = sim.grads()
            if hook:
                hook(s, params, grads)
            rec.snapshot(s, params, grads=grads)
            sim.step()
    return weighttui.open(path)


def rules_of(alerts, tensor=None):
    return sorted((a.rule, a.tensor) for a in alerts if tensor is None or a.tensor == tensor)


def test_healthy_run_has_no_alert_at_any_row(tmp_path):
    run = record(tmp_path / "ok.wtui", 80, Sim(SHAPES))
    for row in range(run.n):
        assert diagnose(run, upto_row=row) == [], row


def test_numpy_demo_has_no_alert_once_finished(tmp_path):
    path = tmp_path / "demo.wtui"
    train(path, steps=300, delay=0)  # the demo `python -m weighttui.cli.demo PATH --steps 300` runs
    run = weighttui.open(path)
    assert run.snapshot_count + run.end.dropped == 60  # a busy machine may drop a few
    assert run.has_kind("delta") and run.has_kind("grad")
    assert diagnose(run) == []
    # on the way, nothing worse than a warning (its lively output layer warms up above 1e-2 per step)
    for row in range(run.n):
        assert all(a.severity == "warning" for a in diagnose(run, upto_row=row))


def test_nonfinite_weights_named_with_first_step(tmp_path):
    def hook(s, params, grads):
        if s >= 30:
            params["b.weight"][0, :3] = np.nan
            params["b.weight"][1, 0] = np.inf

    run = record(tmp_path / "nan.wtui", 50, Sim(SHAPES), hook=hook)
    alerts = [a for a in diagnose(run) if a.rule == "nonfinite"]
    assert len(alerts) == 1
    a = alerts[0]
    assert (a.tensor, a.step, a.severity) == ("b.weight", 30, "error")
    assert "3 NaN, 1 Inf" in a.message and a.advice
    assert diagnose(run, upto_row=29) == []
    assert [x.step for x in diagnose(run, upto_row=30) if x.rule == "nonfinite"] == [30]


def test_nonfinite_gradient_is_a_warning(tmp_path):
    def hook(s, params, grads):
        if s in (20, 21):
            grads["a.weight"][0, 0] = np.inf

    run = record(tmp_path / "inf.wtui", 40, Sim(SHAPES), hook=hook)
    alerts = [a for a in diagnose(run) if a.rule == "nonfinite_grad"]
    assert [(a.tensor, a.step, a.severity) for a in alerts] == [("a.weight", 20, "warning")]
    assert "finite again" in alerts[0].message


def test_stagnant_trainable_tensor_and_where_it_stopped(tmp_path):
    sim = Sim(SHAPES)
    sim.ratio["c.weight"] = 0.0  # never updated: a frozen layer someone forgot
    stop = {}

    def hook(s, params, grads):
        if s >= 39:  # b.weight stops changing at step 39
            params["b.weight"] = stop.setdefault("w", params["b.weight"].copy())

    run = record(tmp_path / "stuck.wtui", 60, sim, hook=hook)
    got = {a.tensor: a for a in diagnose(run) if a.rule == "stagnant"}
    assert set(got) == {"b.weight", "c.weight"}
    assert got["c.weight"].step == 0
    assert got["b.weight"].step == 39
    assert "20 snapshots" in got["b.weight"].message
    # the state is not yet persistent 3 snapshots after it began
    assert not [a for a in diagnose(run, upto_row=42) if a.tensor == "b.weight"]


def test_stagnant_ignores_non_trainable_and_works_without_delta(tmp_path):
    sim = Sim(SHAPES)
    sim.ratio["c.weight"] = 0.0
    sim.ratio["a.bias"] = 0.0
    run = record(tmp_path / "frozen.wtui", 30, sim, frozen=["c.weight"], delta=False)
    assert not run.has_kind("delta")
    assert rules_of(diagnose(run)) == [("stagnant", "a.bias")]


def test_ratio_too_high_only_for_matrices(tmp_path):
    sim = Sim(SHAPES)
    sim.ratio["a.weight"] = 5e-2
    sim.ratio["a.bias"] = 5e-2  # biases move fast by nature: not flagged
    run = record(tmp_path / "fast.wtui", 60, sim)
    alerts = [a for a in diagnose(run) if a.rule.startswith("ratio")]
    assert rules_of(alerts) == [("ratio_high", "a.weight")]
    assert alerts[0].step == 0 and "above 0.01" in alerts[0].message
    assert diagnose(run, DiagnoseConfig(ratio_high=0.1)) == []


def test_ratio_is_per_step_whatever_the_recording_interval(tmp_path):
    # 3e-3 per step in a steady direction, recorded every 5 steps: each delta spans ~1.5e-2
    sim = Sim(SHAPES, ratio=3e-3, steady=True)
    run = record(tmp_path / "every5.wtui", 300, sim, every=5)
    assert np.allclose(step_interval(run), 5)
    assert np.nanmedian(run.stat_matrix("delta", "ratio")) > 1e-2
    assert np.nanmedian(per_step_ratio(run)) < 1e-2
    assert diagnose(run) == []


def test_ratio_too_low_for_one_tensor_while_others_learn(tmp_path):
    sim = Sim(SHAPES)
    sim.ratio["b.weight"] = 1e-5
    run = record(tmp_path / "slow.wtui", 60, sim)
    alerts = diagnose(run)
    assert rules_of(alerts) == [("ratio_low", "b.weight")]
    assert "median tensor" in alerts[0].message


def test_no_ratio_alert_when_every_tensor_anneals_together(tmp_path):
    sim = Sim(SHAPES)

    def hook(s, params, grads):  # a learning rate decaying from 1e-3 to 1e-6 per step
        for n in sim.ratio:
            sim.ratio[n] = 1e-3 * 10 ** (-3 * min(1.0, s / 60))

    run = record(tmp_path / "anneal.wtui", 100, sim, hook=hook)
    assert np.nanmedian(per_step_ratio(run)[-20:]) < 1e-4
    assert not [a for a in diagnose(run) if a.rule.startswith("ratio")]


def test_norm_growth_from_its_step_but_not_for_zero_initialised_growth(tmp_path):
    sim = Sim(SHAPES)
    sim.w["a.bias"][:] = 0.0  # zero-initialised, grows from nothing: normal
    sim.ratio["a.bias"] = 0.0

    def hook(s, params, grads):
        params["a.bias"] += 1e-4 * s ** 2
        if s >= 50:
            params["b.weight"] *= 30.0

    run = record(tmp_path / "grow.wtui", 70, sim, hook=hook)
    alerts = [a for a in diagnose(run) if a.rule == "norm_growth"]
    assert [(a.tensor, a.step) for a in alerts] == [("b.weight", 50)]
    assert "30x" in alerts[0].message


def test_exploding_gradient_but_not_a_single_spike(tmp_path):
    def hook(s, params, grads):
        if s == 30:
            grads["a.weight"] *= 1e4  # one bad batch
        if s >= 50:
            grads["b.weight"] *= 1e4

    run = record(tmp_path / "explode.wtui", 70, Sim(SHAPES), hook=hook)
    alerts = [a for a in diagnose(run) if a.rule == "grad_explode"]
    assert [(a.tensor, a.step, a.severity) for a in alerts] == [("b.weight", 50, "error")]
    assert diagnose(run, upto_row=50) == []  # one snapshot is not yet "stayed up"


def test_vanishing_and_missing_gradients(tmp_path):
    sim = Sim(SHAPES)
    sim.grad_scale["a.weight"] = 1e-9
    sim.grad_scale["c.weight"] = 0.0  # no gradient at all: unused in the forward pass
    run = record(tmp_path / "vanish.wtui", 30, sim)
    got = {a.tensor: a for a in diagnose(run) if a.rule == "grad_vanish"}
    assert set(got) == {"a.weight", "c.weight"}
    assert "exactly zero" in got["c.weight"].message
    assert got["a.weight"].step == 0


def test_dead_units_from_zero_fraction_of_weights_and_gradients(tmp_path):
    def hook(s, params, grads):
        if s >= 40:
            params["a.weight"][:8] = 0.0  # half the units zeroed and kept so
            grads["b.weight"][:, :8] = 0.0  # half the inputs deliver no gradient

    run = record(tmp_path / "dead.wtui", 60, Sim(SHAPES), hook=hook)
    alerts = [a for a in diagnose(run) if a.rule == "dead_units"]
    assert sorted((a.tensor, a.step) for a in alerts) == [("a.weight", 40), ("b.weight", 40)]
    msgs = {a.tensor: a.message for a in alerts}
    assert "zero weights rose from 0% to 50%" in msgs["a.weight"]
    assert "zero gradients" in msgs["b.weight"]


def test_live_diagnosis_poll_by_poll_matches_the_whole_run(tmp_path):
    """diagnose remembers decided rows: following a growing log must give what a cold read gives."""
    def hook(s, params, grads):
        if s >= 25:
            params["b.weight"][0, 0] = np.nan
        if s >= 45:
            grads["a.weight"] *= 1e4
        if s >= 50:
            params["c.weight"][:2] = 0.0

    path = tmp_path / "live.wtui"
    record(path, 70, Sim(SHAPES), hook=hook)
    full = weighttui.open(path)
    live = RunData(path)
    with LogTail(path, max_bytes_per_poll=20_000) as tail:
        while True:
            poll = tail.poll()
            live.ingest(poll)
            got = diagnose(live)
            assert got == diagnose(full, upto_row=live.n - 1)
            if not poll.frames:
                break
    assert live.n == full.n == 70
    assert {a.rule for a in got} == {"nonfinite", "grad_explode", "dead_units"}
    assert got == diagnose(weighttui.open(path))  # a cold read


def test_decimated_history_keeps_per_step_ratios_and_alerts(tmp_path):
    sim = Sim(SHAPES)
    sim.ratio["c.weight"] = 0.0

    def hook(s, params, grads):
        if s >= 100:
            params["b.weight"][0, 0] = np.nan

    path = tmp_path / "long.wtui"
    record(path, 200, sim, hook=hook, every=2)
    small = weighttui.open(path, max_rows=16)
    assert small.n <= 16 and small.snapshot_count == 100
    assert np.allclose(step_interval(small), 2)  # rows lie further apart, a delta still spans 2 steps
    got = {(a.rule, a.tensor) for a in diagnose(small, DiagnoseConfig(stagnant_window=3))}
    assert got == {("nonfinite", "b.weight"), ("stagnant", "c.weight")}


def test_config_from_options():
    c = DiagnoseConfig.from_options(["ratio_high=0.05", "stagnant_window=3", "disable=ratio_low,dead_units"])
    assert (c.ratio_high, c.stagnant_window, c.disabled) == (0.05, 3, {"ratio_low", "dead_units"})
    assert DiagnoseConfig.from_options([]) == DiagnoseConfig()
    with pytest.raises(ValueError, match="ratio_high") as e:
        DiagnoseConfig.from_options(["ratio_hi=1"])
    assert "stagnant_window" in str(e.value)  # names the valid keys
    with pytest.raises(ValueError, match="integer"):
        DiagnoseConfig.from_options(["stagnant_window=2.5"])
    with pytest.raises(ValueError, match="number"):
        DiagnoseConfig.from_options(["ratio_low=low"])
    with pytest.raises(ValueError, match="unknown rule"):
        DiagnoseConfig.from_options(["disable=nonsense"])
    with pytest.raises(ValueError):
        DiagnoseConfig.from_options(["norm_window=0"])
    with pytest.raises(ValueError, match="ratio_low"):
        DiagnoseConfig.from_options(["ratio_low=0.1"])


def test_disable_a_rule(tmp_path):
    sim = Sim(SHAPES)
    sim.ratio["c.weight"] = 0.0
    run = record(tmp_path / "d.wtui", 20, sim)
    assert rules_of(diagnose(run)) == [("stagnant", "c.weight")]
    # with the stagnant rule off, the "too slow since the start" rule still speaks up
    assert rules_of(diagnose(run, DiagnoseConfig.from_options(["disable=stagnant"]))) == [("ratio_low", "c.weight")]
    assert diagnose(run, DiagnoseConfig.from_options(["disable=stagnant,ratio_low"])) == []


def test_alert_fields_and_order(tmp_path):
    sim = Sim(SHAPES)
    sim.ratio["c.weight"] = 0.0

    def hook(s, params, grads):
        if s >= 20:
            params["a.weight"][0, 0] = np.nan

    alerts = diagnose(record(tmp_path / "o.wtui", 30, sim, hook=hook))
    assert [a.severity for a in alerts] == ["error", "warning"]
    for a in alerts:
        assert isinstance(a, Alert) and a.rule in RULES
        assert isinstance(a.step, int) and a.message and a.advice
    assert {f.name for f in dataclasses.fields(Alert)} >= {"rule", "tensor", "step", "severity", "message", "advice"}


def test_empty_run(tmp_path):
    path = tmp_path / "empty.wtui"
    Recorder(path).close()
    assert diagnose(weighttui.open(path)) == []


@pytest.mark.parametrize("max_rows,small", [(None, False), (16, False), (None, True), (16, True)],
                         ids=["every-row", "thinned", "every-row-small-blocks", "thinned-small-blocks"])
def test_remembered_results_equal_a_cold_diagnosis_at_every_poll(tmp_path, max_rows, small, monkeypatch):
    """The rules read every snapshot whatever the row view (max_rows) keeps, in blocks, and remember
    what they decided (events, where a state began): following a growing log, and going back to an
    earlier row, must give what a cold diagnosis gives. small: blocks of 7 snapshots and a tail of
    5, so that the block boundaries, the backward reads and the remembered states are crossed."""
    from weighttui.analysis import diagnose as diagnose_module

    if small:
        monkeypatch.setattr(diagnose_module, "_BLOCK", 7)
        monkeypatch.setattr(diagnose_module, "_TAIL", 5)

    def hook(s, params, grads):
        if s >= 33:
            params["b.weight"][0, 0] = np.inf
        if s >= 41:
            grads["a.weight"] *= 1e4
        if s >= 47:
            params["c.weight"][:2] = 0.0
        if s >= 60:  # stagnant from here on: where the state began lies behind the tail later
            params["a.weight"] = kept.setdefault("a", params["a.weight"].copy())

    kept: dict = {}
    sim = Sim(SHAPES)
    sim.ratio["a.bias"] = 0.0
    path = tmp_path / "thin.wtui"
    record(path, 90, sim, hook=hook)
    live = RunData(path, max_rows=max_rows)
    config = DiagnoseConfig(stagnant_window=3, norm_window=4, grad_window=4, zero_window=4)
    seen, memories = set(), set()
    with LogTail(path, max_bytes_per_poll=6_000) as tail:
        while True:
            poll = tail.poll()
            live.ingest(poll)
            warm = diagnose(live, config)
            if live.n >= 8:  # enough final rows for every rule to have decided some
                assert diagnose_module._histories[live].rules  # results were remembered
                memories.add(id(diagnose_module._histories[live]))
            for row in (live.n // 2, live.n - 2):
                if row >= 0:
                    assert diagnose(live, config, upto_row=row) == _cold(diagnose_module, live, config, row)
            assert warm == _cold(diagnose_module, live, config)
            seen |= {a.rule for a in warm}
            if not poll.frames:
                break
    assert {"nonfinite", "grad_explode", "dead_units", "stagnant"} <= seen
    assert ("stagnant", "a.weight", 60) in {(a.rule, a.tensor, a.step) for a in warm}
    assert len(memories) == 1  # one memory, extended poll after poll (the rules read snapshots, not rows)
    if max_rows:
        assert live.n <= max_rows < live.snapshot_count
    assert warm == _cold(diagnose_module, weighttui.open(path), config)  # the same with any max_rows


def _cold(module, run, config, row=None):
    """diagnose without the remembered results, which are put back afterwards."""
    saved = module._histories.pop(run, None)
    out = module.diagnose(run, config, upto_row=row)
    module._histories.pop(run, None)
    if saved is not None:
        module._histories[run] = saved
    return out


@pytest.mark.parametrize("stride", [1, 3, 9, 17])
def test_moving_through_a_run_in_jumps_gives_cold_results(tmp_path, monkeypatch, stride):
    """A replay position moved forward by more than the state rules' tail, across a state that
    broke and began again meanwhile (a.weight still over 50..59, moved at 60, still again from 61),
    and back: what the rules remember gives what a cold diagnosis gives at every position."""
    from weighttui.analysis import diagnose as diagnose_module

    monkeypatch.setattr(diagnose_module, "_BLOCK", 7)
    monkeypatch.setattr(diagnose_module, "_TAIL", 5)
    kept: dict = {}

    sim = Sim(SHAPES)

    def hook(s, params, grads):
        if 50 <= s < 60:
            params["a.weight"] = kept.setdefault("a", params["a.weight"].copy())
        if s >= 61:
            params["a.weight"] = kept.setdefault("b", params["a.weight"].copy())
        sim.ratio["c.weight"] = 5e-2 if 30 <= s < 45 or s >= 70 else 1e-3  # too fast, twice

    run = record(tmp_path / "jumps.wtui", 100, sim, hook=hook)
    config = DiagnoseConfig(stagnant_window=3, ratio_window=6)
    seen = set()
    for row in [*range(0, run.n, stride), 55, run.n - 1, *range(run.n - 1, -1, -2 * stride - 1)]:
        got = diagnose(run, config, upto_row=row)
        assert got == _cold(diagnose_module, run, config, row), row
        seen |= {(a.rule, a.tensor, a.step) for a in got}
    assert {("stagnant", "a.weight", 50), ("stagnant", "a.weight", 61)} <= seen
    assert {t for r, t, _s in seen if r == "ratio_high"} == {"c.weight"}
    assert len({s for r, _t, s in seen if r == "ratio_high"}) >= 2  # two stretches, each from its start


def test_a_budget_spreads_the_first_read_over_calls_and_ends_where_one_call_does(tmp_path, monkeypatch):
    """diagnose_within(budget_s=0): each call reads one more block of the history per rule and says it
    is not complete; the alerts so far are right as far as they go, and the last call's are those of
    one call without a budget (the viewer's UI thread on a log of many GiB)."""
    from weighttui.analysis import diagnose as diagnose_module

    monkeypatch.setattr(diagnose_module, "_BLOCK", 7)

    def hook(s, params, grads):
        if 20 <= s < 23:
            grads["a.weight"] *= 1e4
        if 60 <= s < 63:
            grads["b.weight"] *= 1e4

    run = record(tmp_path / "budget.wtui", 90, Sim(SHAPES), hook=hook)
    config = DiagnoseConfig(grad_window=4)
    want = _cold(diagnose_module, run, config)
    assert {(a.rule, a.tensor, a.step) for a in want} >= {("grad_explode", "a.weight", 20),
                                                          ("grad_explode", "b.weight", 60)}
    calls = []
    while True:
        got, complete = diagnose_module.diagnose_within(run, config, budget_s=0.0)
        calls.append(got)
        if complete:
            break
        assert len(calls) < 50
        assert {(a.rule, a.tensor, a.step) for a in got} <= {(a.rule, a.tensor, a.step) for a in want}
    assert len(calls) > 3 and calls[-1] == want
    assert ("grad_explode", "b.weight", 60) not in {(a.rule, a.tensor, a.step) for a in calls[0]}
    assert diagnose_module.diagnose_within(run, config, budget_s=0.0) == (want, True)  # remembered


def test_finite_again_names_the_step_where_values_became_finite(tmp_path):
    """The loss and a weight NaN at step 2 only: "finite again at step 9" (the latest step) read as a
    recovery at 9; it is step 3."""
    import weighttui

    path = tmp_path / "fa.wtui"
    with weighttui.Recorder(path) as rec:
        for s in range(10):
            w = np.full(4, 1.0 + 0.1 * s, np.float32)
            if s == 2:
                w[0] = np.nan
            rec.snapshot(s, {"w": w}, scalars={"loss": float("nan") if s == 2 else 1.0 / (s + 1)})
    alerts = diagnose(weighttui.open(path, cache=False))
    messages = {a.rule: a.message for a in alerts}
    assert "finite again at step 3" in messages["nonfinite"]
    assert "finite again at step 3" in messages["nonfinite_scalar"]
