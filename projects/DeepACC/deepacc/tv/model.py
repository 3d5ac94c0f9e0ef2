"""Faster R-CNN R-FPN + DeepACC head, built from ``torchvision.models.detection`` parts.

The same YAML keys as Detectron2 select the same architecture: ``MODEL.RESNETS.DEPTH`` (18/34/50/101),
``MODEL.RESNETS.NORM`` (FrozenBN, BN, SyncBN, GN), ``MODEL.BACKBONE.FREEZE_AT``, ``MODEL.FPN.*``,
``MODEL.ANCHOR_GENERATOR.*``, ``MODEL.RPN.*``, ``MODEL.ROI_HEADS.*``, ``MODEL.ROI_BOX_HEAD.*`` and
``MODEL.DEEPACC.*``. Detectron2's feature names map as res2..res5 -> body layers 1..4 and
p2..p6 -> FPN outputs '0'..'3' and 'pool'.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Optional

import torch
import torchvision
from torch import nn
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign

from ..config import head_options
from ..modeling import DeepACCHead
from ..precision import use_channels_last
from .roi_heads import TorchvisionDeepACCRoIHeads

logger = logging.getLogger(__name__)


def pairwise_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """IoU of every xyxy box of ``boxes1`` (N, 4) with every box of ``boxes2`` (M, 4): an (N, M) tensor.

    The values of ``torchvision.ops.box_iou`` bit for bit (the same float operations in the same order),
    ~7x faster on the CPU: coordinates as contiguous rows instead of strided columns, no (N, M, 2)
    corner tensors, in-place steps. The RPN matches every anchor (~77k at 640x480) with every
    chromosome of the image (~46) at each training step, and torchvision's version took ~11 % of a CPU
    training step (``torch.profiler``).
    """
    c1, c2 = boxes1.t().contiguous(), boxes2.t().contiguous()  # (4, N), (4, M)
    area1 = (c1[2] - c1[0]) * (c1[3] - c1[1])
    area2 = (c2[2] - c2[0]) * (c2[3] - c2[1])
    w = torch.minimum(c1[2, :, None], c2[2]).sub_(torch.maximum(c1[0, :, None], c2[0]))
    h = torch.minimum(c1[3, :, None], c2[3]).sub_(torch.maximum(c1[1, :, None], c2[1]))
    inter = w.clamp_(min=0).mul_(h.clamp_(min=0))
    return inter.div_((area1[:, None] + area2).sub_(inter))


_RES = {"res2": "layer1", "res3": "layer2", "res4": "layer3", "res5": "layer4"}
_P = {"p2": "0", "p3": "1", "p4": "2", "p5": "3", "p6": "pool"}


class FrozenBN(FrozenBatchNorm2d):
    """torchvision's ``FrozenBatchNorm2d`` computing in the input's dtype.

    The parent multiplies by fp32 buffers, which promotes bf16/fp16 activations to fp32 under autocast:
    every frozen-BN layer then emits fp32 and the next convolution casts it back (measured: ~15 % of a
    bf16 CPU training step in copies). Here the folded scale and shift are cast to the input's dtype.
    """

    #: set by :func:`fold_frozen_bn`: the convolution before this layer applies its scale and shift
    folded = False

    def scale_shift(self):
        """The affine map as ``(scale, shift)`` per channel (fp32)."""
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.folded:
            return x
        scale, shift = self.scale_shift()
        return x * scale.to(x.dtype).view(1, -1, 1, 1) + shift.to(x.dtype).view(1, -1, 1, 1)


class ConvFrozenBN(nn.Conv2d):
    """A bias-free convolution followed by a :class:`FrozenBN`, computed as one convolution.

    ``bn(conv(x, W)) = conv(x, W * scale) + shift`` exactly (the map is frozen), so the weights are
    scaled (a few thousand multiplications) instead of the activations: one elementwise pass over the
    output less in the forward pass and one less in the backward pass, for every block of the trunk.
    ``W`` keeps its name and gradient, and the BN keeps its buffers: checkpoints are unchanged. Made
    by :func:`fold_frozen_bn`, which swaps the class of an existing ``nn.Conv2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, shift = self._frozen_bn[0].scale_shift()
        return self._conv_forward(x, self.weight * scale.view(-1, 1, 1, 1), shift)


