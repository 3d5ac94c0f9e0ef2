"""The one way the project writes files: checkpoints, datasets, metrics and prediction outputs alike.

* :func:`atomic_write` -- a whole file, through an exclusively created temporary file with an
  unpredictable name in the same folder, then ``os.replace``; :func:`write_image` (``cv2.imwrite``),
  :func:`save_figure` (``fig.savefig``) and :func:`copy_file` (``shutil.copy``) are built on it;
* :func:`append_line` / :func:`open_append` / :class:`LazyAppendFile` / :class:`LogFileHandler` --
  JSON-lines files and logs, appended with ``O_APPEND``;
* :func:`tidy_output_dir` -- what both engines (and pretraining) do to ``OUTPUT_DIR`` before training:
  stale temporary files removed, ``metrics.json`` truncated on ``--resume`` or rotated
  (:func:`rotate_file`) for a new run.

``tests/test_safe_writes.py`` scans the package, ``datasets/`` and ``benchmarks/`` for writes that
bypass these helpers.

None of them writes through a symbolic link: an output path that is a link is refused with
:class:`UnsafeOutputError` (a link planted in an output folder could point anywhere), and the
temporary files are created with ``O_EXCL`` (and ``O_NOFOLLOW`` where the OS has it), so a link
planted at a temporary name is never followed either.
"""
from __future__ import annotations

import errno
import io
import json
import logging
import os
import re
import secrets
import shutil
import stat
from typing import Callable, IO, List, Optional, Sequence, TextIO, Union

logger = logging.getLogger(__name__)

#: Name of the temporary file of :func:`atomic_write`: ``.tmp-<pid>-<random hex>-<final name>`` in
#: the same folder (group 1: the pid). Names of older versions, ``.tmp-<pid>-<final name>``, match too,
#: so that :func:`remove_stale_temp_files` still removes what a killed process of either left.
TEMP_PATTERN = re.compile(r"^\.tmp-(\d+)-(?:([0-9a-f]{16})-)?(.+)$")

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation
_NAME_MAX = 255


class UnsafeOutputError(OSError):
    """An output path is a symbolic link: writing would change whatever file the link points to
    (possibly outside the output folder), so the write is refused. ``filename`` is the path."""

    def __init__(self, path: str, what: str = "output file"):
        path = os.fspath(path)
        self.message = (f"{path}: {what} is a symbolic link; refused to write through it (it may point "
                        f"outside the output folder). Remove the link or choose another output path.")
        self.what = what
        super().__init__(errno.ELOOP, self.message, path)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # picklable (raised in a worker process, re-raised in the parent)
        return type(self), (self.filename, self.what)


def refuse_link(path: str, what: str = "output file") -> None:
    """Raise :class:`UnsafeOutputError` when ``path`` is a symbolic link (dangling or not)."""
    if os.path.islink(path):
        raise UnsafeOutputError(path, what)


def _temp_name(name: str) -> str:
    prefix = f".tmp-{os.getpid()}-{secrets.token_hex(8)}-"
    while name and len(os.fsencode(prefix + name)) > _NAME_MAX:  # long final names: a shorter temp name
        name = name[1:]
    return prefix + (name or "x")


