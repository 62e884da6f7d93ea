"""The store on disk: an index directory that is only ever a cache of the log.

Layout of `<dir>/.<log name>.wtuidx/` (or `$XDG_CACHE_HOME/weighttui/index/<hash>/`
when the log's directory is not writable):

- `manifest.json`: the log's identity (device, inode, a hash of its first bytes
  and of the bytes just before the point covered), how far the log was read
  (scan state), damage found, every run's small state (frame offsets of its run,
  tensors and end records, events, values locations) and where its arrays are.
- `<gen>-g<run>-<row0>.seg`: one group of sealed segments (all kinds of a row
  range), raw little-endian arrays, immutable, with a CRC in the manifest that is
  and a CRC per 64 KiB of every array in the manifest, checked the first time a
  read touches that block (a damaged segment is re-derived from the log's frames,
  whose offsets the index keeps).
- `<gen>-rows.bin`: row tables (step, epoch, batch, time, frame offset) and scalars.

Writes go to temporary names and are renamed into place, the manifest last,
under an advisory lock, so a crash or two builders at once leave either the old
index or the new one. Anything that does not check out (other log, shorter
log, rewritten log, unknown version, bad structure) makes the reader rebuild or
read without the index; no failure here ever reaches the caller.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import stat
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import Future

import numpy as np

from weighttui.log.format import FRAME_HEADER_SIZE, FrameType, crc32_blocks, parse_frame_header
from weighttui.log.paths import user_cache_dir
from weighttui.log.reader import ScanState, read_frame_at, scan_frames
from weighttui.log.records import (
    InvalidRecord,
    RunRecord,
    parse_end,
    parse_prepared,
    parse_run,
    parse_snapshot,
    parse_tensors,
)
from weighttui.log.schema import COLUMNS, KINDS
from weighttui.log.worker import SharedWorker

from .builder import Group, LogIndex, RunState, _Growing, add_blocks, event_from_json, event_to_json
from .columns import (
    CRC_BLOCK,
    SEAL_ENTRIES,
    VIRTUAL,
    Alias,
    Const,
    FileArray,
    FromLog,
    KindColumns,
    Runs,
    Segment,
    Split,
    Tiled,
    Uniform,
    sealed_segment,
)
from .fromlog import LogSource, _Back, holds_row, lagging_segment, restore_tail, snapshot_at

# 2: stand-ins for what a segment holds in less space (columns.compact); 3: events keep a nan_origin
# event's where/index (an older index lost them: rebuilt); 4: a group's histograms and samples may be
# left in the log ({"fromlog": ...}: the histogram part lags the statistics, `weighttui info`).
# Version 3 is read as it is (it has no such groups); an older reader rebuilds a version 4 index.
INDEX_VERSION = 4
_READS = (3, 4)
# Logs smaller than this are read in milliseconds: no index is written for them
# (it would only litter directories of small logs, e.g. test data).
MIN_LOG_BYTES = 1 << 20
_ALIGN = 64
_DTYPES = {"<i4", "<i8", "<f8", "<f4", "|u1", "<u2", "<u4", "|i1"}
_HASH_BYTES = 65536
STALE_TEMP_S = 3600.0  # a temporary file this old belongs to a builder that died


class _Unusable(Exception):
    """The index does not match the log or is damaged: read without it."""


# ---------------------------------------------------------------- location


def writable(directory: str) -> bool:
    """Whether an index may be created in this directory (tests replace this to simulate read-only media)."""
    return os.access(directory, os.W_OK | os.X_OK)


def cache_root() -> str:
    return user_cache_dir("index")


def candidates(path: str) -> list[str]:
    """Index directories for a log, the preferred one first."""
    real = os.path.realpath(path)
    beside = os.path.join(os.path.dirname(real), f".{os.path.basename(real)}.wtuidx")
    cached = os.path.join(cache_root(), hashlib.sha256(real.encode("utf-8", "surrogateescape")).hexdigest()[:32])
    return [beside, cached]


def _usable_dir(d: str) -> bool:
    try:
        st = os.lstat(d)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()


def _dir_for_writing(path: str) -> str | None:
    beside, cached = candidates(path)
    if _usable_dir(beside) and writable(beside):
        return beside
    parent = os.path.dirname(beside)
    if not os.path.lexists(beside) and writable(parent):
        try:
            os.mkdir(beside, 0o700)
            return beside
        except OSError:
            pass
    try:
        os.makedirs(os.path.dirname(cached), mode=0o700, exist_ok=True)
        if not os.path.lexists(cached):
            os.mkdir(cached, 0o700)
    except OSError:
        return None
    return cached if _usable_dir(cached) and writable(cached) else None


# ---------------------------------------------------------------- identity


def _identity(fd: int, st, covered: int) -> dict:
    """What ties an index to its log: the file, its first bytes and those before the covered point; and,
    when the index covers the whole file, its mtime (a log that has not grown since, but was written to
    in place, bit rot rewritten or an edit, is read again rather than served from the index)."""
    head = os.pread(fd, min(_HASH_BYTES, covered), 0)
    lo = max(0, covered - 4096)
    before = os.pread(fd, covered - lo, lo)
    out = {"dev": st.st_dev, "ino": st.st_ino, "covered": covered,
           "head": hashlib.sha256(head).hexdigest(), "before": hashlib.sha256(before).hexdigest()}
    if st.st_size == covered:
        out["mtime"] = st.st_mtime_ns
    return out


def _matches(fd: int, st, ident: dict) -> bool:
    covered = ident.get("covered")
    if not isinstance(covered, int) or covered > st.st_size:
        return False
    if (ident.get("dev"), ident.get("ino")) != (st.st_dev, st.st_ino):
        return False
    # a log of the covered size whose mtime moved was written to in place (appends make it longer)
    if "mtime" in ident and st.st_size == covered and ident["mtime"] != st.st_mtime_ns:
        return False
    now = _identity(fd, st, covered)
    now.pop("mtime", None)
    return now == {k: v for k, v in ident.items() if k != "mtime"}


# ---------------------------------------------------------------- arrays in files


class _Writer:
    """Collects arrays for one file; refs are [file, offset, dtype, shape, CRCs].

    The CRCs are filled in by write() (which may run on the Spiller's thread):
    a ref is used only once its file is written.
    """

    def __init__(self, name: str):
        self.name = name
        self.parts: list[tuple[bytes | memoryview, list | None]] = []  # (bytes, the CRC list they fill)
        self.size = 0

    def add(self, arr: np.ndarray) -> list:
        arr = np.ascontiguousarray(arr)
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        pad = -self.size % _ALIGN
        if pad:
            self._put(b"\0" * pad, None)
        crcs: list[int] = []
        ref = [self.name, self.size, arr.dtype.str, list(arr.shape), crcs]
        if arr.size:
            self._put(memoryview(arr.reshape(-1).view(np.uint8).data), crcs)
        return ref

    def _put(self, b, crcs) -> None:
        self.parts.append((b, crcs))
        self.size += len(b)

    def write(self, directory: str, as_name: str | None = None) -> dict:
        """Write the file (under as_name instead of its name: a spilled group's temporary name)."""
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                for part, crcs in self.parts:
                    if crcs is not None:
                        crcs[:] = crc32_blocks(part, CRC_BLOCK)
                    fh.write(part)
            os.replace(tmp, os.path.join(directory, as_name or self.name))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return {"size": self.size}


class _Files:
    """Index data files named in a manifest: FileArrays into them, checked for size and bounds."""

    def __init__(self, directory: str, files: dict):
        self.dir = directory
        self.files = files
        self.sizes: dict[str, int] = {}

    def array(self, ref, name: str | None = None) -> FileArray:
        fname, off, dtype, shape, crcs = ref
        fname = name or fname
        if fname not in self.files or dtype not in _DTYPES or not isinstance(off, int) or off < 0:
            raise _Unusable("bad array reference")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise _Unusable("bad array shape")
        path = os.path.join(self.dir, fname)
        size = self.sizes.get(fname)
        if size is None:
            size = self.sizes[fname] = os.path.getsize(path)
            if size != self.files[fname]["size"]:
                raise _Unusable("index file has the wrong size")
        arr = FileArray(path, off, dtype, shape, crcs)
        if off + arr.nbytes > size or len(crcs) != -(-arr.nbytes // CRC_BLOCK):
            raise _Unusable("array outside its file")
        return arr

    def loaded(self, ref) -> np.ndarray:
        """A small array (row tables, scalars) read whole."""
        arr = self.array(ref)
        data = arr.read(0, arr.nbytes)
        if data is None:
            raise _Unusable("index file damaged")
        return np.frombuffer(data, dtype=arr.dtype).reshape(arr.shape)


# ---------------------------------------------------------------- save


def save_index(path: str, fd: int, st, store: LogIndex, directory: str | None = None) -> str | None:
    """Write or extend the log's index; the directory used, or None (nothing written). Never raises."""
    if st.st_size < MIN_LOG_BYTES:
        return None
    try:
        directory = directory or _dir_for_writing(path)
        if directory is None:
            return None
        _save(directory, fd, st, store)
        return directory
    except Exception:  # a full disk, a read-only mount, a race: the index is only a cache
        return None


def _seal_for_saving(run: RunState) -> None:
    if isinstance(run.spill, Spiller):
        run.spill.settle(wait=True)  # (a group being written is not rewritten)
    last = run.groups[-1] if run.groups else None
    small = last is not None and sum(s.entries for s in last.kinds.values()) < SEAL_ENTRIES // 2
    if run.sealed_rows < run.rows:
        run.seal(base=small)
    if isinstance(run.spill, Spiller):
        run.spill.settle(wait=True)  # (the tail may have been spilled just now)


def _already_saved(directory: str, fd: int, st, covered: int) -> bool:
    """Whether the directory's manifest is of this log and covers at least `covered` bytes of it."""
    old = _read_manifest(directory)
    return old is not None and isinstance(old.get("log"), dict) and _matches(fd, st, old["log"]) \
        and old["log"]["covered"] >= covered


def _write_manifest(directory: str, fd: int, st, covered: int, scan, size: int, corruptions, unknown_frames,
                    files: dict[str, dict], runs: list, keep: frozenset[str] | set[str] = frozenset()) -> None:
    """Replace the manifest (written to a temporary file, then renamed: readers see the old one or
    the new one), then collect the files no manifest names any more (but `keep`)."""
    manifest = {
        "weighttui_index": INDEX_VERSION,
        "log": _identity(fd, st, covered),
        "scan": scan,
        "size": size,
        "corruptions": corruptions,
        "unknown_frames": unknown_frames,
        "files": files,
        "runs": runs,
    }
    body = json.dumps(manifest, separators=(",", ":")).encode()
    tmp_fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    with os.fdopen(tmp_fd, "wb") as fh:
        fh.write(body)
    os.replace(tmp, os.path.join(directory, "manifest.json"))
    _collect_garbage(directory, set(files) | keep)


def _save(directory: str, fd: int, st, store: LogIndex) -> None:
    covered = store.scan.offset
    gen = f"{int(time.time() * 1000):x}{os.getpid():x}{os.urandom(3).hex()}"
    lock_fd = os.open(os.path.join(directory, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        _settle_spills(store)
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        if _already_saved(directory, fd, st, covered):
            _drop_spilled(directory, store)
            return  # another reader already saved as much of this log
        files: dict[str, dict] = {}
        runs = []
        rows_file = _Writer(f"{gen}-rows.bin")
        for run in store.runs:
            _seal_for_saving(run)
            groups = []
            for g in run.groups:
                if g.ref is None:
                    g.ref = _write_group(directory, f"{gen}-r{run.offset}-{g.row0}.seg", g)
                if "tmp" in g.ref:  # spilled while building: now it becomes part of the index
                    final = os.path.join(directory, g.ref["file"])
                    os.replace(os.path.join(directory, g.ref.pop("tmp")), final)
                    for seg in g.kinds.values():
                        for arr in seg.file_arrays():
                            arr.path = final
                files[g.ref["file"]] = g.ref["info"]
                files.update(g.ref.get("more", {}))  # (a group whose histograms were indexed later: Filler)
                groups.append(g.ref)
            runs.append(_run_json(run, groups, rows_file))
        files[rows_file.name] = rows_file.write(directory)
        _write_manifest(directory, fd, st, covered, [store.scan.offset, store.scan.resyncing, store.scan.pending],
                        store.size, store.corruptions, store.unknown_frames, files, runs)
    finally:
        os.close(lock_fd)


class SavePlan:
    """A save of a live store split in three, for a viewer that must not wait for it (docs/store.md).

    `prepare_save` (on the thread that owns the store, cheap: nothing waited for,
    nothing written) takes what the index will hold: the run states as JSON, the
    row tables (append-only: what was read never changes), the groups and the
    tail's pieces (never changed once added). `write` (any thread, never raises)
    waits for the Spiller, writes the tail as one more group, links the spilled
    files to their final names and the manifest under the lock; the live store is
    not touched. `commit` (the owner's thread again) lets the live groups read
    from the files now in the index and removes the temporary names.
    """

    def __init__(self, path: str, directory: str, store: LogIndex):
        self.path, self.directory = path, directory
        self.gen = f"{int(time.time() * 1000):x}{os.getpid():x}{os.urandom(3).hex()}"
        self.covered = store.scan.offset
        self.scan = [store.scan.offset, store.scan.resyncing, store.scan.pending]
        self.corruptions = list(store.corruptions)
        self.unknown_frames = store.unknown_frames
        self.rows_file = _Writer(f"{self.gen}-rows.bin")
        self.runs: list[tuple[dict, list, dict]] = []  # (run JSON, [(group, ref, pending future)], tail jobs)
        for spill in {id(r.spill): r.spill for r in store.runs if r.spill is not None}.values():
            if isinstance(spill, Spiller):
                spill.settle()  # what is written already; the rest is waited for by write()
        for run in store.runs:
            pending = {id(g): fut for fut, r, g in getattr(run.spill, "_pending", ()) if r is run}
            groups = [(g, g.ref, pending.get(id(g))) for g in run.groups]
            tail = {k: (list(kc._pieces_of_tail(k == "weights")), run.sealed_rows, run.rows, len(kc.columns),
                        kc.bins, k == "weights", kc.edges)
                    for k, kc in run.kinds.items()} if run.sealed_rows < run.rows else {}
            self.runs.append((_run_json(run, [], self.rows_file), groups, tail))
        self.linked: list[tuple[Group, dict, str]] = []  # (live group, its ref, final name) for commit()
        self.written: list[tuple[RunState | None, Group, dict]] = []

    def write(self, fd: int, st) -> str | None:
        """Write the index (the log is `fd`, checked by the caller); the directory, or None. Never raises."""
        try:
            self._write(fd, st)
            return self.directory
        except Exception:  # a full disk, a read-only mount, a race: the index is only a cache
            return None

    def _write(self, fd: int, st) -> None:
        d = self.directory
        lock_fd = os.open(os.path.join(d, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            if _already_saved(d, fd, st, self.covered):
                return  # another reader already saved as much of this log
            files: dict[str, dict] = {}
            keep: set[str] = set()
            runs = []
            for rj, groups, tail in self.runs:
                refs = []
                for g, ref, future in groups:
                    if ref is None and future is not None:
                        ref, _error = future.result()  # the Spiller's file (None: it could not write it)
                    if ref is None:
                        kinds = g._kinds if isinstance(g._kinds, dict) else g._kinds.result()
                        ref = _write_group(d, f"{self.gen}-r{rj['offset']}-{g.row0}.seg", Group(g.row0, g.row1, kinds))
                        self.written.append((None, g, ref))
                    elif "tmp" in ref:  # spilled: its file joins the index under its final name
                        ref = dict(ref)
                        tmp = ref.pop("tmp")
                        keep.add(tmp)  # the live store reads it until commit()
                        _link(d, tmp, ref["file"])
                        self.linked.append((g, ref, tmp))
                    files[ref["file"]] = ref["info"]
                    files.update(ref.get("more", {}))
                    refs.append(ref)
                if tail:
                    row0 = next(iter(tail.values()))[1]
                    kinds = {k: sealed_segment(*job) for k, job in tail.items()}
                    ref = _write_group(d, f"{self.gen}-r{rj['offset']}-{row0}.seg",
                                       Group(row0, next(iter(tail.values()))[2], kinds))
                    files[ref["file"]] = ref["info"]
                    refs.append(ref)
                runs.append(dict(rj, groups=refs))
            files[self.rows_file.name] = self.rows_file.write(d)
            _write_manifest(d, fd, st, self.covered, self.scan, st.st_size, self.corruptions, self.unknown_frames,
                            files, runs, keep)
        finally:
            os.close(lock_fd)

    def commit(self) -> None:
        """On the store's thread after write(): live groups read from the index's files from now on."""
        for g, ref, tmp in self.linked:
            if g.ref is None or g.ref.get("tmp") != tmp:
                continue  # not settled yet, or rewritten meanwhile: the next save links it again
            final = os.path.join(self.directory, ref["file"])
            for seg in g.kinds.values():
                for arr in seg.file_arrays():
                    arr.path = final
            g.ref = ref
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.directory, tmp))
        for _run, g, ref in self.written:
            if g.ref is None:
                g.ref = ref  # (its segments stay in memory, as after a save on this thread)
        self.linked, self.written = [], []


def _link(directory: str, tmp: str, final: str) -> None:
    """The spilled file `tmp` also under its final name (the live store goes on reading `tmp`)."""
    src, dst = os.path.join(directory, tmp), os.path.join(directory, final)
    try:
        os.link(src, dst)
    except FileExistsError:
        pass  # linked by an earlier save (names are unique per Spiller and row)
    except OSError:  # a filesystem without hard links: a copy, renamed into place
        fd, part = tempfile.mkstemp(prefix=".tmp-", dir=directory)
        os.close(fd)
        try:
            shutil.copyfile(src, part)
            os.replace(part, dst)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(part)
            raise


def prepare_save(path: str, size: int, store: LogIndex, directory: str | None = None) -> SavePlan | None:
    """A SavePlan for the store of a log of `size` bytes (None: nothing to save, or nowhere to write).
    Never raises."""
    if size < MIN_LOG_BYTES or not store.runs:
        return None
    try:
        directory = directory or _dir_for_writing(path)
        return None if directory is None else SavePlan(path, directory, store)
    except Exception:
        return None


def _write_group(directory: str, name: str, g: Group) -> dict:
    w = _Writer(name)
    kinds = {k: {a: _ref_out(w, arr) for a, arr in seg.arrays().items()} for k, seg in g.kinds.items()}
    info = w.write(directory)
    return {"row0": g.row0, "row1": g.row1, "kinds": kinds, "file": name, "info": info}


def _settle_spills(store: LogIndex) -> None:
    """Wait for the groups a Spiller is still writing (every run shares the store's)."""
    for spill in {id(r.spill): r.spill for r in store.runs if r.spill is not None}.values():
        if isinstance(spill, Spiller):
            spill.settle(wait=True)


def _drop_spilled(directory: str, store: LogIndex) -> None:
    for run in store.runs:
        for g in run.groups:
            if g.ref is not None and "tmp" in g.ref:
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(directory, g.ref["tmp"]))


INDEX_WRITER = SharedWorker("weighttui-index")  # one writer thread for every Spiller of the process


class Spiller:
    """Writes groups sealed while a big log is being indexed straight to the index directory.

    They go to temporary names (the next save renames them into the index) and
    are then read from there, so building holds a tail and at most MAX_PENDING
    groups in memory, not the whole store. The writing (and its CRCs) runs on
    one background thread while the log goes on being parsed; a group stays in
    memory until its file is written, and only then reads from the file
    (`settle`, on the caller's thread: segments are never changed under it).
    Every Spiller of the process shares the one thread (`_pool`).
    """

    MAX_PENDING = 1  # groups written while the next one is sealed: memory for about two groups

    def __init__(self, directory: str, log: str, histograms: bool = True):
        self.directory = directory
        self.log = log
        # histograms=False: groups are sealed and written without their histograms and samples, which
        # are read back from the log (fromlog.lagging_segment) until a reader indexes them (`info`)
        self.histograms = histograms
        self.source = LogSource(log)  # (opens the log only when something is read back)
        self.gen = f"{int(time.time() * 1000):x}{os.getpid():x}{os.urandom(3).hex()}"
        self._pending: deque = deque()  # (future of (ref, error), run, group), oldest first

    def __call__(self, run: RunState, row0: int, row1: int, jobs: dict) -> Group:
        """A group for rows [row0, row1) whose segments are sealed (columns.sealed_segment(*jobs[kind]))
        and written on the spiller's thread; the log is parsed on meanwhile."""
        # (before the new group joins the pending ones: it joins run.groups only when this returns)
        self.settle()
        name = f"{self.gen}-r{run.offset}-{row0}.seg"
        pool = INDEX_WRITER.executor()
        kinds: dict | Future
        if not self.histograms:
            source = self.source

            def seal() -> dict:
                return {k: lagging_segment(_Back(source, run, k), *job) for k, job in jobs.items()}
        else:
            def seal() -> dict:
                return {k: sealed_segment(*job) for k, job in jobs.items()}
        if len(self._pending) >= self.MAX_PENDING:
            # The writer is behind: this thread seals the group (rather than wait for it), then waits
            # for the oldest write only. On two cores the parsing and the writing then share out the
            # sealing as their speeds need (the C transposes run without the GIL).
            kinds = seal()
            self.settle(wait=True)
        else:
            kinds = pool.submit(seal)
        g = Group(row0, row1, kinds)
        self._pending.append((pool.submit(self._write, g, name), run, g))
        return g

    def restore_tail(self, run: RunState) -> None:
        """What a light scan (histograms=False: run.py reads with scan_frames(light=True)) left of the
        tail's histograms and samples in the log, read back (fromlog.restore_tail)."""
        restore_tail(self.source._log(), run)

    def _write(self, g: Group, name: str):
        """(ref, None) once the group's file is written under its temporary name, or (None, the error)."""
        try:
            w = _Writer(name)
            kinds = {k: {a: _ref_out(w, arr) for a, arr in seg.arrays().items()} for k, seg in g.kinds.items()}
            ref: dict = {"row0": g.row0, "row1": g.row1, "kinds": kinds, "file": name, "tmp": f".tmp-{name}"}
            ref["info"] = w.write(self.directory, ref["tmp"])
            return ref, None
        except Exception as exc:  # a full disk: the group stays in memory
            return None, exc

    def settle(self, wait: bool = False) -> None:
        """Groups whose files are written read from them from now on (wait: for every pending one)."""
        while self._pending and (wait or self._pending[0][0].done()):
            future, run, g = self._pending.popleft()
            ref, _error = future.result()
            try:
                if ref is None:
                    raise OSError("not written")
                files = _Files(self.directory, {ref["tmp"]: ref["info"]})
                kinds = {k: _segment_in(files, arrays, g.row0, g.row1, ref["tmp"], _Back(self.source, run, k))
                         for k, arrays in ref["kinds"].items()}
            except Exception:  # the group stays in memory, written by the next save
                if ref is not None:
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(self.directory, ref["tmp"]))
                continue
            if not any(x is g for x in run.groups):  # merged into a rewritten group meanwhile
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.directory, ref["tmp"]))
                continue
            g.ref = ref
            for k, seg in g.kinds.items():
                seg.replace_arrays(kinds[k])
                seg.on_damage = _repair(run, g, self.log)


def spiller_for(path: str, size: int, histograms: bool = True) -> Spiller | None:
    if size < MIN_LOG_BYTES:
        return None
    try:
        directory = _dir_for_writing(path)
    except OSError:
        return None
    return None if directory is None else Spiller(directory, path, histograms)


def _run_json(run: RunState, groups: list, w: _Writer) -> dict:
    names = list(run.scalars)
    sc_steps = [run.scalars[n][0].view for n in names]
    sc_vals = [run.scalars[n][1].view for n in names]
    return {
        "offset": run.offset,
        "placeholder": not run.run_offset_valid,
        "end_offset": run.end_offset,
        "tensor_frames": run.tensor_frames,
        "events": [event_to_json(e) for e in run.events],
        "record_counts": run.record_counts,
        "last_time": run.last_time,
        "rows": {k: w.add(getattr(run, k).view) for k in ("steps", "epochs", "batches", "times", "offsets")},
        "scalars": {"names": names, "lengths": [int(a.size) for a in sc_steps],
                    "steps": w.add(np.concatenate(sc_steps) if names else np.zeros(0, np.int64)),
                    "values": w.add(np.concatenate(sc_vals) if names else np.zeros(0))},
        "values": [[step, run.values_epoch.get(step), tid, off, start, n]
                   for step, per in run.values.items() for tid, chunks in per.items() for off, start, n in chunks],
        "kinds": {k: {"bins": kc.bins, "seen": kc.seen, "filled": kc.filled.tolist()} for k, kc in run.kinds.items()},
        "groups": groups,
    }


def _collect_garbage(directory: str, keep: set) -> None:
    now = time.time()
    for name in os.listdir(directory):
        if name in keep or name in ("manifest.json", "lock"):
            continue
        full = os.path.join(directory, name)
        try:
            if name.startswith(".tmp-") and now - os.lstat(full).st_mtime < STALE_TEMP_S:
                continue  # another builder may be writing it right now
            os.unlink(full)
        except OSError:
            pass


# ---------------------------------------------------------------- derived values


def _derived_name(key: str) -> str:
    return "derived-" + hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:24] + ".json"


