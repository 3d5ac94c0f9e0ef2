"""Config values a user must fix: the errors that name them, the table of valid ranges and choices,
and the one-line messages for yacs's key errors.

Both trainers and ``deepacc-predict`` call :func:`check_config` before anything is built; the
ranges are written once here (:data:`_RANGES`, :data:`_CHOICES`) and docs/errors.md points at them.
"""
from __future__ import annotations

import math
import re
from typing import List, Optional, Sequence


class ConfigError(ValueError):
    """Config values a user must fix; ``problems`` holds one line per problem (all of them)."""

    def __init__(self, problems: Sequence[str], source: str = "config"):
        self.problems = list(problems)
        if len(self.problems) == 1:  # one line: "<source>: KEY = value: <what> must be <range>"
            super().__init__(f"{source}: {self.problems[0]}")
        else:
            super().__init__(f"{source}: {len(self.problems)} invalid value(s):\n  " + "\n  ".join(self.problems))


class ConfigFileError(ConfigError):
    """A config a user must fix, said in one line: a config file that cannot be read (a folder, a YAML
    syntax error, a top level that is not a mapping, a ``_BASE_`` loop or a missing base), or datasets
    that are not registered (:func:`deepacc.data.catalog.check_dataset_names`)."""

    def __init__(self, message: str):
        self.problems = [message]
        ValueError.__init__(self, message)


