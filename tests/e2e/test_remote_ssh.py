"""Remote watching against a real OpenSSH server on 127.0.0.1.

The test starts its own sshd (Debian's openssh-server, as the current user,
its own host key, an authorized key made for the test, a free port) and
reaches it with the real ssh client through a generated ssh config, as a
user's ~/.ssh/config would. It covers streaming, a dropped connection (client
killed, then the server's session killed) with resume, a path with spaces,
quotes, `$(...)` and `;`, a remote restart, the CLI (`weighttui info
host:path`, `weighttui watch host:path` up to the app), and that no remote
`tail` outlives its connection.

Skips only if /usr/sbin/sshd is missing (CI installs it with .ci/setup-sshd).
"""

from __future__ import annotations

import getpass
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import types
import uuid

import numpy as np
import pytest

import weighttui
from weighttui.data.remote import RemoteMirror, parse_remote
from weighttui.record.lifecycle import SIGTERM_FLUSH_SECONDS
from weighttui.record.recorder import Recorder

SSHD = "/usr/sbin/sshd"
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not os.path.exists(SSHD), reason="needs openssh-server (.ci/setup-sshd installs it)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(cond, timeout=30.0, what="condition", show=None):
    """Wait for cond(); on timeout fail, with what show() returns (the terminal) when given."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}" + (f"; the screen:\n{show()}" if show else ""))


class Server:
    def __init__(self, root):
        self.root = root
        self.port = free_port()
        self.user = getpass.getuser()
        run = lambda *a: subprocess.run(a, check=True, capture_output=True, timeout=60)
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / "host_key"))
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / "client_key"))
        (root / "authorized_keys").write_text((root / "client_key.pub").read_text())
        (root / "sshd_config").write_text(f"""\
Port {self.port}
ListenAddress 127.0.0.1
HostKey {root / 'host_key'}
AuthorizedKeysFile {root / 'authorized_keys'}
PidFile {root / 'sshd.pid'}
StrictModes no
UsePAM no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
LogLevel ERROR
""")
        host_pub = (root / "host_key.pub").read_text().split()
        (root / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        # the user's ssh config: an alias, a port, a key; weighttui passes none of these itself
        (root / "ssh_config").write_text(f"""\
Host wtui-test
    HostName 127.0.0.1
    Port {self.port}
    User {self.user}
    IdentityFile {root / 'client_key'}
    IdentitiesOnly yes
    UserKnownHostsFile {root / 'known_hosts'}
    StrictHostKeyChecking yes
    ConnectTimeout 10
""")
        self.ssh = f"ssh -F {root / 'ssh_config'}"
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege separation directory
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(root / "sshd_config")],
                                     stdout=subprocess.DEVNULL, stderr=open(root / "sshd.log", "wb"))
        wait_until(self._answers, 20, "sshd to listen")

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"sshd exited: {(self.root / 'sshd.log').read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def sessions(self) -> list[int]:
        """Pids of sshd's per-connection processes (children of the listener)."""
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("sshd"))
    yield srv
    srv.stop()


def train(rec: Recorder, steps, seed=0):
    rng = np.random.default_rng(seed)
    w = {"enc.weight": rng.normal(size=(16, 8)).astype(np.float32), "enc.bias": np.zeros(8, np.float32)}
    for step in steps:
        grads = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in w.items()}
        w = {k: v - 0.05 * grads[k] for k, v in w.items()}
        rec.snapshot(step, w, grads=grads, scalars={"loss": 1.0 / (1 + step)})
    wait_until(lambda: rec.written == rec.queued, what="the recorder's writer")


def same_bytes(a, b) -> bool:
    try:
        with open(a, "rb") as fa, open(b, "rb") as fb:
            return fa.read() == fb.read()
    except FileNotFoundError:
        return False


def remote_tails(path) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return [ln for ln in out.splitlines() if "tail -c" in ln and str(path) in ln]


def test_ssh_mirror_end_to_end(server, tmp_path):
    marker = f"pwned-{uuid.uuid4().hex}"
    rundir = tmp_path / "runs with spaces"
    rundir.mkdir()
    remote = rundir / f"it's \"q\" $(touch {marker}); touch {marker} a.sock"
    local = tmp_path / "mirror.wtui"
    rec = Recorder(remote, bins=16, meta={"lr": 0.05})
    train(rec, range(0, 10))

    spec = parse_remote(f"wtui-test:{remote}")
    assert spec is not None and spec.path == str(remote)
    mirror = RemoteMirror(spec, str(local), ssh_command=server.ssh, backoff=(0.1, 0.5)).start()
    try:
        assert mirror.wait_connected(30), mirror.state.last_error
        wait_until(lambda: same_bytes(remote, local), what="the first copy over ssh")
        assert weighttui.open(local).steps.tolist() == list(range(10))

        # 1. the client side drops (ssh killed): writes meanwhile arrive after the reconnect
        connects = mirror.state.connects
        mirror.kill_connection()
        train(rec, range(10, 15), seed=1)
        wait_until(lambda: mirror.state.connects > connects and same_bytes(remote, local), what="resume 1")

        # 2. the server side drops (sshd's session process killed mid-stream)
        connects = mirror.state.connects
        sessions = server.sessions()
        assert sessions, "no sshd session for the mirror's connection"
        for pid in sessions:
            os.kill(pid, 9)
        train(rec, range(15, 20), seed=2)
        wait_until(lambda: mirror.state.connects > connects and same_bytes(remote, local), what="resume 2")
        data = weighttui.open(local)
        assert data.steps.tolist() == list(range(20)) and not data.corruptions and not data.torn_tail
        np.testing.assert_array_equal(data.stat_matrix("grad", "norm"),
                                      weighttui.open(remote).stat_matrix("grad", "norm"))

        # 3. the remote run restarts in place (mode "w"): the mirror starts over
        rec.close()
        rec2 = Recorder(remote, bins=8)
        train(rec2, range(100, 104), seed=3)
        rec2.close()
        wait_until(lambda: same_bytes(remote, local), what="the restarted run")
        assert mirror.state.resets >= 1
        data = weighttui.open(local)
        assert data.run.run_id == rec2.run_id and data.status == "finished"
    finally:
        mirror.stop()
    assert not (tmp_path / marker).exists() and not os.path.exists(os.path.expanduser(f"~/{marker}"))
    # no remote `tail` outlives its connection (the killed ones included)
    wait_until(lambda: not remote_tails(remote), 15, "remote tail processes to exit")


