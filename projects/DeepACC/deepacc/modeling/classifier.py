"""DeepACC's classification stream: margin branch (Eq. 1) + siamese inference branch (Eq. 2) + GIA (Eq. 3).

Everything here works on a flat batch of ``R`` proposals from ``B`` images, given the number of
proposals of each image (``num_per_image``, in order). Classes are ``0..K-1``, background ``K``.
No Python loop runs over images, classes or proposals.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..karyotype.classes import CLASS_NAMES, adjacency_matrix
from .losses import aam_loss, gia_loss, partial_label_ce


def image_index(num_per_image: Sequence[int], device=None) -> torch.Tensor:
    """``(R,)`` index of the image each proposal belongs to."""
    counts = torch.as_tensor(list(num_per_image), dtype=torch.long, device=device)
    return torch.repeat_interleave(torch.arange(len(counts), device=device), counts)


def _padded_positions(num_per_image: Sequence[int], device=None):
    counts = torch.as_tensor(list(num_per_image), dtype=torch.long, device=device)
    img = torch.repeat_interleave(torch.arange(len(counts), device=device), counts)
    offsets = torch.cumsum(counts, 0) - counts
    pos = torch.arange(int(counts.sum()), device=device) - offsets[img]
    rmax = int(counts.max()) if len(counts) else 0
    return img, pos, offsets, rmax


def select_local_centres(probs: torch.Tensor, num_per_image: Sequence[int]):
    """Most confident proposal of every foreground class in every image (paper Eq. 2, ``argmax_i s_ij``).

    Args:
        probs: ``(R, K+1)`` margin-branch probabilities ``s_ij``.
    Returns:
        ``(top_score, top_index)``, both ``(B, K)``: the highest probability of class ``j`` among the
        proposals of image ``b`` and the global row index of that proposal. For an image without
        proposals ``top_score`` is ``-inf`` and ``top_index`` is 0 (never used: the class then keeps
        its global weight and no positive of that image exists).
    """
    num_classes = probs.shape[1] - 1
    num_images = len(num_per_image)
    img, pos, offsets, rmax = _padded_positions(num_per_image, probs.device)
    padded = probs.new_full((num_images, max(rmax, 1), num_classes), float("-inf"))
    padded[img, pos] = probs[:, :num_classes]
    top_score, local = padded.max(dim=1)  # (B, K)
    top_index = (local + offsets[:, None]).clamp(max=max(probs.shape[0] - 1, 0))
    return top_score, top_index


class MarginBranch(nn.Module):
    """Bias-free cosine classifier over ``K+1`` classes (paper §2.2).

    ``W_j`` is the global class centre of class ``j``. Features and weights are L2-normalised inside
    the graph (never in place), in fp32 even under autocast.
    """

    def __init__(self, in_dim: int, num_outputs: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_outputs, in_dim))
        nn.init.normal_(self.weight, std=0.01)

    def normalized_weight(self) -> torch.Tensor:
        return F.normalize(self.weight.float(), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return F.normalize(x.float(), dim=1) @ self.normalized_weight().t()


def siamese_logits(
    features: torch.Tensor,
    num_per_image: Sequence[int],
    global_weight: torch.Tensor,
    bias: torch.Tensor,
    top_score: torch.Tensor,
    top_index: torch.Tensor,
    threshold: float,
    detach_centres: bool = False,
) -> torch.Tensor:
    """Siamese inference branch logits (paper Eq. 2).

    For image ``b`` and foreground class ``j``::

        W_I,j = x_i* / ||x_i*||          if s_{i*, j} > threshold   (local class centre)
              = W_M,j / ||W_M,j||        otherwise                   (global class centre)

    with ``i* = argmax_i s_ij`` over the proposals of the image; background keeps its normalised
    global weight. Logits are ``W_I,j^T x_i + b_j`` with the **unnormalised** features ``x_i``.

    Args:
        features: ``(R, D)`` classification features.
        global_weight: ``(K+1, D)`` L2-normalised margin-branch weights.
        bias: ``(K+1,)``.
        top_score, top_index: from :func:`select_local_centres`.
    Returns:
        ``(R, K+1)`` logits (fp32).
    """
    num_images = len(num_per_image)
    num_classes = global_weight.shape[0] - 1
    with torch.autocast(device_type=features.device.type, enabled=False):
        x = features.float()
        src = x.detach() if detach_centres else x
        local = F.normalize(src[top_index.view(-1)], dim=1).view(num_images, num_classes, -1)
        use_local = (top_score > threshold).unsqueeze(-1)  # (B, K, 1)
        fg = torch.where(use_local, local, global_weight[:num_classes].unsqueeze(0))
        bg = global_weight[num_classes:].unsqueeze(0).expand(num_images, 1, -1)
        w_image = torch.cat([fg, bg], dim=1)  # (B, K+1, D)
        img, pos, _, rmax = _padded_positions(num_per_image, x.device)
        x_pad = x.new_zeros(num_images, max(rmax, 1), x.shape[1])
        x_pad[img, pos] = x
        logits = torch.bmm(x_pad, w_image.transpose(1, 2))[img, pos]
        return logits + bias.float()


@dataclass
class ClassifierOutput:
    """What the classification stream produces for a batch of proposals."""

    #: ``(R, K+1)`` final logits: siamese branch, else margin branch ``s*cos``, else linear classifier.
    logits: torch.Tensor
    #: ``(R, K+1)`` margin-branch cosines (None without a margin branch).
    cos: Optional[torch.Tensor] = None
    #: ``(R, K+1)`` margin-branch probabilities ``softmax(s*cos)`` (None without a margin branch).
    margin_probs: Optional[torch.Tensor] = None
    #: ``(B, K)`` most confident proposal of each class per image (margin branch), and its probability
    #: (None unless the siamese branch or the GIA loss needs them).
    top_index: Optional[torch.Tensor] = None
    top_score: Optional[torch.Tensor] = None
    #: ``(R,)`` image of each proposal.
    image_index: Optional[torch.Tensor] = None

    def probs(self) -> torch.Tensor:
        """Final ``(R, K+1)`` class probabilities (the model's scores)."""
        return F.softmax(self.logits.float(), dim=-1)


class DeepACCClassifier(nn.Module):
    """The classification stream of the DeepACC head, from ROI features to logits and losses.

    * no margin branch, no siamese branch: a linear classifier with cross-entropy (Faster R-CNN);
    * ``aam_enabled``: margin branch trained with the AAM loss (Eq. 1), weight ``alpha``;
    * ``siamese_enabled``: siamese inference branch (Eq. 2) trained with cross-entropy, weight
      ``beta``; its scores are the final scores. It needs the margin branch, which is then trained
      with margin ``m`` if ``aam_enabled`` else with margin 0;
    * ``gia_enabled``: Group Inner-Adjacency loss (Eq. 3) on margin-branch probabilities, ``gamma``.

    Class-agnostic ground truth (label ``K+1``, :data:`~deepacc.karyotype.AGNOSTIC`; ours): those
    proposals enter the cross-entropies through the likelihood of "some chromosome class"
    (:func:`~deepacc.modeling.losses.partial_label_ce`, weighted by ``agnostic_weight``), the AAM
    loss without a margin, and not the GIA loss; they teach chromosome vs background and never one
    class.
    """

    def __init__(
        self,
        in_dim: int,
        num_classes: int = len(CLASS_NAMES),
        *,
        class_names: Sequence[str] = CLASS_NAMES,
        cls_loss_weight: float = 1.0,
        aam_enabled: bool = True,
        aam_scale: float = 64.0,
        aam_margin: float = 0.25,
        aam_weight: float = 0.1,
        siamese_enabled: bool = True,
        siamese_threshold: float = 0.5,
        siamese_weight: float = 1.0,
        siamese_detach: bool = False,
        gia_enabled: bool = True,
        gia_weight: float = 0.1,
        agnostic_weight: float = 1.0,
    ):
        super().__init__()
        if len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes = int(num_classes)
        self.use_margin_branch = bool(aam_enabled or siamese_enabled)
        if gia_enabled and not self.use_margin_branch:
            raise ValueError("the GIA loss needs the margin branch: enable AAM or SIAMESE")
        self.aam_enabled = bool(aam_enabled)
        self.scale = float(aam_scale)
        self.margin = float(aam_margin) if aam_enabled else 0.0
        self.aam_weight = float(aam_weight)
        self.siamese_enabled = bool(siamese_enabled)
        self.threshold = float(siamese_threshold)
        self.siamese_weight = float(siamese_weight)
        self.detach_centres = bool(siamese_detach)
        self.gia_enabled = bool(gia_enabled)
        self.gia_weight = float(gia_weight)
        self.cls_loss_weight = float(cls_loss_weight)
        self.agnostic_weight = float(agnostic_weight)

        if self.use_margin_branch:
            self.margin_branch = MarginBranch(in_dim, num_classes + 1)
        else:
            self.cls_score = nn.Linear(in_dim, num_classes + 1)
            nn.init.normal_(self.cls_score.weight, std=0.01)
            nn.init.constant_(self.cls_score.bias, 0)
        if self.siamese_enabled:
            # b_j of Eq. 2, initialised to zero.
            self.siamese_bias = nn.Parameter(torch.zeros(num_classes + 1))
        self.register_buffer("adjacency", adjacency_matrix(class_names), persistent=False)
        # Inference statistics of the siamese branch (not saved): per image, the fraction of classes
        # whose most confident proposal passes delta, i.e. whose weight is a local centre (Eq. 2).
        self._centre_usage = [0.0, 0]

    def forward(self, features: torch.Tensor, num_per_image: Sequence[int]) -> ClassifierOutput:
        num_per_image = [int(n) for n in num_per_image]
        if sum(num_per_image) != features.shape[0]:
            raise ValueError(f"num_per_image sums to {sum(num_per_image)}, features have {features.shape[0]} rows")
        if not self.use_margin_branch:
            return ClassifierOutput(logits=self.cls_score(features))
        cos = self.margin_branch(features)
        margin_probs = F.softmax(cos * self.scale, dim=-1)
        img = image_index(num_per_image, features.device)
        if features.shape[0] == 0:
            # No proposals at all: empty logits that still reach every parameter of the branch.
            logits = cos * self.scale
            if self.siamese_enabled:
                logits = logits + self.siamese_bias * 0.0
            return ClassifierOutput(logits=logits, cos=cos, margin_probs=margin_probs, image_index=img)
        top_score = top_index = None
        if self.siamese_enabled or self.gia_enabled:  # only Eq. 2 and Eq. 3 use the local centres
            top_score, top_index = select_local_centres(margin_probs.detach(), num_per_image)
        if self.siamese_enabled and not self.training:
            used = (top_score > self.threshold).float().mean(dim=1)
            self._centre_usage[0] += float(used.sum())
            self._centre_usage[1] += int(used.numel())
        if self.siamese_enabled:
            logits = siamese_logits(
                features, num_per_image, self.margin_branch.normalized_weight(), self.siamese_bias,
                top_score, top_index, self.threshold, self.detach_centres,
            )
        else:
            logits = cos * self.scale
        return ClassifierOutput(logits=logits, cos=cos, margin_probs=margin_probs,
                                top_index=top_index, top_score=top_score, image_index=img)

    def pop_centre_usage(self) -> Tuple[float, int]:
        """``(sum over images of the fraction of classes using a local centre, number of images)``
        accumulated by inference since the last call, then reset. Mean = sum / images; the siamese
        branch changes the model's decisions only where this is well above zero."""
        out = (self._centre_usage[0], self._centre_usage[1])
        self._centre_usage = [0.0, 0]
        return out

    def losses(self, out: ClassifierOutput, labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Weighted classification losses of Eq. 4 (``L_det``'s box term is the engine's). ``labels``:
        ``0..K-1`` classes, ``K`` background, ``K+1`` class-agnostic chromosome."""
        labels = labels.long()
        w = self.agnostic_weight
        if not self.use_margin_branch:
            return {"loss_cls": self.cls_loss_weight * partial_label_ce(out.logits, labels, w)}
        losses = {"loss_aam": self.aam_weight * aam_loss(out.cos, labels, self.scale, self.margin, w)}
        if self.siamese_enabled:
            losses["loss_siamese"] = self.siamese_weight * partial_label_ce(out.logits, labels, w)
        if self.gia_enabled:
            if out.top_index is None:  # no proposals, hence no positives
                losses["loss_gia"] = out.margin_probs.sum() * 0.0
            else:
                ref = out.margin_probs[out.top_index]  # (B, K, K+1): M_j(x)
                losses["loss_gia"] = self.gia_weight * gia_loss(
                    out.margin_probs, labels, ref, out.image_index, self.adjacency)
        return losses
