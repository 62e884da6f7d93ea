"""A viewer's index save in three parts (RunData.index_save: taken, written on another thread,
committed): the store goes on ingesting between them, and the index left reads the same as the log.
"""

from __future__ import annotations

import errno
import os
import threading

import pytest
import test_store
from test_store import digest, index_dir, two_runs_with_damage, write_run

import weighttui
from weighttui.data.run import RunData
from weighttui.log.tail import LogTail

indexed = test_store.indexed  # the fixture: an index for tiny logs, in small segments


def feed(data: RunData, tail: LogTail, max_polls: int | None = None) -> None:
    """What a viewer's follower hands the UI thread: polls until the end of the file."""
    for _ in range(max_polls or 10**6):
        poll = tail.poll()
        data.ingest(poll)
        if not poll.frames and not poll.corruptions and tail.pending == 0:
            return


@pytest.mark.parametrize("hard_links", [True, False])
def test_index_saved_while_the_store_goes_on_ingesting(indexed, monkeypatch, hard_links):
    refused: list[str] = []
    if not hard_links:  # a filesystem without them: the spilled files are copied to their final names
        def no_link(src, _dst):
            refused.append(src)
            raise OSError(errno.EPERM, "Operation not permitted")

        monkeypatch.setattr(os, "link", no_link)
    path = indexed / "run.wtui"
    two_runs_with_damage(path)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) * 2 // 5])  # the live log so far
    data = RunData(path)
    tail = LogTail(path, max_bytes_per_poll=4096)
    feed(data, tail)
    assert data._store.spill is not None  # groups are spilled to the index directory as they seal
    job = data.index_save()
    assert job is not None
    with open(path, "ab") as fh:  # the log grows, and the store ingests it, while the save is pending
        fh.write(whole[len(whole) * 2 // 5:])
    feed(data, tail)
    written = threading.Thread(target=job.write)
    written.start()
    written.join()
    assert job.where is not None
    assert bool(refused) != hard_links  # (spilled groups were there to link)
    job.commit()
    # the index covers what was read when the save was taken; the next open extends it to the end
    want = digest(weighttui.open(path, cache=False))
    live = digest(data)
    live["torn"] = want["torn"]  # (a viewer learns of a torn tail from its follower, not from ingest)
    assert live == want  # the live store still reads right (its spilled files were linked, not moved)
    reopened = RunData(path)
    scan = reopened.load_index()
    assert scan is not None and 0 < scan.offset < len(whole)
    assert digest(weighttui.open(path)) == want
    # and a save after the commit (the quitting viewer's, on its own thread) leaves a complete index
    assert data.save_index() is not None
    end = RunData(path).load_index()
    assert end is not None and end.offset + end.pending == len(whole)  # (the torn tail: pending)
    assert digest(weighttui.open(path)) == want
    assert not [p for p in index_dir(path).iterdir() if p.name.startswith(".tmp-")]


def test_a_save_of_a_replaced_log_writes_nothing(indexed):
    path = indexed / "run.wtui"
    write_run(path, 40)
    data = RunData(path)
    feed(data, LogTail(path, max_bytes_per_poll=4096))
    job = data.index_save()
    assert job is not None
    write_run(path, 40, seed=5)  # another run at the same path before the save is written
    assert job.write() is None
    job.commit()
    assert not (index_dir(path) / "manifest.json").exists()  # no index of the old log for the new one
