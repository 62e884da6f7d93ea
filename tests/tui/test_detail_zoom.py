"""The detail screen at full resolution: zoom and pan over a run the viewer's row view thins
(issue 14: every snapshot reachable), and the per-unit strip (issue 16, item 4)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from screen_host import ScreenHost, tanh_neuron_log

import weighttui
from weighttui import Recorder
from weighttui.analysis.series import tensor_series
from weighttui.data.units import unit_norms, units_at
from weighttui.log.format import FrameType, encode_array, encode_bf16_bits, encode_frame
from weighttui.log.tail import LogTail
from weighttui.tui.app import WeightApp
from weighttui.tui.formatting import fmt_value
from weighttui.tui.screens.detail import DetailScreen
from weighttui.tui.widgets.heatmap_view import LEVELS, HeatmapView
from weighttui.tui.widgets.unit_strip import DEAD, EXPLODING, NONFINITE, UnitStrip

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]

STEPS = 300
MAX_ROWS = 32  # the row view keeps about 20 of the 300 snapshots


def unit_log(path, steps: int = STEPS) -> str:
    """A 32-unit layer trained on noise: unit 5's gradient is always zero (dead), unit 9's
    weights grow 5% a step from step 150 (exploding once above 10x the median unit)."""
    rng = np.random.default_rng(1)
    w = rng.normal(0, 0.3, (32, 16))
    with Recorder(path, every=1, bins=16, sample=8, queue_size=4096) as rec:
        for s in range(steps):
            g = rng.normal(0, 0.01, w.shape)
            g[5] = 0.0
            rec.snapshot(s, {"fc.weight": w, "fc.bias": w[:, 0].copy()}, grads={"fc.weight": g})
            w = w - 0.5 * g
            if s >= 150:
                w[9] *= 1.05
    return str(path)


@pytest.fixture(scope="module")
def long_log(tmp_path_factory):
    return unit_log(tmp_path_factory.mktemp("zoom") / "units.wtui")


def header(screen) -> str:
    return screen.query_one("#dhead").content.plain


def host(path, name="fc.weight"):
    data = weighttui.open(path, max_rows=MAX_ROWS)
    assert data.n < data.row_count == STEPS  # the viewer's row view is thinned
    return ScreenHost(data=data, make_screen=lambda: DetailScreen(name))


async def test_zoom_reads_every_snapshot_of_the_range(long_log):
    exact = weighttui.open(long_log)  # every snapshot, the log's own values
    all_steps, all_norms = exact.series("fc.weight", "norm")
    app = host(long_log)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        screen = app.screen
        thinned = set(app.data.steps.tolist())
        stride = int(np.median(np.diff(app.data.snapshot_index)))
        assert stride > 1 and f"whole run · every {stride}th snapshot ({app.data.n} of {STEPS})" in header(screen)
        assert not screen.window.full

        for _ in range(3):  # 300 -> 150 -> 75 -> 38 steps around the latest
            await pilot.press("i")
        start, stop = screen.span
        assert stop == STEPS and 30 <= stop - start <= 40  # the position (the latest) stays in the range
        inside = (all_steps >= start) & (all_steps < stop)
        win = screen.window
        assert win.full and win.stride == 1
        np.testing.assert_array_equal(win.stats["steps"], all_steps[inside])
        np.testing.assert_array_equal(win.stats["norm"], all_norms[inside])  # the log's exact values
        assert set(win.stats["steps"].tolist()) - thinned  # snapshots the row view does not have
        heat = screen.query_one(HeatmapView)
        np.testing.assert_array_equal(heat._source[0], all_steps[inside])  # drawn at full resolution
        assert f"steps {start}-{stop - 1} · every snapshot ({int(inside.sum())})" in header(screen)

        # the timeline keys walk every snapshot while zoomed: step 297 is not in the row view
        await pilot.press("left", "left")
        assert 297 not in thinned
        head = header(screen)
        assert "step 297 " in head and "zoom cursor" in head
        assert f"norm {fmt_value(all_norms[297], 0).strip()} " in head
        assert app.data.steps[app.row] == max(s for s in thinned if s <= 297)  # the app's timeline followed

        # pan back by half the width, twice: the range moves, still every snapshot
        width = stop - start
        await pilot.press("comma")
        back = int(np.floor(start - width / 2))
        assert screen.span == (back, back + width)
        await pilot.press("less_than_sign")
        s2 = screen.span
        assert s2[1] - s2[0] == width and s2[0] < start - width // 2
        np.testing.assert_array_equal(screen.window.stats["steps"], all_steps[(all_steps >= s2[0]) &
                                                                               (all_steps < s2[1])])
        await pilot.press("full_stop")
        assert screen.span[0] > s2[0]

        await pilot.press("0")  # the whole run again: the row view
        assert screen.span is None and screen.cursor is None
        np.testing.assert_array_equal(screen.window.stats["steps"], app.data.steps)
        assert "whole run · every" in header(screen)

        await pilot.press("i", "o")  # zooming out to the whole run is the reset too
        assert screen.span is None


async def test_cursor_keys_are_the_apps_when_not_zoomed(long_log):
    app = host(long_log)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("left")
        assert app.position == app.data.n - 2  # the app's timeline: one row of the row view
        assert app.screen.cursor is None


async def test_zoom_keeps_a_range_of_a_few_snapshots(long_log):
    app = host(long_log)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        for _ in range(12):
            await pilot.press("i")
        start, stop = app.screen.span
        lo, hi = app.data.rows_for_steps(start, stop)
        assert 4 <= hi - lo < 8  # as close as it goes, never an empty range


def test_range_series_match_the_whole_run(long_log, tmp_path):
    """tensor_series over a range: the same numbers as over the run, ratio_step included (the
    steps one delta spans come from the full-resolution snapshot table)."""
    path = tanh_neuron_log(tmp_path / "neuron.wtui")  # every 2 steps
    data = weighttui.open(path)
    whole = tensor_series(data, "neuron.weight", "delta")
    part = tensor_series(data, "neuron.weight", "delta", start=40, stop=90)
    keep = (whole["steps"] >= 40) & (whole["steps"] < 90)
    for stat, values in part.items():
        np.testing.assert_array_equal(values, whole[stat][keep], err_msg=stat)
    np.testing.assert_allclose(part["ratio_step"], part["ratio"] / 2)


def expected_marks(w: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The dead_units / exploding_units rules (docs/FORMAT.md), per snapshot and unit."""
    med = np.median(w, axis=1, keepdims=True)
    return g == 0, w > 10.0 * med


