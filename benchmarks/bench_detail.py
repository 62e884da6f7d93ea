"""Tensor detail screen benchmark: zoom at full resolution and the per-unit strip on a long run.

    python benchmarks/bench_detail.py --quick          # 4,000 snapshots (about a minute)
    python benchmarks/bench_detail.py                  # 20,000 snapshots x 20 tensors (a few minutes)
    python benchmarks/bench_detail.py --quick --units 1378   # ResNet-50's 27,560 units a snapshot
    python benchmarks/bench_detail.py --log PATH       # an existing log (its first 2-D tensor)

The log is written frame by frame (statistics, 64-bin histograms and per-unit norms of
every tensor, as the recorder's `units` instrument writes them); the viewer's cost does
not depend on the values. The real WeightApp (replay, --max-rows 2048) is run headless;
each line times one screen action called directly (the redraw it triggers: range reads,
header, the heatmap or strip built at the screen's size; the deferred charts separately),
wall and CPU time, with the load average. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import tempfile
import time

import numpy as np

from weighttui.log.format import HEADER, FrameType, encode_array, encode_bf16_bits, encode_frame
from weighttui.log.schema import DELTA_STATS, WEIGHT_STATS

BINS = 64
UNITS = 64  # rows of each [UNITS, 256] weight (--units)


def _bf16(x: np.ndarray) -> np.ndarray:
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    return (u >> 16).astype(np.uint16)


def write_log(path, tensors: int, snapshots: int, units_per: int = UNITS) -> None:
    rng = np.random.default_rng(0)
    names = [f"model.layers.{i}.proj.weight" for i in range(tensors)]

    def block(names_, hist):
        stats = np.abs(rng.normal(size=(tensors, len(names_)))) + 1e-3
        out = {"names": list(names_), "stats": encode_array(stats), "hist": None}
        if hist:
            lo = -np.ones(tensors)
            out["hist"] = {"lo": encode_array(lo), "hi": encode_array(-lo),
                           "counts": encode_array(rng.integers(0, 1000, (tensors, BINS)).astype("<u4"))}
        return out

    blocks = [(block(WEIGHT_STATS, True), block(DELTA_STATS, False), block(WEIGHT_STATS, False)) for _ in range(4)]
    units = [{"ids": encode_array(np.arange(tensors, dtype="<u4")),
              "weights": encode_bf16_bits(_bf16(rng.uniform(0.5, 2.0, tensors * units_per))),
              "grad": encode_bf16_bits(_bf16(rng.uniform(0.0, 1e-2, tensors * units_per)))} for _ in range(4)]
    ids = encode_array(np.arange(tensors, dtype="<u4"))
    with open(path, "wb") as fh:
        fh.write(HEADER + encode_frame(FrameType.RUN, {
            "run_id": "d" * 32, "created": time.time(), "host": "bench", "pid": 0, "argv": [],
            "framework": "numpy", "writer": "bench", "bins": BINS, "meta": {}}))
        fh.write(encode_frame(FrameType.TENSORS, {"tensors": [
            {"id": i, "name": n, "layer": n.rsplit(".", 1)[0], "shape": [units_per, 256], "dtype": "float32",
             "trainable": True, "sample_index": None} for i, n in enumerate(names)]}))
        for step in range(snapshots):
            w, d, g = blocks[step % 4]
            fh.write(encode_frame(FrameType.SNAPSHOT, {
                "step": step * 10, "epoch": step // 1000, "batch": None, "time": time.time(), "ids": ids,
                "weights": w, "delta": d, "grad": g, "sample": None, "units": units[step % 4]}))
        fh.write(encode_frame(FrameType.END, {"time": time.time(), "status": "finished",
                                              "snapshots": snapshots, "dropped": 0}))


def timed(label: str, fn, results: list) -> None:
    c0, w0 = time.process_time(), time.perf_counter()
    fn()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    results.append((label, wall, cpu))
    print(f"  {label:<58} {wall * 1000:8.1f} ms wall {cpu * 1000:8.1f} ms CPU", flush=True)


async def run(path: str, size=(160, 48)) -> None:
    from weighttui.tui.app import WeightApp
    from weighttui.tui.screens.detail import DetailScreen
    from weighttui.tui.widgets.heatmap_view import HeatmapView
    from weighttui.tui.widgets.unit_strip import UnitStrip

    app = WeightApp(path, mode="replay", max_rows=2048, alerts=False)
    results: list = []
    async with app.run_test(size=size) as pilot:
        t0 = time.perf_counter()
        while app.view().loading is not None or app.data.n == 0:
            await pilot.pause(0.05)
        print(f"  loaded: {app.data.row_count:,} snapshots, row view {app.data.n:,} rows "
              f"({time.perf_counter() - t0:.1f} s)", flush=True)
        await pilot.press("end")
        name = next(t.name for t in app.data.tensors if len(t.shape) == 2)
        app.open_tensor(name)
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, DetailScreen)
        heat = screen.query_one(HeatmapView)

        def redraw():
            screen._key = None
            screen._window_key = None
            screen.refresh_data()
            heat._build()

        timed("whole run (row view): redraw + heatmap", redraw, results)
        timed("  its charts (plotext, deferred)", screen._flush_charts, results)
        timed("zoom in once (half the run, every snapshot): i + heatmap",
              lambda: (screen.action_zoom(0.5), heat._build()), results)
        print(f"    -> {screen.window.label(screen.span)}", flush=True)
        timed("  its charts", screen._flush_charts, results)
        while screen.window.snapshots > 300:
            screen.action_zoom(0.5)
        screen._flush_charts()
        timed("zoomed to <= 300 snapshots: redraw + heatmap", redraw, results)
        print(f"    -> {screen.window.label(screen.span)}", flush=True)
        timed("  ← (cursor, a snapshot the row view lacks) + heatmap",
              lambda: (screen.action_cursor(-1), heat._build()), results)
        timed("  < (pan back by half) + heatmap", lambda: (screen.action_pan(-1), heat._build()), results)
        screen.action_toggle_units()
        await pilot.pause()
        await pilot.pause()
        strip = screen.query_one(UnitStrip)

        def strip_draw(cold: bool):
            if cold:
                screen._units_cache = {}
            screen._key = None
            screen.refresh_data()
            strip._build()

        timed("units strip, zoomed range, frames not read yet", lambda: strip_draw(True), results)
        print(f"    -> {strip.title} | {strip.summary}", flush=True)
        timed("units strip, zoomed range, again (cached frames)", lambda: strip_draw(False), results)
        screen.action_reset_zoom()
        await pilot.pause()
        timed("units strip, whole run, frames not read yet", lambda: strip_draw(True), results)
        print(f"    -> {strip.title}", flush=True)
        timed("units strip, whole run, a timeline move (cached)",
              lambda: (app.action_step(-1), strip._build()), results)
    print(f"  peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--snapshots", type=int, default=20000)
    ap.add_argument("--tensors", type=int, default=20)
    ap.add_argument("--units", type=int, default=UNITS, help="units (rows) of each tensor; 1378 x 20 tensors is "
                    "ResNet-50's 27,560 units, 108 KiB of unit norms per snapshot")
    ap.add_argument("--quick", action="store_true", help="4,000 snapshots")
    ap.add_argument("--log", help="an existing log instead of a generated one")
    args = ap.parse_args()
    print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.log
        if path is None:
            path = os.path.join(tmp, "detail.wtui")
            n = 4000 if args.quick else args.snapshots
            t0 = time.perf_counter()
            write_log(path, args.tensors, n, args.units)
            print(f"wrote {n:,} snapshots x {args.tensors} tensors ({os.path.getsize(path) / 2**20:.0f} MiB) "
                  f"in {time.perf_counter() - t0:.1f} s", flush=True)
        asyncio.run(run(path))
    print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    sys.exit(main())
