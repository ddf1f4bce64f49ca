"""Files beside the LMDB environment (index checkpoints): durable writes and sizes."""
from __future__ import annotations

import os
from pathlib import Path


def fsync_tree(path: Path) -> None:
    """fsync every file under ``path``, the folder and its parent, so that a record naming
    the folder (committed afterwards) never points at data still only in the page cache."""
    for root, _dirs, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    for folder in (path, path.parent):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def dir_bytes(path: Path) -> int:
    """Total size of the files under ``path`` (0 when missing)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total
