"""The one way DeepACC reads checkpoint and weights files, on both engines and in every tool.

A checkpoint is untrusted input: a ``.pth`` written by ``torch.save`` is a pickle, and unpickling runs
whatever code the file names. :func:`load_checkpoint_file` never unpickles code, whatever the torch
version or ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` says:

* ``.pth`` / ``.pt`` / anything else: ``torch.load(weights_only=True)`` (tensors, numbers, strings and
  plain containers only; an explicit ``weights_only=True`` is not overridden by the environment);
* ``.pkl`` (Detectron2 / Caffe2 model-zoo weights, a pickled dict of numpy arrays): a restricted
  unpickler that accepts nothing but numpy arrays, numpy scalars and plain containers.

Anything else is refused with :class:`CheckpointError`, which names the file and the reason.
:func:`resolve_last_checkpoint` reads ``OUTPUT_DIR/last_checkpoint`` and only ever points inside
``OUTPUT_DIR``; :func:`file_sha256` fingerprints a weights file for the outputs that record it.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import pickle
import re
from typing import Any, Dict, List, Optional

logger = logging.getLogger("deepacc")

__all__ = ["CheckpointerMixin", "CheckpointError", "UntrainedModelError", "load_checkpoint_file", "read_pickled_weights",
           "resolve_last_checkpoint", "file_sha256", "check_loaded_weights", "load_weights_to_evaluate", "LAST_CHECKPOINT", "PRETRAIN_KEY",
           "to_detectron2_names", "resume_problems", "check_resume_checkpoint", "check_resume_start",
           "check_resume_fit"]

LAST_CHECKPOINT = "last_checkpoint"
#: The block of a ``deepacc-pretrain`` trunk checkpoint (:mod:`deepacc.pretrain`) that describes the trunk;
#: its ``model`` holds ``backbone.body.*`` tensors under torchvision's ResNet names.
PRETRAIN_KEY = "deepacc_pretrain"

_REFUSED_HINT = ("DeepACC loads only weights: tensors, numbers, strings and plain containers. Re-save a file you "
                 "trust with torch.save(model.state_dict(), path).")


class CheckpointError(ValueError):
    """A checkpoint or weights file that cannot be used; ``str()`` names the file and the reason."""

    def __init__(self, path: str, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


# numpy globals a model-zoo pickle of arrays needs (module names before and after numpy 2's rename)
_NUMPY_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("collections", "OrderedDict"),
}


class _Refused(pickle.UnpicklingError):
    pass


class _ArraysOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _NUMPY_ALLOWED:
            return super().find_class(module, name)
        raise _Refused(f"the file asks to load '{module}.{name}', which is not an array type")


def read_pickled_weights(path: str) -> Any:
    """A ``.pkl`` weights file (dict of numpy arrays) read without running any pickled code."""
    try:
        with open(path, "rb") as f:
            return _ArraysOnlyUnpickler(f, encoding="latin1").load()
    except OSError as e:
        raise CheckpointError(path, f"cannot read: {e.strerror or e}") from None
    except _Refused as e:
        raise CheckpointError(path, f"refused: {e}. {_REFUSED_HINT}") from None
    except Exception as e:  # noqa: BLE001  (truncated or not a pickle at all)
        raise CheckpointError(path, f"not a readable .pkl weights file ({type(e).__name__}: {e})") from None


def load_checkpoint_file(path: str) -> Dict[str, Any]:
    """Read a checkpoint / weights file safely (see the module docstring); returns its dict.

    Raises :class:`CheckpointError` for a missing or unreadable file, a file that is not a
    checkpoint (e.g. a text file given as ``MODEL.WEIGHTS``), a truncated one, one whose content
    needs code to unpickle, and one that does not hold a dict.
    """
    import torch

    path = str(path)
    if not os.path.isfile(path):
        raise CheckpointError(path, "no such file")
    if path.endswith(".pkl"):
        data = read_pickled_weights(path)
    else:
        try:
            with open(path, "rb") as f:
                head = f.read(4)
        except OSError as e:
            raise CheckpointError(path, f"cannot read: {e.strerror or e}") from None
        # torch.save writes a zip archive (PK\x03\x04); files of torch < 1.6 start with a pickle opcode
        if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
            what = "an empty file" if not head else f"a file starting with {head!r}"
            raise CheckpointError(path, f"not a PyTorch checkpoint ({what}; checkpoints are written by torch.save)")
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if "Weights only load failed" in first or "Unsupported global" in str(e) or "not an allowed" in str(e):
                why = _unsupported_global(str(e))
                raise CheckpointError(path, f"refused: it holds pickled objects other than weights{why}. "
                                            f"{_REFUSED_HINT}") from None
            raise CheckpointError(path, f"not a PyTorch checkpoint ({first})") from None
        except Exception as e:  # noqa: BLE001  (text file, truncated zip, legacy format garbage...)
            msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            first = f"{type(e).__name__}: {msg}" if msg else type(e).__name__
            raise CheckpointError(path, f"not a PyTorch checkpoint, or a truncated one ({first})") from None
    if not isinstance(data, dict):
        raise CheckpointError(path, f"holds a {type(data).__name__}, expected a dict of weights")
    return data


def _unsupported_global(message: str) -> str:
    for line in message.splitlines():
        line = line.strip()
        if line.startswith("Unsupported global") or "GLOBAL" in line:
            return f" ({line.rstrip('.')})"
    return ""


def resolve_last_checkpoint(save_dir: str) -> str:
    """The checkpoint named by ``save_dir/last_checkpoint``, or ``""`` when there is no such tag.

    The tag must name a file inside ``save_dir`` (a plain file name, as the checkpointers write it);
    an empty or unreadable tag, a path outside the folder and a missing file are
    :class:`CheckpointError` with the fix.
    """
    tag = os.path.join(save_dir, LAST_CHECKPOINT)
    fix = f"delete {tag} to start from MODEL.WEIGHTS, or write the name of a checkpoint of {save_dir} in it"
    if not os.path.isfile(tag):
        if os.path.lexists(tag):  # a folder, a dangling link: never "no tag", which would start from scratch
            what = "a folder" if os.path.isdir(tag) else "a dangling link" if os.path.islink(tag) else "not a file"
            raise CheckpointError(tag, f"is {what}, not the tag file naming the last checkpoint; {fix}")
        return ""
    try:
        with open(tag, "rb") as f:
            raw = f.read(4096)
        name = raw.decode("utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(tag, f"unreadable ({e}); {fix}") from None
    if not name or "\n" in name or "\x00" in name:
        raise CheckpointError(tag, f"empty or corrupt; {fix}")
    if os.path.isabs(name) or os.path.basename(name) != name or name in (".", ".."):
        raise CheckpointError(tag, f"names {name!r}, which is not a file of {save_dir} (a checkpoint tag may "
                                   f"only name a file in its own folder); {fix}")
    path = os.path.join(save_dir, name)
    if not os.path.isfile(path):
        if os.path.isdir(path):
            raise CheckpointError(tag, f"names {name!r}, which is a folder of {save_dir}, not a checkpoint file; {fix}")
        raise CheckpointError(tag, f"names {name!r}, which does not exist in {save_dir}; {fix}")
    return path


def file_sha256(path: str) -> str:
    """Hex SHA-256 of a file (recorded with the outputs made from a weights file); computed once per
    file version in a process (``deepacc-predict`` needs it before and after building the model)."""
    st = os.stat(path)
    return _sha256(os.path.realpath(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _sha256(path: str, _size: int, _mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class UntrainedModelError(ValueError):
    """A model about to predict or be evaluated without trained weights, or with weights that do not
    fit it (the message names what is missing and how to proceed anyway)."""


def load_weights_to_evaluate(checkpointer, weights: str, resume: bool, allow_untrained: bool = False):
    """``--eval-only`` in both engines: load the run's last checkpoint (``resume`` and one exists) or
    ``weights`` through ``checkpointer`` (an fvcore checkpointer of this package), then refuse random
    or unfit weights unless ``allow_untrained`` (:func:`check_loaded_weights`, which judges them here
    rather than the checkpointer's resume check). Returns ``(info, extra)``: the weights record and the
    checkpoint's other entries (the scale-aware reference)."""
    checkpointer.refuse_unfit_resume = False
    resumed = resume and checkpointer.has_checkpoint()
    loaded = checkpointer.get_checkpoint_file() if resumed else str(weights)
    extra = checkpointer.resume_or_load(weights, resume=resume) or {}
    info = check_loaded_weights(loaded, getattr(checkpointer, "incompatible", None), allow_untrained)
    logger.info("Evaluating weights %s (sha256 %s)", info["weights"] or "(none)", info["sha256"])
    return info, extra


def check_loaded_weights(weights: str, incompatible=None, allow: bool = False) -> Dict[str, Any]:
    """Refuse a model that would predict from random or partly random weights.

    Args:
        weights: ``MODEL.WEIGHTS`` as loaded (``""`` = none).
        incompatible: what the checkpointer reported (``missing_keys``, ``incorrect_shapes`` as
            ``(name, checkpoint shape, model shape)``), or ``None``.
        allow: the user asked for it (``--allow-untrained``): warn in the record instead of raising.
    Returns:
        ``{"weights", "sha256", "status": "trained" | "untrained" | "mismatched", "problem"}`` for the
        outputs to record.
    Raises:
        UntrainedModelError: ``weights`` is empty or does not fit, and ``allow`` is false.
    """
    flag = "pass --allow-untrained to run it anyway (the outputs are then marked as coming from an untrained model)"
    info: Dict[str, Any] = {"weights": str(weights), "sha256": None, "status": "trained", "problem": None}
    if not weights:
        info.update(status="untrained", problem="MODEL.WEIGHTS is empty: the model has random weights and its "
                                                "calls and karyotypes would be meaningless")
    else:
        if os.path.isfile(weights):
            info["sha256"] = file_sha256(weights)
        missing = [k for k in (getattr(incompatible, "missing_keys", None) or []) if not k.endswith("num_batches_tracked")]
        shapes = [f"{k}: checkpoint {tuple(a)} vs model {tuple(b)}"
                  for k, a, b in (getattr(incompatible, "incorrect_shapes", None) or [])]
        problem = weights_problem(str(weights), missing, shapes)
        if problem:
            info.update(status="mismatched", problem=problem)
    if info["problem"] and not allow:
        raise UntrainedModelError(f"{info['problem']}; {flag}")
    return info


def _describe(names: List[str], limit: int = 5) -> str:
    more = f" (and {len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def weights_problem(path: str, missing: List[str], mismatched: List[str]) -> Optional[str]:
    """One message for a weights file that does not fit the model, or ``None`` when it fits."""
    parts = []
    if mismatched:
        parts.append(f"{len(mismatched)} parameter(s) of another shape ({_describe(mismatched, 3)})")
    if missing:
        parts.append(f"{len(missing)} parameter(s) of the model missing ({_describe(missing)})")
    if not parts:
        return None
    return (f"{path} does not fit the model built from the config: " + "; ".join(parts)
            + ". Use the config the checkpoint was trained with (see config.yaml next to it).")


#: Entries of a training checkpoint holding the state of an object (``load_state_dict``): dicts when present.
_STATE_ENTRIES = ("optimizer", "scheduler", "scaler", "trainer")
#: Entries holding a number that must be finite and >= 0 when present (the scale-aware reference).
_NUMBER_ENTRIES = ("input_reference_size", "input_reference_frame")


def _iteration_problem(value, where: str) -> Optional[str]:
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        return f"{where} {_short_repr(value)} ({type(value).__name__}) is not an iteration number (an integer >= 0)"
    return None


def _short_repr(v, n: int = 40) -> str:
    r = repr(v)
    return r if len(r) <= n else r[: n - 3] + "..."


def _resume_fix(path: str) -> str:
    tag = os.path.join(os.path.dirname(path), LAST_CHECKPOINT)
    return (f"--resume refused; delete {tag} to start from MODEL.WEIGHTS instead, or write the name of another "
            f"checkpoint of {os.path.dirname(path) or '.'} in it")


def resume_problems(data: Dict[str, Any]) -> List[str]:
    """Why a loaded checkpoint cannot be resumed from (empty: it can): no ``model`` dict of tensors,
    no non-negative integer ``iteration``, an optimizer / scheduler / scaler / trainer state that is
    not a dict, a scale-aware reference that is not a finite number >= 0."""
    import math
    import numbers

    import numpy as np
    import torch

    out = []
    model = data.get("model")
    if "model" not in data:
        held = ", ".join(sorted(str(k) for k in data)[:6]) or "nothing"
        out.append(f"holds no 'model' entry (only {held}): not a checkpoint written by training, and no weights "
                   "of this model to resume from")
    elif not isinstance(model, dict):
        out.append(f"'model' is a {type(model).__name__}, not a dict of weights")
    elif not model:
        out.append("'model' holds no weights (an empty dict)")
    else:
        bad = [k for k, v in model.items() if not isinstance(v, (torch.Tensor, np.ndarray))]
        if bad:
            out.append(f"'model' entry {_short_repr(bad[0])} is a {type(model[bad[0]]).__name__}, not a tensor"
                       + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""))
    if "iteration" not in data:
        out.append("holds no 'iteration' entry: not a checkpoint saved during training")
    else:
        why = _iteration_problem(data["iteration"], "'iteration'")
        if why:
            out.append(why)
    for key in _STATE_ENTRIES:
        if key in data and not isinstance(data[key], dict):
            out.append(f"'{key}' is a {type(data[key]).__name__}, expected the dict of its state")
    trainer = data.get("trainer")
    if isinstance(trainer, dict) and "iteration" in trainer:
        why = _iteration_problem(trainer["iteration"], "'trainer' 'iteration'")
        if why:
            out.append(why)
    for key in _NUMBER_ENTRIES:
        v = data.get(key)
        if v is None:
            continue
        ok = isinstance(v, numbers.Real) and not isinstance(v, bool)
        try:
            ok = ok and math.isfinite(float(v)) and float(v) >= 0
        except OverflowError:
            ok = False
        if not ok:
            out.append(f"'{key}' {_short_repr(v)} is not a finite number >= 0")
    return out


