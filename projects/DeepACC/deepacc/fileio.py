"""Atomic file writes, used for checkpoints, datasets and prediction outputs alike."""
from __future__ import annotations

import os
from typing import Callable, IO, Union


def atomic_write(path: str, data: Union[bytes, Callable[[IO[bytes]], None]], durable: bool = False) -> None:
    """Write ``data`` (bytes, or a function writing to a binary file) to ``path`` atomically.

    The content goes to a temporary file in the same folder, which then replaces ``path`` with
    ``os.replace``: a process killed at any point leaves the old file or the new one, never a partial
    file, and no temporary file stays behind after an error. ``durable=True`` also ``fsync``s before
    the rename (survives power loss; can be slow on some file systems).
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".tmp-{os.getpid()}-{os.path.basename(path)}")
    try:
        with open(tmp, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
