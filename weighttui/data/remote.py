"""Watching a run log on another machine over the user's own ssh.

`parse_remote("user@host:/runs/a.sock")` (scp style) or
`parse_remote("ssh://user@host:2222/runs/a.sock")` gives a `RemoteSpec`;
`RemoteMirror(spec).start()` then streams the remote log into a local cache
file that the ordinary viewer tails, so everything downstream (LogTail,
RunData, the app) reads a plain local log.

Nothing of weighttui runs remotely: the remote side is POSIX `head`, `od`
and `tail -c +N -F`, started by the `ssh` binary with the user's own config,
keys and agent (`-o BatchMode=yes`: never a password prompt in the viewer).
The mirror is a byte-for-byte copy of the remote log, damage included, so a
local reader of it skips and reports damage exactly as it would on the remote
machine. Bytes are appended as the frame decoder consumes them (whole frames,
and damaged stretches it has skipped), so a dropped connection leaves the
mirror at a frame boundary; the next connection resumes at that remote offset
after checking that the remote file still starts with the same first bytes. A
remote file that was truncated, replaced or deleted restarts the mirror from
offset 0 (the local viewer sees that as a truncation and starts over, as it
does for a local log). Damage is told apart from a truncate-and-regrow that
`tail -F` missed by one reconnection per connection (the identity check),
after which damage on that connection is copied and counted. Every reconnect
waits (backoff doubling up to a limit while connections make no progress), and
a one-time copy that cannot finish says so (IncompleteCopy).

This module has no dependency beyond the standard library and
`weighttui.log.format`; it never imports textual or a framework.
"""

from __future__ import annotations

import binascii
import hashlib
import os
import re
import shlex
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from types import ModuleType

from weighttui.log.format import MAGIC, Corruption, Frame, FrameDecoder, LogFormatError

fcntl: ModuleType | None
try:
    import fcntl
except ImportError:  # Windows: no advisory locks, one viewer per remote log
    fcntl = None

PREFIX_CHECK = 4096  # first bytes of the file compared on every reconnect
FETCH_ATTEMPTS = 8  # connections a one-time copy may use (damage checks, drops) before it gives up
DEFAULT_SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=3")

# A host may be a name, an IPv4 address or a bracketed IPv6 address; it must
# not start with '-' (ssh would read it as an option) nor hold blanks.
_HOST_RE = re.compile(r"^[A-Za-z0-9_.%:\[\]-]+$")
_USER_RE = re.compile(r"^[^\s@:/]+$")
_SCP_RE = re.compile(r"(?:(?P<user>[^@/:\[\]]*)@)?(?P<host>\[[^\]/]*\]|[^@/:\[\]]+):(?P<path>.*)\Z", re.S)


@dataclass(frozen=True)
class RemoteSpec:
    host: str
    path: str
    user: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        who = f"{self.user}@{self.host}" if self.user else self.host
        if self.port is not None:
            sep = "" if self.path.startswith("/") else "/~/"
            return f"ssh://{who}:{self.port}{sep}{self.path}"
        return f"{who}:{self.path}"

    def ssh_args(self) -> list[str]:
        """Options and destination for ssh (after which the remote command follows)."""
        args = []
        if self.port is not None:
            args += ["-p", str(self.port)]
        if self.user is not None:
            args += ["-l", self.user]
        return args + ["--", self.host.strip("[]")]


def parse_remote(spec: str) -> RemoteSpec | None:
    """A RemoteSpec for `[user@]host:path` or `ssh://[user@]host[:port]/path`, else None.

    A path that exists locally is local even if it contains ':'; so is a
    string with a '/' before its first ':' (as scp decides). Raises ValueError
    for a remote spec that is malformed (empty path, a host starting with '-').
    """
    spec = os.fspath(spec)
    if spec.startswith("ssh://"):
        return _parse_url(spec)
    if os.path.exists(spec):
        return None
    m = _SCP_RE.match(spec)
    if m is None:
        return None  # no host part before a ':' (./a:b, dir/x:y are local, as scp sees them)
    user, host, path = m.group("user", "host", "path")
    if os.name == "nt" and len(host) == 1 and host.isalpha() and path[:1] in ("\\", "/"):
        return None  # C:\runs\a.sock
    return _checked(RemoteSpec(host=host, path=path, user=user), spec)