@functools.lru_cache(maxsize=4)
def _checked_resume_file(path: str, _size: int, _mtime_ns: int) -> bool:
    problems = resume_problems(load_checkpoint_file(path))
    if problems:
        raise CheckpointError(path, "; ".join(problems) + f". {_resume_fix(path)}")
    return True


def check_resume_checkpoint(path: str) -> str:
    """Refuse (:class:`CheckpointError`, naming the file and the fix) a checkpoint that ``--resume``
    cannot start from (:func:`resume_problems`); returns ``path``. The verdict is kept per file
    version, so the check at start-up and the one of the checkpointer read the file once."""
    path = str(path)
    if not os.path.isfile(path):
        raise CheckpointError(path, "no such file")
    st = os.stat(path)
    _checked_resume_file(os.path.realpath(path), st.st_size, st.st_mtime_ns)
    return path


def check_resume_start(save_dir: str) -> str:
    """What ``--resume`` will start from, checked before anything is built: the checkpoint named by
    ``save_dir/last_checkpoint`` (a tag that is a folder, names a folder or a missing file, or a
    checkpoint without this run's state is a :class:`CheckpointError`), or ``""`` when there is no tag."""
    path = resolve_last_checkpoint(save_dir)
    return check_resume_checkpoint(path) if path else ""


