"""The output folder of ``deepacc-predict``: which files belong to which image, and how several runs
share one folder.

Per image, ``<stem>.json`` (the record), ``<stem>.overlay.png`` and ``<stem>.karyogram.png``. The
record names its input: ``file_name`` (the path) and ``input_sha256`` (the SHA-256 of the file's
bytes). The stem is the image's file name without extension, unless the folder already holds the
outputs of *another* image under that name (another content: ``input_sha256`` differs): then it is
``<stem>-<first 8 hex digits of the image's SHA-256>`` (:func:`resolve_stem`), so one image's results
never replace another's. The same image (same content) keeps its name and replaces its own outputs.

Several runs may write into one folder at once: every image's outputs, and the folder-wide
``karyotypes.csv`` / ``report.html``, are written under an exclusive lock on
``<folder>/.deepacc-predict.lock`` (:func:`folder_lock`, ``fcntl.flock``; the lock file is never
opened through a symbolic link), and the folder-wide files are rebuilt from *every* record in the
folder (:func:`load_records`), so the last run to finish lists the images of all runs.

Paths are never read back from a record: the files of a record are those of the stem of its JSON
file name, in the same folder (:func:`output_paths`).
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
from typing import Dict, Iterator, List, Optional, Tuple

__all__ = ["OUTPUT_SUFFIXES", "LOCK_NAME", "output_paths", "input_sha256", "is_record", "read_record",
           "load_records", "resolve_stem", "folder_lock", "LockLinkError"]

#: The files written per image, by kind.
OUTPUT_SUFFIXES = {"json": ".json", "overlay": ".overlay.png", "karyogram": ".karyogram.png"}
#: The lock file of an output folder (hidden: never taken for an input or an output).
LOCK_NAME = ".deepacc-predict.lock"

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def output_paths(output_dir: str, stem: str) -> Dict[str, str]:
    """The paths of one image's outputs, by kind (:data:`OUTPUT_SUFFIXES`)."""
    return {k: os.path.join(output_dir, stem + suf) for k, suf in OUTPUT_SUFFIXES.items()}


def input_sha256(path: str) -> str:
    """Hex SHA-256 of the bytes of the input image ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_record(rec) -> bool:
    """Whether ``rec`` (a parsed JSON) is a ``deepacc-predict`` record: an object with ``file_name``,
    ``detections`` and a ``summary`` holding the karyotype."""
    return (isinstance(rec, dict) and isinstance(rec.get("file_name"), str) and isinstance(rec.get("detections"), list)
            and isinstance(rec.get("summary"), dict) and "karyotype" in rec["summary"])


def _read_regular(path: str) -> Optional[bytes]:
    """The bytes of ``path`` when it is a regular file (never through a symbolic link), else ``None``."""
    try:
        fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(fd, "rb") as f:
            fd = -1
            return f.read()
    except OSError:
        return None
    finally:
        if fd >= 0:
            os.close(fd)


def read_record(output_dir: str, stem: str) -> Tuple[Optional[dict], bool]:
    """``(record, exists)`` of ``<output_dir>/<stem>.json``: the record (``outputs`` rebuilt from
    ``stem``, whatever the file says) or ``None`` when there is none, or the file is not a readable
    record (then ``exists`` tells whether something is there)."""
    path = output_paths(output_dir, stem)["json"]
    data = _read_regular(path)
    if data is None:
        return None, os.path.lexists(path)
    try:
        rec = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None, True
    if not is_record(rec):
        return None, True
    rec["outputs"] = {k: os.path.basename(v) for k, v in output_paths(output_dir, stem).items()}
    return rec, True


def load_records(output_dir: str) -> List[dict]:
    """Every ``deepacc-predict`` record in ``output_dir`` (``<stem>.json`` files, sorted by name), with
    ``outputs`` rebuilt from each file's stem. Other JSON files, hidden files, temporary files and
    symbolic links are passed over."""
    from ..fileio import TEMP_PATTERN

    try:
        names = sorted(os.listdir(output_dir))
    except OSError:
        return []
    records = []
    for name in names:
        if not name.endswith(".json") or name.startswith(".") or TEMP_PATTERN.match(name):
            continue
        rec, _ = read_record(output_dir, name[: -len(".json")])
        if rec is not None:
            records.append(rec)
    return records


def _same_input(rec: dict, path: str, sha: str) -> bool:
    recorded = rec.get("input_sha256")
    if isinstance(recorded, str) and recorded:
        return recorded == sha
    return rec.get("file_name") == path  # a record of an older version, without the hash


def resolve_stem(output_dir: str, base: str, path: str, sha: str) -> Tuple[str, Optional[dict]]:
    """The stem under which the image ``path`` (content hash ``sha``) writes its outputs in
    ``output_dir``: ``base`` when it is free or holds this image's outputs, else
    ``<base>-<sha[:8]>`` (longer prefixes of ``sha`` in the unlikely event that this is taken too).
    Returns ``(stem, other)``: ``other`` is the record (or ``{}`` for an unreadable file) found under
    ``base`` when the stem had to change, else ``None``."""
    other: Optional[dict] = None
    for stem in [base] + [f"{base}-{sha[:n]}" for n in (8, 16, 64)]:
        rec, exists = read_record(output_dir, stem)
        if not exists or (rec is not None and _same_input(rec, path, sha)):
            return stem, other
        if other is None:
            other = rec if rec is not None else {}
    raise FileExistsError(errno.EEXIST, f"every output name of this image is taken by other files ({base}.json, "
                                        f"{base}-{sha[:8]}.json, ...)", output_dir)


class LockLinkError(OSError):
    """The lock file of an output folder is a symbolic link: refused (never opened through it)."""

    def __init__(self, path: str):
        super().__init__(errno.ELOOP, f"{path}: the lock file of the output folder is a symbolic link; refused to "
                                      "open it (remove the link)", path)

    def __str__(self) -> str:
        return self.strerror


@contextlib.contextmanager
def folder_lock(output_dir: str) -> Iterator[None]:
    """Hold the exclusive lock of ``output_dir`` (``fcntl.flock`` on :data:`LOCK_NAME`, created if
    needed, never opened through a symbolic link; a no-op where ``fcntl`` does not exist)."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | _O_NOFOLLOW | _O_CLOEXEC, 0o644)
    except OSError:
        if os.path.islink(path):
            raise LockLinkError(path) from None
        raise
    try:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            fcntl = None
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