def test_cli_info_and_watch_over_ssh(server, tmp_path):
    remote = tmp_path / "cli run.sock"
    rec = Recorder(remote)
    train(rec, range(6))
    rec.close()
    env = dict(os.environ, WEIGHTTUI_SSH=server.ssh, XDG_CACHE_HOME=str(tmp_path / "cache"))
    # scp style through the ssh config alias, and ssh:// with user and port
    for spec in (f"wtui-test:{remote}",
                 f"ssh://{server.user}@wtui-test:{server.port}{str(remote).replace(' ', '%20')}"):
        out = subprocess.run([sys.executable, "-m", "weighttui.cli", "info", spec, "--json"],
                             capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 0, out.stderr
        assert '"finished"' in out.stdout and rec.run_id in out.stdout
    bad = subprocess.run([sys.executable, "-m", "weighttui.cli", "info", "wtui-test:/no/such/run.sock"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "No such file" in bad.stderr


def test_cli_watch_reaches_the_app_over_ssh(server, tmp_path, monkeypatch):
    """`weighttui watch host:path`: the app gets a local mirror that fills from the live remote log."""
    from weighttui import cli

    remote = tmp_path / "live run.sock"
    rec = Recorder(remote)
    train(rec, range(3))
    monkeypatch.setenv("WEIGHTTUI_SSH", server.ssh)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    seen = {}

    def run_app(path, mode="watch", title=None, max_rows=4096):
        wait_until(lambda: same_bytes(remote, path), what="the mirror")
        train(rec, range(3, 6), seed=4)  # the run goes on while the app is up
        wait_until(lambda: same_bytes(remote, path), what="live growth")
        seen.update(title=title, steps=weighttui.open(path).steps.tolist())
        return 0

    monkeypatch.setitem(sys.modules, "weighttui.tui.app", types.SimpleNamespace(run_app=run_app))
    assert cli.main(["watch", f"wtui-test:{remote}"]) == 0
    rec.close()
    assert seen["steps"] == list(range(6)) and "wtui-test" in seen["title"]
    wait_until(lambda: not remote_tails(remote), 15, "the remote tail to exit after the app")


@pytest.mark.skipif(not shutil.which("tmux"), reason="needs tmux (.ci/setup-sshd installs it)")
def test_watch_over_ssh_in_a_real_terminal(server, tmp_path):
    """`weighttui watch host:path` in tmux: the real app shows the live remote run, then quits cleanly."""
    remote = tmp_path / "tmux runs" / "demo 'x'.wtui"
    remote.parent.mkdir()
    trainer = subprocess.Popen([sys.executable, "-m", "weighttui.cli.demo", str(remote), "--steps", "100000",
                                "--delay", "0.02", "--quiet"], stdin=subprocess.DEVNULL)
    session = f"wtui-{uuid.uuid4().hex[:8]}"
    spec = f"wtui-test:{remote}"
    cmd = " ".join(shlex.quote(a) for a in ["env", f"WEIGHTTUI_SSH={server.ssh}",
                                            f"XDG_CACHE_HOME={tmp_path / 'cache'}",
                                            sys.executable, "-m", "weighttui.cli", "watch", spec])
    screen = lambda: subprocess.run(["tmux", "capture-pane", "-p", "-t", session],
                                    capture_output=True, text=True).stdout
    try:
        subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "160", "-y", "40",
                        f"{cmd}; echo EXITED $?; sleep 60"], check=True)
        wait_until(lambda: "(over ssh)" in screen() and "layers.0" in screen(), 60, "the app on the remote log",
                   show=screen)
        assert "demo 'x'.wtui (over ssh)" in screen()  # the title names the remote log (long paths wrap)
        shown = lambda: max(int(m) for m in re.findall(r"step (\d+)", screen()) or [-1])
        first = shown()
        wait_until(lambda: shown() > first, 30, "new steps on screen")  # live over ssh
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        wait_until(lambda: "EXITED 0" in screen(), 30, "the app to quit")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
        trainer.terminate()
        # on SIGTERM a recorder flushes for up to SIGTERM_FLUSH_SECONDS (10 s) before the process ends: on a
        # loaded machine that can take all of it, so the wait must be longer than that bound
        trainer.wait(SIGTERM_FLUSH_SECONDS + 30)
    wait_until(lambda: not remote_tails(remote), 15, "the remote tail to exit after the app")