def _parse_url(spec: str) -> RemoteSpec:
    parts = urllib.parse.urlsplit(spec)
    if parts.query or parts.fragment:
        # '?' and '#' in a path must be percent-encoded in a URL
        raise ValueError(f"{spec}: unexpected ?query or #fragment (percent-encode them in the path)")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{spec}: bad port") from None
    host = parts.hostname or ""
    if parts.netloc.rpartition("@")[2].startswith("["):
        host = f"[{host}]"
    user = urllib.parse.unquote(parts.username) if parts.username else None
    path = urllib.parse.unquote(parts.path)
    if path.startswith("/~/"):
        path = path[3:]  # ssh://host/~/run.sock: relative to the remote home
    elif path == "/~":
        path = ""
    return _checked(RemoteSpec(host=host, path=path, user=user, port=port), spec)


def _checked(spec: RemoteSpec, text: str) -> RemoteSpec:
    if not spec.host or spec.host.startswith("-") or not _HOST_RE.match(spec.host):
        raise ValueError(f"{text}: not a valid remote host {spec.host!r}")
    if spec.user is not None and (not spec.user or spec.user.startswith("-") or not _USER_RE.match(spec.user)):
        raise ValueError(f"{text}: not a valid remote user {spec.user!r}")
    if not spec.path or spec.path.endswith("/"):
        raise ValueError(f"{text}: no run log path after the host")
    if "\0" in spec.path or "\n" in spec.path:
        raise ValueError(f"{text}: the remote path holds a NUL or newline")
    return spec


# ---------------------------------------------------------------- commands


def quote_remote_path(path: str) -> str:
    """The path as one word for the remote POSIX shell, `~/` kept expandable.

    shlex.quote wraps anything unsafe in single quotes, which no character
    but a single quote can end (and that one is spliced as '"'"'), so no
    name can run a command. A relative path is relative to the remote home,
    where ssh starts the command.
    """
    if path == "~":
        return "~"
    if path.startswith("~/"):
        return "~/" + shlex.quote(path[2:])
    return shlex.quote(path)


def remote_command(path: str, offset: int, prefix_len: int, follow: bool = True) -> str:
    """The shell command run remotely for one connection.

    It prints one line with the hex of the file's first `prefix_len` bytes
    (empty if the file is missing), then the file's bytes from `offset` on,
    following growth, truncation and replacement (`tail -F`) when `follow`.
    """
    q = quote_remote_path(path)
    parts = []
    if prefix_len > 0:
        parts.append(f"head -c {int(prefix_len)} -- {q} 2>/dev/null | od -An -tx1 -v | tr -d ' \\n'")
    parts.append("echo")
    if follow:
        parts.append(f"exec tail -c +{int(offset) + 1} -F -- {q}")
    else:
        parts.append(f"exec tail -c +{int(offset) + 1} -- {q}")
    return "; ".join(parts)


def ssh_base_command(ssh_command=None) -> list[str]:
    """The ssh program and options: `ssh_command`, else $WEIGHTTUI_SSH, else `ssh`."""
    if ssh_command is None:
        ssh_command = os.environ.get("WEIGHTTUI_SSH") or "ssh"
    if isinstance(ssh_command, str):
        ssh_command = shlex.split(ssh_command)
    return list(ssh_command) + list(DEFAULT_SSH_OPTIONS)


def default_cache_path(spec: RemoteSpec) -> str:
    """$XDG_CACHE_HOME/weighttui/remote/<hash>.wtui, one file per remote spec."""
    from weighttui.log.paths import user_cache_dir

    digest = hashlib.sha256(str(spec).encode()).hexdigest()[:20]
    return user_cache_dir("remote", f"{digest}.wtui")


# ------------------------------------------------------------------ mirror


class IncompleteCopy(OSError):
    """A one-time copy that stopped before the end of the remote log; `path` holds what arrived."""

    def __init__(self, message: str, path: str):
        super().__init__(message)
        self.path = path


@dataclass
class MirrorState:
    """What the mirror has done so far (read by the UI title or tests)."""

    status: str = "starting"  # connecting / streaming / reconnecting / stopped / done
    connects: int = 0
    resets: int = 0  # the remote file was truncated, replaced or deleted
    remote_offset: int = 0  # bytes of the remote file accounted for
    bytes_received: int = 0
    frames: int = 0
    corruptions: list = field(default_factory=list)  # remote offsets of skipped damage
    last_error: str | None = None