def load_derived(directory: str, path: str, covered: int, key: str) -> tuple | None:
    """(value,) that save_derived kept for `key` and this log as read up to `covered`, or None.

    A derived value is a cache of the index's kind: the log's identity (the same
    hashes as the manifest's) must match at the point it was computed for, which
    must be where the reader is now; each save of the index removes them all.
    """
    try:
        with open(os.path.join(directory, _derived_name(key)), "rb") as fh:
            doc = json.loads(fh.read(1 << 28))
        fd = os.open(path, os.O_RDONLY)
        try:
            ok = isinstance(doc, dict) and doc.get("key") == key and isinstance(doc.get("log"), dict) \
                and doc["log"].get("covered") == covered and _matches(fd, os.fstat(fd), doc["log"])
        finally:
            os.close(fd)
    except (OSError, ValueError):
        return None
    return (doc["value"],) if ok else None


def save_derived(directory: str, path: str, covered: int, key: str, value) -> bool:
    """Keep a value computed from the log read up to `covered` (JSON) beside its index; never raises."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            st = os.fstat(fd)
            if covered > st.st_size or not _usable_dir(directory) or not writable(directory):
                return False
            body = json.dumps({"key": key, "log": _identity(fd, st, covered), "value": value}).encode()
        finally:
            os.close(fd)
        tmp_fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
        try:
            with os.fdopen(tmp_fd, "wb") as fh:
                fh.write(body)
            os.replace(tmp, os.path.join(directory, _derived_name(key)))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return True
    except Exception:  # (TypeError/ValueError: a value JSON cannot hold) the cache is optional
        return False


# ---------------------------------------------------------------- load


def _read_manifest(directory: str) -> dict | None:
    try:
        with open(os.path.join(directory, "manifest.json"), "rb") as fh:
            m = json.loads(fh.read(1 << 30))
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) and m.get("weighttui_index") in _READS else None


def load_index(path: str, fd: int, st, fill: bool = False) -> tuple[LogIndex, str] | None:
    """(the store as far as the index covers the log, its directory), or None to read without it.

    fill: a group whose histograms the index left in the log has them indexed the first time they are
    read (Filler); else they are read back from the log every time."""
    for directory in candidates(path):
        if not _usable_dir(directory):
            continue
        for _attempt in range(3):  # a builder may replace the files between our reads
            m = _read_manifest(directory)
            if m is None:
                break
            try:
                if not _matches(fd, st, m["log"]):
                    break
                return _load(directory, m, fd, path, Filler(directory, path) if fill else None), directory
            except FileNotFoundError:
                continue
            except Exception:  # anything malformed: read without this index
                break
    return None


def _load(directory: str, m: dict, fd: int, path: str, filler: Filler | None = None) -> LogIndex:
    files = _Files(directory, m["files"])
    store = LogIndex()
    offset, resyncing, pending = m["scan"]
    store.scan = ScanState(int(offset), bool(resyncing), int(pending))
    store.size = int(m["size"])
    store.corruptions = [(int(o), str(r)) for o, r in m["corruptions"]]
    store.unknown_frames = int(m["unknown_frames"])
    source = LogSource(path)  # (what a group whose histograms lag reads them back through)
    for rj in m["runs"]:
        store.runs.append(_load_run(rj, files, fd, path, source, filler))
    return store


def _load_run(rj: dict, files: _Files, fd: int, path: str, source: LogSource, filler: Filler | None = None) \
        -> RunState:
    if rj["placeholder"]:
        run = RunState(RunRecord(run_id="", created=0.0), int(rj["offset"]), run_offset_valid=False)
    else:
        got = read_frame_at(fd, int(rj["offset"]))
        if got is None:
            raise _Unusable("run frame no longer verifies")
        run = RunState(parse_run(got[1]), int(rj["offset"]))
    for off in rj["tensor_frames"]:
        got = read_frame_at(fd, int(off))
        if got is None:
            raise _Unusable("tensors frame no longer verifies")
        run.add_tensors(parse_tensors(got[1], run.by_id))
        run.tensor_frames.append(int(off))
    if rj["end_offset"] >= 0:
        got = read_frame_at(fd, int(rj["end_offset"]))
        if got is None:
            raise _Unusable("end frame no longer verifies")
        run.end = parse_end(got[1])
        run.end_offset = int(rj["end_offset"])
    run.events = [event_from_json(e) for e in rj["events"]]
    run.record_counts = {str(k): int(v) for k, v in rj["record_counts"].items()}
    run.last_time = rj["last_time"]
    rows = rj["rows"]
    run.steps = _Growing(np.int64, data=files.loaded(rows["steps"]))
    run.epochs = _Growing(np.int64, data=files.loaded(rows["epochs"]))
    run.batches = _Growing(np.int64, data=files.loaded(rows["batches"]))
    run.times = _Growing(np.float64, data=files.loaded(rows["times"]))
    run.offsets = _Growing(np.int64, data=files.loaded(rows["offsets"]))
    n = run.steps.n
    if not all(getattr(run, k).n == n for k in ("epochs", "batches", "times", "offsets")):
        raise _Unusable("row tables of different lengths")
    sc = rj["scalars"]
    steps, values = files.loaded(sc["steps"]), files.loaded(sc["values"])
    at = 0
    for name, length in zip(sc["names"], sc["lengths"], strict=True):
        run.scalars[str(name)] = (_Growing(np.int64, data=steps[at:at + length]),
                                  _Growing(np.float64, data=values[at:at + length]))
        at += length
    for step, epoch, tid, off, start, count in rj["values"]:
        run.values.setdefault(int(step), {}).setdefault(int(tid), []).append((int(off), int(start), int(count)))
        run.values_epoch.setdefault(int(step), epoch)
    for k, kj in rj["kinds"].items():
        kc = run.kinds[k]
        kc.bins = None if kj["bins"] is None else int(kj["bins"])
        kc.seen = bool(kj["seen"])
        filled = kj.get("filled")
        if not isinstance(filled, list) or len(filled) != len(kc.columns):
            raise _Unusable("columns of another version")
        kc.filled = np.array(filled, dtype=bool)
    at = 0
    for gj in rj["groups"]:
        row0, row1 = int(gj["row0"]), int(gj["row1"])
        if row0 != at or row1 <= row0 or row1 > n:
            raise _Unusable("groups do not tile the rows")
        kinds = {}
        for k, arrays in gj["kinds"].items():
            if k not in KINDS:
                raise _Unusable("unknown kind")
            seg = _segment_in(files, arrays, row0, row1, back=_Lagging(source, run, k, filler))
            e = seg.entries
            if seg.width > len(COLUMNS[k]) or any(_shape(c) != (e,) for c in [seg.cols, *seg.stats]):
                raise _Unusable("segment shapes do not match")
            if any(x is not None and _shape(x) != (e,) for x in (seg.lo, seg.hi)):
                raise _Unusable("histogram edges do not match")
            if any(isinstance(x, Alias) and x.stat >= seg.width for x in (seg.lo, seg.hi)):
                raise _Unusable("histogram edges name a missing statistic")
            if seg.counts is not None and (_shape(seg.counts) != (e, kc_bins(run, k))):
                raise _Unusable("histogram shape does not match")
            if seg.soff is not None and (_shape(seg.soff) != (e + 1,) or seg.samples is None
                                         or len(_shape(seg.samples)) != 1):
                raise _Unusable("sample offsets do not match")
            kinds[k] = seg
        group = Group(row0, row1, kinds, ref=gj)
        for seg in kinds.values():
            seg.on_damage = _repair(run, group, path)
        run.groups.append(group)
        # column indices are checked when first read (span): a bad one means a damaged segment
        at = row1
    run.sealed_rows = at
    if at != n:
        raise _Unusable("rows past the last group")
    return run


def _ref_out(w: _Writer, arr):
    """The manifest's reference to one stored array or stand-in (columns.py), its data added to w."""
    if isinstance(arr, list):  # statistics: one reference per column
        return [_ref_out(w, a) for a in arr]
    if isinstance(arr, Const):
        return {"const": arr.bits, "n": arr.n}
    if isinstance(arr, Uniform):
        return {"uniform": arr.k, "n": arr.n}
    if isinstance(arr, Alias):
        return {"alias": arr.stat, "n": arr.n}
    if isinstance(arr, Tiled):
        return {"tile": _ref_out(w, arr.base), "n": arr.n}
    if isinstance(arr, Runs):
        return {"runs": _ref_out(w, arr.cols), "starts": _ref_out(w, arr.starts), "n": arr.n}
    if isinstance(arr, Split):
        return {"split": [None if p is None else _ref_out(w, p) for p in arr.parts], "cls": _ref_out(w, arr.cls),
                "at": _ref_out(w, arr.at), "n": arr.n, "bins": arr.bins, "dtype": arr.dtype.str}
    if isinstance(arr, FromLog):  # (histograms and samples not indexed yet: read back from the log)
        return {"fromlog": arr.field, "n": arr.n, "bins": arr.bins, "dtype": arr.dtype.str}
    if isinstance(arr, FileArray):  # (a group is written from memory; read it whole if not)
        data = arr.read(0, arr.nbytes)
        if data is None:
            raise OSError("index file damaged while rewriting it")
        arr = np.frombuffer(data, dtype=arr.dtype).reshape(arr.shape)
    return w.add(arr)


