"""Owner-only modes for the files that hold personal data: the warehouse (every e-mail, phone and name), its
write-ahead log and spill folder, and the pseudonym key beside it.

Files are 0600. DuckDB deletes the WAL (``<warehouse>.wal``) at every checkpoint and creates it again at the
next write, and creates the spill folder (``<warehouse>.tmp``) when a query outgrows memory, both with the
process umask: so the connection is opened and used under umask 077 (``private_files``). A subprocess started
inside the block (dbt) inherits that umask. Anything else the pipeline writes while the block is open is
owner-only too, so a file meant for readers must be given its mode explicitly, as
``publication.replace_atomically`` does for the serving file (0644).

The folder: when the pipeline creates it, 0700, or 0711 when the serving file lives in it (the default:
serving.duckdb beside the warehouse). 0711 lets BI readers of other accounts open the serving file by its
name, while they can neither list the folder nor read anything else in it. A folder that already exists
keeps its mode: it is the user's (often the project's data folder, holding other things), and what holds
personal data in it is protected by its own mode. Modes are only ever tightened, never loosened.

The umask is process-wide: the pipeline runs its steps one after the other in one process (DuckDB has one
writer), so the block never overlaps a step that should write shared files.
"""

from __future__ import annotations

import os
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
TRAVERSE_ONLY_DIR = 0o711
PRIVATE_UMASK = 0o077


def state_paths(warehouse: Path, extra_files: tuple[Path, ...] = ()) -> tuple[list[Path], list[Path]]:
    """(files, folders) of the warehouse that hold personal data: the database, its WAL, its spill folder."""
    warehouse = Path(warehouse)
    files = [warehouse, warehouse.with_name(warehouse.name + ".wal"), *map(Path, extra_files)]
    return files, [warehouse.with_name(warehouse.name + ".tmp")]


def tighten(path: Path, mode: int) -> None:
    """Remove every permission bit ``mode`` does not have; a missing path or another user's file is left as is."""
    try:
        current = stat.S_IMODE(os.stat(path).st_mode)
        if current & ~mode:
            os.chmod(path, current & mode)
    except (FileNotFoundError, PermissionError):
        pass


def make_folder(folder: Path, serving_file: Path | None = None) -> None:
    """Create ``folder`` (and parents) when missing: 0711 when ``serving_file`` lives in it, else 0700."""
    folder = Path(folder)
    if folder.is_dir():
        return
    folder.mkdir(parents=True, exist_ok=True)
    shared = serving_file is not None and Path(serving_file).resolve().parent == folder.resolve()
    os.chmod(folder, TRAVERSE_ONLY_DIR if shared else PRIVATE_DIR)


def protect(warehouse: Path, extra_files: tuple[Path, ...] = ()) -> None:
    """Tighten the warehouse's files to 0600 and its spill folder to 0700 (those of older runs included)."""
    files, folders = state_paths(warehouse, extra_files)
    for path in files:
        if path.is_file():
            tighten(path, PRIVATE_FILE)
    for path in folders:
        if path.is_dir():
            tighten(path, PRIVATE_DIR)


@contextmanager
def private_files(warehouse_path: str | Path, serving_file: Path | None = None,
                  extra_files: tuple[Path, ...] = ()) -> Iterator[None]:
    """Open the warehouse inside this block: its folder exists (created private), the files of earlier runs
    are tightened, and every file created in the block (the database, WAL, spill files) is owner-only."""
    warehouse = Path(warehouse_path).absolute()
    make_folder(warehouse.parent, serving_file)
    previous = os.umask(PRIVATE_UMASK)
    os.umask(previous | PRIVATE_UMASK)  # a stricter umask of the user stays
    try:
        protect(warehouse, extra_files)
        yield
    finally:
        os.umask(previous)
        protect(warehouse, extra_files)