def fold_frozen_bn(resnet: nn.Module) -> int:
    """Fold every :class:`FrozenBN` of a torchvision ResNet into the bias-free convolution before it
    (stem, blocks, shortcuts); returns how many were folded. Exact up to rounding."""
    pairs = [(resnet.conv1, resnet.bn1)]
    for layer in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4):
        for block in layer:
            k = 1
            while hasattr(block, f"conv{k}"):
                pairs.append((getattr(block, f"conv{k}"), getattr(block, f"bn{k}")))
                k += 1
            if block.downsample is not None:
                pairs.append((block.downsample[0], block.downsample[1]))
    n = 0
    for conv, bn in pairs:
        if type(conv) is nn.Conv2d and conv.bias is None and isinstance(bn, FrozenBN) \
                and conv.out_channels == bn.weight.numel():
            conv.__class__ = ConvFrozenBN
            conv._frozen_bn = (bn,)  # a tuple: not registered as a submodule, so no new state-dict keys
            bn.folded = True
            n += 1
    return n


def _norm_layer(name: str):
    if name in ("FrozenBN", ""):
        return FrozenBN
    if name in ("BN", "SyncBN"):
        return nn.BatchNorm2d  # SyncBN: converted with convert_sync_batchnorm under DDP
    if name == "GN":
        return lambda c: nn.GroupNorm(32, c)
    raise ValueError(f"MODEL.RESNETS.NORM {name!r} is not supported (FrozenBN, BN, SyncBN, GN)")


def build_resnet(cfg, norm: Optional[str] = None) -> torchvision.models.ResNet:
    """The detector's ResNet trunk (``MODEL.RESNETS.DEPTH``, ``NORM`` unless ``norm`` is given), random
    init, with torchvision's module names; the in-domain pretraining trains this same network."""
    depth = int(cfg.MODEL.RESNETS.DEPTH)
    if depth not in (18, 34, 50, 101, 152):
        raise ValueError(f"MODEL.RESNETS.DEPTH must be 18, 34, 50, 101 or 152, got {depth}")
    return getattr(torchvision.models, f"resnet{depth}")(
        weights=None, norm_layer=_norm_layer(cfg.MODEL.RESNETS.NORM if norm is None else norm))


def build_backbone(cfg) -> BackboneWithFPN:
    depth = int(cfg.MODEL.RESNETS.DEPTH)
    resnet = build_resnet(cfg)
    fold_frozen_bn(resnet)  # a no-op unless MODEL.RESNETS.NORM is FrozenBN
    in_features = list(cfg.MODEL.FPN.IN_FEATURES) or ["res2", "res3", "res4", "res5"]
    # Detectron2's FREEZE_AT: 1 = stem, 2 = stem + res2, ...
    stages = [["conv1", "bn1"], ["layer1"], ["layer2"], ["layer3"], ["layer4"]]
    for stage in stages[: int(cfg.MODEL.BACKBONE.FREEZE_AT)]:
        for name in stage:
            for p in getattr(resnet, name).parameters():
                p.requires_grad_(False)
    width = 64 if depth < 50 else 256
    channels = {"res2": width, "res3": width * 2, "res4": width * 4, "res5": width * 8}
    return_layers = {_RES[f]: str(i) for i, f in enumerate(in_features)}
    fpn_norm = cfg.MODEL.FPN.NORM
    norm = None if fpn_norm == "" else (lambda c: nn.GroupNorm(32, c)) if fpn_norm == "GN" else None
    if fpn_norm not in ("", "GN"):
        raise ValueError(f"MODEL.FPN.NORM {fpn_norm!r} is not supported by this engine ('' or 'GN')")
    return BackboneWithFPN(resnet, return_layers, [channels[f] for f in in_features],
                           int(cfg.MODEL.FPN.OUT_CHANNELS), norm_layer=norm)


