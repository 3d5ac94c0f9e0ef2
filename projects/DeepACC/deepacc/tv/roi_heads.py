"""torchvision ``RoIHeads`` that runs the DeepACC core head (box branch only).

The only place of the torchvision engine where torchvision's label convention (0 background,
``1..K``) exists: the proposal sampling of ``RoIHeads`` needs it; everything else uses the core's
classes ``0..K-1`` (targets ``{"boxes", "classes"}``, predictions).
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
from torchvision.models.detection.roi_heads import RoIHeads

from ..modeling import DeepACCHead, box_regression_loss, regression_classes
from ..modeling.inference import image_prediction
from ..modeling.prediction import ImagePrediction


def core_to_tv_labels(classes: torch.Tensor) -> torch.Tensor:
    """Core classes ``0..K-1`` -> torchvision labels ``1..K`` (torchvision reserves 0 for background)."""
    return classes.long() + 1


def tv_to_core_labels(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """torchvision labels (0 background, ``1..K``) -> core classes (``0..K-1``, ``K`` background)."""
    labels = labels.long()
    return torch.where(labels == 0, torch.full_like(labels, num_classes), labels - 1)


class TorchvisionDeepACCRoIHeads(RoIHeads):
    """Proposal sampling and box coding are torchvision's; everything after ROI pooling is the core's.

    ``box_head`` is the core :class:`~deepacc.modeling.DeepACCHead` (box head + classifier + box
    regressor); ``box_predictor`` is unused. Training returns the loss dict; inference one
    :class:`~deepacc.modeling.prediction.ImagePrediction` per image, in the resized images' frame.
    """

    def __init__(self, box_roi_pool, head: DeepACCHead, *, fg_iou_thresh, bg_iou_thresh, batch_size_per_image,
                 positive_fraction, bbox_reg_weights, score_thresh, nms_thresh, detections_per_img,
                 smooth_l1_beta=0.0, box_loss_weight=1.0):
        super().__init__(box_roi_pool, head, None, fg_iou_thresh, bg_iou_thresh, batch_size_per_image,
                         positive_fraction, bbox_reg_weights, score_thresh, nms_thresh, detections_per_img)
        self.smooth_l1_beta = float(smooth_l1_beta)
        self.box_loss_weight = float(box_loss_weight)

    @classmethod
    def from_config(cls, cfg, pooler, head: DeepACCHead) -> "TorchvisionDeepACCRoIHeads":
        if len(cfg.MODEL.ROI_HEADS.IOU_THRESHOLDS) != 1:
            raise ValueError("MODEL.ROI_HEADS.IOU_THRESHOLDS must have one value (fg >= t, bg < t)")
        if not cfg.MODEL.ROI_HEADS.PROPOSAL_APPEND_GT:
            raise ValueError("this engine always appends ground-truth boxes to the proposals")
        if cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE != "smooth_l1":
            raise ValueError("this engine supports MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE 'smooth_l1' only")
        t = float(cfg.MODEL.ROI_HEADS.IOU_THRESHOLDS[0])
        return cls(pooler, head, fg_iou_thresh=t, bg_iou_thresh=t,
                   batch_size_per_image=int(cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE),
                   positive_fraction=float(cfg.MODEL.ROI_HEADS.POSITIVE_FRACTION),
                   bbox_reg_weights=tuple(float(w) for w in cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS),
                   score_thresh=float(cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST),
                   nms_thresh=float(cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST),
                   detections_per_img=int(cfg.TEST.DETECTIONS_PER_IMAGE),
                   smooth_l1_beta=float(cfg.MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA),
                   box_loss_weight=float(cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT))

    def forward(self, features: Dict[str, torch.Tensor], proposals: List[torch.Tensor], image_shapes,
                targets: Optional[List[Dict[str, torch.Tensor]]] = None):
        head: DeepACCHead = self.box_head
        k = head.num_classes
        if self.training:
            tv_targets = [{"boxes": t["boxes"], "labels": core_to_tv_labels(t["classes"])} for t in targets]
            proposals, _, labels, regression_targets = self.select_training_samples(proposals, tv_targets)
        pooled = self.box_roi_pool(features, proposals, image_shapes)
        num_per_image = [len(p) for p in proposals]
        out, deltas = head(pooled, num_per_image)
        if self.training:
            core_labels = tv_to_core_labels(torch.cat(labels), k)
            losses = head.classifier.losses(out, core_labels)
            # a class-agnostic chromosome (core label K+1) regresses its most probable class's deltas
            losses["loss_box_reg"] = self.box_loss_weight * box_regression_loss(
                deltas, torch.cat(regression_targets), regression_classes(core_labels, out.logits, k), k,
                self.smooth_l1_beta)
            return [], losses
        boxes = self.box_coder.decode(deltas, proposals)
        results: List[ImagePrediction] = [
            image_prediction(b, p, size, self.score_thresh, self.nms_thresh, self.detections_per_img)
            for b, p, size in zip(boxes.split(num_per_image), out.probs().split(num_per_image), image_shapes)]
        return results, {}