def unit_rows(strip: UnitStrip, unit: int) -> np.ndarray:
    """The strip's half rows that draw only `unit`."""
    first = strip.drawn.first_unit
    nxt = np.append(first[1:], strip._source[1].shape[1])
    return np.nonzero((first == unit) & (np.maximum(nxt, first + 1) == unit + 1))[0]


async def test_unit_strip_marks_dead_and_exploding_units(long_log):
    steps_all, w_all = unit_norms(long_log, "fc.weight", "weights")
    _s, g_all = unit_norms(long_log, "fc.weight", "grad")
    dead_all, hot_all = expected_marks(w_all, g_all)
    assert dead_all[:, 5].all() and hot_all[-1, 9] and not hot_all[0].any()
    app = host(long_log)
    async with app.run_test(size=(120, 50)) as pilot:
        await pilot.pause()
        await pilot.press("u")
        await pilot.pause()
        screen = app.screen
        strip = screen.query_one(UnitStrip)
        assert strip.display and not screen.query_one(HeatmapView).display
        drawn = strip.drawn
        assert drawn is not None and drawn.codes.shape[0] >= 32  # each unit has its own half rows
        steps = strip._source[0]
        at = np.searchsorted(steps_all, steps)
        np.testing.assert_array_equal(steps_all[at], steps)
        np.testing.assert_array_equal(strip._source[1], w_all[at])  # the log's own norms
        cols = drawn.col_steps
        rows5, rows9, rows0 = unit_rows(strip, 5), unit_rows(strip, 9), unit_rows(strip, 0)
        assert rows5.size and rows9.size
        assert (drawn.codes[rows5] == DEAD).all()
        hot_cols = hot_all[np.searchsorted(steps_all, cols), 9]
        assert hot_cols.any() and not hot_cols.all()
        assert (drawn.codes[rows9][:, hot_cols] == EXPLODING).all()
        assert (drawn.codes[rows9][:, ~hot_cols] < LEVELS).all()
        assert (drawn.codes[rows0] < LEVELS).all() and (drawn.codes[rows0] >= 0).all()
        assert strip.summary == f"step {STEPS - 1}: 1 dead #5 · 1 exploding #9"
        assert "norms of weights: 32 units" in strip.title

        # zoomed: the strip reads every snapshot of the range
        for _ in range(3):
            await pilot.press("i")
        await pilot.pause()
        start, stop = screen.span
        np.testing.assert_array_equal(strip._source[0], steps_all[(steps_all >= start) & (steps_all < stop)])
        assert "every snapshot" in strip.title

        # the gradient view colours the gradient norms; the marks stay
        await pilot.press("g")
        await pilot.pause()
        at = np.searchsorted(steps_all, strip._source[0])
        np.testing.assert_array_equal(strip._source[1], g_all[at])
        assert (strip.drawn.codes[unit_rows(strip, 5)] == DEAD).all()
        assert "norms of gradients" in strip.title

        await pilot.press("u")
        assert not strip.display and screen.query_one(HeatmapView).display