_FROMLOG = {"lo": ("<f8",), "hi": ("<f8",), "counts": ("|u1", "<u2", "<u4"), "samples": ("<f4",)}


def _ref_in(files: _Files, ref, fname: str | None = None, back: _Back | None = None):
    """A stored array or stand-in from its manifest reference (the inverse of _ref_out); back: what a
    part left in the log is read back through."""
    if isinstance(ref, list):
        return files.array(ref, fname)
    if not isinstance(ref, dict) or not isinstance(ref.get("n"), int) or ref["n"] < 0:
        raise _Unusable("bad array reference")
    n = ref["n"]
    if "fromlog" in ref:
        field, bins = ref["fromlog"], ref.get("bins")
        if back is None or ref.get("dtype") not in _FROMLOG.get(field, ()) or not isinstance(bins, int) \
                or (bins <= 0) != (field != "counts"):
            raise _Unusable("bad fromlog reference")
        return FromLog(back, field, n, bins, ref["dtype"])
    if isinstance(ref.get("const"), int) and -(2**63) <= ref["const"] < 2**63:
        return Const(ref["const"], n)
    if isinstance(ref.get("uniform"), int) and ref["uniform"] >= 0:
        return Uniform(ref["uniform"], n)
    if isinstance(ref.get("alias"), int) and ref["alias"] >= 0:
        return Alias(ref["alias"], n)
    if "tile" in ref:
        base = files.array(ref["tile"], fname)
        if base.ndim != 1 or (base.shape[0] == 0) != (n == 0) or (base.shape[0] and n % base.shape[0]):
            raise _Unusable("bad tiled rows")
        return Tiled(base, n)
    if "runs" in ref:
        cols, starts = files.array(ref["runs"], fname), files.array(ref["starts"], fname)
        if cols.ndim != 1 or starts.shape != (cols.shape[0] + 1,):
            raise _Unusable("bad column runs")
        return Runs(cols, starts, n)
    if "split" in ref:
        kinds = ("|u1", "<u2", "<u4")
        if not isinstance(ref["split"], list) or len(ref["split"]) != 3 or ref.get("dtype") not in kinds \
                or not isinstance(ref.get("bins"), int):
            raise _Unusable("bad split counts")
        parts = [None if r is None else files.array(r, fname) for r in ref["split"]]
        cls, at = files.array(ref["cls"], fname), files.array(ref["at"], fname)
        if any(p is not None and (p.dtype.str != kinds[c] or p.ndim != 2 or p.shape[1] != ref["bins"])
               for c, p in enumerate(parts)) or sum(p.shape[0] for p in parts if p is not None) != n \
                or cls.ndim != 1 or at.shape != cls.shape or cls.dtype.str != "|i1" or at.dtype.str != "<i8":
            raise _Unusable("bad split counts")
        return Split(parts, cls, at, n, ref["bins"], ref["dtype"])
    raise _Unusable("unknown array reference")


