"""Detectron2 engine of DeepACC (needs Detectron2 installed).

Importing this package registers, by name:

* ``MODEL.ROI_HEADS.NAME: "DeepACCROIHeads"`` (:class:`DeepACCROIHeads`, ``ROI_HEADS_REGISTRY``);
* ``MODEL.META_ARCHITECTURE: "DeepACCRCNN"`` (:class:`DeepACCRCNN`, ``META_ARCH_REGISTRY``), whose
  inference also returns the top-1 detection set (``"instances_top1"``);
* every dataset of :mod:`deepacc.data.catalog` in ``DatasetCatalog`` / ``MetadataCatalog``.

All the paper's ideas are the core's (:mod:`deepacc.modeling`); this package only adapts them to
Detectron2's interfaces.
"""
try:
    import detectron2  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised by tests/test_d2_optional.py
    raise ImportError(
        "deepacc.d2 is the Detectron2 engine of DeepACC and needs Detectron2, which is not installed "
        f"({e}). Install it as described in docs/detectron2.md, or use the torchvision engine "
        "(train_net.py --engine torchvision)."
    ) from e

from ..config import add_deepacc_config  # noqa: F401  (the one place of the MODEL.DEEPACC defaults)
from .mapper import DeepACCDatasetMapper, register_datasets  # noqa: F401
from .evaluator import DeepACCEvaluator, instances_to_dict, outputs_to_predictions  # noqa: F401
from .checkpoint import DeepACCCheckpointer  # noqa: F401
from .config import to_detectron2_cfg  # noqa: F401
from .meta_arch import DeepACCRCNN  # noqa: F401
from .predictor import Detectron2Predictor  # noqa: F401
from .roi_heads import (  # noqa: F401
    DeepACCOutputLayers,
    DeepACCROIHeads,
    box_predictions,
    detection_sets,
    instances_from_probs,
)

register_datasets()
