"""Framework-free dataset catalog (the same idea as Detectron2's ``DatasetCatalog``/``MetadataCatalog``).

Both engines resolve ``DATASETS.TRAIN`` / ``DATASETS.TEST`` names here; the Detectron2 engine
mirrors the entries into its own catalogs.

Data root: ``os.environ.get("DETECTRON2_DATASETS", "datasets")``, read each time a dataset is
loaded (so setting the variable after import works). Builtin datasets (registered on import)::

    deepacc_synth_quick_{train,val}      <root>/deepacc_synth_quick/      auto-generated on first use
    deepacc_synth_{train,val,test}       <root>/deepacc_synth/            datasets/prepare_synthetic.py
    deepacc_synth_shift_test             <root>/deepacc_synth_shift/      datasets/prepare_synthetic.py (batch "shifted")
    deepacc_synth_aneuploid_test         <root>/deepacc_synth_aneuploid/  datasets/prepare_synthetic.py (aneuploid only)
    gband_cells_{train,val,test}         <root>/gband_cells/              datasets/prepare_gband_cells.py
    gband_cells_{val,test}_aneuploid     <root>/gband_cells/              datasets/prepare_gband_cells.py --aneuploid
    gband_cells_real_{train,val,test}    <root>/gband_cells_real/         datasets/prepare_gband_cells.py --real-like
    mfish_{train,val,test}               <root>/mfish/                    datasets/prepare_mfish.py
    voc_chromosomes_{train,val,test}     <root>/voc_chromosomes/          datasets/prepare_voc.py
    bioimlab_{train,val,test}            <root>/bioimlab/                 datasets/prepare_labelme.py (class-agnostic)

Each reads ``<root>/<dir>/annotations/<split>.json`` with images under ``<root>/<dir>/``.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any, Callable, Dict, List, Optional

from ..karyotype import CLASS_NAMES
from .coco import load_coco_json

__all__ = [
    "datasets_root",
    "register",
    "register_coco_dataset",
    "unregister",
    "get_dataset_dicts",
    "get_metadata",
    "list_datasets",
    "ensure_synth_quick",
    "DatasetNotPreparedError",
    "UnknownDatasetError",
    "unknown_dataset_message",
    "check_dataset_names",
    "QUICK_SPEC",
]

_FUNCS: Dict[str, Callable[[], List[Dict[str, Any]]]] = {}
_META: Dict[str, Dict[str, Any]] = {}
_LAZY_META: Dict[str, Callable[[], Dict[str, Any]]] = {}


class DatasetNotPreparedError(FileNotFoundError):
    """A builtin dataset's files are missing; the message names the prepare command."""


def datasets_root() -> str:
    """The data root: ``$DETECTRON2_DATASETS`` or ``datasets`` (relative to the working directory)."""
    return os.environ.get("DETECTRON2_DATASETS", "datasets")


def _base_meta(**metadata) -> Dict[str, Any]:
    meta = {"class_names": list(CLASS_NAMES), "evaluator_type": "deepacc"}
    meta.update(metadata)
    return meta


def register(name: str, func: Callable[[], List[Dict[str, Any]]], **metadata) -> None:
    """Register a dataset: ``func()`` returns its list of dataset dicts."""
    if not isinstance(name, str) or not name:
        raise ValueError("dataset name must be a non-empty string")
    if not callable(func):
        raise TypeError(f"dataset {name!r}: func must be callable, got {type(func).__name__}")
    if name in _FUNCS:
        raise KeyError(f"dataset {name!r} is already registered")
    _FUNCS[name] = func
    _META[name] = _base_meta(**metadata)


def register_coco_dataset(name: str, json_file: str, image_root: Optional[str], allow_outside_root: bool = False,
                          **metadata) -> None:
    """Register a COCO json dataset (categories by name 1..22, X, Y; see :mod:`deepacc.data.coco`).

    ``allow_outside_root``: accept ``file_name`` values that lead outside ``image_root``.
    """
    json_file = os.fspath(json_file)
    image_root = os.fspath(image_root) if image_root is not None else None

    def _load():
        return load_coco_json(json_file, image_root, dataset_name=name, allow_outside_root=allow_outside_root)

    register(name, _load, json_file=json_file, image_root=image_root, allow_outside_root=allow_outside_root,
             **metadata)


def unregister(name: str) -> None:
    """Remove a dataset (mainly for tests)."""
    _FUNCS.pop(name, None)
    _META.pop(name, None)
    _LAZY_META.pop(name, None)


def list_datasets() -> List[str]:
    return sorted(_FUNCS)


