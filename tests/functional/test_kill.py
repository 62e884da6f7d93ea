"""SIGKILL the writer at random moments: every completed frame is recovered.

Each raw trial forks a tiny writer that appends frames to a log as fast as it
can (each frame in one to three write() pieces, as a short write or a slow
disk would leave it) and, after every complete frame, appends one byte to a
side file: the side file's size is the number of frames the writer knows it
finished. The parent follows the log live with a LogTail, SIGKILLs the writer
after a random 5-200 ms, and checks that the live reader and a fresh
`weighttui.open` both recovered exactly those frames (or one more: the kill
can land between the frame and its side-file byte), with no corruption and at
most a torn tail shorter than the next frame.

A few more trials kill a real `Recorder` (writer thread, queue) in a child
process, then append a new run to the torn log with mode="a".

WEIGHTTUI_KILL_TRIALS sets the number of raw trials (default 100; e.g. 10 for
a quick run).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import zlib

import numpy as np
import pytest

import weighttui
from weighttui.log.format import HEADER, FrameType, encode_frame
from weighttui.log.tail import LogTail

TRIALS = int(os.environ.get("WEIGHTTUI_KILL_TRIALS", "100"))
RECORDER_TRIALS = max(2, TRIALS // 12)


def frame_for(seed: int, i: int) -> bytes:
    """The i-th frame a writer with this seed appends (deterministic, 10 B..300 KB)."""
    rng = random.Random(seed * 1_000_003 + i)
    size = rng.choice((10, 100, 1000, 20_000, 300_000))
    pad = rng.randbytes(rng.randrange(size))
    return encode_frame(FrameType.SCALARS, {"step": i, "epoch": None, "time": 1.0,
                                            "values": {"i": float(i)}, "pad": pad})


def run_frame(seed: int) -> bytes:
    return encode_frame(FrameType.RUN, {"run_id": f"{seed:x}", "created": 1.0, "bins": 8})


def writer(path: str, side: str, seed: int) -> None:
    """The child: append frames until killed. Never returns."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o644)
        sfd = os.open(side, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o644)
        os.write(fd, HEADER + run_frame(seed))
        rng = random.Random(seed)
        i = 0
        while True:
            frame = frame_for(seed, i)
            cuts = sorted(rng.randrange(1, len(frame)) for _ in range(rng.randrange(3)))
            start = 0
            for cut in cuts + [len(frame)]:
                piece = memoryview(frame)[start:cut]
                while piece:
                    piece = piece[os.write(fd, piece):]
                start = cut
                if cut < len(frame) and rng.random() < 0.5:
                    time.sleep(0.0005)  # a slow disk between the pieces of one frame
            os.write(sfd, b"x")
            i += 1
    finally:
        os._exit(0)


def check_frames(frames, seed: int) -> None:
    """Frames are the run frame, then frames 0, 1, 2 ... byte-for-byte as written."""
    assert frames[0].type == FrameType.RUN and frames[0].payload["run_id"] == f"{seed:x}"
    for i, f in enumerate(frames[1:]):
        expected = frame_for(seed, i)
        assert f.size == len(expected)
        assert f.payload["step"] == i
        assert zlib.crc32(f.payload["pad"]) == zlib.crc32(
            msgpack_pad(expected)), f"frame {i} payload differs"