def atomic_write(path: str, data: Union[bytes, Callable[[IO[bytes]], None]], durable: bool = False) -> None:
    """Write ``data`` (bytes, or a function writing to a binary file) to ``path`` atomically.

    The content goes to a temporary file created exclusively (``O_CREAT | O_EXCL``, ``O_NOFOLLOW``)
    in the same folder under an unpredictable name (``.tmp-<pid>-<random>-<name>``), which then
    replaces ``path`` with ``os.replace``: a process killed at any point leaves the old file or the
    new one, never a partial file, and no temporary file stays behind after an error. Nothing is
    ever written through a symbolic link: ``path`` being one raises :class:`UnsafeOutputError`.
    ``durable=True`` also ``fsync``s the file before the rename and the folder after it (survives
    power loss; can be slow on some file systems).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    refuse_link(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC | _O_BINARY
    for _ in range(100):
        tmp = os.path.join(directory, _temp_name(os.path.basename(path)))
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:  # taken (by chance, or planted): draw another name
            continue
    else:
        raise FileExistsError(errno.EEXIST, "could not create a temporary file", directory)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)  # replaces a name: never writes through a link planted meanwhile
        if durable:
            _fsync_dir(directory)
    finally:
        try:
            os.unlink(tmp)  # our own file (created exclusively); gone already after os.replace
        except FileNotFoundError:
            pass


def write_image(path: str, image, params: Sequence[int] = ()) -> None:
    """``cv2.imwrite`` made safe: the image encoded in memory (``cv2.imencode``; the format from the
    extension of ``path``, ``params`` as for ``imwrite``), then :func:`atomic_write`. Raises
    ``OSError`` when OpenCV cannot encode it (``imwrite`` only returns ``False``)."""
    import cv2

    ext = os.path.splitext(os.fspath(path))[1]
    try:
        ok, buf = cv2.imencode(ext, image, list(params))
    except cv2.error as e:
        raise OSError(f"{path}: could not encode the image as {ext or '(no extension)'} ({e})") from None
    if not ok:
        raise OSError(f"{path}: could not encode the image as {ext or '(no extension)'}")
    atomic_write(path, buf.tobytes())


def copy_file(src: str, dst: str) -> None:
    """``shutil.copy`` made safe: ``src``'s bytes streamed into ``dst`` by :func:`atomic_write` (the
    content only, not the permission bits)."""
    with open(src, "rb") as fin:
        atomic_write(dst, lambda f: shutil.copyfileobj(fin, f, 1 << 20))


def save_figure(fig, path: str, **kwargs) -> None:
    """``fig.savefig(path, **kwargs)`` made safe: rendered into memory (the format from the extension
    of ``path`` unless ``format=`` is given), then :func:`atomic_write`."""
    buf = io.BytesIO()
    fmt = kwargs.pop("format", None) or os.path.splitext(os.fspath(path))[1].lstrip(".").lower() or None
    fig.savefig(buf, format=fmt, **kwargs)
    atomic_write(path, buf.getvalue())


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # e.g. Windows: folders cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def open_append(path: str, encoding: str = "utf-8") -> TextIO:
    """``path`` opened for appending text (``O_APPEND | O_CREAT``; created with mode 0o666 less the
    umask), never through a symbolic link: a link raises :class:`UnsafeOutputError`."""
    return io.TextIOWrapper(os.fdopen(_append_fd(path), "ab"), encoding=encoding, newline="\n", write_through=True)


def _append_fd(path: str) -> int:
    path = os.fspath(path)
    refuse_link(path)
    try:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _O_NOFOLLOW | _O_CLOEXEC | _O_BINARY, 0o666)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EMLINK) and os.path.islink(path):  # planted since the check
            raise UnsafeOutputError(path) from None
        raise


def append_line(path: str, text: str, durable: bool = False) -> None:
    """Append ``text`` (one JSON line, say; a newline is added when missing) to ``path`` with one
    ``O_APPEND`` write, never through a symbolic link (:class:`UnsafeOutputError`)."""
    data = (text if text.endswith("\n") else text + "\n").encode("utf-8")
    fd = _append_fd(path)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)


class LazyAppendFile:
    """File-like ``write`` / ``flush`` / ``fileno`` / ``close`` on ``path``, opened with
    :func:`open_append` at the first write, not before: a writer built before
    :func:`tidy_output_dir` (Detectron2's ``JSONWriter`` is built with the trainer's hooks) then
    appends to the ``metrics.json`` that the tidy-up left, not to a file it rotated or replaced."""

    def __init__(self, path: str):
        self.name = os.fspath(path)
        self._f: Optional[TextIO] = None

    def _file(self) -> TextIO:
        if self._f is None:
            self._f = open_append(self.name)
        return self._f

    def write(self, text: str) -> int:
        return self._file().write(text)

    def flush(self) -> None:
        if self._f is not None:
            self._f.flush()

    def fileno(self) -> int:
        return self._file().fileno()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


class LogFileHandler(logging.FileHandler):
    """``logging.FileHandler`` (append mode) whose file is opened with :func:`open_append`: a log file
    that is a symbolic link raises :class:`UnsafeOutputError` instead of being followed."""

    def __init__(self, filename: str, encoding: str = "utf-8", delay: bool = False):
        super().__init__(filename, mode="a", encoding=encoding, delay=delay)

    def _open(self):
        return open_append(self.baseFilename, encoding=self.encoding or "utf-8")


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
    process was killed mid-write (:data:`TEMP_PATTERN` names whose process no longer runs). Returns
    the removed paths. Only regular files are removed (a symbolic link of that name is left alone,
    and so is what it points to); files of running processes and every other file are left alone."""
    removed: List[str] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        m = TEMP_PATTERN.match(name)
        if not m or _pid_alive(int(m.group(1))):
            continue
        path = os.path.join(directory, name)
        try:
            if not stat.S_ISREG(os.lstat(path).st_mode):
                continue
            os.remove(path)
            removed.append(path)
        except OSError:
            pass
    return removed


