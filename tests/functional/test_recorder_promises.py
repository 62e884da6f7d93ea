"""What the Recorder promises a training script (issues 18 and 19), each with a real loop or process.

- scalars every step never push a snapshot or complete values out of the queue;
  a real drop is said once on stderr with its cause;
- one tensor that cannot be recorded skips only itself; keys 1 and "1" collide
  by name and the second is refused; a step that goes back is refused at the
  call: what the writer accepts, the reader reads;
- the end record says what ended the run (exception type and message), SIGTERM
  closes the log as interrupted after flushing what was queued;
- a forked child never writes the parent's log.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import weighttui
from weighttui.data.run import RunData
from weighttui.log.format import FrameType
from weighttui.log.tail import LogTail
from weighttui.record.recorder import Recorder


def toy_loop(rec, steps, per_epoch=8):
    """The README quick start: a snapshot call with scalars every step."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(16, 8)).astype(np.float32)
    b = np.zeros(8, np.float32)
    kept = {}
    for step in range(steps):
        g = rng.normal(size=w.shape).astype(np.float32) * 0.01
        w = w - g
        b = b - 0.01
        loss = float(np.mean(w ** 2))
        epoch = step // per_epoch
        rec.snapshot(step, {"w1": w, "b1": b}, epoch=epoch, grads={"w1": g}, scalars={"loss": loss})
        kept[step] = (w.copy(), b.copy())
    return kept


@pytest.mark.parametrize("steps", [96, 960])
def test_scalars_every_step_never_push_out_snapshots(tmp_path, capfd, steps):
    path = tmp_path / "run.wtui"
    # room for every snapshot and complete-values job on top of the default queue: a writer slower
    # than this tight loop may drop snapshots by design (a timing matter: with room for only the
    # snapshots, 1 of 10 was dropped under load); the promise here is that the scalars of every
    # step never take their place
    with Recorder(path, every=10, full_epochs=[5, 10], queue_size=steps // 10 + 32) as rec:
        kept = toy_loop(rec, steps)
    assert rec.dropped == 0
    assert "dropped" not in capfd.readouterr().err
    run = weighttui.open(path)
    assert run.steps.tolist() == list(range(0, steps, 10))
    assert len(run.scalars("loss")[0]) == steps
    assert run.full_steps  # the complete values asked for are there
    for step in run.full_steps:
        got = run.weights(step)
        assert np.array_equal(got["w1"], kept[step][0]) and np.array_equal(got["b1"], kept[step][1])


def test_real_drops_are_said_once_with_their_cause(tmp_path, capfd, monkeypatch):
    """A writer stuck on the disk: snapshots beyond the queue are dropped, scalars
    are not what fills it, and stderr says so once."""
    path = tmp_path / "run.wtui"
    rec = Recorder(path, queue_size=3)
    release = threading.Event()
    real = os.write
    fd = rec.writer.fd

    def write(f, data):
        if f == fd:
            release.wait(60)
        return real(f, data)

    monkeypatch.setattr(os, "write", write)
    for step in range(20):
        rec.scalars(step, loss=1.0 / (step + 1))
    rec.snapshot(0, {"w": np.ones(4)})
    assert rec.dropped == 0  # 20 scalars took no snapshot's room
    for step in range(1, 12):
        rec.snapshot(step, {"w": np.ones(4) * step}, scalars={"loss": 1.0})
    assert rec.dropped > 0
    release.set()
    rec.close()
    monkeypatch.undo()
    err = capfd.readouterr().err
    lines = [ln for ln in err.splitlines() if "dropped" in ln]
    assert len(lines) == 1 and "snapshots were still waiting to be written" in lines[0]
    run = weighttui.open(path)
    assert run.snapshot_count == rec.written and rec.written + rec.dropped == 12
    assert len(run.scalars("loss")[0]) == 20 + 11  # every scalar made it


def test_one_bad_tensor_skips_only_itself(tmp_path, capfd):
    path = tmp_path / "run.wtui"
    with Recorder(path) as rec:
        for step in range(3):
            assert rec.snapshot(step, {"w": np.array(["a", "b"]), "ok": np.ones(3) * step,
                                       "c": np.ones(2, complex)}) is True
    err = capfd.readouterr().err
    assert err.count("tensor 'w' skipped") == 1 and err.count("tensor 'c' skipped") == 1
    run = weighttui.open(path)
    assert run.tensor_names == ["ok"] and run.steps.tolist() == [0, 1, 2]
    assert sorted(e.kind for e in run.events) == ["tensor_skipped", "tensor_skipped"]


def test_what_the_writer_accepts_the_reader_reads(tmp_path, capfd):
    """Keys 1 and "1" name one tensor; a step counter that restarts each epoch
    goes back: both are refused at the call, with one message each."""
    path = tmp_path / "run.wtui"
    accepted = 0
    with Recorder(path) as rec:
        assert rec.snapshot(0, {1: np.ones(2), "1": np.zeros(2)}) is True
        accepted += 1
        for epoch in range(3):
            for i in range(10):  # restarts at 0 each epoch
                accepted += rec.snapshot(i, {"w": np.full(3, epoch * 10 + i, np.float32)}, epoch=epoch)
    err = capfd.readouterr().err
    assert err.count("skipped: its name is '1'") == 1
    # each later epoch's steps 0..8 go back; its step 9 repeats the last (allowed)
    assert err.count("refused: step") == 1 and rec.refused == 18
    run = weighttui.open(path)
    assert run.corruptions == [] and run.snapshot_count == accepted == 13
    assert run.steps.tolist() == [0] + list(range(10)) + [9, 9]


def test_threads_sharing_a_recorder_lose_nothing_they_were_granted(tmp_path):
    path = tmp_path / "run.wtui"
    counter = iter(range(10_000))
    take = threading.Lock()
    results = []
    with Recorder(path, queue_size=10_000) as rec:

        def work(k):
            for _ in range(300):
                with take:  # a shared global step
                    step = next(counter)
                results.append(rec.snapshot(step, {f"t{k}": np.full(5, step, np.float32)}))

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    run = weighttui.open(path)
    assert run.corruptions == []
    assert run.snapshot_count == sum(results) == rec.written
    assert sum(results) + rec.refused == 1200


# ------------------------------------------------------------------ processes

def run_script(tmp_path, body: str, *args, timeout=120, **kw):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(body))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, **kw)