async def test_unit_strip_without_unit_norms(tmp_path, tui):
    path = tui.write_recorder_log(tmp_path / "plain.wtui", steps=6, instruments=False)
    data = weighttui.open(path)
    name = data.tensor_names[0]
    app = ScreenHost(data=data, make_screen=lambda: DetailScreen(name))
    async with app.run_test(size=(100, 36)) as pilot:
        await pilot.pause()
        await pilot.press("u")
        await pilot.pause()
        strip = app.screen.query_one(UnitStrip)
        assert strip.drawn is None and "no per-unit norms" in strip.message


async def test_unit_strip_on_a_torch_run(tmp_path):
    """A real torch run whose ReLU units 3 and 7 never fire: the recorder names them in a
    dead_units event, and the strip marks the same units."""
    torch = pytest.importorskip("torch")
    import weighttui.torch as wt

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    with torch.no_grad():
        model[0].bias[[3, 7]] = -100.0  # never positive: no gradient reaches their rows
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    path = tmp_path / "torch.wtui"
    handle = wt.watch(model, path, optimizer=opt, every=1)
    x, y = torch.randn(64, 8), torch.randint(0, 2, (64,))
    for _ in range(12):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    handle.close()

    data = weighttui.open(path)
    name = "0.weight"
    events = [e for e in data.events if e.kind == "dead_units"]
    assert events and "0.weight" in events[-1].message
    app = ScreenHost(data=data, make_screen=lambda: DetailScreen(name))
    async with app.run_test(size=(120, 50)) as pilot:
        await pilot.pause()
        await pilot.press("g", "u")
        await pilot.pause()
        strip = app.screen.query_one(UnitStrip)
        assert strip.summary.endswith("2 dead #3 #7 · 0 exploding")
        codes = strip.drawn.codes
        live = codes[unit_rows(strip, 4)]
        graded = (live >= 0).all(axis=0)  # the columns of snapshots with a gradient (not the first)
        assert graded.sum() >= 10 and (live[:, graded] < LEVELS).all()
        for unit in (3, 7):
            assert (codes[unit_rows(strip, unit)][:, graded] == DEAD).all()


async def test_click_on_the_zoomed_heatmap_picks_that_snapshot(long_log):
    app = host(long_log)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        screen = app.screen
        for _ in range(3):
            await pilot.press("i")
        heat = screen.query_one(HeatmapView)
        thinned = set(app.data.steps.tolist())
        for x in range(HeatmapView.GUTTER, heat.size.width):
            step = heat.step_at(x)
            if step is not None and step not in thinned:
                break
        else:
            raise AssertionError("no snapshot outside the row view on the zoomed heatmap")
        await pilot.click(HeatmapView, offset=(x, 3))
        await pilot.pause()
        assert screen.cursor == step
        assert f"step {step} " in header(screen)
        assert app.data.steps[app.row] == max(s for s in thinned if s <= step)