class RemoteMirror:
    """Streams a remote run log into a local file, verified frame by frame.

    `start()` runs in a background thread until `stop()`; `fetch()` copies
    what the remote log holds now and returns. The local file always holds
    the remote file's start (its header, or a damaged start and what the
    decoder skipped) and a whole number of frames, so a reader of it never
    sees a torn frame made by the network.
    """

    def __init__(self, spec: RemoteSpec, local_path: str | None = None, *, ssh_command=None,
                 backoff: tuple[float, float] = (0.5, 30.0), prefix_check: int = PREFIX_CHECK):
        self.spec = spec
        self._default_path = local_path is None
        self.local_path = local_path or default_cache_path(spec)
        self.ssh = ssh_base_command(ssh_command)
        self.backoff = backoff
        self.prefix_check = prefix_check
        self.state = MirrorState()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._prefix = b""  # the mirror's first bytes (up to prefix_check), = the remote file's
        self._verified_damage: set[int] = set()  # damage offsets confirmed by an identity check
        self._trust_damage = False  # this connection passed an identity check after damage
        self._stderr_tail = b""
        self._first = threading.Event()  # set once the first connection streams or fails

    # -------------------------------------------------------------- public

    def start(self) -> RemoteMirror:
        self._open_local()
        self._thread = threading.Thread(target=self._loop, name="weighttui-remote", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._kill()
        if self._thread is not None:
            self._thread.join(timeout)
        self.state.status = "stopped"
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def fetch(self, timeout: float | None = 300.0) -> str:
        """Copy the remote log as it is now into local_path (no following); returns local_path.

        Raises OSError with ssh's own message if the connection or the read fails.
        """
        self._open_local()
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            delay = self.backoff[0]
            outcome = "failed"
            for _attempt in range(FETCH_ATTEMPTS):
                before = self.state.remote_offset
                outcome = self._connect_and_stream(follow=False, deadline=deadline)
                if outcome in ("done", "failed"):
                    break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                if self.state.remote_offset > before:
                    delay = self.backoff[0]
                time.sleep(delay if left is None else min(delay, left))  # every reconnect waits
                delay = min(delay * 2, self.backoff[1])
            if self.state.remote_offset == 0:
                raise OSError(f"{self.spec}: {self.state.last_error or 'no run log there (or not started yet)'}")
            if outcome != "done":
                why = self.state.last_error or ("the connection kept dropping" if outcome == "dropped"
                                                else "the remote file kept changing")
                raise IncompleteCopy(f"{self.spec}: the copy stopped after {self.state.remote_offset:,} bytes "
                                     f"({why}); what was copied is in {self.local_path}", self.local_path)
            self.state.status = "done"
            return self.local_path
        finally:
            os.close(self._local())
            self._fd = None

    def wait_connected(self, timeout: float = 15.0) -> bool:
        """Wait for the first connection: True if it reached the remote shell.

        False means ssh failed (see `state.last_error`) or did not answer in
        time; the mirror goes on retrying in the background either way.
        """
        self._first.wait(timeout)
        return self.state.connects > 0 and (self.state.status == "streaming" or self.state.bytes_received > 0)

    def kill_connection(self) -> None:
        """Drop the current ssh connection (as a network failure would); the mirror reconnects."""
        self._kill()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # --------------------------------------------------------------- local

    def _open_local(self) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.local_path)), exist_ok=True)
        # Always start from scratch: the remote log may have changed since a
        # previous viewer, and a partial mirror of another run would mislead.
        # A second viewer of the same remote log gets its own cache file
        # (the lock is on the file; O_TRUNC only after it is held).
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        self._fd = os.open(self.local_path, flags, 0o600)
        if fcntl is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(self._fd)
                if not self._default_path:
                    raise OSError(f"{self.local_path} is being written by another weighttui") from None
                self.local_path = self.local_path[: -len(".wtui")] + f"-{os.getpid()}.wtui"
                self._default_path = False
                return self._open_local()
        os.ftruncate(self._local(), 0)
        self._prefix = b""
        self.state.remote_offset = 0

    def _local(self) -> int:
        """The local copy's descriptor (open from start() or fetch() until they end)."""
        assert self._fd is not None, "the local copy is not open"
        return self._fd

    def _reset_local(self) -> None:
        os.ftruncate(self._local(), 0)
        self._prefix = b""
        self._verified_damage.clear()
        self.state.remote_offset = 0
        self.state.resets += 1

    def _append(self, data: bytes | bytearray) -> None:
        view = memoryview(data)
        fd = self._local()
        while view:
            view = view[os.write(fd, view):]
        if len(self._prefix) < self.prefix_check:
            self._prefix += bytes(data[: self.prefix_check - len(self._prefix)])

    # ---------------------------------------------------------- connection

    def _loop(self) -> None:
        delay = self.backoff[0]
        while not self._stop.is_set():
            before = self.state.remote_offset
            self._connect_and_stream(follow=True)
            if self._stop.is_set():
                break
            if self.state.remote_offset > before:
                delay = self.backoff[0]  # the connection moved the mirror on
            # Every reconnect waits, whatever ended the connection (damage, a reset, a drop): a
            # server that sends garbage or keeps restarting costs a connection per wait, not a storm.
            self.state.status = "reconnecting"
            self._stop.wait(delay)
            delay = min(delay * 2, self.backoff[1])

    def _kill(self) -> None:
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                proc.kill()
            except OSError:
                pass

    def _connect_and_stream(self, *, follow: bool, deadline: float | None = None) -> str:
        """One ssh connection. Returns "again" (reconnect now), "dropped", "failed" or "done"."""
        prefix = self._prefix if self.state.remote_offset > 0 else b""
        offset = self.state.remote_offset
        argv = self.ssh + self.spec.ssh_args() + [remote_command(self.spec.path, offset, len(prefix), follow)]
        self.state.status = "connecting"
        self.state.connects += 1
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            self.state.last_error = f"cannot run {self.ssh[0]}: {exc}"
            return "failed"
        with self._lock:
            self._proc = proc
        err_thread = threading.Thread(target=self._drain_stderr, args=(proc,), daemon=True)
        err_thread.start()
        timer = None
        if deadline is not None:
            timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._kill)
            timer.daemon = True
            timer.start()
        try:
            return self._stream(proc, prefix, offset, follow)
        finally:
            if timer is not None:
                timer.cancel()
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            err_thread.join(2.0)
            with self._lock:
                self._proc = None
            if proc.returncode not in (0, None) and self.state.last_error is None:
                self.state.last_error = self._stderr_text() or f"ssh exited with status {proc.returncode}"
            self._first.set()

    def _drain_stderr(self, proc) -> None:
        for chunk in iter(lambda: proc.stderr.read1(4096), b""):
            self._stderr_tail = (self._stderr_tail + chunk)[-2048:]

    def _stderr_text(self) -> str:
        lines = [ln for ln in self._stderr_tail.decode("utf-8", "replace").splitlines()
                 if ln.strip() and "has appeared" not in ln]
        return lines[-1].strip() if lines else ""

    def _stream(self, proc, prefix: bytes, offset: int, follow: bool = True) -> str:
        out = proc.stdout
        # 1. the identity line: hex of the remote file's first bytes
        line = out.readline(2 * self.prefix_check + 2)
        if not line.endswith(b"\n"):
            return "failed" if proc.wait() not in (0, None) and self.state.bytes_received == 0 else "dropped"
        self.state.last_error = None
        try:
            remote_prefix = binascii.unhexlify(line.strip())
        except binascii.Error:
            self.state.last_error = "unexpected reply from the remote shell"
            return "failed"
        if prefix and remote_prefix != prefix:
            self._reset_local()  # truncated, replaced or deleted while we were away
            return "again"
        self.state.status = "streaming"
        self._first.set()
        self._trust_damage = False
        # 2. the log bytes from `offset`
        raw = bytearray()  # bytes not yet written locally; raw[0] is at remote offset `base`
        base = offset
        # from offset 0 the decoder reads the file header, or skips a damaged start as a local reader does
        decoder = FrameDecoder(0, file_start=True) if offset == 0 else FrameDecoder(offset)
        got = 0  # log bytes this connection delivered
        try:
            while True:
                chunk = out.read1(1 << 20)
                if not chunk:
                    if proc.wait() != 0:
                        # nothing at all: the remote side refused (no such file, no permission, ssh
                        # could not connect again); else the link dropped mid-stream
                        return "dropped" if got else "failed"
                    if not follow:
                        decoder.end_of_data()  # the whole file arrived: is a damaged start a log at all?
                        if raw and not decoder.at_start:
                            # the whole file has arrived: its torn tail too, for the reader to report
                            self._append(raw)
                            self.state.remote_offset = base + len(raw)
                    return "done"
                self.state.bytes_received += len(chunk)
                got += len(chunk)
                raw += chunk
                decoder.feed(chunk)
                restart, base = self._take_frames(decoder, raw, base)
                if restart:
                    return restart
        except LogFormatError as exc:  # not a log, or a newer format
            self.state.last_error = str(exc)
            return "failed"

    def _copy_upto(self, raw: bytearray, base: int, upto: int) -> int:
        """Append raw's bytes up to remote offset `upto` to the mirror; returns the new base."""
        n = upto - base
        if n > 0:
            self._append(raw[:n])
            del raw[:n]
            self.state.remote_offset = upto
        return max(base, upto)

    def _take_frames(self, decoder: FrameDecoder, raw: bytearray, base: int) -> tuple[str | None, int]:
        """Copy what the decoder consumed (frames and skipped damage); react to damage.

        Returns (None or "again" to reconnect, the remote offset of raw[0]).
        """
        for item in decoder.frames():
            if isinstance(item, Frame):
                self.state.frames += 1
                continue
            assert isinstance(item, Corruption)
            at = item.offset - base
            if raw[at : at + len(MAGIC)] == MAGIC:
                # tail -F started over: the remote file was truncated or replaced
                self._reset_local()
                return "again", 0
            if item.offset == 0:
                # a damaged start, read on a connection from offset 0: nothing earlier could have
                # been truncated away, so it is the file's own damage
                self.state.corruptions.append(item.offset)
                continue
            if self._trust_damage or item.offset in self._verified_damage:
                self._trust_damage = True  # the file is the one we know: copy its damage as it is
                self.state.corruptions.append(item.offset)
                continue
            # Damage mid-stream: a truncate-and-regrow that tail missed looks like this too.
            # Reconnect (after the usual wait): the identity check tells them apart, and the
            # damage is then real, copied and counted, as is any later damage on that connection.
            self._verified_damage.add(item.offset)
            return "again", self._copy_upto(raw, base, item.offset)
        return None, self._copy_upto(raw, base, decoder.offset)


