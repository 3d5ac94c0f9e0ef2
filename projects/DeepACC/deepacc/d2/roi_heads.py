"""Detectron2 ROI heads that run the DeepACC core head.

* :class:`DeepACCOutputLayers` derives from Detectron2's ``FastRCNNOutputLayers``: it holds the core
  :class:`~deepacc.modeling.DeepACCClassifier` and the box regressor, its ``forward`` returns
  ``(scores, deltas, classifier_output)`` (the first two as Detectron2 expects), ``losses()`` is the
  core classification losses plus Detectron2's box regression loss, and ``inference()`` and
  ``detection_sets()`` use the core :func:`~deepacc.modeling.inference.select_detections` /
  :func:`~deepacc.modeling.inference.image_prediction`, whose results :func:`to_instances` wraps.
* :class:`DeepACCROIHeads` (``MODEL.ROI_HEADS.NAME: "DeepACCROIHeads"``) derives from
  ``StandardROIHeads``: proposal matching, sampling and ROI pooling are Detectron2's; the box head
  is the core :class:`~deepacc.modeling.DecoupledBoxHead`; the number of proposals of each image is
  passed to the predictor (the siamese branch works per image).

Both heads are built from one core :class:`~deepacc.modeling.DeepACCHead`, so the same YAML gives
the same modules (and parameter count) as the torchvision engine.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.layers import ShapeSpec, cat
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers, _log_classification_stats
from detectron2.structures import Boxes, Instances

from ..config import head_options
from ..modeling import ClassifierOutput, DeepACCClassifier, DeepACCHead, regression_classes
from ..modeling.inference import image_prediction, select_detections
from ..modeling.prediction import Detections

__all__ = [
    "DeepACCOutputLayers",
    "DeepACCROIHeads",
    "box_predictions",
    "detection_sets",
    "instances_from_probs",
    "to_instances",
]


def to_instances(det: Detections, image_size: Tuple[int, int]) -> Instances:
    """A core detection set as Detectron2 ``Instances`` (``pred_boxes``, ``scores``, ``pred_classes``,
    ``class_probs``)."""
    inst = Instances(tuple(image_size))
    inst.pred_boxes = Boxes(det.boxes)
    inst.scores = det.scores
    inst.pred_classes = det.classes
    inst.class_probs = det.class_probs
    return inst


def instances_from_probs(
    boxes: Sequence[torch.Tensor],
    probs: Sequence[torch.Tensor],
    image_shapes: Sequence[Tuple[int, int]],
    score_thresh: float,
    nms_thresh: float,
    topk: int,
    top1: bool = False,
) -> Tuple[List[Instances], List[torch.Tensor]]:
    """Per-image detections with the core :func:`~deepacc.modeling.inference.select_detections`, as
    Detectron2 ``Instances``.

    Args:
        boxes: per image, ``(R, K*4)`` class-specific or ``(R, 4)`` class-agnostic decoded boxes.
        probs: per image, ``(R, K+1)`` class probabilities (last column background).
        top1: keep only each proposal's top-1 foreground class (the mAP_max / Acc / AER set).
    Returns:
        ``(instances, proposal_indices)``: ``Instances`` with ``pred_boxes``, ``scores``,
        ``pred_classes`` and ``class_probs`` (N, K+1) (the probabilities of each detection's
        proposal), and for each image the index of the proposal of each detection.
    """
    dets = [select_detections(b, p, tuple(shape), score_thresh, nms_thresh, topk, top1=top1)
            for b, p, shape in zip(boxes, probs, image_shapes)]
    return [to_instances(d, shape) for d, shape in zip(dets, image_shapes)], [d.proposal_index for d in dets]


class DeepACCOutputLayers(FastRCNNOutputLayers):
    """``FastRCNNOutputLayers`` whose classifier is the core :class:`DeepACCClassifier`.

    ``forward((cls_features, reg_features), num_per_image)`` returns
    ``(scores, proposal_deltas, classifier_output)``: ``scores`` are the final logits ``(R, K+1)``
    (siamese branch when enabled), ``proposal_deltas`` ``(R, 4K)`` or ``(R, 4)``, and the full
    :class:`~deepacc.modeling.ClassifierOutput` that the losses need. Every helper of the base class
    that unpacks ``(scores, deltas)`` receives the first two.
    """

    @configurable
    def __init__(self, input_shape: ShapeSpec, *, classifier: DeepACCClassifier, bbox_pred: nn.Linear, **kwargs):
        """
        Args:
            input_shape: shape of the box head's output (``channels`` = feature dimension).
            classifier: the core classification stream (margin / siamese branches or a linear layer).
            bbox_pred: the box regressor on the regression stream (``4*K`` or 4 outputs).
            kwargs: the arguments of ``FastRCNNOutputLayers`` (box transform, test thresholds, box
                loss type and weight); the sigmoid / federated classification losses are not
                supported (the classifier's losses are the paper's).
        """
        super().__init__(input_shape, **kwargs)
        if self.use_sigmoid_ce or self.use_fed_loss:
            raise ValueError("DeepACCOutputLayers: MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE / USE_FED_LOSS are not "
                             "supported (the classification losses are DeepACC's)")
        if classifier.num_classes != self.num_classes:
            raise ValueError(f"classifier has {classifier.num_classes} classes, MODEL.ROI_HEADS.NUM_CLASSES is "
                             f"{self.num_classes}")
        if bbox_pred.out_features != self.bbox_pred.out_features:
            raise ValueError(f"bbox_pred has {bbox_pred.out_features} outputs, expected {self.bbox_pred.out_features} "
                             "(MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG / NUM_CLASSES mismatch)")
        # The base class made a linear classifier and a regressor: use the core modules instead.
        del self.cls_score
        self.classifier = classifier
        self.bbox_pred = bbox_pred

    @classmethod
    def from_config(cls, cfg, input_shape, classifier=None, bbox_pred=None):
        ret = super().from_config(cfg, input_shape)
        if classifier is None or bbox_pred is None:
            raise ValueError("DeepACCOutputLayers needs classifier= and bbox_pred= (the parts of a core "
                             "DeepACCHead; DeepACCROIHeads builds them from the cfg)")
        ret.update(classifier=classifier, bbox_pred=bbox_pred)
        return ret

    # ------------------------------------------------------------------ forward
    def forward(self, x: Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]],
                num_per_image: Optional[Sequence[int]] = None):
        """
        Args:
            x: ``(cls_features, reg_features)`` from the core box head, or one tensor used for
                both (a box head with a shared trunk).
            num_per_image: number of proposals of each image, in order (default: one image).
        Returns:
            ``(scores (R, K+1), proposal_deltas, ClassifierOutput)``.
        """
        if isinstance(x, (tuple, list)):
            cls_feat, reg_feat = x
        else:
            cls_feat = reg_feat = torch.flatten(x, start_dim=1) if x.dim() > 2 else x
        if num_per_image is None:
            num_per_image = [cls_feat.shape[0]]
        out = self.classifier(cls_feat, num_per_image)
        return out.logits, self.bbox_pred(reg_feat), out

    # ------------------------------------------------------------------ training
    def losses(self, predictions, proposals: List[Instances]) -> Dict[str, torch.Tensor]:
        """Core classification losses (``loss_cls`` or ``loss_aam`` / ``loss_siamese`` / ``loss_gia``,
        already weighted by ``MODEL.DEEPACC.*``) + Detectron2's ``loss_box_reg``."""
        scores, proposal_deltas, out = predictions
        device = proposal_deltas.device
        if len(proposals):
            gt_classes = cat([p.gt_classes for p in proposals], dim=0)
            proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)
            assert not proposal_boxes.requires_grad, "Proposals should not require gradients!"
            # Proposals without "gt_boxes" are all background: their boxes are never regressed.
            gt_boxes = cat([(p.gt_boxes if p.has("gt_boxes") else p.proposal_boxes).tensor for p in proposals], dim=0)
        else:
            gt_classes = torch.empty(0, dtype=torch.long, device=device)
            proposal_boxes = gt_boxes = torch.empty((0, 4), device=device)
        _log_classification_stats(scores, gt_classes)
        losses = self.classifier.losses(out, gt_classes)
        # a class-agnostic chromosome (label K+1) regresses its most probable class's deltas
        box_classes = regression_classes(gt_classes, out.logits, self.num_classes)
        losses["loss_box_reg"] = self.box_reg_loss(proposal_boxes, gt_boxes, proposal_deltas, box_classes) * \
            self.loss_weight.get("loss_box_reg", 1.0)
        return losses

    # ------------------------------------------------------------------ inference
    def predict_boxes(self, predictions, proposals):
        return super().predict_boxes(tuple(predictions[:2]), proposals)

    def predict_boxes_for_gt_classes(self, predictions, proposals):
        return super().predict_boxes_for_gt_classes(tuple(predictions[:2]), proposals)

    def predict_probs(self, predictions, proposals):
        """Final class probabilities (``ClassifierOutput.probs()``), split per image."""
        out: ClassifierOutput = predictions[2] if len(predictions) > 2 else ClassifierOutput(logits=predictions[0])
        return out.probs().split([len(p) for p in proposals], dim=0)

    def detection_sets(self, predictions, proposals) -> Tuple[List[Instances], List[Instances]]:
        """``(instances, instances_top1)`` per image: the all-classes and the top-1 detection sets."""
        return _detection_sets(self, predictions, proposals)

    def inference(self, predictions, proposals):
        """Same contract as ``FastRCNNOutputLayers.inference``: ``(instances, kept proposal indices)``;
        the instances carry ``class_probs`` (N, K+1)."""
        boxes = self.predict_boxes(predictions, proposals)
        probs = self.predict_probs(predictions, proposals)
        return instances_from_probs(boxes, probs, [p.image_size for p in proposals], self.test_score_thresh,
                                    self.test_nms_thresh, self.test_topk_per_image)


