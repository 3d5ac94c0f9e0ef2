"""Atomic file writes, used for checkpoints, datasets and prediction outputs alike."""
from __future__ import annotations

import json
import logging
import os
import re
from typing import Callable, IO, List, Union

#: Name of the temporary file of :func:`atomic_write`: ``.tmp-<pid>-<final name>`` in the same folder.
logger = logging.getLogger(__name__)

TEMP_PATTERN = re.compile(r"^\.tmp-(\d+)-(.+)$")


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


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's) or cannot tell: keep its file
    return True


def remove_stale_temp_files(directory: str) -> List[str]:
    """Delete the temporary files that :func:`atomic_write` calls left in ``directory`` when their
    process was killed mid-write (``.tmp-<pid>-<name>`` whose process no longer runs). Returns the
    removed paths. Files of running processes and every other file are left alone."""
    removed: List[str] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        m = TEMP_PATTERN.match(name)
        path = os.path.join(directory, name)
        if m and os.path.isfile(path) and not _pid_alive(int(m.group(1))):
            try:
                os.remove(path)
                removed.append(path)
            except OSError:
                pass
    return removed


def truncate_metrics_from(path: str, start_iter: int) -> int:
    """Drop the rows of a JSON-lines ``metrics.json`` with ``iteration >= start_iter`` (written by a
    run killed after its last checkpoint; the resumed run writes them again). Unreadable lines (a
    write cut by the kill) are dropped too. Rewritten in place (a writer that already holds the file
    open in append mode, as Detectron2's ``JSONWriter`` does, keeps appending after the kept rows);
    returns the number of rows dropped."""
    if not os.path.isfile(path):
        return 0
    kept, dropped = [], 0
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                it = int(json.loads(line).get("iteration", -1))
            except (ValueError, AttributeError, TypeError):
                dropped += 1
                continue
            if it >= start_iter:
                dropped += 1
            else:
                kept.append(line if line.endswith("\n") else line + "\n")
    if dropped:
        with open(path, "r+", encoding="utf-8") as f:
            f.write("".join(kept))
            f.truncate()
    return dropped


def tidy_output_dir(output_dir: str, start_iter: int) -> None:
    """Before training from ``start_iter`` (both engines, main process): delete the temp files of
    checkpoint writes killed mid-way, and the ``metrics.json`` rows of iterations trained again."""
    for path in remove_stale_temp_files(output_dir):
        logger.info("Removed %s (temporary file of a run killed while writing).", path)
    dropped = truncate_metrics_from(os.path.join(output_dir, "metrics.json"), start_iter)
    if dropped:
        logger.info("metrics.json: dropped %d row(s) of iterations >= %d, which this run writes again.",
                    dropped, start_iter)