def test_an_exception_is_stored_in_the_end_record(tmp_path):
    path = tmp_path / "run.wtui"
    with pytest.raises(ValueError):
        with Recorder(path) as rec:
            rec.snapshot(0, {"w": np.ones(2)})
            raise ValueError("loss went to the moon")
    end = weighttui.open(path).end
    assert end.status == "failed" and end.error_type == "ValueError"
    assert end.error_message == "loss went to the moon"
    # uncaught, closed at interpreter exit
    proc = run_script(tmp_path, """
        import sys, numpy as np, weighttui
        rec = weighttui.Recorder(sys.argv[1])
        rec.snapshot(0, {"w": np.ones(2)})
        raise RuntimeError("CUDA out of memory (pretend)")
    """, path)
    assert proc.returncode == 1 and "RuntimeError" in proc.stderr
    end = weighttui.open(path).end
    assert (end.status, end.error_type, end.error_message) == ("failed", "RuntimeError", "CUDA out of memory (pretend)")
    # a clean end stores none
    with Recorder(path) as rec:
        rec.snapshot(0, {"w": np.ones(2)})
    end = weighttui.open(path).end
    assert end.status == "finished" and end.error_type is None and end.error_message is None


def test_sigterm_flushes_the_queue_and_closes_as_interrupted(tmp_path):
    """A burst of snapshots, then SIGTERM before the writer caught up: all of
    them are in the log, the end record says interrupted, and the process
    still dies by SIGTERM."""
    path = tmp_path / "run.wtui"
    proc = run_script(tmp_path, """
        import os, signal, sys, numpy as np, weighttui
        rec = weighttui.Recorder(sys.argv[1], queue_size=64, full_every=1)
        for step in range(20):
            rec.snapshot(step, {"w": np.full((256, 256), step, np.float32)})
        os.kill(os.getpid(), signal.SIGTERM)
        import time; time.sleep(30)
        print("not reached")
    """, path)
    assert proc.returncode == -signal.SIGTERM and "not reached" not in proc.stdout
    run = weighttui.open(path)
    assert run.status == "interrupted" and run.end.error_type == "SIGTERM"
    assert run.steps.tolist() == list(range(20)) and run.full_steps == list(range(20))
    assert run.corruptions == [] and run.end.snapshots == 20