class _Transform(GeneralizedRCNNTransform):
    """Resize with ``INPUT.MIN_SIZE_TRAIN``/``MAX_SIZE_TRAIN`` in training, ``*_TEST`` otherwise.

    Two shortcuts: no normalisation pass when ``MODEL.PIXEL_MEAN`` is 0 and ``PIXEL_STD`` 1 (the mapper
    standardised the image; exact), and a gray image given as one plane expanded to three channels is
    resized once, not three times (``torch.profiler``: the resize was ~8 % of a CPU inference; the same
    values up to the last bit, where the CPU's 1- and 3-channel bilinear kernels may round apart)."""

    def __init__(self, cfg):
        super().__init__(min_size=tuple(int(s) for s in cfg.INPUT.MIN_SIZE_TRAIN),
                         max_size=int(cfg.INPUT.MAX_SIZE_TRAIN),
                         image_mean=[float(v) for v in cfg.MODEL.PIXEL_MEAN],
                         image_std=[float(v) for v in cfg.MODEL.PIXEL_STD])
        if cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING != "choice":
            raise ValueError("this engine samples INPUT.MIN_SIZE_TRAIN by 'choice' only")
        self._test = ((int(cfg.INPUT.MIN_SIZE_TEST),), int(cfg.INPUT.MAX_SIZE_TEST))
        self.pending_factors: List[Optional[float]] = []  # per image of the current call (scale-aware)
        self._identity_normalize = all(m == 0.0 for m in self.image_mean) and all(s == 1.0 for s in self.image_std)

    def normalize(self, image):
        if self._identity_normalize:  # (x - 0) / 1: the mapper standardised the image already
            return image
        return super().normalize(image)

    def resize(self, image, target=None):
        if image.dim() == 3 and image.shape[0] > 1 and image.stride(0) == 0:
            # one gray plane seen as 3 channels (deepacc.data.transforms.to_model_input): resize the
            # plane once instead of three equal channels
            plane, target = self._resize(image[:1], target)
            return plane.expand(image.shape[0], -1, -1), target
        return self._resize(image, target)

    def _resize(self, image, target):
        if self.training:
            return super().resize(image, target)
        factor = self.pending_factors.pop(0) if self.pending_factors else None
        if factor is not None:  # deepacc.data.scale: this image's own factor
            image = torch.nn.functional.interpolate(image[None], scale_factor=float(factor), mode="bilinear",
                                                    recompute_scale_factor=True, align_corners=False)[0]
            return image, target
        train = (self.min_size, self.max_size)
        self.min_size, self.max_size = self._test
        try:
            return super().resize(image, target)
        finally:
            self.min_size, self.max_size = train


class TorchvisionDeepACCRCNN(nn.Module):
    """Generalized R-CNN whose inference returns both the all-classes and the top-1 detections.

    ``forward(images, targets)``: ``images`` is a list of (3, H, W) float tensors (already
    normalised by the mapper), ``targets`` dicts of ``boxes`` (xyxy) and core ``classes`` (0..K-1).
    Training returns a loss dict; inference one :class:`~deepacc.modeling.prediction.ImagePrediction`
    per image, in input-image coordinates.
    """

    def __init__(self, transform, backbone, rpn, roi_heads, channels_last: bool = True):
        super().__init__()
        self.transform, self.backbone, self.rpn, self.roi_heads = transform, backbone, rpn, roi_heads
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    @property
    def head(self) -> DeepACCHead:
        return self.roi_heads.box_head

    def forward(self, images: List[torch.Tensor], targets: Optional[List[Dict[str, torch.Tensor]]] = None,
                scales: Optional[List[Optional[float]]] = None):
        """``scales`` (inference): a resize factor per image (``None``: the usual ``INPUT.*_SIZE_TEST``
        rule), e.g. from :func:`deepacc.data.scale.resize_factor`; outputs are in input coordinates."""
        if self.training and targets is None:
            raise ValueError("targets are required in training mode")
        original_sizes = [tuple(img.shape[-2:]) for img in images]
        if scales is not None and not self.training:
            if len(scales) != len(images):
                raise ValueError(f"{len(scales)} scales for {len(images)} images")
            self.transform.pending_factors = list(scales)
        try:
            image_list, targets = self.transform(images, targets)
        finally:
            self.transform.pending_factors = []
        # channels-last convolutions are markedly faster on CPU (oneDNN) and on GPU tensor cores,
        # except with GroupNorm on the CPU (MODEL.CHANNELS_LAST, deepacc.precision)
        features = self.backbone(image_list.tensors.contiguous(memory_format=self.memory_format))
        proposals, rpn_losses = self.rpn(image_list, features, targets)
        detections, head_losses = self.roi_heads(features, proposals, image_list.image_sizes, targets)
        if self.training:
            return {**rpn_losses, **head_losses}
        return [pred.rescale(orig[1] / resized[1], orig[0] / resized[0])
                for pred, resized, orig in zip(detections, image_list.image_sizes, original_sizes)]


