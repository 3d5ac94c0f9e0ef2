"""DeepACC's losses, written once for both engines.

* :func:`aam_loss` — Additive Angular Margin loss, paper Eq. 1.
* :func:`gia_loss` — Group Inner-Adjacency loss, paper Eq. 3.
* :func:`box_regression_loss` — Fast R-CNN smooth-L1 box loss on foreground proposals.

All of them return a scalar that is still connected to the graph when the batch is empty (no
proposals, or no positives), so an empty batch backpropagates zeros instead of NaN.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _zero(*tensors: torch.Tensor) -> torch.Tensor:
    """A zero connected to every input's graph (backprop of an empty batch)."""
    return sum(t.sum() * 0.0 for t in tensors)


def additive_angular_margin(cos: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Replace each row's ground-truth cosine ``cos(theta_y)`` by ``cos(theta_y + m)``.

    Only the ground-truth logit receives the margin. Where ``theta_y + m > pi`` the function
    ``cos(theta + m)`` stops decreasing in ``theta``; there the usual fallback
    ``cos(theta_y) - m * sin(m)`` keeps the target logit monotonic (it meets ``cos(theta+m)``'s
    value range continuously at ``theta = pi - m`` up to O(m^3)).
    Computed in fp32.
    """
    cos = cos.float().clamp(-1.0, 1.0)
    if margin == 0.0 or cos.numel() == 0:
        return cos
    idx = labels.long().view(-1, 1)
    cos_y = cos.gather(1, idx).squeeze(1)
    sin_y = (1.0 - cos_y * cos_y).clamp_min(1e-12).sqrt()
    cos_y_m = cos_y * math.cos(margin) - sin_y * math.sin(margin)
    # theta_y + m > pi  <=>  theta_y > pi - m  <=>  cos_y < cos(pi - m)
    fallback = cos_y - margin * math.sin(margin)
    target = torch.where(cos_y > math.cos(math.pi - margin), cos_y_m, fallback)
    return cos.scatter(1, idx, target.unsqueeze(1))


def aam_loss(cos: torch.Tensor, labels: torch.Tensor, scale: float, margin: float) -> torch.Tensor:
    """Additive Angular Margin loss (paper Eq. 1), averaged over the N proposals.

    ``L = -1/N sum_i log( e^{s cos(theta_{y_i} + m)} / (e^{s cos(theta_{y_i} + m)} + sum_{j != y_i} e^{s cos theta_j}) )``

    Args:
        cos: ``(N, K+1)`` cosines between L2-normalised features and L2-normalised class weights.
        labels: ``(N,)`` ground-truth class in ``0..K`` (``K`` = background).
        scale: ``s``. margin: ``m`` (0 gives the normalised-softmax loss).
    """
    if cos.shape[0] == 0:
        return _zero(cos)
    with torch.autocast(device_type=cos.device.type, enabled=False):
        logits = additive_angular_margin(cos, labels, margin) * float(scale)
        return F.cross_entropy(logits, labels.long(), reduction="mean")


def gia_loss(
    probs: torch.Tensor,
    labels: torch.Tensor,
    reference_probs: torch.Tensor,
    image_index: torch.Tensor,
    adjacency: torch.Tensor,
) -> torch.Tensor:
    """Group Inner-Adjacency loss (paper Eq. 3).

    ``L_GIA = 1/N+ sum_{i positive} sum_{j : (y_i, j) in F} M(x_i) . M_j(x)``

    where ``M(x_i)`` is the margin branch's probability vector of positive proposal ``i``,
    ``M_j(x)`` the probability vector of the most confident proposal of class ``j`` in the same
    image, and ``F`` the set of pairs of distinct classes in the same Denver group.

    Args:
        probs: ``(N, K+1)`` margin-branch probabilities of every proposal.
        labels: ``(N,)`` ground-truth classes, ``K`` = background (not positive).
        reference_probs: ``(B, K, K+1)``: ``M_j(x)`` for image ``b`` and class ``j``.
        image_index: ``(N,)`` image of each proposal, ``0..B-1``.
        adjacency: ``(K, K)`` bool, the forbidden set ``F``.
    """
    num_classes = adjacency.shape[0]
    pos = (labels >= 0) & (labels < num_classes)
    num_pos = int(pos.sum())
    if num_pos == 0:
        return _zero(probs, reference_probs)
    p = probs[pos].float()  # (P, K+1)
    ref = reference_probs.float()[image_index[pos]]  # (P, K, K+1)
    dots = torch.einsum("pc,pkc->pk", p, ref)  # M(x_i) . M_j(x) for every class j
    forbidden = adjacency[labels[pos].long()].to(dots.dtype)  # (P, K): j adjacent to y_i
    return (dots * forbidden).sum() / num_pos


def box_regression_loss(
    pred_deltas: torch.Tensor,
    target_deltas: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    beta: float = 0.0,
) -> torch.Tensor:
    """Smooth-L1 box loss on foreground proposals, normalised by the number of sampled proposals.

    Args:
        pred_deltas: ``(N, 4*K)`` class-specific or ``(N, 4)`` class-agnostic deltas.
        target_deltas: ``(N, 4)`` regression targets of each proposal's matched box.
        labels: ``(N,)`` classes in ``0..K`` (``K`` = background, not regressed).
        beta: smooth-L1 transition point; 0 is plain L1 (Detectron2's default).
    """
    n = pred_deltas.shape[0]
    fg = (labels >= 0) & (labels < num_classes)
    if n == 0 or not bool(fg.any()):
        return _zero(pred_deltas)
    if pred_deltas.shape[1] == 4:
        fg_pred = pred_deltas[fg]
    else:
        fg_pred = pred_deltas.view(n, -1, 4)[fg, labels[fg].long()]
    tgt = target_deltas[fg].to(fg_pred.dtype)
    if beta < 1e-5:
        loss = (fg_pred - tgt).abs().sum()
    else:
        loss = F.smooth_l1_loss(fg_pred, tgt, beta=beta, reduction="sum")
    return loss / max(n, 1)
