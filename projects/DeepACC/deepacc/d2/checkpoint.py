"""Detectron2's ``DetectionCheckpointer`` that also reads DeepACC's in-domain pretrained trunks.

A ``deepacc-pretrain`` checkpoint names the trunk with torchvision's ResNet names
(``backbone.body.layer1.0.conv1.weight``); Detectron2's ResNet calls the same tensor
``backbone.bottom_up.res2.0.conv1.weight``. This checkpointer recognises such a file by its
``deepacc_pretrain`` block and translates the names (:func:`deepacc.checkpoint_io.to_detectron2_names`)
before loading; every other file loads as Detectron2 loads it, except that nothing is unpickled
unsafely: ``.pth`` files through ``torch.load(weights_only=True)`` and model-zoo ``.pkl`` files
through an arrays-only unpickler (:mod:`deepacc.checkpoint_io`), and ``last_checkpoint`` only
names files of ``OUTPUT_DIR``. Saves are atomic, as on the torchvision engine.
"""
from __future__ import annotations

from detectron2.checkpoint import DetectionCheckpointer

from ..checkpoint_io import (PRETRAIN_KEY, CheckpointerMixin, CheckpointError, load_checkpoint_file, read_pickled_weights,
                             to_detectron2_names)

__all__ = ["DeepACCCheckpointer"]


class DeepACCCheckpointer(CheckpointerMixin, DetectionCheckpointer):
    """Detectron2's checkpointer with the project's atomic saves, confined ``last_checkpoint`` tag and
    ``extra_state`` (:class:`~deepacc.checkpoint_io.CheckpointerMixin`), safe reads, and DeepACC's
    pretrained trunks."""

    def _torch_load(self, f):
        return load_checkpoint_file(f)

    def _load_file(self, filename):
        if filename.endswith(".pkl"):
            return self._load_model_zoo_pickle(filename)
        if filename.endswith(".pyth"):
            raise CheckpointError(filename, "pycls .pyth checkpoints are not read by DeepACC; convert it to a "
                                            "state dict saved with torch.save")
        loaded = super()._load_file(filename)
        if isinstance(loaded, dict) and PRETRAIN_KEY in loaded:
            meta = loaded.pop(PRETRAIN_KEY)
            loaded["model"] = to_detectron2_names(loaded["model"])
            self.logger.info("%s: DeepACC in-domain pretrained ResNet-%s trunk (val crop top-1 %s), names "
                             "translated to Detectron2's.", filename, meta.get("depth"), meta.get("val_top1"))
        return loaded

    def _load_model_zoo_pickle(self, filename):
        """Detectron2 / Caffe2 model-zoo ``.pkl`` weights, read with the arrays-only unpickler; the
        same conventions as Detectron2's reader (its own zoo format kept as is; Caffe2 blobs without
        momentum buffers, loaded with name-matching heuristics)."""
        data = read_pickled_weights(filename)
        if not isinstance(data, dict):
            raise CheckpointError(filename, f"holds a {type(data).__name__}, expected a dict of arrays")
        if "model" in data and "__author__" in data:
            self.logger.info("Reading a file from '%s'", data["__author__"])
            return data
        blobs = data.get("blobs", data)
        weights = {k: v for k, v in blobs.items() if not str(k).endswith("_momentum")}
        return {"model": weights, "__author__": "Caffe2", "matching_heuristics": True}
