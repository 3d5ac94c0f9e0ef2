"""From per-proposal boxes and class probabilities to detections (both engines call this).

Two selections are produced from the same proposals:

* **all classes** (the usual Fast R-CNN inference): every (proposal, class) pair whose probability
  exceeds ``score_thresh`` is a candidate; used for mAP.
* **top-1** (paper §3.1, mAP_max / Acc / AER): only the highest-probability foreground class of each
  proposal is a candidate, with that class's box.

Both are followed by per-class NMS and a per-image top-k. Each detection keeps the index of its
proposal and that proposal's full probability vector. :func:`image_prediction` gives both sets
of one image as an :class:`~deepacc.modeling.prediction.ImagePrediction`.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torchvision.ops import batched_nms, clip_boxes_to_image

from .prediction import Detections, ImagePrediction


def select_detections(
    boxes: torch.Tensor,
    probs: torch.Tensor,
    image_size: Tuple[int, int],
    score_thresh: float,
    nms_thresh: float,
    topk: int,
    top1: bool = False,
) -> Detections:
    """One detection set of one image.

    Args:
        boxes: class-specific ``(R, K, 4)`` or ``(R, 4K)``, or class-agnostic ``(R, 1, 4)`` or
            ``(R, 4)`` decoded boxes, xyxy, in the coordinates of ``image_size``.
        probs: ``(R, K+1)`` class probabilities (last column background).
        image_size: ``(height, width)`` used to clip the boxes.
        score_thresh, nms_thresh, topk: ``MODEL.ROI_HEADS.SCORE_THRESH_TEST``,
            ``MODEL.ROI_HEADS.NMS_THRESH_TEST`` and ``TEST.DETECTIONS_PER_IMAGE`` of the config
            (a negative ``topk`` keeps all).
    Returns:
        :class:`Detections`, sorted by decreasing score: ``boxes (N, 4)``, ``scores (N,)``, ``classes
        (N,)`` in ``0..K-1``, ``class_probs (N, K+1)`` (the row of ``probs`` of each detection's
        proposal) and ``proposal_index (N,)``.
    """
    num_classes = probs.shape[1] - 1
    r = probs.shape[0]
    if boxes.dim() == 2:
        boxes = boxes.reshape(r, boxes.shape[1] // 4, 4)
    boxes = boxes.expand(r, num_classes, 4)  # class-agnostic: one box for every class
    boxes = clip_boxes_to_image(boxes.reshape(-1, 4).float(), image_size).view(r, num_classes, 4)
    scores = probs[:, :num_classes].float()
    valid = torch.isfinite(boxes).all(dim=2) & torch.isfinite(scores)
    if top1:
        best = scores.masked_fill(~valid, -1.0).argmax(dim=1)
        keep_mask = torch.zeros_like(valid)
        keep_mask[torch.arange(r, device=probs.device), best] = True
        valid = valid & keep_mask
    candidate = valid & (scores > score_thresh)
    prop_idx, cls_idx = candidate.nonzero(as_tuple=True)
    cand_boxes = boxes[prop_idx, cls_idx]
    cand_scores = scores[prop_idx, cls_idx]
    keep = batched_nms(cand_boxes, cand_scores, cls_idx, nms_thresh)
    if topk >= 0:
        keep = keep[:topk]
    index = prop_idx[keep]
    return Detections(cand_boxes[keep], cand_scores[keep], cls_idx[keep], probs[index].float(), index)


def image_prediction(boxes: torch.Tensor, probs: torch.Tensor, image_size: Tuple[int, int], score_thresh: float,
                     nms_thresh: float, topk: int) -> ImagePrediction:
    """Both detection sets of one image (all classes and top-1) from its proposals' decoded boxes and
    class probabilities (arguments as :func:`select_detections`)."""
    args = (boxes, probs, image_size, score_thresh, nms_thresh, topk)
    return ImagePrediction(select_detections(*args, top1=False), select_detections(*args, top1=True))