def _shape(arr) -> tuple:
    if isinstance(arr, Split) or isinstance(arr, FromLog) and arr.field == "counts":
        return (arr.n, arr.bins)
    return (arr.n,) if isinstance(arr, VIRTUAL) else tuple(arr.shape)


def _segment_in(files: _Files, arrays: dict, row0: int, row1: int, fname: str | None = None,
                back: _Back | None = None) -> Segment:
    if not isinstance(arrays, dict) or not isinstance(arrays.get("stats"), list):
        raise _Unusable("bad segment")
    a = {name: ([_ref_in(files, r, fname) for r in ref] if name == "stats"
                else _ref_in(files, ref, fname, back if name in _FROMLOG else None))
         for name, ref in arrays.items()}
    if any(isinstance(c, VIRTUAL) and not isinstance(c, Const) for c in a["stats"]):
        raise _Unusable("bad statistic column")
    if any(isinstance(x, FromLog) and x.field != name for name, x in a.items()) \
            or isinstance(a.get("counts"), FromLog) != isinstance(a.get("lo"), FromLog) \
            or isinstance(a.get("lo"), FromLog) != isinstance(a.get("hi"), FromLog):
        raise _Unusable("bad fromlog reference")
    counts = a.get("counts")
    if isinstance(counts, Split) and (not isinstance(a["cols"], Runs) or _shape(counts.cls) != _shape(a["cols"].cols)):
        raise _Unusable("split counts do not match the column runs")
    if isinstance(a.get("samples"), VIRTUAL) and not isinstance(a["samples"], FromLog) \
            or isinstance(counts, VIRTUAL) and not isinstance(counts, (Split, FromLog)):
        raise _Unusable("bad stand-in")
    return Segment(row0, row1, a["rows"], a["cols"], a["stats"], a.get("lo"), a.get("hi"), a.get("counts"),
                   a.get("samples"), a.get("soff"))


