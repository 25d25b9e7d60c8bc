"""One run per warehouse at a time: an OS lock on ``<warehouse>.lock``.

DuckDB allows one writing process per file; two runs started at once used to both die on DuckDB lock
errors, and the loser could not even record its failure. The run lock is taken before anything touches
the warehouse, so the second run stops at once with a sentence naming the run that holds it (or waits,
``--wait``), and never writes to the warehouse.

``fcntl.flock`` belongs to the open file: the kernel releases it when the process ends, however it ends
(crash, ``kill -9``), so there is never a stale lock to clean up. The file itself stays (deleting it
while another process waits on it would let two runs hold two different files); while held it says which
run holds it, as JSON (run id, pid, start time, warehouse).
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator


_held = threading.local()  # lock files this thread holds -> what it wrote (a nested run_lock is a no-op)


class RunLockHeld(RuntimeError):
    """Another run holds the warehouse; the message says which run and since when."""

    def __init__(self, warehouse: Path, holder: dict, waited: float | None = None):
        self.warehouse, self.holder, self.waited = Path(warehouse), holder, waited
        super().__init__(describe_holder(warehouse, holder)
                         + (f" (waited {waited:.0f} s)" if waited is not None else ""))


def lock_path(warehouse: Path | str) -> Path:
    """``<warehouse>.lock`` beside the warehouse file."""
    warehouse = Path(warehouse)
    return warehouse.with_name(warehouse.name + ".lock")


def describe_holder(warehouse: Path | str, holder: dict) -> str:
    """``another run (<id>, started <time>) holds <warehouse>``."""
    run_id = holder.get("run_id") or f"pid {holder.get('pid', '?')}"
    started = holder.get("started_at")
    when = (datetime.fromisoformat(started).strftime("%Y-%m-%d %H:%M:%S UTC") if started else "at an unknown time")
    return f"another run ({run_id}, started {when}) holds {warehouse}"


def read_holder(warehouse: Path | str, settle_seconds: float = 2.0) -> dict:
    """What the lock file says about the run holding it. A run writes this just after taking the lock, so
    an empty file is re-read for up to ``settle_seconds``."""
    path = lock_path(warehouse)
    deadline = time.monotonic() + settle_seconds
    while True:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            if time.monotonic() >= deadline:
                return {}
            time.sleep(0.05)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


@contextmanager
def run_lock(warehouse: Path | str, run_id: str, *, wait: float | None = None, poll_seconds: float = 0.5,
             on_wait: Callable[[dict], None] | None = None) -> Iterator[dict]:
    """Hold the warehouse's run lock for the body.

    ``wait=None``: raise :class:`RunLockHeld` at once when another run holds it. ``wait=0``: wait as long
    as it takes. ``wait=N``: wait up to N seconds, then raise. ``on_wait(holder)`` is called once when
    waiting starts (to tell the user). Yields what this run wrote into the lock file. Re-entrant in one thread
    (the CLI holds the lock around the whole Dagster run; code inside the run may take it again).
    """
    warehouse = Path(warehouse)
    path = lock_path(warehouse)
    mine = getattr(_held, "locks", None)
    if mine is None:
        mine = _held.locks = {}
    key = str(path.resolve())
    if key in mine:
        yield mine[key]
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if not _try_lock(fd):
            holder = read_holder(warehouse)
            if wait is None:
                raise RunLockHeld(warehouse, holder)
            if on_wait is not None:
                on_wait(holder)
            started = time.monotonic()
            while not _try_lock(fd):
                if wait and time.monotonic() - started >= wait:
                    raise RunLockHeld(warehouse, read_holder(warehouse), waited=time.monotonic() - started)
                time.sleep(poll_seconds)
        me = {"run_id": run_id, "pid": os.getpid(),
              "started_at": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
              "warehouse": str(warehouse)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        os.fsync(fd)
        mine[key] = me
        try:
            yield me
        finally:
            del mine[key]
            os.ftruncate(fd, 0)  # released: nobody holds it (the kernel drops the lock when fd closes)
    finally:
        os.close(fd)
