"""Detectron2's ``DetectionCheckpointer`` that also reads DeepACC's in-domain pretrained trunks.

A ``deepacc-pretrain`` checkpoint names the trunk with torchvision's ResNet names
(``backbone.body.layer1.0.conv1.weight``); Detectron2's ResNet calls the same tensor
``backbone.bottom_up.res2.0.conv1.weight``. This checkpointer recognises such a file by its
``deepacc_pretrain`` block and translates the names (:func:`deepacc.pretrain.to_detectron2_names`)
before loading; every other file loads exactly as Detectron2 loads it.
"""
from __future__ import annotations

from detectron2.checkpoint import DetectionCheckpointer

from ..pretrain import PRETRAIN_KEY, to_detectron2_names

__all__ = ["DeepACCCheckpointer"]


class DeepACCCheckpointer(DetectionCheckpointer):
    def _load_file(self, filename):
        loaded = super()._load_file(filename)
        if isinstance(loaded, dict) and PRETRAIN_KEY in loaded:
            meta = loaded.pop(PRETRAIN_KEY)
            loaded["model"] = to_detectron2_names(loaded["model"])
            self.logger.info("%s: DeepACC in-domain pretrained ResNet-%s trunk (val crop top-1 %s), names "
                             "translated to Detectron2's.", filename, meta.get("depth"), meta.get("val_top1"))
        return loaded
