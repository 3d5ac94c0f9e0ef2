"""From per-proposal boxes and class probabilities to detections (both engines call this).

Two selections are produced from the same proposals:

* **all classes** (the usual Fast R-CNN inference): every (proposal, class) pair whose probability
  exceeds ``score_thresh`` is a candidate; used for mAP.
* **top-1** (paper §3.1, mAP_max / Acc / AER): only the highest-probability foreground class of each
  proposal is a candidate, with that class's box.

Both are followed by per-class NMS and a per-image top-k. Each detection keeps the index of its
proposal, so its full probability vector can be reported.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch
from torchvision.ops import batched_nms, clip_boxes_to_image


def select_detections(
    boxes: torch.Tensor,
    probs: torch.Tensor,
    image_size: Tuple[int, int],
    score_thresh: float = 0.05,
    nms_thresh: float = 0.5,
    topk: int = 100,
    top1: bool = False,
) -> Dict[str, torch.Tensor]:
    """Detections of one image.

    Args:
        boxes: ``(R, K, 4)`` class-specific or ``(R, 4)`` class-agnostic boxes, xyxy, in the
            coordinates of ``image_size``.
        probs: ``(R, K+1)`` class probabilities (last column background).
        image_size: ``(height, width)`` used to clip the boxes.
    Returns:
        dict with ``boxes (N, 4)``, ``scores (N,)``, ``classes (N,)`` in ``0..K-1`` and
        ``proposal_index (N,)``, sorted by decreasing score.
    """
    num_classes = probs.shape[1] - 1
    r = probs.shape[0]
    if boxes.dim() == 2:
        boxes = boxes.unsqueeze(1).expand(r, num_classes, 4)
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
    return {
        "boxes": cand_boxes[keep],
        "scores": cand_scores[keep],
        "classes": cls_idx[keep],
        "proposal_index": prop_idx[keep],
    }