def fetch(spec: RemoteSpec, local_path: str | None = None, *, ssh_command=None, timeout: float = 300.0) -> str:
    """Copy a remote run log once (for `weighttui info/export/replay`); returns the local path."""
    return RemoteMirror(spec, local_path, ssh_command=ssh_command).fetch(timeout=timeout)


def view_remote(spec: RemoteSpec, run_app, *, mode: str = "watch", max_rows: int = 4096,
                ssh_command=None, err=None) -> int:
    """`weighttui watch/replay SPEC`: the app on a local mirror of a remote log.

    watch: a background mirror follows the remote log while the app runs;
    replay: the log is fetched once first. ssh failing on the first
    connection (unknown host, no key) is reported here, before the app.
    """
    err = sys.stderr if err is None else err
    if mode == "replay":
        try:
            path = fetch(spec, ssh_command=ssh_command)
        except IncompleteCopy as exc:  # show what arrived, and say it is not all
            print(f"weighttui: warning: {exc}", file=err)
            path = exc.path
        except OSError as exc:
            print(f"weighttui: {exc}", file=err)
            return 2
        return run_app(path, mode="replay", title=f"{spec} (over ssh)", max_rows=max_rows)
    mirror = RemoteMirror(spec, ssh_command=ssh_command).start()
    try:
        if not mirror.wait_connected() and mirror.state.last_error:
            print(f"weighttui: ssh {spec}: {mirror.state.last_error or 'no answer'}", file=err)
            return 2
        return run_app(mirror.local_path, mode="watch", title=f"{spec} (over ssh)", max_rows=max_rows)
    finally:
        mirror.stop()


if __name__ == "__main__":  # python -m weighttui.data.remote SPEC LOCAL: mirror until ^C (debugging aid)
    spec_ = parse_remote(sys.argv[1])
    if spec_ is None:
        sys.exit(f"not a remote log (host:path or ssh://host/path): {sys.argv[1]}")
    mirror = RemoteMirror(spec_, sys.argv[2] if len(sys.argv) > 2 else None).start()
    try:
        while True:
            time.sleep(1)
            print(mirror.state, file=sys.stderr)
    except KeyboardInterrupt:
        mirror.stop()