def build_model(cfg) -> TorchvisionDeepACCRCNN:
    """Build the torchvision-engine model described by ``cfg`` (random init; weights are loaded by the
    checkpointer or :func:`load_imagenet_backbone`)."""
    backbone = build_backbone(cfg)
    rpn_in = list(cfg.MODEL.RPN.IN_FEATURES)
    if any(f not in _P for f in rpn_in):
        raise ValueError(f"MODEL.RPN.IN_FEATURES must be among {list(_P)} for the FPN backbone, got {rpn_in}")
    sizes = [tuple(float(s) for s in level) for level in cfg.MODEL.ANCHOR_GENERATOR.SIZES]
    ratios = [tuple(float(r) for r in level) for level in cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS]
    if len(ratios) == 1:
        ratios = ratios * len(sizes)
    if len(sizes) != len(rpn_in):
        raise ValueError(f"{len(sizes)} anchor size levels for {len(rpn_in)} RPN feature maps")
    anchors = AnchorGenerator(tuple(sizes), tuple(ratios))
    rpn = RegionProposalNetwork(
        anchors,
        RPNHead(int(cfg.MODEL.FPN.OUT_CHANNELS), anchors.num_anchors_per_location()[0]),
        fg_iou_thresh=float(cfg.MODEL.RPN.IOU_THRESHOLDS[1]),
        bg_iou_thresh=float(cfg.MODEL.RPN.IOU_THRESHOLDS[0]),
        batch_size_per_image=int(cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE),
        positive_fraction=float(cfg.MODEL.RPN.POSITIVE_FRACTION),
        pre_nms_top_n=dict(training=int(cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN), testing=int(cfg.MODEL.RPN.PRE_NMS_TOPK_TEST)),
        post_nms_top_n=dict(training=int(cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN), testing=int(cfg.MODEL.RPN.POST_NMS_TOPK_TEST)),
        nms_thresh=float(cfg.MODEL.RPN.NMS_THRESH),
    )
    rpn.box_similarity = pairwise_iou
    roi_in = [_P[f] for f in cfg.MODEL.ROI_HEADS.IN_FEATURES]
    pooler = MultiScaleRoIAlign(roi_in, int(cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION),
                                int(cfg.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO))
    head = DeepACCHead.from_options(int(cfg.MODEL.FPN.OUT_CHANNELS), int(cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION),
                                    head_options(cfg))
    roi_heads = TorchvisionDeepACCRoIHeads.from_config(cfg, pooler, head)
    roi_heads.box_similarity = pairwise_iou
    device = str(cfg.MODEL.DEVICE)
    channels_last = use_channels_last(cfg, "cuda" if device.startswith("cuda") and torch.cuda.is_available() else "cpu")
    if channels_last:
        backbone = backbone.to(memory_format=torch.channels_last)
    return TorchvisionDeepACCRCNN(_Transform(cfg), backbone, rpn, roi_heads, channels_last=channels_last)


_IMAGENET_ALIASES = ("torchvision://", "detectron2://ImageNetPretrained/", "imagenet")


def load_imagenet_backbone(model: TorchvisionDeepACCRCNN, cfg) -> None:
    """Load torchvision's ImageNet weights into the ResNet body (needs network access once).

    torchvision's weights expect ``(x / 255 - mean_c) / std_c``. The input scale this model feeds
    its backbone is set by ``INPUT.NORMALIZATION`` and ``MODEL.PIXEL_STD`` (shared with Detectron2,
    whose MSRA weights expect 0..255 pixels minus the mean); the first convolution's weights are
    rescaled per input channel so the pretrained filters see the scale they were trained on.
    """
    depth = int(cfg.MODEL.RESNETS.DEPTH)
    weights = torchvision.models.get_model_weights(f"resnet{depth}").DEFAULT
    try:
        # the download is checked against the hash in its file name and read without unpickling code
        state = weights.get_state_dict(progress=True, check_hash=True, weights_only=True)
    except Exception as e:  # no network, proxy, ...
        raise RuntimeError(
            f"could not fetch ImageNet weights for ResNet-{depth} ({e}). Put a checkpoint path in MODEL.WEIGHTS, "
            "or set MODEL.WEIGHTS '' to train from scratch (use MODEL.RESNETS.NORM GN then).") from e
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    state["conv1.weight"] = state["conv1.weight"] * imagenet_input_scale(cfg).view(1, 3, 1, 1)
    missing, unexpected = model.backbone.body.load_state_dict(state, strict=False)
    logger.info("Loaded ImageNet weights for ResNet-%d (missing %d, unexpected %d keys).", depth, len(missing), len(unexpected))


#: torchvision's ImageNet input normalisation (RGB; the gray plane is repeated, so the order is moot).
_TV_STD = (0.229, 0.224, 0.225)


def imagenet_input_scale(cfg) -> torch.Tensor:
    """Per-channel factor ``k`` with ``torchvision_input ~= k * model_input``.

    ``per_image``: the mapper gives std-1 images and the model divides by ``PIXEL_STD``, while
    torchvision's inputs have std ~1: ``k = PIXEL_STD``. ``none``: the model sees
    ``(x - PIXEL_MEAN) / PIXEL_STD`` of 0..255 pixels: ``k = PIXEL_STD / (255 * std_c)``.
    """
    pixel_std = torch.tensor([float(v) for v in cfg.MODEL.PIXEL_STD])
    if cfg.INPUT.NORMALIZATION == "per_image":
        return pixel_std
    return pixel_std / (255.0 * torch.tensor(_TV_STD))


def is_imagenet_weights(path: str) -> bool:
    return any(path.startswith(a) for a in _IMAGENET_ALIASES)