# (key, kind, bound(s), what it is) for the values a user sets; checked where they are defined.
_RANGES = (
    ("MODEL.DEEPACC.SIAMESE.THRESHOLD", "closed", (0.0, 1.0), "the siamese branch's probability threshold delta"),
    ("MODEL.DEEPACC.AAM.SCALE", "positive", None, "the AAM scale s"),
    ("MODEL.DEEPACC.AAM.MARGIN", "halfopen", (0.0, math.pi / 2), "the additive angular margin m (radians)"),
    ("MODEL.DEEPACC.AAM.LOSS_WEIGHT", "nonneg", None, "the AAM loss weight alpha"),
    ("MODEL.DEEPACC.SIAMESE.LOSS_WEIGHT", "nonneg", None, "the siamese CE loss weight beta"),
    ("MODEL.DEEPACC.GIA.LOSS_WEIGHT", "nonneg", None, "the GIA loss weight gamma"),
    ("MODEL.DEEPACC.CLS_LOSS_WEIGHT", "nonneg", None, "the plain classifier's loss weight"),
    ("MODEL.DEEPACC.AGNOSTIC_LOSS_WEIGHT", "nonneg", None, "the class-agnostic chromosomes' classification loss weight"),
    ("TEST.DEEPACC.SCORE_THRESH", "closed", (0.0, 1.0), "the call score threshold"),
    ("TEST.DEEPACC.NMS_THRESH", "closed", (0.0, 1.0), "the calls' class-agnostic NMS IoU"),
    ("TEST.DEEPACC.IOU_THRESH", "leftopen", (0.0, 1.0), "the matching IoU"),
    ("TEST.DEEPACC.REVIEW_SCORE", "closed", (0.0, 1.0), "the review flag's score"),
    ("TEST.DEEPACC.REVIEW_MARGIN", "closed", (0.0, 1.0), "the review flag's top-2 margin"),
    ("TEST.DEEPACC.ASSIGNMENT.EXTRA_COPY_COST", "nonneg", None, "the karyotype assignment's extra-copy cost"),
    ("MODEL.ROI_HEADS.SCORE_THRESH_TEST", "closed", (0.0, 1.0), "the detection score threshold"),
    ("MODEL.ROI_HEADS.NMS_THRESH_TEST", "closed", (0.0, 1.0), "the per-class NMS IoU"),
    ("MODEL.ROI_HEADS.NUM_CLASSES", "posint", None, "the number of classes"),
    ("SOLVER.BASE_LR", "positive", None, "the learning rate"),
    ("SOLVER.MOMENTUM", "halfopen", (0.0, 1.0), "the SGD momentum"),
    ("SOLVER.WEIGHT_DECAY", "nonneg", None, "the weight decay"),
    ("SOLVER.GAMMA", "positive", None, "the LR decay factor"),
    ("SOLVER.MAX_ITER", "posint", None, "the number of iterations"),
    ("SOLVER.EPOCHS", "nonnegint", None, "the number of epochs (0: use MAX_ITER)"),
    ("SOLVER.IMS_PER_BATCH", "posint", None, "the images per batch"),
    ("SOLVER.CHECKPOINT_PERIOD", "posint", None, "the iterations between checkpoints"),
    ("SOLVER.WARMUP_ITERS", "nonnegint", None, "the warm-up iterations"),
    ("SOLVER.WARMUP_FACTOR", "closed", (0.0, 1.0), "the warm-up start factor"),
    ("SOLVER.CLIP_GRADIENTS.CLIP_VALUE", "positive", None, "the gradient clipping value"),
    ("TEST.EVAL_PERIOD", "nonnegint", None, "the iterations between evaluations (0: at the end only)"),
    ("TEST.DETECTIONS_PER_IMAGE", "posint", None, "the detections kept per image"),
    ("DATALOADER.NUM_WORKERS", "nonnegint", None, "the data loader processes"),
    ("INPUT.MIN_SIZE_TEST", "posint", None, "the test image short side"),
    ("INPUT.MAX_SIZE_TEST", "posint", None, "the test image long-side cap"),
    ("INPUT.MAX_SIZE_TRAIN", "posint", None, "the training image long-side cap"),
    ("INPUT.SCALE_AWARE.REFERENCE_SIZE", "nonneg", None, "the reference chromosome size (0: measured)"),
    ("INPUT.SCALE_AWARE.REFERENCE_FRAME", "nonneg", None, "the reference frame area (0: measured)"),
    ("INPUT.SCALE_AWARE.TOLERANCE", "halfopen", (0.0, 1.0), "the relative size tolerance"),
    ("INPUT.SCALE_AWARE.MIN_FACTOR", "positive", None, "the lowest factor relative to the usual resize"),
    ("INPUT.SCALE_AWARE.MAX_FACTOR", "positive", None, "the highest factor relative to the usual resize"),
    ("INPUT.SCALE_AWARE.MAX_SIZE", "posint", None, "the long-side cap of scale-aware resizing"),
)
_CHOICES = (
    ("INPUT.NORMALIZATION", ("per_image", "none")),
    ("INPUT.POLARITY", ("auto", "dark_on_light", "bright_on_dark")),
    ("SOLVER.AMP.PRECISION", ("auto", "bfloat16", "float16", "float32")),
    ("MODEL.CHANNELS_LAST", ("auto", "on", "off")),
    ("MODEL.RESNETS.DEPTH", (18, 34, 50, 101, 152)),
    ("DATASETS.CHECK", ("full", "header", "off")),
    ("SOLVER.WARMUP_METHOD", ("linear", "constant")),  # both engines' warm-up schedules
)
#: ``MODEL.DEVICE``: these, or ``cuda:<index>`` (a CUDA device asked where there is none falls back to the CPU).
DEVICES = ("cpu", "cuda")


def _get(cfg, key: str):
    node = cfg
    for part in key.split("."):
        if not hasattr(node, "get") or part not in node:
            return _MISSING
        node = node[part]
    return node


_MISSING = object()


