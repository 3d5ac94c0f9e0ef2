"""Evaluation of the torchvision engine: inference over a dataset, the paper's metrics per dataset."""
from __future__ import annotations

import logging
import os
import time
from typing import Dict, List, Optional

import torch
from torch import nn
from tqdm import tqdm

from ..modeling.prediction import to_prediction
from ..precision import amp_dtype, autocast_to
from . import comm
from .dataloader import build_test_loader, dataset_dicts

logger = logging.getLogger("deepacc")


def scale_of(record: Dict) -> Optional[float]:
    """The scale-aware resize factor the mapper chose for an image (``None``: the usual rule)."""
    info = record.get("input_scale") or {}
    return float(info["factor"]) if info.get("mode") == "scale_aware" else None


@torch.no_grad()
def inference_on_dataset(model: nn.Module, loader, evaluator, device, amp_dtype: Optional[torch.dtype] = None) -> Dict:
    """Run ``model`` on every image of ``loader``, feed the prediction dicts to ``evaluator``, and
    return ``evaluator.evaluate()``."""
    model.eval()
    evaluator.reset()
    total = len(loader)
    bar = tqdm(loader, total=total, desc="inference", disable=not comm.is_main_process(), leave=False)
    start = time.perf_counter()
    for batch in bar:
        images = [b[0].to(device, non_blocking=True) for b in batch]
        scales = [scale_of(b[2]) for b in batch]
        with autocast_to(device.type, amp_dtype):
            outputs = model(images, scales=scales)
        evaluator.process([to_prediction(o, b[2]["image_id"]) for o, b in zip(outputs, batch)])
    elapsed = time.perf_counter() - start
    logger.info("Inference on %d images of this process: %.3f s/image.", total, elapsed / max(total, 1))
    return evaluator.evaluate()


def build_evaluator(cfg, dataset_name: str, dicts: List[Dict]):
    """The core :class:`~deepacc.evaluation.MetaphaseEvaluator` with ``TEST.DEEPACC.*``, writing under
    ``OUTPUT_DIR/inference/<dataset_name>``, its table naming the config's method
    (:func:`deepacc.config.method_of`)."""
    from ..config import call_thresholds, method_of
    from ..evaluation import MetaphaseEvaluator
    from ..karyotype.assignment import assignment_settings

    out = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
    calls = call_thresholds(cfg)
    return MetaphaseEvaluator(dicts, output_dir=out, score_thresh=calls.score_thresh, nms_thresh=calls.nms_thresh,
                              iou_thresh=calls.iou_thresh, distributed=True,
                              extra_copy_cost=assignment_settings(cfg).cost, method=method_of(cfg))


def test(cfg, model: nn.Module, device) -> Dict[str, Dict]:
    """Evaluate on every dataset of ``DATASETS.TEST``; the evaluator logs the paper-style tables and
    the class-agnostic one.

    Each dataset's result dict also carries the class-agnostic scalars flat, ``agnostic/<kind>/<metric>``
    (:func:`deepacc.evaluation.flatten_scalars`), so that the trainer's ``metrics.json`` records them
    (``<dataset>/agnostic/all/AP50``, ...); on a dataset without classes ``mAP`` etc. are ``None``,
    which the metrics file leaves out."""
    from ..evaluation import flatten_scalars

    results = {}
    for name in cfg.DATASETS.TEST:
        dicts = dataset_dicts([name])
        classifier = model.head.classifier
        classifier.pop_centre_usage()
        res = inference_on_dataset(model, build_test_loader(cfg, dicts), build_evaluator(cfg, name, dicts),
                                   device, amp_dtype(cfg, device.type))
        if classifier.siamese_enabled:
            total, images = comm.reduce_sum(list(classifier.pop_centre_usage()))
            if images:
                res["siamese_local_centre_pct"] = 100.0 * total / images
                logger.info("Siamese branch on %s: %.1f %% of the classes per image take a local centre "
                            "(most confident proposal's margin probability > delta = %.2f).", name,
                            res["siamese_local_centre_pct"], classifier.threshold)
        if res:  # rank 0
            res.update({k: v for k, v in flatten_scalars(res).items() if k.startswith("agnostic/")})
        results[name] = res  # the evaluator has logged its tables (headline, per class, class-agnostic)
    return results
