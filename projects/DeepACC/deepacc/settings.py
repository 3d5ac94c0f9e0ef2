"""The small frozen settings that cross from a config into the model, the metrics and the clinical
outputs, and their default values, without the config machinery.

The entry points (the engines' builders and ``from_config`` methods, the tools, the benchmarks) read
a config once, through :mod:`deepacc.config` (:func:`~deepacc.config.call_thresholds`,
:func:`~deepacc.config.head_options`, :func:`~deepacc.config.method_of`,
:func:`~deepacc.karyotype.assignment.assignment_settings`), into these objects; ``modeling/``,
``evaluation/`` and ``clinical/`` take only these objects (or plain values) and never import
``deepacc.config``. Their defaults are the constants below, which ``tests/test_config.py`` holds
equal to the default config's values.

* :class:`CallThresholds` / :data:`DEFAULT_CALLS`: ``TEST.DEEPACC``'s thresholds;
* :class:`AssignmentSettings` / :data:`DEFAULT_ASSIGNMENT`: ``TEST.DEEPACC.ASSIGNMENT``;
* :class:`HeadOptions`: the DeepACC head's arguments (``MODEL.DEEPACC.*``, ``MODEL.ROI_BOX_HEAD.*``);
* :func:`method_label`: the name of a model's method in the metrics tables (``Faster R-CNN``,
  ``DeepACC``, ...).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Dict, NamedTuple, Optional

__all__ = ["CallThresholds", "DEFAULT_CALLS", "AssignmentSettings", "DEFAULT_ASSIGNMENT", "HeadOptions",
           "method_label"]


class CallThresholds(NamedTuple):
    """``TEST.DEEPACC``'s thresholds: what a call is (score, class-agnostic NMS), the matching IoU of
    Acc/AER, and the review flags. The one source of these numbers for every signature."""

    score_thresh: float
    nms_thresh: float
    iou_thresh: float
    review_score: float
    review_margin: float


#: The default config's ``TEST.DEEPACC`` thresholds (the paper's: score 0.5, NMS 0.7, IoU 0.5; review
#: 0.7 / 0.2): the defaults of the functions of ``evaluation/`` and ``clinical/``.
DEFAULT_CALLS = CallThresholds(score_thresh=0.5, nms_thresh=0.7, iou_thresh=0.5, review_score=0.7,
                               review_margin=0.2)


@dataclass(frozen=True)
class AssignmentSettings:
    """``TEST.DEEPACC.ASSIGNMENT``: whether calls are assigned jointly, and the extra-copy cost."""

    enabled: bool
    extra_copy_cost: float

    @property
    def cost(self) -> Optional[float]:
        """The extra-copy cost when enabled, else ``None`` (the evaluator's ``extra_copy_cost``)."""
        return self.extra_copy_cost if self.enabled else None

    def as_dict(self) -> Dict[str, object]:
        return {"enabled": self.enabled, "extra_copy_cost": self.extra_copy_cost}


#: The default config's ``TEST.DEEPACC.ASSIGNMENT`` (on, extra-copy cost 3).
DEFAULT_ASSIGNMENT = AssignmentSettings(enabled=True, extra_copy_cost=3.0)


@dataclass(frozen=True)
class HeadOptions:
    """The DeepACC head's keyword arguments (:class:`deepacc.modeling.DeepACCHead`), as read from a
    config by :func:`deepacc.config.head_options`. With ``MODEL.ROI_HEADS.NAME: StandardROIHeads``
    the four switches (``decoupled``, ``aam_enabled``, ``siamese_enabled``, ``gia_enabled``) are off."""

    num_classes: int
    fc_dim: int
    num_fc: int
    decoupled: bool
    cls_agnostic_bbox_reg: bool
    cls_loss_weight: float
    aam_enabled: bool
    aam_scale: float
    aam_margin: float
    aam_weight: float
    siamese_enabled: bool
    siamese_threshold: float  # delta of Eq. 2 (MODEL.DEEPACC.SIAMESE.THRESHOLD)
    siamese_weight: float
    siamese_detach: bool
    gia_enabled: bool
    gia_weight: float
    agnostic_weight: float

    def as_dict(self) -> Dict[str, object]:
        """``{field: value}``, in field order (the keyword arguments of ``DeepACCHead``)."""
        return dataclasses.asdict(self)

    def method_label(self, roi_heads_name: str = "DeepACCROIHeads") -> str:
        """:func:`method_label` of these options."""
        return method_label(roi_heads_name, self.decoupled, self.aam_enabled, self.siamese_enabled, self.gia_enabled)


#: The parts of DeepACC in a method's label, in the paper's order.
_PARTS = ("AAM", "siamese", "GIA")


def method_label(roi_heads_name: str, decoupled: bool, aam: bool, siamese: bool, gia: bool) -> str:
    """The method's name in the metrics tables, after the rows of the paper's Table 1:

    * ``"Faster R-CNN"``: Detectron2's ``StandardROIHeads``, or no part of DeepACC and one shared
      FC trunk (row a);
    * ``"Faster R-CNN (sep)"``: separate classification and regression streams only (row b);
    * ``"DeepACC"``: separate streams, AAM, siamese branch and GIA (row f, the full model);
    * otherwise ``"DeepACC (<parts>)"``, the enabled parts joined by ``+`` (``"DeepACC (AAM)"``,
      ``"DeepACC (siamese)"``, ``"DeepACC (AAM+siamese)"``: rows c, d, e), with ``", shared FC"`` when
      the streams are not separate (e.g. ``"DeepACC (AAM+siamese+GIA, shared FC)"``).
    """
    if roi_heads_name == "StandardROIHeads":
        return "Faster R-CNN"
    parts = [name for name, on in zip(_PARTS, (aam, siamese, gia)) if on]
    if not parts:
        return "Faster R-CNN (sep)" if decoupled else "Faster R-CNN"
    if decoupled and len(parts) == len(_PARTS):
        return "DeepACC"
    return "DeepACC (" + "+".join(parts) + ("" if decoupled else ", shared FC") + ")"
