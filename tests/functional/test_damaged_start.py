"""A log whose start is damaged (issue 19, item 9): every reader finds the first header or
verified frame after the damage, reads every intact run after it and reports the damaged start
as a corruption at offset 0; a file that is not a log is still refused with one line.

Damage kinds: the magic bytes overwritten, the first bytes of the header rewritten, garbage
prepended, the first bytes cut off, a zeroed first block (a run appended after it survives), a
second writer's header after the first writer's frames. Readers: `weighttui.open()` without an
index, building one, and reopening from it; `weighttui info` (text and --json) and `export`;
LogTail (live, frames appended after the damage, and the damage done under a reader); a
Recorder appending with mode="a"; directory discovery. The ssh mirror is in test_remote.py, the
viewer in tests/tui/test_damaged_start.py, the decoder's rule in tests/unit/test_core_format.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from logbuilder import layer_params, recorder_log

import weighttui
import weighttui.log.format as fmt
from weighttui import Recorder, cli
from weighttui.analysis.multirun import DirectoryWatch
from weighttui.data.run import RunData
from weighttui.data.store import index as store_index
from weighttui.log.format import HEADER, FrameType, LogFormatError, encode_frame
from weighttui.log.sniff import HeadState, sniff_file
from weighttui.log.tail import LogTail

RNG = np.random.default_rng(9)


def _two_runs(path) -> bytes:
    """A log of two runs (the second appended with mode="a"), the first longer than 4 KiB."""
    recorder_log(path, steps=6)
    recorder_log(path, steps=5, mode="a")
    return path.read_bytes()


# name -> (damaged bytes from the intact ones, the run index of the intact log the latest run equals)
DAMAGE = {
    "magic_overwritten": (lambda d: b"\0" * 8 + d[8:], 1),
    "header_rewritten": (lambda d: b"XY" + d[2:], 1),
    "garbage_prepended": (lambda d: RNG.bytes(5000) + d, 1),
    "start_cut_off": (lambda d: d[4:], 1),
    "zeroed_first_block": (lambda d: b"\0" * 4096 + d[4096:], 1),
    # a second writer truncated the log: the first writer's next frames landed before its header
    "frames_before_the_header": (lambda d: encode_frame(FrameType.SCALARS, {
        "step": 99, "epoch": None, "time": 1.0, "values": {"loss": 0.5}}) + d, 1),
}


@pytest.fixture(scope="module")
def intact(tmp_path_factory):
    path = tmp_path_factory.mktemp("intact") / "run.wtui"
    data = _two_runs(path)
    assert len(data) > 8192 and weighttui.open(path, run=1).runs[1].offset > 4096
    return path, data


def _same_run(got, want):
    assert got.run.run_id == want.run.run_id
    assert list(got.steps) == list(want.steps) and got.status == want.status == "finished"
    assert got.tensor_names == want.tensor_names
    for name in want.tensor_names:
        for stat in ("norm", "mean"):
            np.testing.assert_array_equal(got.series(name, stat)[1], want.series(name, stat)[1])
    assert got.scalar_names == want.scalar_names


def _damaged(tmp_path, intact, kind):
    _path, data = intact
    path = tmp_path / f"{kind}.wtui"
    path.write_bytes(DAMAGE[kind][0](data))
    return path


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_open_reads_every_intact_run_after_a_damaged_start(tmp_path, intact, kind, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(store_index, "MIN_LOG_BYTES", 0)  # index these small logs too
    path = _damaged(tmp_path, intact, kind)
    want = weighttui.open(intact[0], run=DAMAGE[kind][1], cache=False)
    for cache in (False, True, True):  # no index; building one; reopening from it
        got = weighttui.open(path, cache=cache)
        _same_run(got, want)
        assert got.corruptions[0] == 0, got.corruptions
        assert "bad magic bytes" in got.corruption_reasons[0]
        if kind in ("magic_overwritten", "header_rewritten", "garbage_prepended", "start_cut_off"):
            assert got.corruptions == [0] and len(got.runs) == 2  # nothing else was lost
            _same_run(weighttui.open(path, run=0, cache=cache), weighttui.open(intact[0], run=0, cache=False))
    assert got.index_path is not None  # the third open was served by the index
    skipped = {"garbage_prepended": "5000 bytes skipped to the file header at offset 5000",
               "magic_overwritten": "12 bytes skipped to the frame at offset 12",
               "start_cut_off": "8 bytes skipped to the frame at offset 8",
               "frames_before_the_header": "the file starts with a frame"}
    if kind in skipped:
        assert skipped[kind] in got.corruption_reasons[0]


@pytest.mark.parametrize("kind", ["garbage_prepended", "zeroed_first_block", "frames_before_the_header"])
def test_info_and_export_report_the_damaged_start(tmp_path, intact, kind, capsys):
    path = _damaged(tmp_path, intact, kind)
    assert sniff_file(path).state is HeadState.LOG and sniff_file(path).damaged
    assert cli.main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    damage = [ln for ln in out.splitlines() if "DAMAGE" in ln]
    assert len(damage) == 1 and "first at byte 0 (file header" in damage[0] and "bad magic bytes" in damage[0]
    assert "status: finished" in out and "snapshots: 5" in out
    assert cli.main(["info", str(path), "--json", "--no-cache"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["corruptions"][0] == 0 and "bad magic bytes" in doc["damage"]["corrupt_reasons"][0]
    assert doc["snapshots"] == 5 and doc["status"] == "finished"
    out_csv = tmp_path / "s.csv"
    assert cli.main(["export", str(path), "--format", "csv", "--out", str(out_csv)]) == 0
    assert out_csv.stat().st_size > 0


FOREIGN = {
    "png": b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(RNG.bytes(20_000)),
    "text": b"epoch 1 loss 0.5\n" * 2000,
    "zip": b"PK\x03\x04" + bytes(RNG.bytes(3000)),
    "random_1mib": bytes(RNG.bytes(1 << 20)),
    "short": b"hello",
    "zeros": b"\0" * 100_000,
}


@pytest.mark.parametrize("kind", sorted(FOREIGN))
def test_a_file_that_is_not_a_log_is_still_refused_with_one_line(tmp_path, kind):
    path = tmp_path / f"{kind}.bin"
    path.write_bytes(FOREIGN[kind])
    with pytest.raises(LogFormatError, match=r"^not a weighttui run log \(bad magic bytes\)$"):
        weighttui.open(path)
    with pytest.raises(LogFormatError, match="bad magic bytes"):
        LogTail(path).poll()
    assert sniff_file(path).state is HeadState.FOREIGN
    proc = subprocess.run([sys.executable, "-c", "import sys; from weighttui.cli import main; sys.exit(main())",
                           "info", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "weighttui: not a weighttui run log (bad magic bytes)"


def test_a_header_or_frame_must_begin_within_the_search_bound(tmp_path, intact, monkeypatch):
    """The rule (docs/FORMAT.md): a damaged start is searched for a header or verified frame
    header in the file's first START_SEARCH bytes (64 MiB), here made 4 KiB to test its edge."""
    monkeypatch.setattr(fmt, "START_SEARCH", 4096)
    data = intact[1]
    near, far = tmp_path / "near.wtui", tmp_path / "far.wtui"
    near.write_bytes(b"\0" * 4000 + data)
    far.write_bytes(b"\0" * 4200 + data)
    assert weighttui.open(near, cache=False).corruptions[0] == 0
    with pytest.raises(LogFormatError, match="bad magic bytes"):
        weighttui.open(far, cache=False)
    with pytest.raises(LogFormatError, match="bad magic bytes"):
        LogTail(far).poll()
    assert sniff_file(far).state is HeadState.FOREIGN and sniff_file(near).state is HeadState.LOG


