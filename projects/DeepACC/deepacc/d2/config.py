"""The Detectron2 engine's config: Detectron2's defaults + DeepACC's keys, and its meta-architecture.

Used by the trainer (:mod:`deepacc.d2.trainer`), the predictor and the tools, so none of them needs
the training script for a config.
"""
from __future__ import annotations

from detectron2.config import get_cfg as _d2_get_cfg

from ..config import add_deepacc_config

__all__ = ["get_cfg", "use_deepacc_meta_arch", "to_detectron2_cfg"]


def get_cfg():
    """Detectron2's default config plus DeepACC's keys (:func:`deepacc.config.add_deepacc_config`)."""
    cfg = _d2_get_cfg()
    add_deepacc_config(cfg)
    return cfg


def use_deepacc_meta_arch(cfg) -> bool:
    """Replace ``MODEL.META_ARCHITECTURE: "GeneralizedRCNN"`` by ``"DeepACCRCNN"`` in ``cfg`` (same
    training; its inference also returns the top-1 set that mAP_max / Acc / AER need). The configs of
    ``configs/`` name ``DeepACCRCNN`` already; this serves configs that keep Detectron2's default.
    Returns whether it replaced it."""
    if cfg.MODEL.META_ARCHITECTURE != "GeneralizedRCNN":
        return False
    cfg.MODEL.META_ARCHITECTURE = "DeepACCRCNN"
    return True


def to_detectron2_cfg(cfg):
    """A new, frozen :func:`get_cfg` config holding the values of ``cfg`` (a Detectron2 or
    framework-free :func:`deepacc.config.get_cfg` config), with :func:`use_deepacc_meta_arch`."""
    out = get_cfg()
    out.merge_from_other_cfg(cfg)
    use_deepacc_meta_arch(out)
    out.freeze()
    return out
