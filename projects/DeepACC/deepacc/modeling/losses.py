"""DeepACC's losses, written once for both engines.

* :func:`aam_loss` — Additive Angular Margin loss, paper Eq. 1.
* :func:`gia_loss` — Group Inner-Adjacency loss, paper Eq. 3.
* :func:`box_regression_loss` — Fast R-CNN smooth-L1 box loss on foreground proposals.
* :func:`partial_label_ce` — cross-entropy that also takes class-agnostic ground truth (ours).

Labels are ``0..K-1`` (the classes), ``K`` (background) or ``K+1``
(:data:`~deepacc.karyotype.AGNOSTIC`: a chromosome whose class is not annotated). For such a
proposal only "one of the K classes" is known, so the classification losses take the likelihood
of that set, ``-log sum_{j<K} p_j`` (the marginal over the unknown class): it teaches chromosome vs
background and never pulls towards any one class. With no such label every loss is exactly the
paper's.

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


def partial_label_ce(logits: torch.Tensor, labels: torch.Tensor, agnostic_weight: float = 1.0) -> torch.Tensor:
    """Mean cross-entropy over the rows of ``logits`` ``(N, K+1)`` that also takes class-agnostic rows.

    A row labelled ``0..K`` gives the usual ``-log softmax(z)_y``: without class-agnostic labels
    this is ``F.cross_entropy``. A row labelled ``K+1`` (a chromosome of unknown class) gives,
    times ``agnostic_weight`` (0 leaves it out of the loss, not of the mean's count),

        ``-log sum_{j<K} softmax(z)_j = logsumexp(z) - logsumexp(z_{<K})``

    whose gradient is made to reach the ``K`` class logits **equally** (their mean carries it, the
    deviations from the mean are held fixed): a gradient step moves chromosome vs background and
    leaves the distribution over the classes, ``softmax(z_{<K})``, exactly as it was, so such a row
    never teaches any class, not even the one the model already prefers (the plain marginal's
    gradient ``p_j (1 - 1/S)`` would sharpen it). Computed in fp32.
    """
    n = logits.shape[0]
    if n == 0:
        return _zero(logits)
    k = logits.shape[1] - 1
    labels = labels.long()
    agn = labels > k
    z = logits.float()
    if not bool(agn.any()):
        return F.cross_entropy(z, labels, reduction="mean")
    lse = torch.logsumexp(z, dim=1)
    known = lse - z.gather(1, labels.clamp(max=k).view(-1, 1)).squeeze(1)
    fg = z[:, :k]
    mean = fg.mean(dim=1, keepdim=True)
    fg = fg.detach() + (mean - mean.detach())  # same values; one shared gradient for the K classes
    z_agn = torch.cat([fg, z[:, k:]], dim=1)
    marginal = torch.logsumexp(z_agn, dim=1) - torch.logsumexp(fg, dim=1)
    per_row = torch.where(agn, marginal * float(agnostic_weight), known)
    return per_row.sum() / n


def additive_angular_margin(cos: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Replace each row's ground-truth cosine ``cos(theta_y)`` by ``cos(theta_y + m)``.

    Only the ground-truth logit receives the margin; a class-agnostic row (label ``K+1``, no
    ground-truth logit) gets none. Where ``theta_y + m > pi`` the function
    ``cos(theta + m)`` stops decreasing in ``theta``; there the usual fallback
    ``cos(theta_y) - m * sin(m)`` keeps the target logit monotonic (it meets ``cos(theta+m)``'s
    value range continuously at ``theta = pi - m`` up to O(m^3)).
    Computed in fp32.
    """
    cos = cos.float().clamp(-1.0, 1.0)
    if margin == 0.0 or cos.numel() == 0:
        return cos
    known = labels.long() < cos.shape[1]
    idx = labels.long().clamp(max=cos.shape[1] - 1).view(-1, 1)
    cos_y = cos.gather(1, idx).squeeze(1)
    sin_y = (1.0 - cos_y * cos_y).clamp_min(1e-12).sqrt()
    cos_y_m = cos_y * math.cos(margin) - sin_y * math.sin(margin)
    # theta_y + m > pi  <=>  theta_y > pi - m  <=>  cos_y < cos(pi - m)
    fallback = cos_y - margin * math.sin(margin)
    target = torch.where(cos_y > math.cos(math.pi - margin), cos_y_m, fallback)
    target = torch.where(known, target, cos_y)  # class-agnostic rows: no margin
    return cos.scatter(1, idx, target.unsqueeze(1))


def aam_loss(cos: torch.Tensor, labels: torch.Tensor, scale: float, margin: float,
             agnostic_weight: float = 1.0) -> torch.Tensor:
    """Additive Angular Margin loss (paper Eq. 1), averaged over the N proposals.

    ``L = -1/N sum_i log( e^{s cos(theta_{y_i} + m)} / (e^{s cos(theta_{y_i} + m)} + sum_{j != y_i} e^{s cos theta_j}) )``

    Args:
        cos: ``(N, K+1)`` cosines between L2-normalised features and L2-normalised class weights.
        labels: ``(N,)`` ground-truth class in ``0..K`` (``K`` = background).
        scale: ``s``. margin: ``m`` (0 gives the normalised-softmax loss).
        agnostic_weight: weight of class-agnostic rows (label ``K+1``), which take
            :func:`partial_label_ce` of ``s cos`` without a margin (ours; no such row in the paper).
    """
    if cos.shape[0] == 0:
        return _zero(cos)
    with torch.autocast(device_type=cos.device.type, enabled=False):
        logits = additive_angular_margin(cos, labels, margin) * float(scale)
        return partial_label_ce(logits, labels, agnostic_weight)


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
        labels: ``(N,)`` ground-truth classes, ``K`` = background and ``K+1`` = class-agnostic
            chromosome (neither is positive: Eq. 3 needs the class ``y_i``).
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
        labels: ``(N,)`` classes in ``0..K`` (``K`` = background, not regressed); a class-agnostic
            proposal must come with a class to regress (:func:`regression_classes`), else it is
            not regressed.
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


def regression_classes(labels: torch.Tensor, probs: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Labels for the box loss: a class-agnostic proposal (label ``K+1``) regresses the deltas of its
    most probable foreground class (``probs`` detached), the box that inference reports for it as
    top-1; other labels are returned as they are (ours; the paper has no class-agnostic boxes)."""
    labels = labels.long()
    agn = labels > num_classes
    if not bool(agn.any()):
        return labels
    guess = probs.detach()[:, :num_classes].argmax(dim=1)
    return torch.where(agn, guess, labels)