def _range_problem(key: str, kind: str, bounds, what: str, v) -> Optional[str]:
    """The problem of value ``v`` of ``key`` against its :data:`_RANGES` entry, ``None`` if it is valid."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return f"{key} = {v!r}: {what} must be a number"
    if kind.endswith("int") and float(v) != int(v):
        return f"{key} = {v!r}: {what} must be a whole number"
    ok, want = True, ""
    if kind == "closed":
        ok, want = bounds[0] <= v <= bounds[1], f"in [{bounds[0]:g}, {bounds[1]:g}]"
    elif kind == "halfopen":
        ok, want = bounds[0] <= v < bounds[1], f"in [{bounds[0]:g}, {bounds[1]:.4g})"
    elif kind == "leftopen":
        ok, want = bounds[0] < v <= bounds[1], f"in ({bounds[0]:g}, {bounds[1]:g}]"
    elif kind in ("positive",):
        ok, want = v > 0 and math.isfinite(v), "> 0"
    elif kind == "posint":
        ok, want = v >= 1, ">= 1"
    elif kind in ("nonneg",):
        ok, want = v >= 0 and math.isfinite(v), ">= 0"
    elif kind == "nonnegint":
        ok, want = v >= 0, ">= 0"
    if not ok or (isinstance(v, float) and math.isnan(v)):
        return f"{key} = {v!r}: {what} must be {want}"
    return None


def validate_values(values) -> List[str]:
    """The problems of ``{key: value}`` (keys of :data:`_RANGES`, e.g. command-line flags that override a
    setting read from a config), one line each as :func:`validate_config` words them."""
    table = {key: (kind, bounds, what) for key, kind, bounds, what in _RANGES}
    return [p for p in (_range_problem(key, *table[key], v) for key, v in values.items()) if p]


def validate_config(cfg) -> List[str]:
    """Every out-of-range or ill-typed value of ``cfg`` among the keys users set (thresholds, loss
    weights, schedule, periods, sizes, choices), one line each; ``[]`` when all are valid.

    Checked by both trainers and ``deepacc-predict`` before anything is built
    (:func:`check_config` raises :class:`ConfigError`). Keys absent from ``cfg`` are skipped.
    """
    problems: List[str] = []
    for key, kind, bounds, what in _RANGES:
        v = _get(cfg, key)
        if v is _MISSING:
            continue
        problem = _range_problem(key, kind, bounds, what, v)
        if problem:
            problems.append(problem)
    for key, allowed in _CHOICES:
        v = _get(cfg, key)
        if v is not _MISSING and v not in allowed:
            problems.append(f"{key} = {v!r}: must be one of {', '.join(repr(a) for a in allowed)}")
    sizes = _get(cfg, "INPUT.MIN_SIZE_TRAIN")
    if sizes is not _MISSING:
        vals = sizes if isinstance(sizes, (list, tuple)) else [sizes]
        if not vals or any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in vals):
            problems.append(f"INPUT.MIN_SIZE_TRAIN = {sizes!r}: the training short side(s) must be whole numbers >= 1")
    device = _get(cfg, "MODEL.DEVICE")
    if device is not _MISSING and not (isinstance(device, str) and re.fullmatch(r"cpu|cuda(:\d+)?", device)):
        problems.append(f"MODEL.DEVICE = {device!r}: must be one of {', '.join(repr(d) for d in DEVICES)} or "
                        "'cuda:<index>' (e.g. 'cuda:1')")
    steps = _get(cfg, "SOLVER.EPOCH_STEPS")
    if steps is not _MISSING and any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in steps):
        problems.append(f"SOLVER.EPOCH_STEPS = {steps!r}: must be whole epoch numbers >= 1")
    return problems


def check_config(cfg, source: str = "config") -> None:
    """Raise :class:`ConfigError` listing every invalid value of ``cfg`` (see :func:`validate_config`)."""
    problems = validate_config(cfg)
    if problems:
        raise ConfigError(problems, source)


def unknown_key_message(error: Exception, cfg) -> Optional[str]:
    """One line for yacs's config-key errors (from a YAML file or the command line), else ``None``:
    ``"unknown config key 'X' (did you mean 'Y'?)"`` for a key that does not exist, and
    ``"config key X: expected a float like 0.02, got -1 (int)"`` for a value of the wrong type."""
    import difflib
    import re

    text = str(error)
    t = re.search(r"Type mismatch \(<class '(\w+)'> vs\. <class '(\w+)'>\) with values \((.*) vs\. (.*)\) "
                  r"for config key: ([\w.]+)", text)
    if t:
        want, got, default, value, key = t.groups()
        return f"config key {key}: expected a {want} like {default}, got {value} ({got})"
    if "Override list has odd length" in text:
        return ("config options after the flags must be KEY VALUE pairs (an odd number of items was given; "
                "flags such as --eval-only go before them)")
    m = re.search(r"Non-existent (?:config )?key: ([\w.]+)", text)
    if not m:
        return None
    key = m.group(1)
    known: List[str] = []

    def walk(node, prefix):
        for k, v in node.items():
            name = f"{prefix}{k}"
            if hasattr(v, "items"):
                walk(v, name + ".")
            else:
                known.append(name)

    walk(cfg, "")
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown config key {key!r}{hint}"