def _flush(rec):
    import time

    deadline = time.monotonic() + 20
    while rec.written < rec.queued and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rec.written == rec.queued


def test_logtail_follows_a_log_damaged_at_its_start_as_frames_are_appended(tmp_path):
    """Live: the first bytes of a log being written are overwritten; a reader that starts then
    skips them and follows what the writer goes on appending; a reader that was already
    following notices the rewrite and reads the file again from its start."""
    path = tmp_path / "live.wtui"
    rec = Recorder(path)
    try:
        rec.snapshot(0, layer_params(0))
        _flush(rec)
        before = LogTail(path)
        assert before.poll().frames and before.offset > 0
        fd = os.open(path, os.O_WRONLY)
        os.pwrite(fd, b"\0" * 8, 0)  # someone's dd over the first bytes; the writer goes on
        os.close(fd)
        tail = LogTail(path)
        first = tail.poll()
        assert [c.offset for c in first.corruptions] == [0] and first.waiting is None
        assert "12 bytes skipped" in first.corruptions[0].reason
        run = RunData(None)
        run.ingest(first)
        assert run.n == 1
        again = before.poll()
        assert again.reset and [c.offset for c in again.corruptions] == [0]
        for step in range(1, 4):
            rec.snapshot(step, layer_params(step))
        _flush(rec)
        more = tail.poll()
        assert not more.corruptions and not more.reset
        run.ingest(more)
        assert list(run.steps) == [0, 1, 2, 3] and run.corruptions == [0]
    finally:
        rec.close()
    run.ingest(tail.poll())
    assert run.status == "finished" and run.corruptions == [0]


