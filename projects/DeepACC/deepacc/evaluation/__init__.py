"""DeepACC evaluation: mAP, mAP_max, Acc, AER, chromosome-level diagnostics and class-agnostic
scoring (AP, recall, precision, count error with classes ignored; ground truth without classes).

Framework-free (numpy + pycocotools; torch only to gather results across ranks). Definitions of
every metric: ``docs/evaluation.md`` and :mod:`deepacc.evaluation.matching`. The readers of saved
predictions (a COCO results json, a folder of ``deepacc-predict`` outputs) into the evaluator's
prediction dicts are :mod:`deepacc.evaluation.readers` (not imported here).
"""
from .matching import acc_aer, box_iou, filter_top1, match_image, nms  # noqa: F401
from .coco_ap import build_coco_dt, build_coco_gt, coco_ap, coco_ap_subsets  # noqa: F401
from .evaluator import (  # noqa: F401
    AGNOSTIC_KINDS,
    METRICS_FILE,
    MetaphaseEvaluator,
    flatten_scalars,
    format_agnostic_table,
    format_per_class_table,
    format_table,
    format_tables,
    image_kind,
)