def kc_bins(run: RunState, kind: str) -> int | None:
    return run.kinds[kind].bins


def _repair(run: RunState, group: Group, path: str):
    def on_damage(_seg: Segment) -> None:
        fresh = _rederive(run, group, path)
        for k, seg in group.kinds.items():
            seg.replace_arrays(fresh.kinds[k])
        group.ref = None  # written again at the next save

    return on_damage


def _add_snapshot(kinds: dict[str, KindColumns], run: RunState, row: int, s) -> None:
    """A snapshot read back from the log into a group's fresh columns (its samples with the weights)."""
    cols, slen = run.cols_of(s.ids)
    add_blocks([(kinds[k], block) for k in KINDS if (block := getattr(s, k)) is not None], row, cols, s.sample, slen)


def _rederive(run: RunState, g: Group, path: str) -> Group:
    """A group whose index file is damaged, built again from the log's snapshot frames."""
    kinds = {k: KindColumns(k) for k in KINDS}
    for k, kc in kinds.items():
        kc.bins = run.kinds[k].bins
    fd = os.open(path, os.O_RDONLY)
    try:
        for row in range(g.row0, g.row1):
            # a frame that no longer verifies (the log was rewritten in place) is left out, not guessed
            s = snapshot_at(fd, run, row)
            if s is None:
                continue
            _add_snapshot(kinds, run, row, s)
    finally:
        os.close(fd)
    segs = {k: kc.seal(g.row0, g.row1, k == "weights") for k, kc in kinds.items()}
    return Group(g.row0, g.row1, segs)