async def test_zoom_in_the_real_app(long_log):
    """Inside WeightApp: the app's timeline keys are the screen's while zoomed, and a timeline
    move from elsewhere (home) drops the cursor."""
    app = WeightApp(long_log, mode="replay", max_rows=MAX_ROWS, alerts=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        deadline = 200
        while app.data.row_count < STEPS and deadline:
            await pilot.pause(0.05)
            deadline -= 1
        await pilot.press("end")
        app.open_tensor("fc.weight")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, DetailScreen)
        await pilot.press("i", "i", "i", "left")
        await pilot.pause()
        assert screen.cursor == STEPS - 2 and STEPS - 2 not in set(app.data.steps.tolist())
        assert f"step {STEPS - 2} " in header(screen)
        width = screen.span[1] - screen.span[0]
        await pilot.press("home")
        await pilot.pause()
        assert screen.cursor is None and "step 0 " in header(screen)
        assert screen.span == (0, width)  # the range followed the timeline


async def test_zoomed_strip_follows_a_live_run(tmp_path):
    """Live: new snapshots read through LogTail; the zoomed range follows the latest and the
    strip reads the new snapshots' unit norms from their frames."""
    path = tmp_path / "live.wtui"
    rng = np.random.default_rng(0)
    rec = Recorder(path, every=1, bins=8, queue_size=4096)

    def write(steps):
        for s in steps:
            rec.snapshot(s, {"fc.weight": rng.normal(0, 1, (6, 4)) * (1 + s)},
                         grads={"fc.weight": rng.normal(0, 1, (6, 4))})

    write(range(40))
    deadline = time.monotonic() + 10
    while rec.written < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    tail = LogTail(path)
    data = weighttui.RunData(path, max_rows=8)
    data.ingest(tail.poll())
    app = ScreenHost(data=data, make_screen=lambda: DetailScreen("fc.weight"))
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            await pilot.press("u", "i", "i")
            await pilot.pause()
            screen = app.screen
            strip = screen.query_one(UnitStrip)
            before = screen.span
            assert before[1] == 40 and strip._source[0][-1] == 39
            write(range(40, 60))
            rec.close()
            deadline = time.monotonic() + 10
            while app.data.row_count < 60 and time.monotonic() < deadline:
                app.feed(tail)
                await pilot.pause(0.02)
            await pilot.pause()
            assert screen.span == (60 - (before[1] - before[0]), 60)  # followed the latest
            steps_all, w_all = unit_norms(path, "fc.weight", "weights")
            got = strip._source[0]
            assert got[-1] == 59 and np.diff(got).max() == 1  # every snapshot of the range
            np.testing.assert_array_equal(strip._source[1], w_all[np.searchsorted(steps_all, got)])
    finally:
        tail.close()


def bf16(values) -> dict:
    u = np.asarray(values, dtype=np.float32).view(np.uint32)
    return encode_bf16_bits((u >> 16).astype(np.uint16))


