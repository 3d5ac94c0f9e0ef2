"""Checks every command runs before it builds a model: mistakes a user can fix are found in a second,
each as one named line (see ``docs/errors.md``), instead of after the model ran on every image.

* :func:`check_writable_dir`: an output folder (``OUTPUT_DIR``, ``--output``) can be created and
  written (a file in the way, no permission, a read-only disk);
* :func:`check_weights_file`: the weights a command evaluates or predicts with (``MODEL.WEIGHTS``)
  name a readable file; empty weights are refused unless ``--allow-untrained``;
* :func:`check_datasets`: ``DATASETS.TRAIN`` / ``DATASETS.TEST`` name registered datasets, and
  training has at least one.
"""
from __future__ import annotations

import os
import secrets
from typing import Iterable

__all__ = ["OutputDirError", "check_writable_dir", "check_weights_file", "check_datasets"]

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class OutputDirError(OSError):
    """An output folder cannot be created or written; ``str()`` names it, the reason and the fix."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def check_writable_dir(path: str, what: str, example: str) -> None:
    """Create ``path`` if needed and write (then delete) a probe file in it; raise
    :class:`OutputDirError` (``<what> '<path>' is not writable (<reason>); give another folder, e.g.
    <example>``) otherwise. The probe is created exclusively and never through a symbolic link."""
    path = os.fspath(path)

    def fail(reason: str) -> OutputDirError:
        return OutputDirError(f"{what} {path!r} is not writable ({reason}); give another folder, e.g. {example}")

    if os.path.exists(path) and not os.path.isdir(path):
        raise fail("it is a file, not a folder")
    try:
        os.makedirs(path, exist_ok=True)
    except FileExistsError:
        raise fail("a file is in the way of the folder") from None
    except OSError as e:
        raise fail(e.strerror or str(e)) from None
    probe = os.path.join(path, f".write-test-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW, 0o600)
    except OSError as e:
        raise fail(e.strerror or str(e)) from None
    os.close(fd)
    try:
        os.unlink(probe)
    except OSError:
        pass


def check_weights_file(weights: str, allow_untrained: bool = False, why: str = "") -> None:
    """``weights`` (``MODEL.WEIGHTS`` of a command that predicts or evaluates with it) must name a
    readable file; a URL (``https://...``, ``detectron2://...``) is left to the engine. Empty weights
    raise the same :class:`~deepacc.checkpoint_io.UntrainedModelError` as after loading, unless
    ``allow_untrained``. Other problems raise :class:`~deepacc.checkpoint_io.CheckpointError`
    (``<file>: no such file (MODEL.WEIGHTS<why>)``). Whether the file holds weights that fit the
    model is checked where it is loaded."""
    from ..checkpoint_io import CheckpointError, check_loaded_weights

    weights = str(weights or "")
    if not weights:
        check_loaded_weights("", None, allow_untrained)  # raises unless allowed
        return
    if "://" in weights:
        return
    key = f"MODEL.WEIGHTS{why}"
    if not os.path.exists(weights):
        raise CheckpointError(weights, f"no such file ({key})")
    if os.path.isdir(weights):
        raise CheckpointError(weights, f"a folder, not a weights file ({key}; give the .pth file)")
    try:
        with open(weights, "rb") as f:
            f.read(1)
    except OSError as e:
        raise CheckpointError(weights, f"cannot read: {e.strerror or e} ({key})") from None


def check_datasets(cfg, train: bool = True, test: bool = True, extra_known: Iterable[str] = (),
                   source: str = "config") -> None:
    """Raise a config error when ``DATASETS.TRAIN`` (``train``) is empty or names a dataset that is
    not registered, or ``DATASETS.TEST`` (``test``) names one: one line
    (:class:`~deepacc.config.ConfigFileError`) for one problem, a list (:class:`~deepacc.config.ConfigError`)
    for several. Each names the closest registered names and lists all of them."""
    from ..config import ConfigError, ConfigFileError
    from ..data.catalog import check_dataset_names

    problems = check_dataset_names(cfg, train=train, test=test, extra_known=extra_known)
    if len(problems) == 1:
        raise ConfigFileError(problems[0])
    if problems:
        raise ConfigError(problems, source)