def _detection_sets(predictor: FastRCNNOutputLayers, predictions, proposals):
    boxes = predictor.predict_boxes(predictions, proposals)
    probs = predictor.predict_probs(predictions, proposals)
    args = (predictor.test_score_thresh, predictor.test_nms_thresh, predictor.test_topk_per_image)
    all_classes, top1 = [], []
    for b, p, prop in zip(boxes, probs, proposals):
        pred = image_prediction(b, p, tuple(prop.image_size), *args)
        all_classes.append(to_instances(pred.instances, prop.image_size))
        top1.append(to_instances(pred.instances_top1, prop.image_size))
    return all_classes, top1


@ROI_HEADS_REGISTRY.register()
class DeepACCROIHeads(StandardROIHeads):
    """``StandardROIHeads`` with the DeepACC box head and predictor (selected by
    ``MODEL.ROI_HEADS.NAME: "DeepACCROIHeads"``).

    The box head and the predictor are the parts of one core :class:`DeepACCHead` built from the
    cfg (``MODEL.ROI_BOX_HEAD.NUM_FC`` / ``FC_DIM``, ``MODEL.DEEPACC.*``). ``MODEL.ROI_BOX_HEAD.NAME``
    is not used; the box head has no conv layers.
    """

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        if int(cfg.MODEL.ROI_BOX_HEAD.NUM_CONV) != 0:
            raise ValueError("DeepACCROIHeads: the DeepACC box head is made of FC layers only; "
                             f"MODEL.ROI_BOX_HEAD.NUM_CONV must be 0 (got {cfg.MODEL.ROI_BOX_HEAD.NUM_CONV})")
        in_features = list(cfg.MODEL.ROI_HEADS.IN_FEATURES)
        missing = [f for f in in_features if f not in input_shape]
        if missing:
            raise ValueError(f"MODEL.ROI_HEADS.IN_FEATURES {missing} are not produced by the backbone "
                             f"(it gives {sorted(input_shape)})")
        channels = {input_shape[f].channels for f in in_features}
        if len(channels) != 1:
            raise ValueError(f"MODEL.ROI_HEADS.IN_FEATURES must have one channel count, got {sorted(channels)}")
        in_channels = channels.pop()
        resolution = int(cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION)
        pooler = ROIPooler(
            output_size=resolution,
            scales=tuple(1.0 / input_shape[f].stride for f in in_features),
            sampling_ratio=cfg.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO,
            pooler_type=cfg.MODEL.ROI_BOX_HEAD.POOLER_TYPE,
        )
        core = DeepACCHead.from_options(in_channels, resolution, head_options(cfg))
        predictor = DeepACCOutputLayers(cfg, ShapeSpec(channels=core.box_head.output_dim),
                                        classifier=core.classifier, bbox_pred=core.bbox_pred)
        return {
            "box_in_features": in_features,
            "box_pooler": pooler,
            "box_head": core.box_head,
            "box_predictor": predictor,
        }

    def box_predictions(self, features: Dict[str, torch.Tensor], proposals: List[Instances]):
        """Pool, run the core box head and the predictor: ``(scores, deltas, ClassifierOutput)``."""
        x = self.box_pooler([features[f] for f in self.box_in_features], [p.proposal_boxes for p in proposals])
        return self.box_predictor(self.box_head(x), [len(p) for p in proposals])

    def _forward_box(self, features: Dict[str, torch.Tensor], proposals: List[Instances]):
        predictions = self.box_predictions(features, proposals)
        if self.training:
            losses = self.box_predictor.losses(predictions, proposals)
            if self.train_on_pred_boxes:
                with torch.no_grad():
                    pred_boxes = self.box_predictor.predict_boxes_for_gt_classes(predictions, proposals)
                    for p, b in zip(proposals, pred_boxes):
                        p.proposal_boxes = Boxes(b)
            return losses
        instances, _ = self.box_predictor.inference(predictions, proposals)
        return instances

    def detection_sets(self, features: Dict[str, torch.Tensor], proposals: List[Instances]):
        """Inference: ``(instances, instances_top1)`` per image, from one pass of the box head."""
        assert not self.training
        return self.box_predictor.detection_sets(self.box_predictions(features, proposals), proposals)


