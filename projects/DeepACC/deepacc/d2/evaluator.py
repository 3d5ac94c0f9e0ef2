"""``DeepACCEvaluator``: Detectron2 ``DatasetEvaluator`` around the core :class:`MetaphaseEvaluator`.

It converts each model output (``"instances"`` and ``"instances_top1"``, as returned by
:class:`~deepacc.d2.meta_arch.DeepACCRCNN`) into the project's prediction dict and lets the core
compute mAP, mAP_max, Acc, AER and the chromosome-level diagnostics (definitions in
``docs/evaluation.md``). Combine it with ``COCOEvaluator`` through ``DatasetEvaluators``.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import Instances

from ..evaluation.evaluator import MetaphaseEvaluator, flatten_scalars
from ..modeling.prediction import Detections
from ..karyotype.classes import CLASS_NAMES
from ..settings import DEFAULT_CALLS

__all__ = ["DeepACCEvaluator", "instances_to_dict", "outputs_to_predictions"]

logger = logging.getLogger(__name__)


def instances_to_dict(instances: Instances) -> Dict[str, np.ndarray]:
    """``Instances`` (``pred_boxes``, ``scores``, ``pred_classes``, optional ``class_probs``) -> the
    project's per-set prediction dict (:meth:`deepacc.modeling.prediction.Detections.to_numpy`; boxes
    XYXY in the instances' coordinates)."""
    probs = instances.class_probs if instances.has("class_probs") else None
    return Detections(instances.pred_boxes.tensor, instances.scores, instances.pred_classes, probs).to_numpy()


def outputs_to_predictions(inputs: Sequence[Mapping], outputs: Sequence[Mapping]) -> List[Dict[str, Any]]:
    """Detectron2 model inputs/outputs of a batch -> the project's prediction dicts."""
    preds = []
    for inp, out in zip(inputs, outputs):
        if "instances_top1" not in out:
            raise KeyError("model output has no 'instances_top1' (needed for mAP_max, Acc and AER): use "
                           "MODEL.META_ARCHITECTURE \"DeepACCRCNN\"")
        preds.append({
            "image_id": int(inp["image_id"]),
            "instances": instances_to_dict(out["instances"]),
            "instances_top1": instances_to_dict(out["instances_top1"]),
        })
    return preds


class DeepACCEvaluator(DatasetEvaluator):
    """DeepACC's metrics on a dataset registered in ``DatasetCatalog``.

    Args:
        dataset_name: the dataset (its dicts give the ground truth, its ``thing_classes`` the class
            names, in contiguous order).
        output_dir: where the core evaluator writes ``metrics_deepacc.json`` and the confusion
            matrix (nothing written when None).
        score_thresh, nms_thresh, iou_thresh: Acc/AER thresholds (``TEST.DEEPACC.*``); None: the
            defaults (:data:`deepacc.settings.DEFAULT_CALLS`, the default config's).
        extra_copy_cost: karyotype assignment of the calls (``TEST.DEEPACC.ASSIGNMENT``; None: off).
        distributed: gather predictions from every rank; metrics on rank 0.
        method: the model's name in the printed table (:meth:`from_config`: the config's,
            :func:`deepacc.config.method_of`).

    ``evaluate()`` returns ``{"deepacc": {metric: float}}`` (Detectron2's results format: mAP,
    mAP_max, Acc, AER in %, counts, per-class AP50 as ``AP50-<class>``, and the class-agnostic
    block as ``agnostic/<kind>/<metric>``, e.g. ``agnostic/all/AP50``); the full nested result of
    the core evaluator is kept in :attr:`results`. Ground truth without classes
    (``category_id == AGNOSTIC``) is scored class-agnostically only: on a dataset of such images
    mAP, Acc, AER, ... are not computed and left out of the returned scalars, and the core logs the
    class-agnostic table (after the usual tables when the dataset has classes).
    """

    def __init__(self, dataset_name: str, output_dir: Optional[str] = None, *,
                 score_thresh: Optional[float] = None, nms_thresh: Optional[float] = None,
                 iou_thresh: Optional[float] = None, distributed: bool = True,
                 extra_copy_cost: Optional[float] = None, method: str = "DeepACC"):
        calls = DEFAULT_CALLS
        score_thresh = calls.score_thresh if score_thresh is None else score_thresh
        nms_thresh = calls.nms_thresh if nms_thresh is None else nms_thresh
        iou_thresh = calls.iou_thresh if iou_thresh is None else iou_thresh
        self.dataset_name = dataset_name
        meta = MetadataCatalog.get(dataset_name)
        class_names = list(getattr(meta, "thing_classes", CLASS_NAMES))
        self._core = MetaphaseEvaluator(
            DatasetCatalog.get(dataset_name), class_names, output_dir=output_dir, score_thresh=score_thresh,
            nms_thresh=nms_thresh, iou_thresh=iou_thresh, distributed=distributed, extra_copy_cost=extra_copy_cost,
            method=method)
        self.results: Dict[str, Any] = {}

    @classmethod
    def from_config(cls, cfg, dataset_name: str, output_dir: Optional[str] = None) -> "DeepACCEvaluator":
        """The evaluator of ``cfg``: its ``TEST.DEEPACC`` thresholds and assignment, and its method's name
        in the table (:func:`deepacc.config.method_of`)."""
        from ..config import call_thresholds, method_of
        from ..karyotype.assignment import assignment_settings

        t = call_thresholds(cfg)
        return cls(dataset_name, output_dir, score_thresh=t.score_thresh, nms_thresh=t.nms_thresh,
                   iou_thresh=t.iou_thresh, extra_copy_cost=assignment_settings(cfg).cost, method=method_of(cfg))

    def reset(self) -> None:
        self._core.reset()
        self.results = {}

    def process(self, inputs, outputs) -> None:
        self._core.process(outputs_to_predictions(inputs, outputs))

    def evaluate(self) -> Dict[str, Dict[str, float]]:
        self.results = self._core.evaluate()
        if not self.results:  # other ranks, or nothing processed
            return {}
        return {"deepacc": flatten_scalars(self.results)}