def check_resume_fit(path: str, incompatible) -> None:
    """Refuse to resume from a checkpoint whose weights do not fit the model (parameters of the model
    missing from it, or of another shape): training would go on from partly random weights."""
    wrong = getattr(incompatible, "incorrect_shapes", None) or []
    shapes = [f"{k}: checkpoint {tuple(a)} vs model {tuple(b)}" for k, a, b in wrong]
    skip = {k for k, _, _ in wrong}  # fvcore also lists them as missing: named once, by their shapes
    missing = [k for k in (getattr(incompatible, "missing_keys", None) or [])
               if not k.endswith("num_batches_tracked") and k not in skip]
    parts = []
    if shapes:
        parts.append(f"{len(shapes)} parameter(s) of another shape ({_describe(shapes, 3)})")
    if missing:
        parts.append(f"{len(missing)} parameter(s) of the model missing ({_describe(missing)})")
    if parts:
        raise CheckpointError(path, "does not hold this model's weights: " + "; ".join(parts)
                              + f" (a checkpoint of another config?). {_resume_fix(path)}")


class CheckpointerMixin:
    """What both engines' fvcore-based checkpointers share (put it first in the bases): ``save`` and
    the ``last_checkpoint`` tag written atomically (a kill mid-save leaves the previous file, never a
    truncated one), ``extra_state`` saved into every checkpoint (e.g. the scale-aware reference
    size), a tag that only names files of ``save_dir``, and the load's ``incompatible`` keys kept so
    that callers can refuse weights that do not fit (:func:`check_loaded_weights`).

    ``resume_or_load(..., resume=True)`` with a ``last_checkpoint`` tag refuses, before anything is
    trained, a checkpoint without this run's state (:func:`check_resume_checkpoint`), one whose
    state does not load, and (``refuse_unfit_resume``) one whose weights do not fit the model
    (:func:`check_resume_fit`)."""

    extra_state: Dict[str, Any] = {}
    #: ``--resume`` refuses weights that do not fit the model; ``--eval-only`` turns it off and
    #: judges the weights itself (:func:`check_loaded_weights`, with ``--allow-untrained``).
    refuse_unfit_resume: bool = True

    def get_checkpoint_file(self) -> str:
        return resolve_last_checkpoint(self.save_dir)

    def has_checkpoint(self) -> bool:
        # a tag that exists in any form (a folder, a dangling link) is then named by get_checkpoint_file,
        # never taken as "no checkpoint" (which would silently start from scratch)
        return bool(self.save_dir) and os.path.lexists(os.path.join(self.save_dir, LAST_CHECKPOINT))

    def resume_or_load(self, path: str, *, resume: bool = True):
        if not (resume and self.has_checkpoint()):
            return super().resume_or_load(path, resume=False)
        ckpt = check_resume_checkpoint(self.get_checkpoint_file())
        try:
            data = self.load(ckpt)
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as e:
            first = (str(e).strip().splitlines() or [""])[0][:200]
            raise CheckpointError(ckpt, f"its saved state does not load into this run ({type(e).__name__}: {first}). "
                                        f"{_resume_fix(ckpt)}") from None
        if self.refuse_unfit_resume:
            check_resume_fit(ckpt, getattr(self, "incompatible", None))
        return data

    def _load_model(self, checkpoint):
        self.incompatible = super()._load_model(checkpoint)
        return self.incompatible

    def save(self, name: str, **kwargs) -> None:
        import torch

        from .fileio import atomic_write

        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(self.extra_state)
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", save_file)
        atomic_write(save_file, lambda f: torch.save(data, f), durable=True)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        from .fileio import atomic_write

        atomic_write(os.path.join(self.save_dir, LAST_CHECKPOINT), last_filename_basename.encode(), durable=True)