def _rescanned(run: RunState, g: Group, path: str) -> Group | None:
    """The group built again from its snapshot frames, read in one scan of the log from its first one
    to its last (a fill: as the first read read them); None when any of them no longer reads back as
    the snapshot its row holds."""
    offs = run.offsets.view[g.row0:g.row1].tolist()
    if not offs:
        return None
    kinds = {k: KindColumns(k) for k in KINDS}
    for k, kc in kinds.items():
        kc.bins = run.kinds[k].bins
    fd = os.open(path, os.O_RDONLY)
    try:
        parsed = parse_frame_header(os.pread(fd, FRAME_HEADER_SIZE, offs[-1]), 0)
        if parsed is None:
            return None
        row, want = g.row0, offs[0]
        for item in scan_frames(fd, ScanState(offs[0]), offs[-1] + FRAME_HEADER_SIZE + parsed[0] + 4,
                                prepared=True):
            if item.offset < want:
                continue  # (the scalars, events ... between two snapshots, or damage the first read skipped)
            p = getattr(item, "payload", None)
            if item.offset > want or p is None or item.type != FrameType.SNAPSHOT:
                return None
            try:
                s = (parse_prepared if type(p) is tuple else parse_snapshot)(p, run.by_id, run._ids_checked)
            except (InvalidRecord, ValueError, TypeError, OverflowError):
                return None
            if not holds_row(run, row, s):
                return None
            _add_snapshot(kinds, run, row, s)
            row += 1
            if row == g.row1:
                break
            want = offs[row - g.row0]
        if row != g.row1:
            return None
    finally:
        os.close(fd)
    return Group(g.row0, g.row1, {k: kc.seal(g.row0, g.row1, k == "weights") for k, kc in kinds.items()})