def truncate_metrics_from(path: str, start_iter: int, key: str = "iteration") -> int:
    """Drop the rows of a JSON-lines ``metrics.json`` with ``key >= start_iter`` (``iteration``; rows
    written by a run killed after its last checkpoint, which the resumed run writes again). Unreadable
    lines (a write cut by the kill) are dropped too. The file is replaced through :func:`atomic_write`
    (so a writer must open it after this: :class:`LazyAppendFile`); a ``path`` that is a symbolic link
    raises :class:`UnsafeOutputError`. Returns the number of rows dropped."""
    refuse_link(path, "metrics file")
    if not os.path.isfile(path):
        return 0
    kept, dropped = [], 0
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                it = int(json.loads(line).get(key, -1))
            except (ValueError, AttributeError, TypeError):
                dropped += 1
                continue
            if it >= start_iter:
                dropped += 1
            else:
                kept.append(line if line.endswith("\n") else line + "\n")
    if dropped:
        atomic_write(path, "".join(kept).encode("utf-8"), durable=True)
    return dropped


def rotate_file(path: str) -> Optional[str]:
    """Rename a non-empty ``path`` to the first free ``path.1``, ``path.2``, ... (an earlier rotated
    file is never overwritten) and return the new name; ``None`` when there is nothing to keep.
    A ``path`` that is a symbolic link raises :class:`UnsafeOutputError`."""
    refuse_link(path, "metrics file")
    try:
        if os.stat(path).st_size == 0:
            return None
    except FileNotFoundError:
        return None
    n = 0
    while True:
        n += 1
        dst = f"{path}.{n}"
        if os.path.lexists(dst):
            continue
        try:
            os.link(path, dst)  # fails when dst exists (whatever it is): nothing is overwritten
        except FileExistsError:
            continue
        except OSError:  # a file system without hard links: rename (dst was free a moment ago)
            os.rename(path, dst)
            return dst
        os.unlink(path)
        return dst


def tidy_output_dir(output_dir: str, start_iter: int, resumed: Optional[bool] = None, key: str = "iteration",
                    metrics_name: str = "metrics.json") -> None:
    """Before training from ``start_iter`` (both engines and pretraining, main process): delete the
    temp files of writes killed mid-way, then keep ``metrics.json`` right for this run:

    * ``resumed`` (``--resume`` found a checkpoint; default: ``start_iter > 0``): drop the rows with
      ``key >= start_iter``, which this run writes again (:func:`truncate_metrics_from`);
    * a new run: an earlier run's ``metrics.json`` is renamed to ``metrics.json.1`` (``.2``, ...;
      :func:`rotate_file`), never deleted, and this run starts a new one.

    A ``metrics.json`` that is a symbolic link raises :class:`UnsafeOutputError` (nothing changed).
    A writer that appends to it must open it after this call (:class:`LazyAppendFile`)."""
    for path in remove_stale_temp_files(output_dir):
        logger.info("Removed %s (temporary file of a run killed while writing).", path)
    path = os.path.join(output_dir, metrics_name)
    refuse_link(path, "metrics file")
    if resumed is None:
        resumed = start_iter > 0
    if resumed:
        dropped = truncate_metrics_from(path, start_iter, key)
        if dropped:
            logger.info("%s: dropped %d row(s) of %ss >= %d, which this run writes again.",
                        metrics_name, dropped, key, start_iter)
        return
    rotated = rotate_file(path)
    if rotated:
        logger.info("%s: an earlier run's rows (this is a new run, not --resume) kept as %s; this run starts "
                    "a new %s.", metrics_name, rotated, metrics_name)
