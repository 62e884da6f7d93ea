"""weighttui.data.remote without a network: the spec parser, the quoting, and the
mirror driven through a stand-in `ssh` that runs the remote command with the
local /bin/sh (so the real quoting, head/od/tail pipeline and reconnect logic
run; tests/e2e/test_remote_ssh.py does the same against a real sshd).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import types
import uuid

import numpy as np
import pytest

import weighttui
from weighttui.data.remote import (
    RemoteMirror,
    RemoteSpec,
    default_cache_path,
    parse_remote,
    quote_remote_path,
    remote_command,
    ssh_base_command,
)
from weighttui.log.format import HEADER, FrameType, encode_frame
from weighttui.record.recorder import Recorder

# ------------------------------------------------------------------ parser


@pytest.mark.parametrize("text, expected", [
    ("me@box:/runs/a.sock", RemoteSpec("box", "/runs/a.sock", user="me")),
    ("box:run.sock", RemoteSpec("box", "run.sock")),
    ("box:~/runs/a b.sock", RemoteSpec("box", "~/runs/a b.sock")),
    ("me@10.0.0.5:/r/x:y.sock", RemoteSpec("10.0.0.5", "/r/x:y.sock", user="me")),
    ("me@[::1]:/x.sock", RemoteSpec("[::1]", "/x.sock", user="me")),
    ("ssh://me@box:2222/runs/a%20b.sock", RemoteSpec("box", "/runs/a b.sock", user="me", port=2222)),
    ("ssh://box/~/r.sock", RemoteSpec("box", "r.sock")),
    ("ssh://box/abs.sock", RemoteSpec("box", "/abs.sock")),
    ("ssh://me@[::1]:22/x", RemoteSpec("[::1]", "/x", user="me", port=22)),
])
def test_parse_remote_specs(text, expected):
    assert parse_remote(text) == expected


@pytest.mark.parametrize("text", ["run.sock", "./a:b.sock", "dir/x:y.sock", "/abs/p:q.sock", ":nohost"])
def test_local_paths_stay_local(text):
    assert parse_remote(text) is None


def test_existing_local_path_with_colon_stays_local(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "host:run.sock").write_bytes(HEADER)
    assert parse_remote("host:run.sock") is None
    assert parse_remote("other:run.sock") == RemoteSpec("other", "run.sock")


@pytest.mark.parametrize("text", ["-oProxyCommand=touch x:/p", "box:", "box:/dir/", "me@-x:/p", "@box:/p",
                                  "ssh://box", "ssh://box/", "ssh://box:notaport/p", "ssh://box/p?x=1",
                                  "bad host:/p", "box:/a\nb"])
def test_malformed_remote_specs_are_rejected(text):
    with pytest.raises(ValueError):
        parse_remote(text)


def test_spec_round_trips_through_str():
    for text in ["me@box:/runs/a.sock", "box:run.sock", "ssh://me@box:2222/runs/a.sock", "ssh://box:2/~/r.sock"]:
        spec = parse_remote(text)
        assert parse_remote(str(spec)) == spec


def test_ssh_argv_ends_options_before_the_host():
    spec = parse_remote("ssh://me@[::1]:2222/x")
    assert spec.ssh_args() == ["-p", "2222", "-l", "me", "--", "::1"]
    base = ssh_base_command("ssh -F '/my config'")
    assert base[:3] == ["ssh", "-F", "/my config"] and "BatchMode=yes" in base


def test_cache_path_is_per_spec(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    a, b = default_cache_path(parse_remote("ha:/r.sock")), default_cache_path(parse_remote("hb:/r.sock"))
    assert a != b and a.startswith(str(tmp_path / "weighttui" / "remote"))


# ---------------------------------------------------------------- quoting

NASTY = ["plain.sock", "with space.sock", "it's.sock", 'dq"x.sock', "$(touch {m}).sock", "`touch {m}`.sock",
         "semi;touch {m}.sock", "a\\b.sock", "-leading-dash.sock", "*glob?.sock", "tab\there.sock",
         "new'\"$(touch {m});`touch {m}`'.sock"]


@pytest.mark.parametrize("name", NASTY)
def test_remote_command_quotes_every_name(tmp_path, name):
    """The command the remote shell runs reads exactly the named file and runs nothing else."""
    marker = f"pwned-{uuid.uuid4().hex}"  # relative: an injected `touch` would make it in cwd
    target = tmp_path / name.format(m=marker)
    target.write_bytes(HEADER + b"payload")
    out = subprocess.run(["sh", "-c", remote_command(str(target), 3, 8, follow=False)], capture_output=True,
                         timeout=10, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    line, _, rest = out.stdout.partition(b"\n")
    assert bytes.fromhex(line.decode()) == (HEADER + b"payload")[:8]
    assert rest == (HEADER + b"payload")[3:]
    assert sorted(os.listdir(tmp_path)) == [target.name]  # nothing else was created


def test_home_relative_paths_keep_the_tilde(tmp_path):
    assert quote_remote_path("~/my runs/a.sock") == "~/'my runs/a.sock'"
    home = tmp_path / "home"
    (home / "my runs").mkdir(parents=True)
    (home / "my runs" / "a.sock").write_bytes(HEADER)
    env = dict(os.environ, HOME=str(home))
    out = subprocess.run(["sh", "-c", remote_command("~/my runs/a.sock", 0, 0, follow=False)],
                         capture_output=True, env=env, timeout=10)
    assert out.stdout == b"\n" + HEADER


# ------------------------------------------------------ mirror, local "ssh"

FAKE_SSH = r"""#!/bin/sh
# Stands in for ssh: skip options up to '--', drop the host, run the command
# with sh as sshd would with the user's shell.
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do shift; done
shift 2
echo "$$" >> "$FAKE_SSH_PIDS"
exec sh -c "$1"
"""


@pytest.fixture
def fake_ssh(tmp_path, monkeypatch):
    script = tmp_path / "fake-ssh"
    script.write_text(FAKE_SSH)
    script.chmod(0o755)
    monkeypatch.setenv("FAKE_SSH_PIDS", str(tmp_path / "pids"))
    return str(script)


def wait_until(cond, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def flush(rec: Recorder):
    wait_until(lambda: rec.written == rec.queued, what="the recorder's writer")


def train(rec: Recorder, steps, seed=0):
    rng = np.random.default_rng(seed)
    w = {"dense/kernel": rng.normal(size=(8, 4)).astype(np.float32), "dense/bias": np.zeros(4, np.float32)}
    for step in steps:
        grads = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in w.items()}
        w = {k: v - 0.1 * grads[k] for k, v in w.items()}
        rec.snapshot(step, w, grads=grads, scalars={"loss": 1.0 / (1 + step)})
    flush(rec)


def same_bytes(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return fa.read() == fb.read()


def test_mirror_follows_resumes_and_restarts(tmp_path, fake_ssh):
    remote = tmp_path / "runs dir" / "it's $(x); a.sock"
    remote.parent.mkdir()
    local = tmp_path / "mirror.wtui"
    rec = Recorder(remote, bins=16)
    train(rec, range(0, 5))
    mirror = RemoteMirror(RemoteSpec("box", str(remote)), str(local), ssh_command=fake_ssh,
                          backoff=(0.02, 0.2)).start()
    try:
        assert mirror.wait_connected()
        wait_until(lambda: same_bytes(remote, local), what="the first copy")
        assert weighttui.open(local).steps.tolist() == list(range(5))

        # a dropped connection: what was written meanwhile arrives after the reconnect
        connects = mirror.state.connects
        mirror.kill_connection()
        train(rec, range(5, 9), seed=1)
        wait_until(lambda: mirror.state.connects > connects and same_bytes(remote, local), what="resume")
        assert weighttui.open(local).steps.tolist() == list(range(9))

        # a torn frame on the remote side never reaches the mirror
        frame = encode_frame(FrameType.SCALARS, {"step": 9, "epoch": None, "time": 1.0, "values": {"x": 2.0}})
        size = local.stat().st_size
        got = mirror.state.bytes_received
        with open(remote, "ab") as fh:
            fh.write(frame[:30])
        wait_until(lambda: mirror.state.bytes_received >= got + 30, what="the torn half")
        assert local.stat().st_size == size
        with open(remote, "ab") as fh:
            fh.write(frame[30:])
        wait_until(lambda: local.stat().st_size == size + len(frame), what="the completed frame")

        # the remote run is restarted in place (mode "w" truncates): the mirror starts over
        rec.close()
        resets = mirror.state.resets
        rec2 = Recorder(remote, bins=8)
        train(rec2, range(100, 103), seed=2)
        rec2.close()
        wait_until(lambda: mirror.state.resets > resets and same_bytes(remote, local), what="restart")
        data = weighttui.open(local)
        assert data.steps.tolist() == [100, 101, 102] and data.status == "finished"
        assert data.run.run_id == rec2.run_id
    finally:
        mirror.stop()


def test_mirror_notices_replacement_while_disconnected(tmp_path, fake_ssh):
    remote = tmp_path / "run.sock"
    local = tmp_path / "mirror.wtui"
    rec = Recorder(remote)
    train(rec, range(3))
    rec.close()
    mirror = RemoteMirror(RemoteSpec("box", str(remote)), str(local), ssh_command=fake_ssh,
                          backoff=(0.3, 0.3)).start()
    try:
        wait_until(lambda: same_bytes(remote, local), what="the first copy")
        # replace the file by a longer one while the link is down: resuming at
        # the old offset would splice two runs; the identity check prevents it
        mirror.kill_connection()
        new = tmp_path / "new.sock"
        rec2 = Recorder(new)
        train(rec2, range(50, 60), seed=3)
        rec2.close()
        os.replace(new, remote)
        wait_until(lambda: same_bytes(remote, local), what="the new run")
        assert mirror.state.resets >= 1
        assert weighttui.open(local).run.run_id == rec2.run_id
    finally:
        mirror.stop()


def test_mirror_skips_real_damage_and_goes_on(tmp_path, fake_ssh):
    remote = tmp_path / "run.sock"
    local = tmp_path / "mirror.wtui"
    rec = Recorder(remote)
    train(rec, range(4))
    rec.close()
    blob = bytearray(remote.read_bytes())
    reference = weighttui.open(remote)
    # flip a byte inside the payload of a frame in the middle of the file
    at = len(blob) // 2
    blob[at] ^= 0xFF
    remote.write_bytes(bytes(blob))
    damaged = weighttui.open(remote)
    assert damaged.corruptions
    mirror = RemoteMirror(RemoteSpec("box", str(remote)), str(local), ssh_command=fake_ssh,
                          backoff=(0.02, 0.2)).start()
    try:
        wait_until(lambda: same_bytes(remote, local), what="the whole log, damage included")
        mirrored = weighttui.open(local)
        assert mirrored.status == "finished"
        assert mirrored.corruptions == damaged.corruptions  # reported as a local reader reports them
        assert mirror.state.corruptions == damaged.corruptions
        assert mirrored.steps.tolist() == damaged.steps.tolist()
        assert set(mirrored.steps.tolist()) < set(reference.steps.tolist()) or mirrored.n == reference.n
    finally:
        mirror.stop()


def test_fetch_copies_once_and_reports_missing(tmp_path, fake_ssh):
    remote = tmp_path / "a b.sock"
    rec = Recorder(remote)
    train(rec, range(3))
    rec.close()
    with open(remote, "ab") as fh:  # a torn tail is left behind
        fh.write(b"\xd7WTR\x05")
    local = RemoteMirror(RemoteSpec("box", str(remote)), str(tmp_path / "copy.wtui"), ssh_command=fake_ssh).fetch()
    assert open(local, "rb").read() == remote.read_bytes()  # the torn tail too: the reader reports it
    assert weighttui.open(local).torn_tail == 5
    with pytest.raises(OSError, match="No such file"):
        RemoteMirror(RemoteSpec("box", str(tmp_path / "missing.sock")), str(tmp_path / "m.wtui"),
                     ssh_command=fake_ssh).fetch()


def test_mirror_waits_for_a_log_that_does_not_exist_yet(tmp_path, fake_ssh):
    remote = tmp_path / "later.sock"
    local = tmp_path / "mirror.wtui"
    mirror = RemoteMirror(RemoteSpec("box", str(remote)), str(local), ssh_command=fake_ssh).start()
    try:
        assert mirror.wait_connected()
        rec = Recorder(remote)
        train(rec, range(2))
        rec.close()
        wait_until(lambda: same_bytes(remote, local), what="the late log")
    finally:
        mirror.stop()


def test_ssh_failure_is_reported_not_raised(tmp_path):
    failing = tmp_path / "ssh"
    failing.write_text("#!/bin/sh\necho 'ssh: connect to host box port 22: Connection refused' >&2\nexit 255\n")
    failing.chmod(0o755)
    mirror = RemoteMirror(RemoteSpec("box", "/r.sock"), str(tmp_path / "m.wtui"), ssh_command=str(failing),
                          backoff=(0.05, 0.1)).start()
    try:
        assert not mirror.wait_connected()
        assert "Connection refused" in mirror.state.last_error
        wait_until(lambda: mirror.state.connects >= 3, what="retries")
    finally:
        mirror.stop()
    with pytest.raises(OSError, match="Connection refused"):
        RemoteMirror(RemoteSpec("box", "/r.sock"), str(tmp_path / "m2.wtui"), ssh_command=str(failing)).fetch()


def test_second_viewer_gets_its_own_cache_file(tmp_path, fake_ssh, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    remote = tmp_path / "r.sock"
    rec = Recorder(remote)
    train(rec, range(2))
    rec.close()
    spec = RemoteSpec("box", str(remote))
    a = RemoteMirror(spec, ssh_command=fake_ssh).start()
    b = RemoteMirror(spec, ssh_command=fake_ssh).start()
    try:
        assert a.local_path != b.local_path
        wait_until(lambda: same_bytes(remote, a.local_path) and same_bytes(remote, b.local_path), what="copies")
    finally:
        a.stop()
        b.stop()


def test_cli_watch_and_info_use_the_mirror(tmp_path, fake_ssh, monkeypatch, capsys):
    """`weighttui watch host:path` hands the app a local mirror; `info host:path` fetches once."""
    from weighttui import cli

    remote = tmp_path / "my run.sock"
    rec = Recorder(remote)
    train(rec, range(4))
    rec.close()
    monkeypatch.setenv("WEIGHTTUI_SSH", fake_ssh)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    seen = {}

    def fake_run_app(path, mode="watch", title=None, max_rows=4096):
        # the app would tail this file: it fills while the app runs
        wait_until(lambda: os.path.exists(path) and same_bytes(remote, path), what="the mirror under the app")
        seen.update(path=path, mode=mode, title=title, steps=weighttui.open(path).steps.tolist())
        return 0

    # the app itself is tested elsewhere; here only what the CLI hands it
    monkeypatch.setitem(sys.modules, "weighttui.tui.app", types.SimpleNamespace(run_app=fake_run_app))
    assert cli.main(["watch", f"box:{remote}"]) == 0
    assert seen["steps"] == [0, 1, 2, 3] and seen["mode"] == "watch"
    assert str(remote) in seen["title"] and seen["path"].startswith(str(tmp_path / "cache"))
    assert cli.main(["info", f"box:{remote}", "--json"]) == 0
    assert '"finished"' in capsys.readouterr().out


def test_cli_watch_reports_ssh_failure_before_the_app(tmp_path, monkeypatch, capsys):
    from weighttui import cli

    failing = tmp_path / "ssh"
    failing.write_text("#!/bin/sh\necho 'Permission denied (publickey).' >&2\nexit 255\n")
    failing.chmod(0o755)
    monkeypatch.setenv("WEIGHTTUI_SSH", str(failing))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    called = []
    monkeypatch.setitem(sys.modules, "weighttui.tui.app",
                        types.SimpleNamespace(run_app=lambda *a, **k: called.append(a) or 0))
    assert cli.main(["watch", "box:/runs/r.sock"]) == 2
    assert "Permission denied (publickey)" in capsys.readouterr().err and not called
    assert cli.main(["watch", "box:"]) == 2  # a malformed spec is bad input too


# ------------------------------------------- damage and hostile servers (issue 19.4)


def _damaged_log(path, *, snapshots=57, damage=(), seed=0):
    """A finished log of `snapshots` snapshots, with one byte flipped at each fraction in `damage`
    (of the file's length, or an int: an absolute offset)."""
    rec = Recorder(path, bins=16)
    train(rec, range(snapshots), seed=seed)
    rec.close()
    blob = bytearray(path.read_bytes())
    for at in damage:
        pos = at if isinstance(at, int) else int(len(blob) * at)
        blob[pos] ^= 0xFF
    path.write_bytes(bytes(blob))
    return weighttui.open(path)


def test_fetch_with_many_damaged_frames_reports_them_like_a_local_read(tmp_path, fake_ssh, monkeypatch, capsys):
    from weighttui import cli

    remote = tmp_path / "run.sock"
    local_read = _damaged_log(remote, damage=(0.2, 0.35, 0.5, 0.65, 0.8))
    assert len(local_read.corruptions) >= 3 and local_read.status == "finished"
    monkeypatch.setenv("WEIGHTTUI_SSH", fake_ssh)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert cli.main(["info", f"box:{remote}", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == "finished" and doc["snapshots"] == local_read.snapshot_count
    assert doc["corruptions"] == local_read.corruptions
    pids = (tmp_path / "pids").read_text().split()
    assert len(pids) <= 3  # the copy, one identity check after the first damage (and no storm)


def test_damage_in_the_first_4k_is_passed_once(tmp_path, fake_ssh):
    remote = tmp_path / "run.sock"
    local_read = _damaged_log(remote, snapshots=20, damage=(200, 1500))
    assert local_read.corruptions
    local = tmp_path / "mirror.wtui"
    mirror = RemoteMirror(RemoteSpec("box", str(remote)), str(local), ssh_command=fake_ssh,
                          backoff=(0.05, 0.5)).start()
    try:
        wait_until(lambda: same_bytes(remote, local), what="the whole log past the early damage")
        time.sleep(0.5)  # a follow loop stuck on the damage would reconnect all the while
        assert mirror.state.connects <= 3, mirror.state
        assert weighttui.open(local).corruptions == local_read.corruptions
    finally:
        mirror.stop()


def test_random_bytes_after_a_valid_header_cost_no_connection_storm(tmp_path, fake_ssh):
    remote = tmp_path / "hostile.sock"
    remote.write_bytes(HEADER + np.random.default_rng(0).bytes(300_000))
    local = tmp_path / "mirror.wtui"
    mirror = RemoteMirror(RemoteSpec("box", str(remote)), str(local), ssh_command=fake_ssh,
                          backoff=(0.05, 0.5)).start()
    try:
        wait_until(lambda: local.exists() and local.stat().st_size >= remote.stat().st_size - 16,
                   what="the garbage, copied as damage")
        time.sleep(1.0)
        assert mirror.state.connects <= 3, mirror.state
        assert weighttui.open(local).corruptions == weighttui.open(remote).corruptions
    finally:
        mirror.stop()


HOSTILE_SSH = r"""#!/bin/sh
# A server that answers every connection with a missing file's identity line, a valid
# header and garbage, then hangs up: each connection resets the mirror.
echo "$$" >> "$FAKE_SSH_PIDS"
echo
cat "$HOSTILE_HEADER"
head -c 4000 /dev/urandom
exit 0
"""


def test_a_server_that_keeps_restarting_is_reconnected_with_backoff(tmp_path, monkeypatch):
    script = tmp_path / "hostile-ssh"
    script.write_text(HOSTILE_SSH)
    script.chmod(0o755)
    monkeypatch.setenv("FAKE_SSH_PIDS", str(tmp_path / "pids"))
    (tmp_path / "header").write_bytes(HEADER)
    monkeypatch.setenv("HOSTILE_HEADER", str(tmp_path / "header"))
    mirror = RemoteMirror(RemoteSpec("box", "/r.sock"), str(tmp_path / "m.wtui"), ssh_command=str(script),
                          backoff=(0.05, 0.4)).start()
    started = time.monotonic()
    try:
        time.sleep(2.0)
    finally:
        mirror.stop()
    elapsed = time.monotonic() - started
    # every reconnect waits at least the shortest backoff
    assert 2 <= mirror.state.connects <= elapsed / 0.05 + 2, mirror.state


DROPPING_SSH = r"""#!/bin/sh
# ssh whose connection drops after a few kilobytes every time
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do shift; done
shift 2
echo "$$" >> "$FAKE_SSH_PIDS"
out=$(mktemp)
sh -c "$1" > "$out"; status=$?
head -c "$DROP_AFTER" "$out"
size=$(wc -c < "$out")
rm -f "$out"
[ "$size" -gt "$DROP_AFTER" ] && exit 255
exit $status
"""


def test_a_copy_that_cannot_finish_says_so(tmp_path, monkeypatch, capsys):
    from weighttui import cli
    from weighttui.data.remote import IncompleteCopy

    script = tmp_path / "dropping-ssh"
    script.write_text(DROPPING_SSH)
    script.chmod(0o755)
    monkeypatch.setenv("FAKE_SSH_PIDS", str(tmp_path / "pids"))
    remote = tmp_path / "big.sock"
    _damaged_log(remote, snapshots=120)
    size = remote.stat().st_size
    monkeypatch.setenv("DROP_AFTER", str(8193 + 6000))  # the identity line, then 6 kB per connection
    assert size > 8 * 6000
    with pytest.raises(IncompleteCopy) as info:
        RemoteMirror(RemoteSpec("box", str(remote)), str(tmp_path / "c.wtui"), ssh_command=str(script),
                     backoff=(0.01, 0.05)).fetch()
    assert "stopped after" in str(info.value) and os.path.getsize(info.value.path) < size
    # the CLI shows what arrived, says it is not all, and exits 1 (not 0 as if it were whole)
    monkeypatch.setenv("WEIGHTTUI_SSH", str(script))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert cli.main(["info", f"box:{remote}"]) == 1
    err = capsys.readouterr().err
    assert "warning" in err and "stopped after" in err
    # a connection that drops a few times but gets there in the end is a whole copy
    monkeypatch.setenv("DROP_AFTER", str(8193 + size // 3 + 1))
    local = RemoteMirror(RemoteSpec("box", str(remote)), str(tmp_path / "d.wtui"), ssh_command=str(script),
                         backoff=(0.01, 0.05)).fetch()
    assert same_bytes(remote, local)


def test_replay_of_a_copy_that_cannot_finish_warns_and_shows_what_arrived(tmp_path, monkeypatch, capsys):
    from weighttui import cli

    script = tmp_path / "dropping-ssh"
    script.write_text(DROPPING_SSH)
    script.chmod(0o755)
    monkeypatch.setenv("FAKE_SSH_PIDS", str(tmp_path / "pids"))
    monkeypatch.setenv("DROP_AFTER", str(8193 + 6000))
    monkeypatch.setenv("WEIGHTTUI_SSH", str(script))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    remote = tmp_path / "big.sock"
    _damaged_log(remote, snapshots=120)
    seen = {}

    def fake_run_app(path, mode="watch", title=None, max_rows=4096):
        seen.update(path=path, size=os.path.getsize(path))
        return 0

    monkeypatch.setitem(sys.modules, "weighttui.tui.app", types.SimpleNamespace(run_app=fake_run_app))
    assert cli.main(["replay", f"box:{remote}"]) == 0
    assert "warning" in capsys.readouterr().err
    assert 0 < seen["size"] < remote.stat().st_size


# ------------------------------------------------- a damaged start (issue 19, item 9)


def _damaged_start_log(path, steps=range(4), prefix=b"\0" * 8):
    """A log whose magic bytes are overwritten in place while its writer (returned) is live."""
    rec = Recorder(path, bins=16)
    train(rec, steps)
    fd = os.open(path, os.O_WRONLY)
    os.pwrite(fd, prefix, 0)
    os.close(fd)
    return rec


def test_fetch_of_a_log_with_a_damaged_start_reads_as_a_local_read(tmp_path, fake_ssh, monkeypatch, capsys):
    from weighttui import cli

    remote = tmp_path / "run.sock"
    rec = Recorder(remote, bins=16)
    train(rec, range(4))
    rec.close()
    remote.write_bytes(np.random.default_rng(1).bytes(3000) + remote.read_bytes())  # garbage prepended
    local_read = weighttui.open(remote, cache=False)
    assert local_read.corruptions[0] == 0 and local_read.status == "finished"
    copy = RemoteMirror(RemoteSpec("box", str(remote)), str(tmp_path / "copy.wtui"), ssh_command=fake_ssh)
    assert open(copy.fetch(), "rb").read() == remote.read_bytes()  # the damaged start copied as it is
    assert copy.state.corruptions == [0]
    monkeypatch.setenv("WEIGHTTUI_SSH", fake_ssh)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert cli.main(["info", f"box:{remote}", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["corruptions"] == local_read.corruptions == [0]
    assert doc["snapshots"] == local_read.snapshot_count == 4 and doc["status"] == "finished"
    assert len((tmp_path / "pids").read_text().split()) == 2  # one copy each, no reconnect for the start


def test_the_mirror_follows_a_log_with_a_damaged_start_as_it_grows(tmp_path, fake_ssh):
    remote = tmp_path / "live.sock"
    rec = _damaged_start_log(remote)  # the magic bytes overwritten under a live writer
    local = tmp_path / "mirror.wtui"
    mirror = RemoteMirror(RemoteSpec("box", str(remote)), str(local), ssh_command=fake_ssh,
                          backoff=(0.05, 0.5)).start()
    try:
        wait_until(lambda: same_bytes(remote, local), what="the log past its damaged start")
        train(rec, range(4, 8), seed=1)
        rec.close()
        wait_until(lambda: same_bytes(remote, local), what="the frames appended after it")
        mirrored = weighttui.open(local, cache=False)
        assert mirrored.steps.tolist() == list(range(8)) and mirrored.status == "finished"
        assert mirrored.corruptions == [0] and mirror.state.corruptions == [0]
        assert mirror.state.connects == 1, mirror.state
    finally:
        mirror.stop()


def test_a_remote_file_that_is_not_a_log_is_refused_with_one_line(tmp_path, fake_ssh, monkeypatch):
    remote = tmp_path / "notes.txt"
    remote.write_bytes(b"epoch 1 loss 0.5\n" * 500)
    with pytest.raises(OSError, match=r"not a weighttui run log \(bad magic bytes\)"):
        RemoteMirror(RemoteSpec("box", str(remote)), str(tmp_path / "m.wtui"), ssh_command=fake_ssh).fetch()
    monkeypatch.setenv("WEIGHTTUI_SSH", fake_ssh)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-c", "import sys; from weighttui.cli import main; sys.exit(main())",
                           "info", f"box:{remote}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "not a weighttui run log (bad magic bytes)" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
