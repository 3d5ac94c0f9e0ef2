"""DeepACC evaluation: mAP, mAP_max, Acc, AER and chromosome-level diagnostics.

Framework-free (numpy + pycocotools; torch only to gather results across ranks). Definitions of
every metric: ``docs/evaluation.md`` and :mod:`deepacc.evaluation.matching`.
"""
from .matching import acc_aer, box_iou, filter_top1, match_image, nms  # noqa: F401
from .coco_ap import build_coco_dt, build_coco_gt, coco_ap  # noqa: F401
from .evaluator import (  # noqa: F401
    METRICS_FILE,
    MetaphaseEvaluator,
    flatten_scalars,
    format_per_class_table,
    format_table,
)