def msgpack_pad(frame: bytes) -> bytes:
    import msgpack

    return msgpack.unpackb(frame[16:-4], raw=False)["pad"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_sigkill_raw_writer_random_moments(tmp_path):
    # The trials fork, so they run in a fresh interpreter: forking the test
    # process after other tests started threads (JAX, torch) risks a deadlock.
    proc = subprocess.run([sys.executable, __file__, "raw-trials", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def raw_trials(tmp_path) -> None:
    torn_trials = 0
    recovered_total = 0
    master = random.Random(12345)
    for trial in range(TRIALS):
        path, side = str(tmp_path / f"k{trial}.wtui"), str(tmp_path / f"k{trial}.side")
        seed = master.randrange(1 << 30)
        delay = master.uniform(0.005, 0.2)
        tail = LogTail(path)
        live_frames, live_corrupt = [], []
        pid = os.fork()
        if pid == 0:
            writer(path, side, seed)
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline:  # a viewer follows the log while it grows
            poll = tail.poll()
            live_frames += poll.frames
            live_corrupt += poll.corruptions
            time.sleep(0.003)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        poll = tail.poll()
        live_frames += poll.frames
        live_corrupt += poll.corruptions

        logged = os.path.getsize(side) if os.path.exists(side) else 0
        size = os.path.getsize(path) if os.path.exists(path) else 0
        if size == 0:  # killed before the first write: nothing to recover
            assert logged == 0 and not live_frames
            continue
        data = weighttui.open(path)
        whole = data.record_counts["scalars"]
        # every frame the writer finished is there; at most the one it was logging
        assert logged <= whole <= logged + 1, (trial, logged, whole)
        assert data.corruptions == [] and live_corrupt == []
        check_frames(live_frames, seed)
        assert len(live_frames) == whole + 1  # the live follower saw the same frames
        steps, values = data.scalars("i") if whole else (np.zeros(0), np.zeros(0))
        assert steps.tolist() == list(range(whole)) and values.tolist() == list(map(float, range(whole)))
        # what is left is a torn tail: a strict prefix of the next frame
        end = live_frames[-1].offset + live_frames[-1].size
        assert data.torn_tail == tail.pending == size - end
        if data.torn_tail:
            torn_trials += 1
            nxt = frame_for(seed, whole)
            assert data.torn_tail < len(nxt)
            with open(path, "rb") as fh:
                fh.seek(end)
                assert fh.read() == nxt[: data.torn_tail]
            if torn_trials % 3 == 1:
                append_after_torn_tail(path, whole)
        recovered_total += whole
        tail.close()
    print(f"\n{TRIALS} SIGKILL trials: {recovered_total} frames recovered, "
          f"{torn_trials} torn tails, 0 lost, 0 corruptions")
    if TRIALS >= 20:
        assert torn_trials > 0, "no kill landed inside a frame: the test lost its point"
        assert recovered_total > 0


def append_after_torn_tail(path: str, frames_before: int) -> None:
    """A writer restarted with mode="a" on a torn log: its run is read whole."""
    with weighttui.Recorder(path, mode="a") as rec:
        for step in range(3):
            rec.snapshot(step, {"w": np.full(2, step, np.float32)})
    data = weighttui.open(path)
    assert len(data.runs) == 2 and data.status == "finished"
    assert data.steps.tolist() == [0, 1, 2]
    assert len(data.corruptions) == 1  # the torn frame, now followed by data, is damage
    first = weighttui.open(path, run=0)
    assert first.record_counts["scalars"] == frames_before


RECORDER_CHILD = textwrap.dedent('''
    import sys
    import numpy as np
    import weighttui
    rec = weighttui.Recorder(sys.argv[1], queue_size=100000, sample=4, full_every=7, meta={"k": 1})
    base = np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8)
    print("ready", flush=True)
    step = 0
    while True:
        rec.snapshot(step, {"a.weight": base + step, "a.bias": np.full(8, step, np.float32)},
                     grads={"a.weight": base * step}, scalars={"loss": 1.0 / (step + 1)})
        step += 1
''')


def test_sigkill_recorder_then_append_a_new_run(tmp_path):
    """Kill a real Recorder mid-run, read the wreck, then restart with mode="a"."""
    rng = random.Random(7)
    torn_before_append = killed_mid_run = 0
    for trial in range(RECORDER_TRIALS):
        path = tmp_path / f"r{trial}.wtui"
        proc = subprocess.Popen([sys.executable, "-c", RECORDER_CHILD, str(path)],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.02, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()

        data = weighttui.open(path)
        assert data.corruptions == []
        assert data.end is None and data.status == "unfinished"  # the writer is gone
        n = data.snapshot_count
        steps = data.steps
        assert steps.tolist() == list(range(n))  # nothing lost in the middle
        if n:
            _s, means = data.series("a.weight", "mean")
            np.testing.assert_allclose(means, steps, atol=1e-5)  # each row is its own step
            _s, bias = data.series("a.bias", "max")
            assert bias.tolist() == [float(s) for s in steps]
            killed_mid_run += 1
        for step in data.full_steps[:-1]:  # complete values read back exactly
            w = data.weights(step=step)
            np.testing.assert_array_equal(w["a.bias"], np.full(8, step, np.float32))
        torn_before_append += data.torn_tail > 0

        # a new run appended to the wreck is read whole, the torn tail notwithstanding
        with weighttui.Recorder(path, mode="a") as rec:
            for step in range(5):
                rec.snapshot(step, {"b": np.full(3, step, np.float32)})
        after = weighttui.open(path)
        assert len(after.runs) == 2
        assert after.status == "finished" and after.steps.tolist() == list(range(5))
        assert after.tensor_names == ["b"]
        assert len(after.corruptions) == (1 if data.torn_tail else 0)
        first = weighttui.open(path, run=0)
        assert first.snapshot_count == n and first.steps.tolist() == steps.tolist()
    print(f"\n{RECORDER_TRIALS} Recorder kills, {killed_mid_run} after the first snapshot, "
          f"{torn_before_append} left a torn tail")
    assert killed_mid_run > 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["raw-trials"]:
        from pathlib import Path

        raw_trials(Path(sys.argv[2]))
