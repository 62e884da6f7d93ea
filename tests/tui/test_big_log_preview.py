"""`watch` on a big log without an index: its latest snapshots first, the history indexed behind them (issue 14).

The follower's deliveries are held back (`HeldApp`) until the test has looked at the first screen,
so "before indexing completes" does not depend on how fast this machine reads.
"""

from __future__ import annotations

import pytest

import weighttui
import weighttui.tui.app as appmod
from weighttui.data.latest import latest_frames
from weighttui.log.format import FrameType, encode_frame
from weighttui.tui.app import WeightApp
from weighttui.tui.formatting import fmt
from weighttui.tui.widgets.header import RunHeader
from weighttui.tui.widgets.layer_table import LayerTable

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

STEPS = 120


class HeldApp(WeightApp):
    """The real app, whose ingest of the follower's deliveries waits until `release()`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.hold = True
        self.held: list = []

    def _ingest(self, item) -> bool:
        if self.hold:
            self.held.append(item)
            return False
        return super()._ingest(item)

    def release(self) -> None:
        self.hold = False
        for item in self.held:
            super()._ingest(item)
        self.held.clear()
        self.pump.request_refresh()


def header_lines(app) -> list[str]:
    return app.screen.query_one(RunHeader).content.plain.splitlines()


def norm_at_last_step(path, name) -> str:
    run = weighttui.open(path, cache=False)  # an independent read of the whole log
    return fmt(run.series(name, "norm")[1][-1], 7).strip()


@pytest.fixture
def preview_any_size(monkeypatch):
    monkeypatch.setattr(appmod, "PREVIEW_MIN_BYTES", 0)


async def test_latest_snapshot_first_then_the_history(tmp_path, tui, preview_any_size):
    path = tmp_path / "big.wtui"
    tui.fixed_log(path, STEPS)  # steps 0, 10, ... 1190, then the end record
    last = (STEPS - 1) * 10
    name = "head.weight"
    app = HeldApp(path, mode="watch", alerts=True)
    async with app.run_test(size=(120, 30)) as pilot:
        await tui.wait_until(pilot, lambda: app.first_data_at is not None, what="the first screen with data")
        # Nothing of the follower's reading has been ingested, and the latest step is on screen.
        assert app.held and app._building is not None and app._building.snapshot_count == 0
        lines = header_lines(app)
        assert f"step {last} " in lines[1] and "indexing 0%, history follows" in lines[1], lines
        assert app.data.snapshot_count < STEPS and int(app.data.steps[-1]) == last
        table = app.screen.query_one(LayerTable)
        assert norm_at_last_step(path, name) in table.get_cell("t:" + name, "norm").plain

        app.release()
        await tui.wait_until(pilot, lambda: app._building is None and app.loading is None, what="indexed")
        await pilot.pause(0.2)
        lines = header_lines(app)
        assert "indexing" not in lines[1] and "history" not in lines[1] and f"step {last} " in lines[1], lines
        assert app.data.snapshot_count == STEPS and app.data.n == STEPS  # the whole history, every snapshot
        assert norm_at_last_step(path, name) in table.get_cell("t:" + name, "norm").plain
        await pilot.press("home")  # the history is there to move through
        assert "step 0 " in header_lines(app)[1] + " "


async def test_progress_shows_while_indexing_and_goes_away(tmp_path, tui, preview_any_size):
    """With deliveries let through one at a time, the header counts up and the status leaves LOADING."""
    path = tmp_path / "big.wtui"
    tui.fixed_log(path, STEPS)
    app = HeldApp(path, mode="watch", alerts=False, follower_options={"chunk_bytes": 16 * 1024})
    async with app.run_test(size=(120, 30)) as pilot:
        await tui.wait_until(pilot, lambda: app.first_data_at is not None and len(app.held) >= 3,
                             what="deliveries queued")
        seen = []
        while app._building is not None:  # one delivery at a time (later ones keep being held)
            await tui.wait_until(pilot, lambda: app.held, what="the next delivery")
            WeightApp._ingest(app, app.held.pop(0))
            app.pump.refresh_now()
            await pilot.pause()
            seen.append(header_lines(app)[1])
        app.release()
        progress = [line.split("indexing ")[1].split("%")[0] for line in seen if "indexing " in line]
        assert len(progress) >= 2 and int(progress[0]) < int(progress[-1]), seen
        await tui.wait_until(pilot, lambda: app._building is None and app.loading is None, what="indexed")
        await pilot.pause(0.2)
        assert "indexing" not in header_lines(app)[1]
        assert app.data.snapshot_count == STEPS


async def test_a_log_grown_past_its_index_previews_too(tmp_path, tui, preview_any_size, monkeypatch):
    """An index that covers the first half: the latest snapshots first, then the history from the index
    and the rest of the log read behind it."""
    from weighttui.data.store import index as store_index

    monkeypatch.setattr(store_index, "MIN_LOG_BYTES", 0)  # index this small log
    path = tmp_path / "grown.wtui"
    log = tui.fixed_log(path, STEPS // 2, end=False)
    assert weighttui.open(path).snapshot_count == STEPS // 2 and weighttui.open(path).index_path  # indexed
    for s in range(STEPS // 2, STEPS):
        log.snapshot(s * 10, epoch=s // 10)
    log.end(snapshots=STEPS)
    app = HeldApp(path, mode="watch", alerts=False)
    async with app.run_test(size=(120, 30)) as pilot:
        await tui.wait_until(pilot, lambda: app.first_data_at is not None, what="the first screen")
        assert f"step {(STEPS - 1) * 10} " in header_lines(app)[1] and "indexing" in header_lines(app)[1]
        assert app._building is not None and app._building.snapshot_count == STEPS // 2  # from the index
        app.release()
        await tui.wait_until(pilot, lambda: app._building is None and app.loading is None, what="indexed")
        assert app.data.snapshot_count == STEPS and list(app.data.steps) == [s * 10 for s in range(STEPS)]


async def test_an_appended_log_previews_its_latest_run(tmp_path, tui, preview_any_size):
    path = tmp_path / "appended.wtui"
    tui.fixed_log(path, 5)
    second = tui.FixedLog(tmp_path / "second.wtui", names=["other.weight"], run_id="1" * 32)
    for s in range(3):
        second.snapshot(1000 + s)
    with open(path, "ab") as fh, open(second.path, "rb") as src:
        fh.write(src.read()[12:])  # the second run's frames after the first run's (mode="a")
    app = HeldApp(path, mode="watch", alerts=False)
    async with app.run_test(size=(120, 30)) as pilot:
        await tui.wait_until(pilot, lambda: app.first_data_at is not None, what="the first screen")
        lines = header_lines(app)
        assert "run 2 of 2" in lines[0] and "step 1002 " in lines[1], lines
        assert app.data.tensor_names == ["other.weight"]
        app.release()
        await tui.wait_until(pilot, lambda: app._building is None, what="indexed")
        assert app.data.tensor_names == ["other.weight"] and len(app.data.runs) == 2


async def test_small_logs_replay_and_run_n_read_from_the_start(tmp_path, tui):
    path = tmp_path / "small.wtui"
    tui.fixed_log(path, 5)
    for app in (WeightApp(path, mode="watch"), WeightApp(path, mode="replay"),
                WeightApp(path, mode="watch", run=0)):
        async with app.run_test(size=(100, 30)) as pilot:
            await tui.wait_until(pilot, lambda app=app: app.data.n == 5, what="loaded")
            assert app._building is None


def test_latest_frames(tmp_path, tui):
    path = tmp_path / "run.wtui"
    tui.fixed_log(path, 40)
    frames = latest_frames(path, snapshots=3)
    assert frames is not None
    types = [f.type for f in frames]
    assert types[:2] == [FrameType.RUN, FrameType.TENSORS] and types.count(FrameType.SNAPSHOT) == 3
    assert [f.payload["step"] for f in frames if f.type == FrameType.SNAPSHOT] == [370, 380, 390]
    assert types[-1] == FrameType.END and [f.offset for f in frames] == sorted(f.offset for f in frames)
    # a damaged frame header: no shortcut (the full reader resynchronises and counts it)
    data = bytearray(path.read_bytes())
    first_snapshot = frames[1].offset + frames[1].size
    damaged = tmp_path / "damaged.wtui"
    damaged.write_bytes(bytes(data[:first_snapshot + 5]) + b"\xff" + bytes(data[first_snapshot + 6:]))
    assert latest_frames(damaged) is None
    # a damaged payload elsewhere is not read here: the frames handed out are each verified
    data[first_snapshot + 40] ^= 0xFF
    damaged.write_bytes(bytes(data))
    assert [f.offset for f in latest_frames(damaged, snapshots=3)] == [f.offset for f in frames]
    data[frames[-2].offset + 40] ^= 0xFF  # ... and one of those damaged: none
    damaged.write_bytes(bytes(data))
    assert latest_frames(damaged, snapshots=3) is None
    # not started, or no snapshot yet
    assert latest_frames(tmp_path / "missing.wtui") is None
    empty = tmp_path / "empty.wtui"
    tui.fixed_log(empty, 0, end=False)
    assert latest_frames(empty) is None
    # a torn final frame (a writer died mid-write) is left out
    torn = tmp_path / "torn.wtui"
    torn.write_bytes(path.read_bytes()[:-10])
    got = latest_frames(torn, snapshots=1)
    assert got is not None and FrameType.END not in [f.type for f in got]
    assert [f.payload["step"] for f in got if f.type == FrameType.SNAPSHOT] == [390]


async def test_before_the_overview_only_quit_works(tmp_path, tui):
    """While the start screen (header only) is up, keys other than q and ctrl+s do nothing, and quitting
    then reads nothing and writes no index."""

    class SlowStart(WeightApp):
        def _boot(self) -> None:  # the overview never comes: the start screen stays
            pass

    path = tmp_path / "run.wtui"
    tui.fixed_log(path, 5)
    app = SlowStart(path, mode="watch")
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause(0.2)
        assert type(app.screen).__name__ == "StartScreen"
        assert "opening run.wtui" in header_lines(app)[1] and " LOADING " in header_lines(app)[0]
        await pilot.press("c", "exclamation_mark", "question_mark", "g", "space")
        assert type(app.screen).__name__ == "StartScreen" and len(app.screen_stack) == 1
        await pilot.press("q")
    assert app.return_code == 0 and app._data is None and app.follower is None


async def test_a_walk_over_its_deadline_says_the_latest_follows(tmp_path, tui, preview_any_size, monkeypatch):
    """A huge log whose header walk gives up (a 10 GiB log: over 0.5 s), with nowhere to write an index
    (a read-only directory and cache): read from its start, the first screen shows an early step and
    says so (LOADING, `indexing N%, the latest follows`), then moves to the latest once read."""
    import os
    import stat

    import weighttui.data.latest as latest

    monkeypatch.setattr(latest, "latest_frames", lambda path, **kw: None)  # the walk's deadline passed
    logs = tmp_path / "ro"
    logs.mkdir()
    path = logs / "big.wtui"
    tui.fixed_log(path, STEPS)
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    os.chmod(cache, stat.S_IRUSR | stat.S_IXUSR)
    os.chmod(logs, stat.S_IRUSR | stat.S_IXUSR)
    last = (STEPS - 1) * 10
    try:
        app = HeldApp(path, mode="watch", alerts=False, follower_options={"chunk_bytes": 16 * 1024})
        async with app.run_test(size=(120, 30)) as pilot:
            await tui.wait_until(pilot, lambda: len(app.held) >= 2, what="deliveries queued")
            assert app._building is None  # no preview
            WeightApp._ingest(app, app.held.pop(0))  # the first part of the log read
            app.pump.refresh_now()
            await pilot.pause()
            lines = header_lines(app)
            assert 0 < app.data.snapshot_count < STEPS and f"step {last} " not in lines[1] + " ", lines
            assert "LOADING" in lines[0] and "%, the latest follows" in lines[1], lines
            app.release()
            await tui.wait_until(pilot, lambda: app.loading is None, what="read")
            await pilot.pause(0.2)
            lines = header_lines(app)
            assert f"step {last} " in lines[1] + " " and "follows" not in lines[1], lines
            assert app.data.snapshot_count == STEPS and app.data.index_path is None
    finally:
        os.chmod(logs, stat.S_IRWXU)
        os.chmod(cache, stat.S_IRWXU)


@pytest.fixture
def walk_gives_up(monkeypatch):
    """The header walk looks at the clock every 3 frames with a deadline already passed: it stops after
    the run, tensors and first snapshot frames, as a walk of a huge log stops within its deadline."""
    import weighttui.data.latest as latest

    monkeypatch.setattr(latest, "CHECK_EVERY", 3)
    monkeypatch.setattr(latest, "walk_deadline", lambda size: 0.0)


def kinds(frames) -> list[tuple[int, int]]:
    return [(f.offset, f.type) for f in frames]


def test_latest_frames_from_the_end_when_the_walk_gives_up(tmp_path, tui, monkeypatch):
    import weighttui.data.latest as latest

    path = tmp_path / "run.wtui"
    tui.fixed_log(path, 40)
    whole = latest_frames(path, snapshots=3)  # the walk to the end
    monkeypatch.setattr(latest, "CHECK_EVERY", 3)
    back = latest_frames(path, snapshots=3, deadline_s=0.0)  # the walk stops; the rest found from the end
    assert back is not None and kinds(back) == kinds(whole)
    assert [f.payload["step"] for f in back if f.type == FrameType.SNAPSHOT] == [370, 380, 390]
    # a torn final frame (a writer died mid-write, or a live one mid-write) is left out, as by the walk
    torn = tmp_path / "torn.wtui"
    torn.write_bytes(path.read_bytes()[:-10])
    got = latest_frames(torn, snapshots=1, deadline_s=0.0)
    assert got is not None and FrameType.END not in [f.type for f in got]
    assert [f.payload["step"] for f in got if f.type == FrameType.SNAPSHOT] == [390]
    torn.write_bytes(path.read_bytes()[:-(len(path.read_bytes()) - whole[-1].offset) + 7])  # a header cut
    got = latest_frames(torn, snapshots=1, deadline_s=0.0)
    assert [f.payload["step"] for f in got if f.type == FrameType.SNAPSHOT] == [390]
    # a live log: the search began while the end frame was being written, and the file grew since
    import os

    fd = os.open(path, os.O_RDONLY)
    try:
        chain = latest._tail_chain(fd, whole[-1].offset + 30, 0, 3)  # (the size as the search began)
    finally:
        os.close(fd)
    assert chain is not None and chain[-1][0] + chain[-1][1] == whole[-1].offset
    assert [o for o, _n, t in chain if t == FrameType.SNAPSHOT] == [f.offset for f in whole
                                                                    if f.type == FrameType.SNAPSHOT]
    # damage in the frames at the end: no shortcut (the full reader resynchronises and counts it)
    data = bytearray(path.read_bytes())
    data[whole[-2].offset + 2] ^= 0xFF  # the last snapshot's sync
    damaged = tmp_path / "damaged.wtui"
    damaged.write_bytes(bytes(data))
    assert latest_frames(damaged, snapshots=3, deadline_s=0.0) is None
    data = bytearray(path.read_bytes())
    data[whole[-2].offset + 40] ^= 0xFF  # its payload
    damaged.write_bytes(bytes(data))
    assert latest_frames(damaged, snapshots=3, deadline_s=0.0) is None


def test_from_the_end_an_appended_run_and_tensors_not_read(tmp_path, tui, monkeypatch):
    import weighttui.data.latest as latest

    monkeypatch.setattr(latest, "CHECK_EVERY", 3)
    monkeypatch.setattr(latest, "walk_deadline", lambda size: 0.0)  # (what preview's walk is given)
    path = tmp_path / "appended.wtui"
    tui.fixed_log(path, 30)
    second = tui.FixedLog(tmp_path / "second.wtui", names=["other.weight"], run_id="1" * 32)
    for s in range(3):
        second.snapshot(s)  # a run restarted from step 0
    with open(path, "ab") as fh, open(second.path, "rb") as src:
        fh.write(src.read()[12:])  # the second run's frames after the first run's (mode="a")
    got = latest_frames(path, snapshots=16, deadline_s=0.0)  # the search reaches the second run's start
    assert got is not None
    assert [f.type for f in got].count(FrameType.RUN) == 2
    assert [f.payload["step"] for f in got if f.type == FrameType.SNAPSHOT] == [0, 1, 2]
    data = latest.preview(path, 0, max_rows=None, min_bytes=0)
    assert data is not None and data.tensor_names == ["other.weight"] and len(data.runs) == 2
    # the second run's start lies where neither the walk nor the search reads (only its last 2
    # snapshots are looked for), and its steps are below the walk's last one: not shown as the first run's
    monkeypatch.setattr(latest, "CHECK_EVERY", 40)  # the walk reads into the first run's snapshots
    assert latest_frames(path, snapshots=2, deadline_s=0.0) is None
    # a tensor declared where nobody read: its snapshots cannot be shown (the preview gives up)
    mid = tmp_path / "declared.wtui"
    log = tui.fixed_log(mid, 30, end=False)
    log.append(encode_frame(FrameType.TENSORS, {"tensors": [
        {"id": len(log.names), "name": "late.weight", "layer": "late", "shape": [6, 6], "dtype": "float32",
         "trainable": True, "sample_index": None}]}))
    log.names.append("late.weight")
    log.prev = None
    for s in range(30, 60):
        log.snapshot(s * 10)
    monkeypatch.setattr(latest, "CHECK_EVERY", 3)
    assert latest_frames(mid, snapshots=3, deadline_s=0.0) is not None  # (the frames are there ...)
    assert latest.preview(mid, 0, max_rows=None, min_bytes=0) is None  # ... but name a tensor not declared
    monkeypatch.setattr(latest, "CHECK_EVERY", 1024)
    assert latest.preview(mid, 0, max_rows=None, min_bytes=0) is not None  # the whole walk: it is declared


async def test_a_walk_that_gives_up_still_shows_the_latest_first(tmp_path, tui, preview_any_size, walk_gives_up):
    """A huge log whose header walk passes its deadline: the latest snapshots are found from the end of the
    file, and the first screen shows the latest step (`history follows`), not an early one."""
    path = tmp_path / "big.wtui"
    tui.fixed_log(path, STEPS)
    last = (STEPS - 1) * 10
    app = HeldApp(path, mode="watch", alerts=False)
    async with app.run_test(size=(120, 30)) as pilot:
        await tui.wait_until(pilot, lambda: app.first_data_at is not None, what="the first screen with data")
        lines = header_lines(app)
        assert app._building is not None and app._building.snapshot_count == 0
        assert f"step {last} " in lines[1] and "history follows" in lines[1], lines
        assert "the latest follows" not in lines[1]
        table = app.screen.query_one(LayerTable)
        assert norm_at_last_step(path, "head.weight") in table.get_cell("t:head.weight", "norm").plain
        app.release()
        await tui.wait_until(pilot, lambda: app._building is None and app.loading is None, what="indexed")
        assert app.data.snapshot_count == STEPS