def test_sigterm_handler_of_the_program_is_left_alone(tmp_path):
    path = tmp_path / "run.wtui"
    proc = run_script(tmp_path, """
        import os, signal, sys, numpy as np, weighttui
        stop = []
        signal.signal(signal.SIGTERM, lambda s, f: stop.append(s))
        with weighttui.Recorder(sys.argv[1]) as rec:
            for step in range(100):
                rec.snapshot(step, {"w": np.ones(3)})
                if step == 5:
                    os.kill(os.getpid(), signal.SIGTERM)
                if stop:
                    break
        print("graceful", step)
    """, path)
    assert proc.returncode == 0 and "graceful" in proc.stdout, proc.stderr
    assert weighttui.open(path).status == "finished"


def test_a_forked_child_never_writes_the_parents_log(tmp_path):
    path = tmp_path / "run.wtui"
    proc = run_script(tmp_path, """
        import os, sys, time, numpy as np, weighttui
        rec = weighttui.Recorder(sys.argv[1])
        rec.snapshot(0, {"w": np.ones(3)})
        pids = []
        for how in ("exit", "close"):
            pid = os.fork()
            if pid == 0:  # a DataLoader worker, a multiprocessing child
                rec.snapshot(99, {"w": np.zeros(3)})
                rec.scalars(99, loss=1.0)
                # the parent's writer thread does not exist here: waiting for it is what took 30 s
                rec.writer.close = lambda *a, **k: print("child waited for the writer", flush=True)
                if how == "close":
                    rec.close()
                print(how, "child done", flush=True)
                sys.exit(0)  # runs atexit: the parent's recorder must stay untouched
            pids.append(pid)
        for pid in pids:
            os.waitpid(pid, 0)
        for step in range(1, 5):
            rec.snapshot(step, {"w": np.ones(3) * step})
        rec.close()
    """, path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("child done") == 2 and "waited" not in proc.stdout
    run = weighttui.open(path)
    assert run.steps.tolist() == [0, 1, 2, 3, 4] and run.scalar_names == []
    assert run.corruptions == [] and run.status == "finished"
    ends = [f for f in LogTail(path).poll().frames if f.type == FrameType.END]
    assert len(ends) == 1


# ---------------------------------------------------------------- the log file

def test_close_never_closes_a_descriptor_under_a_stuck_writer(tmp_path, capfd):
    """A FIFO whose reader stalls stands in for a hung mount: close() returns
    after its timeout without closing the descriptor the writer thread is
    blocked on; the next file the program opens gets another number; when the
    stall ends the thread finishes its frame and closes its descriptor."""
    path = tmp_path / "run.wtui"
    fifo = tmp_path / "hung"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    rec = Recorder(path, full_every=1, close_timeout=0.5)
    fd = rec.writer.fd
    stalled = os.open(fifo, os.O_WRONLY)
    os.dup2(stalled, fd)  # the log's descriptor now blocks once the pipe is full
    os.close(stalled)
    for step in range(4):
        rec.snapshot(step, {"w": np.full((256, 256), step, np.float32)})  # 256 kB of values each
    rec.close()
    thread = rec.writer._thread
    assert thread.is_alive()  # close() returned while the write is still blocked
    assert os.path.samefile(f"/proc/self/fd/{fd}", fifo)  # the descriptor is still the writer's
    other = tmp_path / "checkpoint.bin"
    with open(other, "wb") as fh:
        assert fh.fileno() != fd
        fh.write(b"user data")
    err = capfd.readouterr().err
    stuck = [ln for ln in err.splitlines() if "stuck in write()" in ln]
    assert len(stuck) == 1 and "left unwritten" in stuck[0] and "no end record" in stuck[0]
    while thread.is_alive():  # the mount comes back
        try:
            os.read(reader, 1 << 20)
        except BlockingIOError:
            pass
        thread.join(0.01)
    os.close(reader)
    assert other.read_bytes() == b"user data"
    with pytest.raises(OSError):
        os.fstat(fd)  # closed by the thread, once it was done with it


@pytest.mark.parametrize("kind", ["fifo", "socket", "directory"])
def test_a_special_file_is_refused_with_one_line(tmp_path, kind):
    """In a child with a deadline: a FIFO must not hang the constructor."""
    path = tmp_path / "run.sock"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    proc = run_script(tmp_path, """
        import socket, sys, numpy as np, weighttui
        path, kind = sys.argv[1], sys.argv[2]
        if kind == "socket":
            s = socket.socket(socket.AF_UNIX); s.bind(path)
        rec = weighttui.Recorder(path)
        for step in range(5):
            rec.snapshot(step, {"w": np.ones(3)})
        rec.close()
        print("active", rec.active)
    """, path, kind, timeout=60)
    assert proc.returncode == 0 and "active False" in proc.stdout, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("weighttui")]
    assert len(lines) == 1 and "not a regular file" in lines[0], proc.stderr


