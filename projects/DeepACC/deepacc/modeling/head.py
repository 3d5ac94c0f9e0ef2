"""The complete DeepACC box head: pooled ROI features -> (classifier output, box deltas)."""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch import nn

from ..karyotype import NUM_CLASSES
from ..settings import HeadOptions
from .box_head import DecoupledBoxHead
from .classifier import ClassifierOutput, DeepACCClassifier


class DeepACCHead(nn.Module):
    """Box head (:class:`DecoupledBoxHead`) + classification stream (:class:`DeepACCClassifier`) +
    box regressor (one linear layer on the regression stream, ``4*K`` class-specific deltas or 4).

    Both engines build this same module; they differ only in how they pool features and sample
    proposals.
    """

    def __init__(self, in_channels: int, resolution: int, *, num_classes: int = NUM_CLASSES, fc_dim: int = 1024,
                 num_fc: int = 2, decoupled: bool = True, cls_agnostic_bbox_reg: bool = False,
                 **classifier_kwargs):
        super().__init__()
        self.num_classes = int(num_classes)
        self.box_head = DecoupledBoxHead(in_channels, resolution, num_fc, fc_dim, decoupled)
        self.classifier = DeepACCClassifier(self.box_head.output_dim, num_classes, **classifier_kwargs)
        self.bbox_pred = nn.Linear(self.box_head.output_dim, 4 if cls_agnostic_bbox_reg else 4 * num_classes)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.constant_(self.bbox_pred.bias, 0)

    @classmethod
    def from_options(cls, in_channels: int, resolution: int, options: HeadOptions) -> "DeepACCHead":
        """The head of ``options`` (:class:`deepacc.settings.HeadOptions`, which the engines read from
        a config with :func:`deepacc.config.head_options`) on ``in_channels`` x ``resolution`` x
        ``resolution`` pooled features."""
        return cls(in_channels, int(resolution), **options.as_dict())

    def forward(self, pooled: torch.Tensor, num_per_image: Sequence[int]) -> Tuple[ClassifierOutput, torch.Tensor]:
        cls_feat, reg_feat = self.box_head(pooled)
        return self.classifier(cls_feat, num_per_image), self.bbox_pred(reg_feat)