def to_detectron2_names(state: Dict[str, Any]) -> Dict[str, Any]:
    """``backbone.body.*`` (torchvision ResNet names) -> Detectron2's ``backbone.bottom_up.*``.

    ``conv1``/``bn1`` -> ``stem.conv1``/``stem.conv1.norm``; ``layerL.B.convC``/``bnC`` ->
    ``res{L+1}.B.convC``/``.convC.norm``; ``downsample.0``/``.1`` -> ``shortcut``/``shortcut.norm``;
    ``num_batches_tracked`` is dropped. torchvision's bottlenecks (ResNet-50 and deeper) stride in the
    3x3 convolution: use them with Detectron2's ``MODEL.RESNETS.STRIDE_IN_1X1 False``.
    """
    out = {}
    for k, v in state.items():
        if not k.startswith("backbone.body.") or k.endswith("num_batches_tracked"):
            continue
        name = k[len("backbone.body."):]
        m = re.match(r"^(conv1|bn1)\.(\w+)$", name)
        if m:
            new = "stem.conv1." + m.group(2) if m.group(1) == "conv1" else "stem.conv1.norm." + m.group(2)
        else:
            m = re.match(r"^layer(\d)\.(\d+)\.(conv\d|bn\d|downsample\.[01])\.(\w+)$", name)
            if not m:
                raise KeyError(f"{k}: not a torchvision ResNet trunk parameter")
            stage, block, part, leaf = int(m.group(1)) + 1, m.group(2), m.group(3), m.group(4)
            if part.startswith("conv"):
                part = part + "." + leaf
            elif part.startswith("bn"):
                part = "conv" + part[2:] + ".norm." + leaf
            elif part == "downsample.0":
                part = "shortcut." + leaf
            else:
                part = "shortcut.norm." + leaf
            new = f"res{stage}.{block}.{part}"
        out["backbone.bottom_up." + new] = v
    return out