def test_a_second_recorder_on_the_same_file_closes_the_first(tmp_path, capfd):
    """A notebook cell run twice without close(): the earlier recorder is closed
    (said once), the log stays readable."""
    path = tmp_path / "run.wtui"
    first = Recorder(path)
    first.snapshot(0, {"w": np.ones(3)})
    second = Recorder(path, mode="a")
    assert not first.active
    second.snapshot(0, {"w": np.ones(3)})
    first.snapshot(1, {"w": np.ones(3)})  # the old handle: nothing, no error
    second.close()
    err = capfd.readouterr().err
    assert err.count("closing the earlier recorder") == 1
    run = weighttui.open(path)
    assert len(run.runs) == 2 and run.corruptions == [] and run.status == "finished"
    assert [r.status for r in run.runs] == ["interrupted", "finished"]


def test_a_log_truncated_under_the_writer_starts_again(tmp_path):
    """`: > run.sock` or logrotate copytruncate while a real writer runs: the
    writer notices, writes a header, the run and its tensors again, says so
    once, and the rest of the run reads."""
    path = tmp_path / "run.wtui"
    go = tmp_path / "truncated"
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import os, sys, time, numpy as np, weighttui
        path, go = sys.argv[1], sys.argv[2]
        with weighttui.Recorder(path) as rec:
            for step in range(40):
                rec.snapshot(step, {"w": np.full(8, step, np.float32), "b": np.ones(2)})
                time.sleep(0.01)
                if step == 19:
                    print("ready", flush=True)
                    while not os.path.exists(go):
                        time.sleep(0.01)
    """), str(path), str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p)))
    assert proc.stdout.readline().strip() == "ready"
    follower = RunData(path)  # a viewer following the live log
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until the writer thread has written step 19
        follower.refresh()
        if follower.n == 20:
            break
        time.sleep(0.02)
    assert follower.steps.tolist() == list(range(20))
    with open(path, "r+b") as fh:
        fh.truncate(0)
    go.touch()
    out, err = proc.communicate(timeout=60)
    follower.refresh()  # the viewer follows the new start
    assert follower.steps.tolist() == list(range(20, 40)) and follower.status == "finished"
    assert proc.returncode == 0, err
    assert err.count("was truncated while being written") == 1
    run = weighttui.open(path)
    assert run.corruptions == [] and run.status == "finished"
    assert run.steps.tolist() == list(range(20, 40)) and run.tensor_names == ["w", "b"]
    assert np.array_equal(run.series("w", "mean")[1], np.arange(20, 40))
    assert [e.kind for e in run.events] == ["truncated"]


def test_a_torn_header_then_append_starts_anew(tmp_path, capfd):
    """A writer killed while writing the header, restarted with mode="a": every
    prefix length is an empty log, said once; through watch() too."""
    from weighttui.log.format import HEADER

    path = tmp_path / "run.wtui"
    for n in range(1, len(HEADER)):
        path.write_bytes(HEADER[:n])
        with Recorder(path, mode="a") as rec:
            assert rec.snapshot(0, {"w": np.ones(2)})
        run = weighttui.open(path)
        assert run.snapshot_count == 1 and run.corruptions == [] and len(run.runs) == 1
    assert capfd.readouterr().err.count("held only the start of a header") == len(HEADER) - 1
    torch = pytest.importorskip("torch")
    import weighttui.torch as wt

    path.write_bytes(HEADER[:3])
    with wt.watch(torch.nn.Linear(2, 2), path, mode="a"):
        pass
    assert weighttui.open(path).status == "finished"