# ---------------------------------------------------------------- histograms left in the log


class _Lagging(_Back):
    """What a group whose histograms and samples the index left in the log reads them through: the
    Filler indexes the group when a read wants at least half of its rows (a range, a whole run),
    else - a thinned row view (the viewer's 2,048 rows of a long run), a few snapshots - only
    the frames of the rows read are read back."""

    __slots__ = ("filler",)

    def __init__(self, source: LogSource, run: RunState, kind: str, filler: Filler | None):
        super().__init__(source, run, kind)
        self.filler = filler

    def _filled(self, seg: Segment, field: str, idx: np.ndarray) -> bool:
        if self.filler is None or not idx.size:
            return False
        a = int(idx[0])
        rows = seg.part("rows", a, int(idx[-1]) + 1)[idx - a]
        return 2 * np.unique(rows).size >= seg.row1 - seg.row0 and self.filler.fill(self.run, seg) \
            and not isinstance(getattr(seg, field), FromLog)

    def read(self, seg: Segment, field: str, a: int, b: int) -> np.ndarray:
        if field != "samples" and self._filled(seg, field, np.arange(a, max(a, b), dtype=np.int64)):
            return seg.part(field, a, b)
        return super().read(seg, field, a, b)

    def take(self, seg: Segment, field: str, idx: np.ndarray) -> np.ndarray:
        if self._filled(seg, field, idx):
            return seg.take(field, idx)
        return super().take(seg, field, idx)


