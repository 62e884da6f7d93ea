"""Tensors as read-only views of memory-mapped checkpoint files, and giving their pages back.

A mapped tensor costs no copy: the statistics kernel and the log writer read
the page cache directly. Pages a process has touched count in its RSS for as
long as they stay mapped, so the import gives a tensor's pages back
(madvise(MADV_DONTNEED): they stay in the page cache, a later read maps them
again) once its statistics and values are done; that keeps the peak at about
two tensors (the current one and its previous copy), whatever the file size.

A file that shrinks while mapped would fault (SIGBUS, which kills the
process: no Python exception) on the pages past its new end. So a file is
mapped in place only when nobody is likely to rewrite it (`weighttui import`,
a file unchanged for SETTLED_S; readers.open_reader decides), and a mapped
reader checks the file's size before each tensor; every other file
(`weighttui watch`, a file changed recently) is first copied with
private_copy() into a file nobody else writes, and that copy is mapped.

A file mapped in place is also held under a read lease (Lease, Linux's
fcntl F_SETLEASE) where the system grants one: a process that opens it for
writing or truncates it then waits in open()/truncate() until the import
lets go, which it does only between groups of tensors, once nothing reads
the file's pages any more (Lease.broken(), checked by readers.changed). So a
trainer rewriting a settled file can no longer pull pages from under the
kernel; it is held up for at most one group's reading (the kernel gives the
lease up by itself after /proc/sys/fs/lease-break-time, 45 s by default).
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import signal
import struct
import sys
import tempfile
import threading
import zipfile

import numpy as np

try:
    import fcntl
except ImportError:  # not a Unix: no leases
    fcntl = None  # type: ignore[assignment]

from weighttui.integrations.importers.base import ImportFileError

PAGE = mmap.PAGESIZE
_COPY_CHUNK = 1 << 24
_MADV_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # zip local header: signature, ..., name length, extra field length
_libc_madvise = None


def map_file(f) -> mmap.mmap | None:
    """A read-only map of an open file (None where it cannot be mapped: empty, or not a regular file)."""
    try:
        if os.fstat(f.fileno()).st_size == 0:
            return None
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        return None


def view(mm: mmap.mmap, dtype, shape: tuple[int, ...], offset: int) -> np.ndarray:
    """A read-only array over mm[offset:]; where the offset is not aligned for dtype (.npz members), an
    aligned copy instead (the kernel reads aligned items), whose source pages are given back at once."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    arr = np.frombuffer(mm, dtype=dtype, count=count, offset=offset).reshape(shape)
    if arr.flags.aligned:
        return arr
    out = np.empty(shape, dtype=dtype)
    step = max(1, (1 << 22) // max(1, dtype.itemsize))  # 4 MiB at a time, each given back once copied
    flat_in, flat_out = arr.reshape(-1), out.reshape(-1)
    for start in range(0, count, step):
        flat_out[start:start + step] = flat_in[start:start + step]
        drop(mm, offset + start * dtype.itemsize, min(step, count - start) * dtype.itemsize)
    return out


def zip_member_start(mm: mmap.mmap, info: zipfile.ZipInfo) -> int | None:
    """Where a stored (uncompressed) zip member's bytes start in the mapped archive (None: compressed, or its
    local header is not where the central directory says)."""
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    at = info.header_offset
    if at + _LOCAL_HEADER.size > len(mm):
        return None
    sig, n_name, n_extra = _LOCAL_HEADER.unpack_from(mm, at)
    if sig != b"PK\x03\x04":
        return None
    start = at + _LOCAL_HEADER.size + n_name + n_extra
    return start if start + info.file_size <= len(mm) else None


def close(mm: mmap.mmap | None) -> None:
    """Unmap mm, unless a view of it is still referenced somewhere: then the map goes with the view."""
    if mm is not None:
        with contextlib.suppress(BufferError):
            mm.close()


def drop(mm: mmap.mmap | None, offset: int, nbytes: int) -> None:
    """Unmap the pages of mm[offset:offset + nbytes] from this process (not from the page cache)."""
    if mm is None or _MADV_DONTNEED is None or nbytes <= 0:
        return
    start = offset - offset % PAGE
    end = min(len(mm), offset + nbytes)
    try:
        mm.madvise(_MADV_DONTNEED, start, end - start)
    except (OSError, ValueError):
        pass


def file_ranges(path: str) -> list[tuple[int, int]]:
    """Address ranges where this process maps the file at path (Linux /proc/self/maps; [] elsewhere)."""
    try:
        st = os.stat(path)
        out = []
        with open("/proc/self/maps") as fh:
            for line in fh:
                parts = line.split(None, 5)
                if len(parts) < 5 or parts[4] != str(st.st_ino):
                    continue
                major, minor = (int(x, 16) for x in parts[3].split(":"))
                if os.makedev(major, minor) != st.st_dev:
                    continue
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                out.append((lo, hi))
        return out
    except (OSError, ValueError):
        return []


def drop_address(arr: np.ndarray, ranges: list[tuple[int, int]]) -> None:
    """drop() for an array that a library mapped (torch.load(mmap=True)): only where its memory lies inside
    one of `ranges` (file_ranges of that file), so that anonymous memory is never touched."""
    global _libc_madvise
    if _MADV_DONTNEED is None or not sys.platform.startswith("linux") or arr.nbytes == 0:
        return
    addr = arr.__array_interface__["data"][0]
    start, end = addr - addr % PAGE, addr + arr.nbytes
    if not any(lo <= start and end <= hi for lo, hi in ranges):
        return
    if _libc_madvise is None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        _libc_madvise = libc.madvise
        _libc_madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        _libc_madvise.restype = ctypes.c_int
    _libc_madvise(start, end - start, _MADV_DONTNEED)


def signature(st: os.stat_result) -> tuple[int, int, int, int, int]:
    """What changes when a file is rewritten (in place or replaced): device, inode, size, mtime, ctime."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def private_copy(path: str, directory: str | None = None) -> tuple[str, tuple]:
    """A copy of path in a new file in directory (the system's temporary directory if None) that nobody else
    writes, so that it can be mapped safely; ImportFileError ("changed while being read") if path changed
    (size, mtime, inode) while it was copied. Returns (the copy's path, signature() of the file copied); the
    caller opens the copy and then unlinks it.

    read()/sendfile() of a file cut short return fewer bytes (no fault), and the copy goes through the
    kernel (sendfile), not through this process's memory.
    """
    base = os.path.basename(path)
    try:
        src = open(path, "rb")
    except OSError as exc:
        raise ImportFileError(f"cannot be read: {exc.strerror or exc}") from None
    with src:
        before = signature(os.fstat(src.fileno()))
        fd, tmp = _new_file(base, directory)
        try:
            try:
                with os.fdopen(fd, "wb") as dst:
                    copied = _copy(src, dst)
                    after = signature(os.fstat(src.fileno()))
            except OSError as exc:
                raise ImportFileError(f"could not be copied for reading: {exc.strerror or exc}") from None
            if before != after or copied != before[2]:
                raise ImportFileError(f"changed while being read ({copied} bytes copied of "
                                      f"{before[2]}, now {after[2]}; a trainer rewriting it?): left for later")
        except BaseException:
            os.unlink(tmp)
            raise
    return tmp, before


def _new_file(base: str, directory: str | None) -> tuple[int, str]:
    """mkstemp in directory, else (missing, not writable) in the system's temporary directory."""
    for where in ([directory] if directory else []) + [None]:
        try:
            return tempfile.mkstemp(prefix=".weighttui-copy-", suffix=f"-{base}", dir=where)
        except OSError as exc:
            why = exc
    raise ImportFileError(f"no room for a private copy in {directory or tempfile.gettempdir()}: "
                          f"{why.strerror or why}") from None


def _copy(src, dst) -> int:
    copied = 0
    try:
        while True:
            n = os.sendfile(dst.fileno(), src.fileno(), copied, _COPY_CHUNK)
            if n == 0:
                return copied
            copied += n
    except (AttributeError, OSError):  # no sendfile here (or not for these files): read and write
        src.seek(copied)
        dst.seek(copied)
        buf = bytearray(_COPY_CHUNK)
        while True:
            n = src.readinto(buf)
            if not n:
                return copied
            dst.write(memoryview(buf)[:n])
            copied += n


# ------------------------------------------------------------------ leases

_F_SETLEASE = getattr(fcntl, "F_SETLEASE", 1024)
_F_GETLEASE = getattr(fcntl, "F_GETLEASE", 1025)
_F_RDLCK, _F_UNLCK = getattr(fcntl, "F_RDLCK", 0), getattr(fcntl, "F_UNLCK", 2)
_lease_users = 0  # leases() contexts open; while 0, no lease is taken
_saved_sigio = None


@contextlib.contextmanager
def leases():
    """Files mapped in place inside this context are held under read leases (where the system grants them).

    A broken lease is signalled with SIGIO, whose default action ends the
    process: the lease is polled instead (Lease.broken), so SIGIO is ignored
    while inside, and restored after. Only where that can be done (the main
    thread; SIGIO not handled by someone else) are leases taken at all.
    """
    global _lease_users, _saved_sigio
    usable = False
    if fcntl is not None and sys.platform.startswith("linux") and threading.current_thread() is threading.main_thread():
        current = signal.getsignal(signal.SIGIO)
        if _lease_users or current in (signal.SIG_DFL, signal.SIG_IGN):
            if not _lease_users:
                _saved_sigio = current
                signal.signal(signal.SIGIO, signal.SIG_IGN)
            _lease_users += 1
            usable = True
    try:
        yield usable
    finally:
        if usable:
            _lease_users -= 1
            if not _lease_users and _saved_sigio is not None:
                signal.signal(signal.SIGIO, _saved_sigio)
                _saved_sigio = None


class BeingWritten(ImportFileError):
    """Someone has the file open for writing right now (a read lease is refused): read a private copy."""


class Lease:
    """A read lease on path (its own read-only descriptor), or None from take() where leases are off or refused
    (leases() not entered, another filesystem, a file this user does not own without CAP_LEASE)."""

    def __init__(self, fd: int):
        self.fd: int | None = fd

    @classmethod
    def take(cls, path: str) -> Lease | None:
        if not _lease_users:
            return None
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.fcntl(fd, _F_SETLEASE, _F_RDLCK)
        except OSError as exc:
            os.close(fd)
            if exc.errno == errno.EAGAIN:
                raise BeingWritten("open for writing by another process") from None
            return None
        return cls(fd)

    def broken(self, let_go: bool = True) -> bool:
        """Whether someone asked to write the file since (or the lease is gone); with let_go, let go of it
        then (the writer goes on). It stays broken."""
        if self.fd is None:
            return True
        try:
            held = fcntl.fcntl(self.fd, _F_GETLEASE) == _F_RDLCK
        except OSError:
            held = False
        if not held and let_go:
            self.close()
        return not held

    def close(self) -> None:
        if self.fd is not None:
            try:
                fcntl.fcntl(self.fd, _F_SETLEASE, _F_UNLCK)
            except OSError:
                pass
            os.close(self.fd)
            self.fd = None