def test_logtail_waits_on_a_damaged_start_then_reads_the_frames_appended_after_it(tmp_path):
    """Garbage ending in the first bytes of a frame header is not decided yet (waiting); once the
    writer's frames arrive the start is skipped and everything after it is read."""
    path = tmp_path / "late.wtui"
    recorder_log(tmp_path / "src.wtui", steps=3)
    frames = (tmp_path / "src.wtui").read_bytes()[len(HEADER):]
    garbage = bytes(RNG.bytes(700)).replace(fmt.SYNC, b"").replace(fmt.MAGIC, b"")
    path.write_bytes(garbage + frames[:6])  # the sync and two bytes of the first frame header
    tail = LogTail(path)
    poll = tail.poll()
    assert poll.waiting == "no header" and not poll.frames and not poll.corruptions
    with open(path, "ab") as fh:
        fh.write(frames[6:])
    poll = tail.poll()
    assert [c.offset for c in poll.corruptions] == [0] and len(poll.frames) >= 5
    assert poll.frames[0].offset == len(garbage)


def test_a_recorder_appends_a_run_to_a_log_with_a_damaged_start(tmp_path):
    path = tmp_path / "again.wtui"
    recorder_log(path, steps=3)
    data = path.read_bytes()
    path.write_bytes(b"\0" * 8 + data[8:])
    recorder_log(path, steps=4, mode="a")  # training restarted on the damaged log
    run = weighttui.open(path, cache=False)
    assert len(run.runs) == 2 and list(run.steps) == [0, 1, 2, 3] and run.corruptions == [0]
    path.write_bytes(b"hello, not a log at all" * 100)
    with pytest.raises(LogFormatError, match="cannot append"):
        Recorder(path, mode="a")  # a file that is not a log is still refused, untouched
    assert path.read_bytes() == b"hello, not a log at all" * 100


def test_directory_discovery_finds_a_log_whose_start_is_damaged(tmp_path, intact):
    (tmp_path / "a.wtui").write_bytes(b"\0" * 4096 + intact[1][4096:])
    (tmp_path / "notes.txt").write_bytes(b"not a log\n" * 1000)
    watch = DirectoryWatch(tmp_path)
    found = watch.scan()
    assert found.logs == [str(tmp_path / "a.wtui")]
    assert found.ignored == [(str(tmp_path / "notes.txt"), "not a weighttui run log (bad magic bytes)")]


def test_a_log_damaged_after_it_was_indexed_or_read_is_read_again_from_its_start(tmp_path, monkeypatch):
    """The index and an open RunData know the log by its first bytes: overwriting them in place
    (same inode, same size) makes both read it again, now as a log with a damaged start."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(store_index, "MIN_LOG_BYTES", 0)
    path = tmp_path / "run.wtui"
    recorder_log(path, steps=5)
    held = weighttui.open(path)
    assert held.index_path is not None and held.corruptions == []
    fd = os.open(path, os.O_WRONLY)
    os.pwrite(fd, b"\0" * 8, 0)
    os.close(fd)
    again = weighttui.open(path)  # the index's identity no longer matches: read from the log
    assert again.corruptions == [0] and list(again.steps) == list(range(5))
    assert held.refresh() and held.resets == 1
    assert held.corruptions == [0] and list(held.steps) == list(range(5))
    assert weighttui.open(path).corruptions == [0]  # and the index rebuilt for the damaged log serves it