def box_predictions(roi_heads: StandardROIHeads, features: Dict[str, torch.Tensor], proposals: List[Instances]):
    """The box predictor's outputs of any ``StandardROIHeads`` (DeepACC's or Detectron2's own)."""
    if isinstance(roi_heads, DeepACCROIHeads):
        return roi_heads.box_predictions(features, proposals)
    x = roi_heads.box_pooler([features[f] for f in roi_heads.box_in_features], [p.proposal_boxes for p in proposals])
    return roi_heads.box_predictor(roi_heads.box_head(x))


def detection_sets(roi_heads: StandardROIHeads, features: Dict[str, torch.Tensor], proposals: List[Instances]):
    """``(instances, instances_top1)`` of any ``StandardROIHeads`` whose predictor is a
    ``FastRCNNOutputLayers`` (so the plain Faster R-CNN baseline, Detectron2's own
    ``StandardROIHeads``, is evaluated with the same core selection as DeepACC)."""
    if not isinstance(roi_heads, StandardROIHeads) or not isinstance(roi_heads.box_predictor, FastRCNNOutputLayers):
        raise TypeError(f"{type(roi_heads).__name__}: the top-1 detection set needs a StandardROIHeads with a "
                        "FastRCNNOutputLayers box predictor")
    predictions = box_predictions(roi_heads, features, proposals)
    return _detection_sets(roi_heads.box_predictor, predictions, proposals)