def _lags(g: Group) -> bool:
    return any(isinstance(x, FromLog) for seg in g.kinds.values() for x in (seg.counts, seg.lo, seg.samples))


class Filler:
    """Indexes the histograms and samples of a group that an index left in the log (a first `info`),
    the first time a reader that wants them indexed reads them.

    The group is derived again from its snapshot frames (every frame must still read back as the
    snapshot the row table holds, else nothing is filled and they are read back entry by entry);
    its histograms and samples are written to a second file of the group (`more` in its manifest
    entry; its statistics, rows and columns stay in the first) and the manifest is replaced under
    the index's lock - only if it still names that very group (another reader may have rewritten
    or filled it meanwhile: then this reader reads back). The manifest's log identity and reach are
    not changed, so the summaries kept beside it (derived-*.json) stay valid.
    """

    def __init__(self, directory: str, path: str):
        self.directory, self.path = directory, path
        self.gen = f"{int(time.time() * 1000):x}{os.getpid():x}{os.urandom(3).hex()}"
        self.failed: set[tuple[int, int, str]] = set()  # (run offset, row0, file) not to try again
        self._lock = threading.Lock()
        self.filled = 0  # groups filled (tests, benchmarks)

    def fill(self, run: RunState, seg: Segment) -> bool:
        """Whether seg's group holds its histograms now. Never raises."""
        with self._lock:
            g = next((g for g in run.groups if g.row0 <= seg.row0 < g.row1
                      and any(x is seg for x in g.kinds.values())), None)
            if g is None or g.ref is None or not _lags(g):
                return g is not None and not _lags(g)
            key = (run.offset, g.row0, str(g.ref.get("file")))
            if key in self.failed:
                return False
            try:
                ok = self._fill(run, g)
            except Exception:  # the index is only a cache: read back instead
                ok = False
            if not ok:
                self.failed.add(key)
            return ok

    def _fill(self, run: RunState, g: Group) -> bool:
        d = self.directory
        if not _usable_dir(d) or not writable(d):
            return False
        old = g.ref["file"]
        lock_fd = os.open(os.path.join(d, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            m = _read_manifest(d)
            fd = os.open(self.path, os.O_RDONLY)
            try:
                if m is None or not _matches(fd, os.fstat(fd), m.get("log", {})):
                    return False
            finally:
                os.close(fd)
            place = next((gj for rj in m["runs"] if rj.get("offset") == run.offset
                          for gj in rj.get("groups", ()) if isinstance(gj, dict)
                          and gj.get("file") == old and gj.get("row0") == g.row0 and gj.get("row1") == g.row1
                          and gj.get("kinds", {}).keys() == g.kinds.keys()), None)
            if place is None:
                return False  # rewritten by another reader meanwhile
            if not place.get("more"):  # (else another reader filled it meanwhile: its files are taken)
                fresh = _rescanned(run, g, self.path)
                if fresh is None or set(fresh.kinds) != set(g.kinds) \
                        or any(fresh.kinds[k].entries != seg.entries for k, seg in g.kinds.items()):
                    return False  # a frame no longer reads back as it did: nothing is filled
                # only the histograms and samples go to the new file: the group's statistics, rows and
                # columns stay where they are (the group names both files: "more")
                w = _Writer(f"{self.gen}-r{run.offset}-{g.row0}-h.seg")
                for k, seg in fresh.kinds.items():
                    place["kinds"][k].update({a: _ref_out(w, arr) for a, arr in seg.arrays().items()
                                              if a in _FROMLOG or a == "soff"})
                info = w.write(d)
                place["more"] = {w.name: info}
                m["files"][w.name] = info
                m["weighttui_index"] = INDEX_VERSION
                body = json.dumps(m, separators=(",", ":")).encode()
                tmp_fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=d)
                with os.fdopen(tmp_fd, "wb") as fh:
                    fh.write(body)
                os.replace(tmp, os.path.join(d, "manifest.json"))
        finally:
            os.close(lock_fd)
        files = _Files(d, {name: m["files"][name] for name in (old, *place["more"])})
        kinds = {k: _segment_in(files, arrays, g.row0, g.row1, back=_Back(LogSource(self.path), run, k))
                 for k, arrays in place["kinds"].items()}
        for k, seg in g.kinds.items():
            seg.replace_arrays(kinds[k])
            seg.on_damage = _repair(run, g, self.path)
        g.ref = place
        self.filled += 1
        return True