class UnknownDatasetError(KeyError):
    """A dataset name that is not registered; ``str()`` is the message (the closest registered names,
    then all of them), without the quotes ``KeyError`` adds."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown dataset"


def unknown_dataset_message(name: Any, known: Optional[List[str]] = None) -> str:
    """``'<name>' is not registered (did you mean 'x'?); registered datasets: a, b, ...``."""
    import difflib

    known = sorted(known if known is not None else list_datasets())
    close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.6)
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    return f"{name!r} is not registered{hint}; registered datasets: {', '.join(known) or 'none'}"


def check_dataset_names(cfg, train: bool = True, test: bool = True, extra_known=()) -> List[str]:
    """Problems with ``DATASETS.TRAIN`` (when ``train``: empty, or a name that is not registered) and
    ``DATASETS.TEST`` (when ``test``: names that are not registered; it may be empty), one line each.
    ``extra_known``: names registered elsewhere (e.g. in Detectron2's ``DatasetCatalog``)."""
    known = sorted(set(list_datasets()) | set(extra_known))
    problems = []
    for key, wanted in (("TRAIN", train), ("TEST", test)):
        if not wanted:
            continue
        names = cfg.DATASETS[key]
        if isinstance(names, str):
            names = [names]
        if key == "TRAIN" and not names:
            suggestion = ("deepacc_synth_quick_train" if "deepacc_synth_quick_train" in known
                          else next((n for n in known if n.endswith("_train")), "<name>_train"))
            problems.append(f"DATASETS.TRAIN is empty: training needs at least one registered dataset, e.g. "
                            f"DATASETS.TRAIN '(\"{suggestion}\",)'; registered datasets: {', '.join(known)}")
        for name in names:
            if name not in known:
                problems.append(f"DATASETS.{key}: dataset {unknown_dataset_message(name, known)}")
    return problems


def _require(name: str) -> None:
    if name not in _FUNCS:
        raise UnknownDatasetError(f"dataset {unknown_dataset_message(name)}")


def get_dataset_dicts(name: str) -> List[Dict[str, Any]]:
    """The dataset dicts of a registered dataset (raises a clear error when it is not prepared)."""
    _require(name)
    dicts = _FUNCS[name]()
    if not isinstance(dicts, list):
        raise TypeError(f"dataset {name!r}: its function must return a list of dicts, got {type(dicts).__name__}")
    return dicts


def get_metadata(name: str) -> Dict[str, Any]:
    """Metadata of a dataset: ``class_names``, ``json_file``, ``image_root``, ``evaluator_type`` and more."""
    _require(name)
    meta = dict(_META[name])
    if name in _LAZY_META:
        meta.update(_LAZY_META[name]())
    return meta


# ----------------------------------------------------------------------------------------------
# builtin datasets

#: The quick synthetic splits: split -> (num_images, seed); all 640x480, default batch distribution.
QUICK_SPEC = {"train": (200, 1000), "val": (20, 1001)}
QUICK_SIZE = (640, 480)
#: Chromosome pixel size of the quick spreads relative to a 1600x1200 spread (chromosome 1 is 42-84 px
#: long): a magnified part of a slide, so that the bands are resolvable on a small, fast image.
QUICK_SCALE = 0.7
QUICK_DIR = "deepacc_synth_quick"
#: Bumped when the generator's output changes; an older quick set is kept but reported.
QUICK_VERSION = 4
_warned_stale = False


def _generate_quick(target: str) -> None:
    from ..fileio import atomic_write
    from .synthetic import generate_dataset

    parent = os.path.dirname(target) or "."
    tmp = tempfile.mkdtemp(prefix=f".{QUICK_DIR}.tmp-", dir=parent)
    try:
        os.chmod(tmp, 0o755)  # mkdtemp creates 0700; the data is meant to be shared
        for split, (n, seed) in QUICK_SPEC.items():
            generate_dataset(tmp, n, seed=seed, width=QUICK_SIZE[0], height=QUICK_SIZE[1], split=split,
                             progress=False, scale=QUICK_SCALE)
        atomic_write(os.path.join(tmp, "GENERATOR.json"),
                     json.dumps({"quick_version": QUICK_VERSION, "spec": QUICK_SPEC, "size": QUICK_SIZE,
                                 "scale": QUICK_SCALE}).encode())
        try:
            os.rename(tmp, target)  # atomic; fails if another process finished first
        except OSError:
            if not os.path.isdir(os.path.join(target, "annotations")):
                raise
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def _check_stale(target: str) -> None:
    global _warned_stale
    if _warned_stale:
        return
    try:
        with open(os.path.join(target, "GENERATOR.json")) as f:
            version = json.load(f).get("quick_version")
    except (OSError, ValueError):
        version = None
    if version != QUICK_VERSION:
        import warnings

        _warned_stale = True
        warnings.warn(f"{target} was made by an older synthetic generator (version {version}, current "
                      f"{QUICK_VERSION}); delete the folder to regenerate it", stacklevel=3)


def ensure_synth_quick(root: Optional[str] = None) -> str:
    """Make sure ``<root>/deepacc_synth_quick`` exists (generate it on first use); returns its path.

    Safe when several processes (DDP ranks) call it at once: generation happens in a private temp
    dir that is atomically renamed into place; an exclusive lock file (``fcntl``, where available)
    makes the other processes wait instead of generating the same data again.
    """
    root = root if root is not None else datasets_root()
    target = os.path.abspath(os.path.join(root, QUICK_DIR))
    done = lambda: all(os.path.exists(os.path.join(target, "annotations", f"{s}.json")) for s in QUICK_SPEC)  # noqa: E731
    if done():
        _check_stale(target)
        return target
    os.makedirs(os.path.dirname(target), exist_ok=True)
    lock_path = target + ".lock"
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: rely on the rename race handling alone
        fcntl = None
    from ..fileio import refuse_link

    refuse_link(lock_path, "lock file")  # and O_NOFOLLOW: the lock never creates a file through a link
    lock_fd = os.open(lock_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    with os.fdopen(lock_fd, "ab") as lock:  # opened only to be locked, never written
        if fcntl is not None:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            if not done():
                if os.path.exists(target):  # a partial directory left by someone else: refuse to guess
                    raise DatasetNotPreparedError(
                        f"{target}: exists but is incomplete (missing annotations/*.json); delete it and retry")
                _generate_quick(target)
        finally:
            if fcntl is not None:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
    return target


def _builtin_split(name: str, dirname: str, split: str, prepare: str, auto: Optional[Callable[[], str]] = None):
    def paths():
        base = os.path.join(datasets_root(), dirname)
        return os.path.join(base, "annotations", f"{split}.json"), base

    def load():
        if auto is not None:
            auto()
        json_file, image_root = paths()
        if not os.path.exists(json_file):
            raise DatasetNotPreparedError(
                f"dataset {name!r}: {json_file} not found (data root {datasets_root()!r}, set by $DETECTRON2_DATASETS). "
                f"Create it with: {prepare}")
        return load_coco_json(json_file, image_root, dataset_name=name)

    register(name, load, dataset_dir=dirname, split=split, prepare_command=prepare)
    _LAZY_META[name] = lambda: dict(zip(("json_file", "image_root"), paths()))


def _register_builtins() -> None:
    root_hint = "$DETECTRON2_DATASETS"
    for split in ("train", "val"):
        _builtin_split(f"deepacc_synth_quick_{split}", QUICK_DIR, split,
                       "generated automatically on first use (deepacc.data.catalog.ensure_synth_quick)",
                       auto=ensure_synth_quick)
    for split in ("train", "val", "test"):
        _builtin_split(f"deepacc_synth_{split}", "deepacc_synth", split,
                       f"python datasets/prepare_synthetic.py --root {root_hint}")
    _builtin_split("deepacc_synth_shift_test", "deepacc_synth_shift", "test",
                   f"python datasets/prepare_synthetic.py --root {root_hint}")
    _builtin_split("deepacc_synth_aneuploid_test", "deepacc_synth_aneuploid", "test",
                   f"python datasets/prepare_synthetic.py --root {root_hint}")
    for split in ("train", "val", "test"):
        _builtin_split(f"gband_cells_{split}", "gband_cells", split,
                       f"python datasets/prepare_gband_cells.py --src <gband_cells folder> --out {root_hint}/gband_cells")
        if split != "train":
            _builtin_split(f"gband_cells_{split}_aneuploid", "gband_cells", f"{split}_aneuploid",
                           f"python datasets/prepare_gband_cells.py --src <gband_cells folder> --out {root_hint}/gband_cells "
                           f"--aneuploid --only {split}_aneuploid")
        _builtin_split(f"gband_cells_real_{split}", "gband_cells_real", split,
                       f"python datasets/prepare_gband_cells.py --src <gband_cells folder> --out {root_hint}/gband_cells_real "
                       f"--real-like")
        _builtin_split(f"mfish_{split}", "mfish", split,
                       f"python datasets/prepare_mfish.py --src <ADIR M-FISH folder> --out {root_hint}/mfish")
        _builtin_split(f"voc_chromosomes_{split}", "voc_chromosomes", split,
                       f"python datasets/prepare_voc.py --src <VOC folder> --out {root_hint}/voc_chromosomes")
        _builtin_split(f"bioimlab_{split}", "bioimlab", split,
                       f"python datasets/prepare_labelme.py --src <LabelMe folder> --out {root_hint}/bioimlab")


_register_builtins()
