"""``DeepACCRCNN``: Detectron2's ``GeneralizedRCNN`` whose inference also returns the top-1 set.

Selected by ``MODEL.META_ARCHITECTURE: "DeepACCRCNN"``. Training is ``GeneralizedRCNN``'s. At
inference each output dict carries

* ``"instances"``: the usual all-classes detections (what ``COCOEvaluator`` reads), plus the field
  ``class_probs`` (N, K+1);
* ``"instances_top1"``: the detections obtained by keeping only the top-1 foreground class of each
  proposal (mAP_max, Acc, AER);

both computed by the core :func:`~deepacc.modeling.image_prediction` from one pass of the box
head, and both rescaled to the input's ``height`` x ``width`` by ``detector_postprocess``.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch

from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Instances

from .roi_heads import detection_sets

__all__ = ["DeepACCRCNN"]


@META_ARCH_REGISTRY.register()
class DeepACCRCNN(GeneralizedRCNN):
    """``GeneralizedRCNN`` + the top-1 detection set. Works with ``DeepACCROIHeads`` and with
    Detectron2's own ``StandardROIHeads`` (the Faster R-CNN baseline)."""

    def inference(
        self,
        batched_inputs: List[Dict[str, torch.Tensor]],
        detected_instances: Optional[List[Instances]] = None,
        do_postprocess: bool = True,
    ):
        """As ``GeneralizedRCNN.inference``; with ``do_postprocess`` each result dict also has
        ``"instances_top1"``. Given ``detected_instances`` (no box detection) or without
        post-processing, the behaviour is exactly the base class's (a list of ``Instances``)."""
        if detected_instances is not None or not do_postprocess:
            return super().inference(batched_inputs, detected_instances, do_postprocess)
        assert not self.training
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        if self.proposal_generator is not None:
            proposals, _ = self.proposal_generator(images, features, None)
        else:
            if "proposals" not in batched_inputs[0]:
                raise ValueError("DeepACCRCNN without a proposal generator needs 'proposals' in its inputs")
            proposals = [x["proposals"].to(self.device) for x in batched_inputs]
        instances, top1 = detection_sets(self.roi_heads, features, proposals)
        instances = self.roi_heads.forward_with_given_boxes(features, instances)
        results = []
        for inst, inst1, inp, size in zip(instances, top1, batched_inputs, images.image_sizes):
            height = inp.get("height", size[0])
            width = inp.get("width", size[1])
            results.append({
                "instances": detector_postprocess(inst, height, width),
                "instances_top1": detector_postprocess(inst1, height, width),
            })
        return results
