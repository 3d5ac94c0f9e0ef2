"""Box head: pooled ROI features -> classification features and regression features (paper §2.1)."""
from __future__ import annotations

from typing import Tuple

import torch
from torch import nn


def _fc_stack(in_dim: int, num_fc: int, fc_dim: int) -> nn.Sequential:
    layers = []
    for _ in range(num_fc):
        fc = nn.Linear(in_dim, fc_dim)
        # Caffe2-style Xavier fill (Detectron2's c2_xavier_fill): kaiming uniform with a=1, zero bias.
        nn.init.kaiming_uniform_(fc.weight, a=1)
        nn.init.constant_(fc.bias, 0)
        layers += [fc, nn.ReLU(inplace=True)]
        in_dim = fc_dim
    return nn.Sequential(*layers)


class DecoupledBoxHead(nn.Module):
    """Two streams of ``num_fc`` fully connected layers over the flattened pooled ROI features.

    ``decoupled=True`` (DeepACC, Table 1 rows (b)-(f)): a classification stream and a regression
    stream whose FC layers share no weights. ``decoupled=False`` (plain Faster R-CNN, row (a)): one
    shared trunk feeds both the classifier and the box regressor.

    ``forward`` returns ``(cls_features, reg_features)``; both are the same tensor when not decoupled.
    """

    def __init__(self, in_channels: int, resolution: int, num_fc: int = 2, fc_dim: int = 1024,
                 decoupled: bool = True):
        super().__init__()
        in_dim = int(in_channels) * int(resolution) * int(resolution)
        self.decoupled = bool(decoupled)
        self.cls_stream = _fc_stack(in_dim, num_fc, fc_dim)
        self.reg_stream = _fc_stack(in_dim, num_fc, fc_dim) if self.decoupled else None
        self.output_dim = fc_dim if num_fc > 0 else in_dim

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = torch.flatten(x, start_dim=1)
        cls_feat = self.cls_stream(x)
        reg_feat = self.reg_stream(x) if self.reg_stream is not None else cls_feat
        return cls_feat, reg_feat
