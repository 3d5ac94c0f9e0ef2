"""The training data check that runs before the first iteration (both engines and ``train_net.py``).

``DATASETS.CHECK`` says how deep: ``"full"`` (default) decodes every training image completely,
``"header"`` reads only image headers, ``"off"`` skips the check. A dataset with problems stops the
run before it starts, with every problem named (:class:`~deepacc.data.coco.DatasetError`), so it
never dies hours in at the image that a loader worker happens to reach; with
``DATASETS.SKIP_INVALID True`` the images named in the problems are left out instead (and logged).
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Sequence, Tuple

from .coco import DatasetError, Problem, check_dataset_dicts

__all__ = ["CHECK_MODES", "check_training_datasets"]

logger = logging.getLogger(__name__)

CHECK_MODES = ("full", "header", "off")


def _drop(dicts: List[Dict[str, Any]], problems: Sequence[Problem]) -> Tuple[List[Dict[str, Any]], List[str]]:
    bad = {p.file for p in problems}
    kept = [d for d in dicts if str(d.get("file_name")) not in bad]
    return kept, sorted(bad)


def check_training_datasets(cfg, names: Sequence[str] = None,
                            get_dicts: Callable[[str], List[Dict[str, Any]]] = None) -> List[Dict[str, Any]]:
    """The dataset dicts of ``names`` (default ``DATASETS.TRAIN``), checked per ``DATASETS.CHECK``.

    ``get_dicts(name)`` reads a dataset (default: the project's catalog; the Detectron2 engine passes
    ``DatasetCatalog.get`` so datasets registered there directly are checked too).

    Raises :class:`DatasetError` (all problems of the first broken dataset) unless
    ``DATASETS.SKIP_INVALID``, in which case the images with problems are dropped with a warning;
    problems that concern no image file (e.g. a duplicate id) still stop the run.
    """
    if get_dicts is None:
        from .catalog import get_dataset_dicts as get_dicts

    names = list(cfg.DATASETS.TRAIN if names is None else names)
    mode = str(cfg.DATASETS.CHECK)
    if mode not in CHECK_MODES:
        raise ValueError(f"DATASETS.CHECK = {mode!r}: must be one of {', '.join(map(repr, CHECK_MODES))}")
    skip = bool(cfg.DATASETS.SKIP_INVALID)
    out: List[Dict[str, Any]] = []
    for name in names:
        try:
            dicts = list(get_dicts(name))
        except DatasetError as e:  # the json's own check (a nan box, an absurd area): per image when it can be
            if not (skip and e.usable):
                raise
            dicts = list(e.usable)
            dropped = sorted({p.file for p in e.problems})
            logger.warning("DATASETS.SKIP_INVALID: %d image(s) of %s left out: %s", len(dropped), name,
                           "; ".join(str(p) for p in e.problems[:20]) + (" ..." if len(e.problems) > 20 else ""))
        if mode != "off":
            problems = check_dataset_dicts(dicts, decode_images=mode == "full", source=name)
            if problems:
                files = {str(d.get("file_name")) for d in dicts}
                if not skip or any(p.file not in files for p in problems):
                    raise DatasetError(name, problems)
                dicts, dropped = _drop(dicts, problems)
                logger.warning("DATASETS.SKIP_INVALID: %d image(s) of %s left out: %s", len(dropped), name,
                               "; ".join(str(p) for p in problems[:20]) + (" ..." if len(problems) > 20 else ""))
                if not dicts:
                    raise DatasetError(name, problems)
        out.extend(dicts)
    return out