async def test_hostile_unit_payloads_are_skipped(tmp_path, tui):
    """Units payloads a reader cannot use (not a map, bad ids, unknown tensors, too short, a
    declared shape far beyond the values) are skipped, never raised; Inf/NaN norms are marked."""
    log = tui.FixedLog(tmp_path / "hostile.wtui", names=["head.weight"])
    log.append(encode_frame(FrameType.TENSORS, {"tensors": [  # declared, never in a snapshot
        {"id": 1, "name": "huge.weight", "layer": "huge", "shape": [2 ** 40, 1], "dtype": "float32",
         "trainable": True, "sample_index": None}]}))
    ids = encode_array(np.array([0], dtype="<u4"))
    good = np.linspace(1.0, 2.0, 6)
    payloads = [
        "not a map",
        {"ids": "x", "weights": bf16(good), "grad": None},
        {"ids": encode_array(np.array([99], dtype="<u4")), "weights": bf16(good), "grad": None},
        {"ids": ids, "weights": bf16(good[:3]), "grad": None},
        {"ids": encode_array(np.array([1], dtype="<u4")), "weights": bf16(good), "grad": None},
        {"ids": ids, "weights": bf16(good), "grad": None},
        {"ids": ids, "weights": bf16(good), "grad": bf16(np.zeros(6))},
        {"ids": ids, "weights": bf16([1.0, np.inf, 1.0, np.nan, 1.0, 1.0]), "grad": bf16(np.ones(6))},
    ]
    for step, units in enumerate(payloads):
        log.snapshot(step, units=units)
    log.end(snapshots=len(payloads))
    data = weighttui.open(log.path)
    _steps, offsets = data.snapshot_rows()
    got = units_at(log.path, offsets, "head.weight", {t.id: t for t in data.tensors})
    assert got[:5] == [None] * 5
    assert units_at(log.path, offsets[4:5], "huge.weight", {t.id: t for t in data.tensors}) == [None]
    np.testing.assert_allclose(got[5][0], good, rtol=1e-2)
    assert got[5][1] is None and (got[6][1] == 0).all()

    app = ScreenHost(data=data, make_screen=lambda: DetailScreen("head.weight"))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("u")
        await pilot.pause()
        strip = app.screen.query_one(UnitStrip)
        assert strip._source[0].tolist() == [5, 6, 7]  # the snapshots with usable unit norms
        codes = strip.drawn.codes
        last = strip.drawn.col_steps == 7
        assert (codes[unit_rows(strip, 1)][:, last] == NONFINITE).all()
        assert (codes[unit_rows(strip, 3)][:, last] == NONFINITE).all()
        assert (codes[unit_rows(strip, 0)][:, last] < LEVELS).all()
        assert (codes[unit_rows(strip, 0)][:, strip.drawn.col_steps == 6] == DEAD).all()


async def test_most_recent_at_full_resolution(long_log):
    """`z` on a thinned run: the heatmap's columns are the last snapshots up to the position, every
    one of them (not the row view's rows, which lie 16 snapshots apart there)."""
    exact = weighttui.open(long_log)
    all_steps, lo_all, hi_all, counts_all = exact.histograms("fc.weight")
    app = host(long_log)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("z")
        await pilot.pause()
        screen = app.screen
        heat = screen.query_one(HeatmapView)
        plot_w = heat.size.width - HeatmapView.GUTTER
        np.testing.assert_array_equal(heat._source[0], all_steps[-plot_w:])
        np.testing.assert_array_equal(heat._source[3], counts_all[-plot_w:])
        assert heat.shown_rows == slice(0, plot_w)
        assert "most recent, every snapshot" in header(screen)
        await pilot.press("home")  # the position moves: the window ends there
        await pilot.pause()
        assert heat._source[0].tolist() == [0]
        await pilot.press("z")  # back to every row of the row view
        await pilot.pause()
        np.testing.assert_array_equal(heat._source[0], app.data.steps)


def test_a_range_too_long_for_one_read_uses_the_row_view(long_log, monkeypatch):
    """A zoomed range of more than FULL_MAX snapshots is drawn from the row view's rows inside it
    (memory stays bounded), and says so."""
    from weighttui.tui.screens import detail_zoom

    data = weighttui.open(long_log, max_rows=MAX_ROWS)
    monkeypatch.setattr(detail_zoom, "FULL_MAX", 50)
    span = (100, 300)
    win = detail_zoom.read(data, "fc.weight", "weights", span)
    rows = data.steps[(data.steps >= 100) & (data.steps < 300)]
    assert not win.full and win.snapshots == 200 and win.shown == rows.size
    np.testing.assert_array_equal(win.stats["steps"], rows)
    np.testing.assert_array_equal(win.hist[0], rows)
    assert win.label(span) == f"steps 100-299 · every {detail_zoom.ordinal(win.stride)} snapshot " \
                              f"({rows.size} of 200)"
    monkeypatch.setattr(detail_zoom, "FULL_MAX", 200)
    win = detail_zoom.read(data, "fc.weight", "weights", span)
    assert win.full and win.label(span) == "steps 100-299 · every snapshot (200)"
    assert detail_zoom.ordinal(1) == "1st" and detail_zoom.ordinal(12) == "12th" and detail_zoom.ordinal(22) == "22nd"
