"""One configuration for both engines.

The YAML files under ``configs/`` use Detectron2's key names. With Detectron2 installed they are read
by ``detectron2.config.get_cfg()`` + :func:`add_deepacc_config`; without it, :func:`get_cfg` builds a
framework-free :class:`fvcore.common.config.CfgNode` holding the same keys with Detectron2's default
values (the subset this project reads), plus the same :func:`add_deepacc_config`. ``_BASE_``
inheritance is fvcore's.

Every equation and hyper-parameter of the DeepACC paper maps to a key of ``MODEL.DEEPACC``:

====================================  =======  =====================================================
key                                    default  paper
====================================  =======  =====================================================
MODEL.DEEPACC.DECOUPLED_HEAD           True     §2.1: classification and regression streams share no FC
MODEL.DEEPACC.AAM.ENABLED              True     §2.2, Eq. 1: margin branch trained with AAM loss
MODEL.DEEPACC.AAM.SCALE                64.0     §3.1: s
MODEL.DEEPACC.AAM.MARGIN               0.25     §3.1: m
MODEL.DEEPACC.AAM.LOSS_WEIGHT          0.1      Eq. 4: alpha
MODEL.DEEPACC.SIAMESE.ENABLED          True     §2.3, Eq. 2: siamese inference branch (final scores)
MODEL.DEEPACC.SIAMESE.THRESHOLD        0.5      Eq. 2: delta (not given in the paper)
MODEL.DEEPACC.SIAMESE.LOSS_WEIGHT      1.0      Eq. 4: beta
MODEL.DEEPACC.SIAMESE.DETACH_CENTERS   False    stop gradients through the local class centres
MODEL.DEEPACC.GIA.ENABLED              True     §2.4, Eq. 3: Group Inner-Adjacency loss
MODEL.DEEPACC.GIA.LOSS_WEIGHT          0.1      Eq. 4: gamma
====================================  =======  =====================================================

Beyond the paper (ours): ``MODEL.DEEPACC.AGNOSTIC_LOSS_WEIGHT`` (1.0), how class-agnostic ground
truth (category "chromosome") counts in the classification losses.
"""
from __future__ import annotations

import math
import os
import re
from typing import List, NamedTuple, Optional, Sequence

from fvcore.common.config import CfgNode as _FvCfgNode


class CfgNode(_FvCfgNode):
    """fvcore's CfgNode; ``merge_from_file`` follows ``_BASE_`` like Detectron2's."""

    def merge_from_file(self, cfg_filename: str, allow_unsafe: bool = False) -> None:
        loaded = self.load_yaml_with_base(cfg_filename, allow_unsafe=allow_unsafe)
        loaded = type(self)(loaded)
        self.merge_from_other_cfg(loaded)


def add_deepacc_config(cfg) -> None:
    """Add DeepACC's keys (with their defaults) to a Detectron2 or framework-free config.

    Works on any fvcore/yacs ``CfgNode``; it is the one place those defaults are written.
    """
    _C = cfg
    _C.MODEL.DEEPACC = type(cfg)()
    # §2.1: separate classification stream (2 x FC 1024) from the regression stream (2 x FC 1024).
    # False gives the plain Faster R-CNN box head (one shared 2-FC trunk), Table 1 row (a).
    _C.MODEL.DEEPACC.DECOUPLED_HEAD = True
    # Weight of the plain cross-entropy loss of the linear classifier used when neither the margin
    # branch nor the siamese branch is enabled (Table 1 rows (a), (b)).
    _C.MODEL.DEEPACC.CLS_LOSS_WEIGHT = 1.0

    # §2.2, Eq. 1: margin branch = bias-free cosine classifier over K+1 classes, AAM loss.
    _C.MODEL.DEEPACC.AAM = type(cfg)()
    # True: train the margin branch with the additive angular margin MARGIN.
    # False while SIAMESE.ENABLED: the margin branch is still needed to pick local class centres; it
    # is then trained with the same loss at margin 0 (normalised softmax), Table 1 row (d).
    _C.MODEL.DEEPACC.AAM.ENABLED = True
    _C.MODEL.DEEPACC.AAM.SCALE = 64.0  # s
    _C.MODEL.DEEPACC.AAM.MARGIN = 0.25  # m
    _C.MODEL.DEEPACC.AAM.LOSS_WEIGHT = 0.1  # alpha in Eq. 4

    # §2.3, Eq. 2: siamese inference branch; its softmax scores are the model's final scores.
    _C.MODEL.DEEPACC.SIAMESE = type(cfg)()
    _C.MODEL.DEEPACC.SIAMESE.ENABLED = True
    # delta: a class takes the L2-normalised feature of its most confident proposal in the image as
    # its weight when that proposal's margin-branch probability for the class is > THRESHOLD.
    _C.MODEL.DEEPACC.SIAMESE.THRESHOLD = 0.5
    _C.MODEL.DEEPACC.SIAMESE.LOSS_WEIGHT = 1.0  # beta in Eq. 4
    # Stop gradients flowing into the features that serve as local class centres.
    _C.MODEL.DEEPACC.SIAMESE.DETACH_CENTERS = False

    # §2.4, Eq. 3: Group Inner-Adjacency loss over the seven Denver groups (needs the margin branch).
    _C.MODEL.DEEPACC.GIA = type(cfg)()
    _C.MODEL.DEEPACC.GIA.ENABLED = True
    _C.MODEL.DEEPACC.GIA.LOSS_WEIGHT = 0.1  # gamma in Eq. 4

    # Ours, beyond the paper: class-agnostic ground truth (category "chromosome", e.g. BioImLab spreads
    # read from LabelMe) trains the RPN, the box regression and chromosome-vs-background; in the
    # classification losses its proposals count with this weight through the likelihood of "one of
    # the 24 classes" (no margin, no GIA), so they never teach one class (deepacc.modeling.losses).
    # 0: they teach the RPN and the boxes only. Without such images in DATASETS.TRAIN it does nothing.
    _C.MODEL.DEEPACC.AGNOSTIC_LOSS_WEIGHT = 1.0

    # §3.1: "All images are normalized by mean and standard deviation": "per_image" standardises each
    # image by its own mean and std in the data mapper (then set MODEL.PIXEL_MEAN 0 / PIXEL_STD 1);
    # "none" leaves 0..255 pixels for MODEL.PIXEL_MEAN / PIXEL_STD.
    _C.INPUT.NORMALIZATION = "per_image"
    # Image polarity (ours; deepacc.data.polarity): the model works on dark chromosomes on a light
    # background (G-band). "auto" = recognise bright-on-dark images (fluorescence: Q-band, DAPI) from
    # the image itself and invert them (255 - x) where they are read, in both engines' mappers
    # (training and inference) and the predictors; a dark-on-light image is passed on bit-identical.
    # "dark_on_light" = never invert (the images as stored); "bright_on_dark" = always invert.
    _C.INPUT.POLARITY = "auto"

    # Scale-aware inference (ours, beyond the paper; deepacc.data.scale): each image is resized so that
    # its chromosomes (size measured on the image) have the size the model saw in training, instead of
    # "short side to MIN_SIZE_TEST". REFERENCE_SIZE: that size in model-input pixels; 0 = measured on
    # the training images when training starts, stored in the checkpoints and read back from them.
    # The factor stays within [MIN_FACTOR, MAX_FACTOR] x the usual one and gives a long side of at most
    # MAX_SIZE. FRAMED_STATS: the per-image normalisation statistics are taken over a window around the
    # spread of the training frames' area in chromosome units (REFERENCE_FRAME, measured and stored
    # like REFERENCE_SIZE), not over the whole image, whose framing changes them. Training itself keeps
    # the usual resize and statistics.
    _C.INPUT.SCALE_AWARE = type(cfg)()
    _C.INPUT.SCALE_AWARE.ENABLED = True
    _C.INPUT.SCALE_AWARE.REFERENCE_SIZE = 0.0
    # No rescaling while the size at the usual factor is within TOLERANCE (relative) of the reference,
    # beyond it to the tolerance's edge; 0 = every image to the reference size (best on the G-band val
    # cells, docs/scale.md).
    _C.INPUT.SCALE_AWARE.TOLERANCE = 0.0
    _C.INPUT.SCALE_AWARE.FRAMED_STATS = True
    _C.INPUT.SCALE_AWARE.REFERENCE_FRAME = 0.0
    _C.INPUT.SCALE_AWARE.MIN_FACTOR = 0.25
    _C.INPUT.SCALE_AWARE.MAX_FACTOR = 4.0
    _C.INPUT.SCALE_AWARE.MAX_SIZE = 3000

    # Epoch-based schedule (the paper trains 24 epochs with steps at 16 and 22). When EPOCHS > 0 the
    # trainer derives SOLVER.MAX_ITER and SOLVER.STEPS from the training-set size and IMS_PER_BATCH.
    _C.SOLVER.EPOCHS = 0
    _C.SOLVER.EPOCH_STEPS = (16, 22)

    # Mixed precision (SOLVER.AMP.ENABLED, Detectron2's key) on CPU and CUDA: "auto" = bfloat16 on a
    # CPU whose oneDNN has bf16 kernels (AVX-512-BF16 / AMX) and float32 on any other CPU (bf16 is
    # emulated there, 12-30x slower), float16 + loss scaling on CUDA; or "bfloat16" / "float16" (CUDA)
    # / "float32". The margin and siamese branches stay fp32 whatever this says. See deepacc.precision.
    _C.SOLVER.AMP.PRECISION = "auto"
    # Channels-last (NHWC) convolutions: "auto" = on, except GroupNorm backbones on the CPU (slow
    # NHWC GroupNorm backward there); "on" / "off" force it. Torchvision engine.
    _C.MODEL.CHANNELS_LAST = "auto"

    # The training data check before the first iteration (deepacc.data.preflight): "full" decodes
    # every training image, "header" reads headers only, "off" skips it. A broken dataset stops the
    # run with every problem named, unless SKIP_INVALID leaves the bad images out (logged).
    _C.DATASETS.CHECK = "full"
    _C.DATASETS.SKIP_INVALID = False

    # Evaluation thresholds of Acc / AER (paper §3.1), used by the DeepACC evaluator.
    _C.TEST.DEEPACC = type(cfg)()
    _C.TEST.DEEPACC.SCORE_THRESH = 0.5
    _C.TEST.DEEPACC.NMS_THRESH = 0.7
    _C.TEST.DEEPACC.IOU_THRESH = 0.5
    # Review flags of the numerical summary (deepacc-predict, report, karyogram): calls scoring below
    # REVIEW_SCORE, or whose two most probable classes differ by less than REVIEW_MARGIN, are flagged.
    _C.TEST.DEEPACC.REVIEW_SCORE = 0.7
    _C.TEST.DEEPACC.REVIEW_MARGIN = 0.2
    # Karyotype-consistent class assignment of each spread's calls (ours, beyond the paper; see
    # deepacc.karyotype.assignment): the labels of the calls kept at SCORE_THRESH / NMS_THRESH are
    # chosen jointly, 2 free copies per autosome and X, 1 for Y, EXTRA_COPY_COST (log-probability)
    # per copy beyond them. Used by the evaluator (Acc, AER, confusion, karyotype; not mAP / mAP_max,
    # which score the model's detections), deepacc-predict, the summary and the karyogram.
    _C.TEST.DEEPACC.ASSIGNMENT = type(cfg)()
    _C.TEST.DEEPACC.ASSIGNMENT.ENABLED = True
    _C.TEST.DEEPACC.ASSIGNMENT.EXTRA_COPY_COST = 3.0


def _detectron2_defaults() -> CfgNode:
    """Detectron2's default values for every key this project reads (same names, same values; checked
    against Detectron2 by tests/test_d2_engine.py). Where a default is also the paper's, the comment
    says so: configs/Base-DeepACC-RCNN-FPN.yaml lists only what differs from these."""
    _C = CfgNode()
    _C.VERSION = 2
    _C.MODEL = CfgNode()
    _C.MODEL.LOAD_PROPOSALS = False
    _C.MODEL.MASK_ON = False
    _C.MODEL.KEYPOINT_ON = False
    _C.MODEL.DEVICE = "cuda"
    _C.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    _C.MODEL.WEIGHTS = ""
    _C.MODEL.PIXEL_MEAN = [103.530, 116.280, 123.675]
    _C.MODEL.PIXEL_STD = [1.0, 1.0, 1.0]

    _C.INPUT = CfgNode()
    _C.INPUT.MIN_SIZE_TRAIN = (800,)
    _C.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice"
    _C.INPUT.MAX_SIZE_TRAIN = 1333
    _C.INPUT.MIN_SIZE_TEST = 800
    _C.INPUT.MAX_SIZE_TEST = 1333
    _C.INPUT.RANDOM_FLIP = "horizontal"  # paper §3.1: the only augmentation, p = 0.5
    _C.INPUT.FORMAT = "BGR"

    _C.DATASETS = CfgNode()
    _C.DATASETS.TRAIN = ()
    _C.DATASETS.TEST = ()

    _C.DATALOADER = CfgNode()
    _C.DATALOADER.NUM_WORKERS = 4
    _C.DATALOADER.ASPECT_RATIO_GROUPING = True
    _C.DATALOADER.SAMPLER_TRAIN = "TrainingSampler"
    _C.DATALOADER.FILTER_EMPTY_ANNOTATIONS = True

    _C.MODEL.BACKBONE = CfgNode()
    _C.MODEL.BACKBONE.NAME = "build_resnet_backbone"
    _C.MODEL.BACKBONE.FREEZE_AT = 2

    _C.MODEL.FPN = CfgNode()
    _C.MODEL.FPN.IN_FEATURES = []
    _C.MODEL.FPN.OUT_CHANNELS = 256
    _C.MODEL.FPN.NORM = ""
    _C.MODEL.FPN.FUSE_TYPE = "sum"

    _C.MODEL.PROPOSAL_GENERATOR = CfgNode()
    _C.MODEL.PROPOSAL_GENERATOR.NAME = "RPN"
    _C.MODEL.PROPOSAL_GENERATOR.MIN_SIZE = 0

    _C.MODEL.ANCHOR_GENERATOR = CfgNode()
    _C.MODEL.ANCHOR_GENERATOR.NAME = "DefaultAnchorGenerator"
    _C.MODEL.ANCHOR_GENERATOR.SIZES = [[32, 64, 128, 256, 512]]
    _C.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0, 2.0]]
    _C.MODEL.ANCHOR_GENERATOR.ANGLES = [[-90, 0, 90]]
    _C.MODEL.ANCHOR_GENERATOR.OFFSET = 0.0

    _C.MODEL.RPN = CfgNode()
    _C.MODEL.RPN.HEAD_NAME = "StandardRPNHead"
    _C.MODEL.RPN.IN_FEATURES = ["res4"]
    _C.MODEL.RPN.BOUNDARY_THRESH = -1
    _C.MODEL.RPN.IOU_THRESHOLDS = [0.3, 0.7]
    _C.MODEL.RPN.IOU_LABELS = [0, -1, 1]
    _C.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 256
    _C.MODEL.RPN.POSITIVE_FRACTION = 0.5
    _C.MODEL.RPN.BBOX_REG_LOSS_TYPE = "smooth_l1"
    _C.MODEL.RPN.BBOX_REG_LOSS_WEIGHT = 1.0
    _C.MODEL.RPN.BBOX_REG_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
    _C.MODEL.RPN.SMOOTH_L1_BETA = 0.0
    _C.MODEL.RPN.LOSS_WEIGHT = 1.0
    _C.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 12000
    _C.MODEL.RPN.PRE_NMS_TOPK_TEST = 6000
    _C.MODEL.RPN.POST_NMS_TOPK_TRAIN = 2000
    _C.MODEL.RPN.POST_NMS_TOPK_TEST = 1000
    _C.MODEL.RPN.NMS_THRESH = 0.7
    _C.MODEL.RPN.CONV_DIMS = [-1]

    _C.MODEL.ROI_HEADS = CfgNode()
    _C.MODEL.ROI_HEADS.NAME = "Res5ROIHeads"
    _C.MODEL.ROI_HEADS.NUM_CLASSES = 80
    _C.MODEL.ROI_HEADS.IN_FEATURES = ["res4"]
    _C.MODEL.ROI_HEADS.IOU_THRESHOLDS = [0.5]
    _C.MODEL.ROI_HEADS.IOU_LABELS = [0, 1]
    _C.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 512
    _C.MODEL.ROI_HEADS.POSITIVE_FRACTION = 0.25
    _C.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.05
    _C.MODEL.ROI_HEADS.NMS_THRESH_TEST = 0.5
    _C.MODEL.ROI_HEADS.PROPOSAL_APPEND_GT = True

    _C.MODEL.ROI_BOX_HEAD = CfgNode()
    _C.MODEL.ROI_BOX_HEAD.NAME = ""
    _C.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE = "smooth_l1"
    _C.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT = 1.0
    _C.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
    _C.MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA = 0.0
    _C.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 14
    _C.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO = 0
    _C.MODEL.ROI_BOX_HEAD.POOLER_TYPE = "ROIAlignV2"
    _C.MODEL.ROI_BOX_HEAD.NUM_FC = 0
    _C.MODEL.ROI_BOX_HEAD.FC_DIM = 1024  # paper §2.1: 1024-d FC layers
    _C.MODEL.ROI_BOX_HEAD.NUM_CONV = 0
    _C.MODEL.ROI_BOX_HEAD.CONV_DIM = 256
    _C.MODEL.ROI_BOX_HEAD.NORM = ""
    _C.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = False
    _C.MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES = False

    _C.MODEL.RESNETS = CfgNode()
    _C.MODEL.RESNETS.DEPTH = 50
    _C.MODEL.RESNETS.OUT_FEATURES = ["res4"]
    _C.MODEL.RESNETS.NUM_GROUPS = 1
    _C.MODEL.RESNETS.NORM = "FrozenBN"
    _C.MODEL.RESNETS.WIDTH_PER_GROUP = 64
    _C.MODEL.RESNETS.STRIDE_IN_1X1 = True
    _C.MODEL.RESNETS.RES5_DILATION = 1
    _C.MODEL.RESNETS.RES2_OUT_CHANNELS = 256
    _C.MODEL.RESNETS.STEM_OUT_CHANNELS = 64

    _C.SOLVER = CfgNode()
    _C.SOLVER.LR_SCHEDULER_NAME = "WarmupMultiStepLR"
    _C.SOLVER.MAX_ITER = 40000
    _C.SOLVER.BASE_LR = 0.001
    _C.SOLVER.MOMENTUM = 0.9  # paper §3.1: SGD momentum 0.9
    _C.SOLVER.NESTEROV = False
    _C.SOLVER.WEIGHT_DECAY = 0.0001
    _C.SOLVER.WEIGHT_DECAY_NORM = 0.0
    _C.SOLVER.GAMMA = 0.1
    _C.SOLVER.STEPS = (30000,)
    _C.SOLVER.WARMUP_FACTOR = 1.0 / 1000
    _C.SOLVER.WARMUP_ITERS = 1000
    _C.SOLVER.WARMUP_METHOD = "linear"
    _C.SOLVER.CHECKPOINT_PERIOD = 5000
    _C.SOLVER.IMS_PER_BATCH = 16
    _C.SOLVER.REFERENCE_WORLD_SIZE = 0
    _C.SOLVER.BIAS_LR_FACTOR = 1.0
    _C.SOLVER.WEIGHT_DECAY_BIAS = None
    _C.SOLVER.CLIP_GRADIENTS = CfgNode()
    _C.SOLVER.CLIP_GRADIENTS.ENABLED = False
    _C.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "value"
    _C.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0
    _C.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0
    _C.SOLVER.AMP = CfgNode()
    _C.SOLVER.AMP.ENABLED = False

    _C.TEST = CfgNode()
    _C.TEST.EXPECTED_RESULTS = []
    _C.TEST.EVAL_PERIOD = 0
    _C.TEST.DETECTIONS_PER_IMAGE = 100

    _C.OUTPUT_DIR = "./output"
    _C.SEED = -1
    _C.CUDNN_BENCHMARK = False
    _C.VIS_PERIOD = 0
    return _C


def get_cfg() -> CfgNode:
    """A framework-free config with Detectron2's defaults and DeepACC's keys."""
    cfg = _detectron2_defaults()
    add_deepacc_config(cfg)
    return cfg


def resolve_epoch_schedule(cfg, num_train_images: int) -> None:
    """Turn ``SOLVER.EPOCHS`` / ``SOLVER.EPOCH_STEPS`` into ``MAX_ITER`` / ``STEPS`` in place.

    One epoch is ``ceil(num_train_images / SOLVER.IMS_PER_BATCH)`` iterations. Does nothing when
    ``SOLVER.EPOCHS`` is 0.
    """
    epochs = int(cfg.SOLVER.EPOCHS)
    if epochs <= 0:
        return
    if num_train_images <= 0:
        raise ValueError("SOLVER.EPOCHS > 0 needs a non-empty training set")
    per_epoch = int(math.ceil(num_train_images / float(cfg.SOLVER.IMS_PER_BATCH)))
    was_frozen = cfg.is_frozen()
    cfg.defrost()
    cfg.SOLVER.MAX_ITER = epochs * per_epoch
    cfg.SOLVER.STEPS = tuple(int(e) * per_epoch for e in cfg.SOLVER.EPOCH_STEPS if int(e) < epochs)
    if was_frozen:
        cfg.freeze()


def dump_config(cfg, output_dir: str, precision=None) -> str:
    """Write ``output_dir/config.yaml`` (atomically) and return its path. With ``precision`` (a
    :class:`deepacc.precision.Precision`), a first comment line names the arithmetic the run uses
    (``# precision: float32 on cpu (SOLVER.AMP.PRECISION auto: ...)``), so a figure traces to it; the
    file still loads as the same config."""
    import os

    from .fileio import atomic_write

    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, "config.yaml")
    head = f"# precision: {precision}\n" if precision is not None else ""
    atomic_write(path, (head + cfg.dump()).encode("utf-8"))
    return path


def head_options(cfg) -> dict:
    """The DeepACC head's keyword arguments, read from a config (shared by both engines)."""
    d = cfg.MODEL.DEEPACC
    name = cfg.MODEL.ROI_HEADS.NAME
    # Detectron2's own StandardROIHeads means the plain Faster R-CNN box head, whatever DEEPACC says.
    plain = name == "StandardROIHeads"
    return dict(
        num_classes=int(cfg.MODEL.ROI_HEADS.NUM_CLASSES),
        fc_dim=int(cfg.MODEL.ROI_BOX_HEAD.FC_DIM),
        num_fc=int(cfg.MODEL.ROI_BOX_HEAD.NUM_FC),
        decoupled=bool(d.DECOUPLED_HEAD) and not plain,
        cls_agnostic_bbox_reg=bool(cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG),
        cls_loss_weight=float(d.CLS_LOSS_WEIGHT),
        aam_enabled=bool(d.AAM.ENABLED) and not plain,
        aam_scale=float(d.AAM.SCALE),
        aam_margin=float(d.AAM.MARGIN),
        aam_weight=float(d.AAM.LOSS_WEIGHT),
        siamese_enabled=bool(d.SIAMESE.ENABLED) and not plain,
        siamese_threshold=float(d.SIAMESE.THRESHOLD),
        siamese_weight=float(d.SIAMESE.LOSS_WEIGHT),
        siamese_detach=bool(d.SIAMESE.DETACH_CENTERS),
        gia_enabled=bool(d.GIA.ENABLED) and not plain,
        gia_weight=float(d.GIA.LOSS_WEIGHT),
        agnostic_weight=float(d.AGNOSTIC_LOSS_WEIGHT),
    )


class ConfigError(ValueError):
    """Config values a user must fix; ``problems`` holds one line per problem (all of them)."""

    def __init__(self, problems: Sequence[str], source: str = "config"):
        self.problems = list(problems)
        if len(self.problems) == 1:  # one line: "<source>: KEY = value: <what> must be <range>"
            super().__init__(f"{source}: {self.problems[0]}")
        else:
            super().__init__(f"{source}: {len(self.problems)} invalid value(s):\n  " + "\n  ".join(self.problems))


class ConfigFileError(ConfigError):
    """A config a user must fix, said in one line: a config file that cannot be read (a folder, a YAML
    syntax error, a top level that is not a mapping, a ``_BASE_`` loop or a missing base), or datasets
    that are not registered (:func:`deepacc.data.catalog.check_dataset_names`)."""

    def __init__(self, message: str):
        self.problems = [message]
        ValueError.__init__(self, message)


# (key, kind, bound(s), what it is) for the values a user sets; checked where they are defined.
_RANGES = (
    ("MODEL.DEEPACC.SIAMESE.THRESHOLD", "closed", (0.0, 1.0), "the siamese branch's probability threshold delta"),
    ("MODEL.DEEPACC.AAM.SCALE", "positive", None, "the AAM scale s"),
    ("MODEL.DEEPACC.AAM.MARGIN", "halfopen", (0.0, math.pi / 2), "the additive angular margin m (radians)"),
    ("MODEL.DEEPACC.AAM.LOSS_WEIGHT", "nonneg", None, "the AAM loss weight alpha"),
    ("MODEL.DEEPACC.SIAMESE.LOSS_WEIGHT", "nonneg", None, "the siamese CE loss weight beta"),
    ("MODEL.DEEPACC.GIA.LOSS_WEIGHT", "nonneg", None, "the GIA loss weight gamma"),
    ("MODEL.DEEPACC.CLS_LOSS_WEIGHT", "nonneg", None, "the plain classifier's loss weight"),
    ("MODEL.DEEPACC.AGNOSTIC_LOSS_WEIGHT", "nonneg", None, "the class-agnostic chromosomes' classification loss weight"),
    ("TEST.DEEPACC.SCORE_THRESH", "closed", (0.0, 1.0), "the call score threshold"),
    ("TEST.DEEPACC.NMS_THRESH", "closed", (0.0, 1.0), "the calls' class-agnostic NMS IoU"),
    ("TEST.DEEPACC.IOU_THRESH", "leftopen", (0.0, 1.0), "the matching IoU"),
    ("TEST.DEEPACC.REVIEW_SCORE", "closed", (0.0, 1.0), "the review flag's score"),
    ("TEST.DEEPACC.REVIEW_MARGIN", "closed", (0.0, 1.0), "the review flag's top-2 margin"),
    ("TEST.DEEPACC.ASSIGNMENT.EXTRA_COPY_COST", "nonneg", None, "the karyotype assignment's extra-copy cost"),
    ("MODEL.ROI_HEADS.SCORE_THRESH_TEST", "closed", (0.0, 1.0), "the detection score threshold"),
    ("MODEL.ROI_HEADS.NMS_THRESH_TEST", "closed", (0.0, 1.0), "the per-class NMS IoU"),
    ("MODEL.ROI_HEADS.NUM_CLASSES", "posint", None, "the number of classes"),
    ("SOLVER.BASE_LR", "positive", None, "the learning rate"),
    ("SOLVER.MOMENTUM", "halfopen", (0.0, 1.0), "the SGD momentum"),
    ("SOLVER.WEIGHT_DECAY", "nonneg", None, "the weight decay"),
    ("SOLVER.GAMMA", "positive", None, "the LR decay factor"),
    ("SOLVER.MAX_ITER", "posint", None, "the number of iterations"),
    ("SOLVER.EPOCHS", "nonnegint", None, "the number of epochs (0: use MAX_ITER)"),
    ("SOLVER.IMS_PER_BATCH", "posint", None, "the images per batch"),
    ("SOLVER.CHECKPOINT_PERIOD", "posint", None, "the iterations between checkpoints"),
    ("SOLVER.WARMUP_ITERS", "nonnegint", None, "the warm-up iterations"),
    ("SOLVER.WARMUP_FACTOR", "closed", (0.0, 1.0), "the warm-up start factor"),
    ("SOLVER.CLIP_GRADIENTS.CLIP_VALUE", "positive", None, "the gradient clipping value"),
    ("TEST.EVAL_PERIOD", "nonnegint", None, "the iterations between evaluations (0: at the end only)"),
    ("TEST.DETECTIONS_PER_IMAGE", "posint", None, "the detections kept per image"),
    ("DATALOADER.NUM_WORKERS", "nonnegint", None, "the data loader processes"),
    ("INPUT.MIN_SIZE_TEST", "posint", None, "the test image short side"),
    ("INPUT.MAX_SIZE_TEST", "posint", None, "the test image long-side cap"),
    ("INPUT.MAX_SIZE_TRAIN", "posint", None, "the training image long-side cap"),
    ("INPUT.SCALE_AWARE.REFERENCE_SIZE", "nonneg", None, "the reference chromosome size (0: measured)"),
    ("INPUT.SCALE_AWARE.REFERENCE_FRAME", "nonneg", None, "the reference frame area (0: measured)"),
    ("INPUT.SCALE_AWARE.TOLERANCE", "halfopen", (0.0, 1.0), "the relative size tolerance"),
    ("INPUT.SCALE_AWARE.MIN_FACTOR", "positive", None, "the lowest factor relative to the usual resize"),
    ("INPUT.SCALE_AWARE.MAX_FACTOR", "positive", None, "the highest factor relative to the usual resize"),
    ("INPUT.SCALE_AWARE.MAX_SIZE", "posint", None, "the long-side cap of scale-aware resizing"),
)
_CHOICES = (
    ("INPUT.NORMALIZATION", ("per_image", "none")),
    ("INPUT.POLARITY", ("auto", "dark_on_light", "bright_on_dark")),
    ("SOLVER.AMP.PRECISION", ("auto", "bfloat16", "float16", "float32")),
    ("MODEL.CHANNELS_LAST", ("auto", "on", "off")),
    ("MODEL.RESNETS.DEPTH", (18, 34, 50, 101, 152)),
    ("DATASETS.CHECK", ("full", "header", "off")),
    ("SOLVER.WARMUP_METHOD", ("linear", "constant")),  # both engines' warm-up schedules
)
#: ``MODEL.DEVICE``: these, or ``cuda:<index>`` (a CUDA device asked where there is none falls back to the CPU).
DEVICES = ("cpu", "cuda")


def _get(cfg, key: str):
    node = cfg
    for part in key.split("."):
        if not hasattr(node, "get") or part not in node:
            return _MISSING
        node = node[part]
    return node


_MISSING = object()


def validate_config(cfg) -> List[str]:
    """Every out-of-range or ill-typed value of ``cfg`` among the keys users set (thresholds, loss
    weights, schedule, periods, sizes, choices), one line each; ``[]`` when all are valid.

    Checked by both trainers and ``deepacc-predict`` before anything is built
    (:func:`check_config` raises :class:`ConfigError`). Keys absent from ``cfg`` are skipped.
    """
    problems: List[str] = []
    for key, kind, bounds, what in _RANGES:
        v = _get(cfg, key)
        if v is _MISSING:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            problems.append(f"{key} = {v!r}: {what} must be a number")
            continue
        if kind.endswith("int") and float(v) != int(v):
            problems.append(f"{key} = {v!r}: {what} must be a whole number")
            continue
        ok, want = True, ""
        if kind == "closed":
            ok, want = bounds[0] <= v <= bounds[1], f"in [{bounds[0]:g}, {bounds[1]:g}]"
        elif kind == "halfopen":
            ok, want = bounds[0] <= v < bounds[1], f"in [{bounds[0]:g}, {bounds[1]:.4g})"
        elif kind == "leftopen":
            ok, want = bounds[0] < v <= bounds[1], f"in ({bounds[0]:g}, {bounds[1]:g}]"
        elif kind in ("positive",):
            ok, want = v > 0 and math.isfinite(v), "> 0"
        elif kind == "posint":
            ok, want = v >= 1, ">= 1"
        elif kind in ("nonneg",):
            ok, want = v >= 0 and math.isfinite(v), ">= 0"
        elif kind == "nonnegint":
            ok, want = v >= 0, ">= 0"
        if not ok or (isinstance(v, float) and math.isnan(v)):
            problems.append(f"{key} = {v!r}: {what} must be {want}")
    for key, allowed in _CHOICES:
        v = _get(cfg, key)
        if v is not _MISSING and v not in allowed:
            problems.append(f"{key} = {v!r}: must be one of {', '.join(repr(a) for a in allowed)}")
    sizes = _get(cfg, "INPUT.MIN_SIZE_TRAIN")
    if sizes is not _MISSING:
        vals = sizes if isinstance(sizes, (list, tuple)) else [sizes]
        if not vals or any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in vals):
            problems.append(f"INPUT.MIN_SIZE_TRAIN = {sizes!r}: the training short side(s) must be whole numbers >= 1")
    device = _get(cfg, "MODEL.DEVICE")
    if device is not _MISSING and not (isinstance(device, str) and re.fullmatch(r"cpu|cuda(:\d+)?", device)):
        problems.append(f"MODEL.DEVICE = {device!r}: must be one of {', '.join(repr(d) for d in DEVICES)} or "
                        "'cuda:<index>' (e.g. 'cuda:1')")
    steps = _get(cfg, "SOLVER.EPOCH_STEPS")
    if steps is not _MISSING and any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in steps):
        problems.append(f"SOLVER.EPOCH_STEPS = {steps!r}: must be whole epoch numbers >= 1")
    return problems


def check_config(cfg, source: str = "config") -> None:
    """Raise :class:`ConfigError` listing every invalid value of ``cfg`` (see :func:`validate_config`)."""
    problems = validate_config(cfg)
    if problems:
        raise ConfigError(problems, source)


def unknown_key_message(error: Exception, cfg) -> Optional[str]:
    """One line for yacs's config-key errors (from a YAML file or the command line), else ``None``:
    ``"unknown config key 'X' (did you mean 'Y'?)"`` for a key that does not exist, and
    ``"config key X: expected a float like 0.02, got -1 (int)"`` for a value of the wrong type."""
    import difflib
    import re

    text = str(error)
    t = re.search(r"Type mismatch \(<class '(\w+)'> vs\. <class '(\w+)'>\) with values \((.*) vs\. (.*)\) "
                  r"for config key: ([\w.]+)", text)
    if t:
        want, got, default, value, key = t.groups()
        return f"config key {key}: expected a {want} like {default}, got {value} ({got})"
    if "Override list has odd length" in text:
        return ("config options after the flags must be KEY VALUE pairs (an odd number of items was given; "
                "flags such as --eval-only go before them)")
    m = re.search(r"Non-existent (?:config )?key: ([\w.]+)", text)
    if not m:
        return None
    key = m.group(1)
    known: List[str] = []

    def walk(node, prefix):
        for k, v in node.items():
            name = f"{prefix}{k}"
            if hasattr(v, "items"):
                walk(v, name + ".")
            else:
                known.append(name)

    walk(cfg, "")
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown config key {key!r}{hint}"


def _yaml_error_text(error: Exception) -> str:
    """``line L, column C: <problem>`` of a YAML parse error (PyYAML's marks count from 0)."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).strip().splitlines()[0]
    context = getattr(error, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{context + ': ' if context else ''}{problem}"


def check_config_file(config_file: str) -> None:
    """Read ``config_file`` and every file of its ``_BASE_`` chain (resolved as fvcore resolves them:
    relative to the file naming them) before the config is merged, so that a file a user must fix is
    one named line (:class:`ConfigFileError`): a folder, a YAML syntax error (with line and column),
    a top level that is not a ``KEY: value`` mapping, a ``_BASE_`` that is missing or not a path, and
    a ``_BASE_`` loop (``a.yaml`` -> ``b.yaml`` -> ``a.yaml``). A missing top-level file stays the
    ``FileNotFoundError`` (``<file>: No such file or directory``) the tools name already."""
    import yaml

    def visit(path: str, chain: List[str], named_by: Optional[str], written: str = "") -> None:
        real = os.path.realpath(path)
        if real in chain:
            loop = " -> ".join(os.path.basename(p) for p in chain[chain.index(real):] + [real])
            raise ConfigFileError(f"{named_by}: _BASE_ loop: {loop} (a config cannot be its own base; "
                                  f"remove one of these _BASE_ lines)")
        where = path
        if named_by and (os.path.isdir(path) or not os.path.exists(path)):  # the line to fix is in named_by
            where = f"{named_by}: _BASE_ {written!r}" + (f" ({path})" if written != path else "")
        if os.path.isdir(path):
            raise ConfigFileError(f"{where}: a folder, not a config file (give a .yaml file)")
        if not os.path.exists(path):
            if named_by is None:
                raise FileNotFoundError(2, "No such file or directory", path)
            raise ConfigFileError(f"{where}: no such file (a _BASE_ path is relative to the file naming it)")
        try:
            with open(path, "r", encoding="utf-8") as f:
                data = yaml.safe_load(f)
        except UnicodeDecodeError:
            raise ConfigFileError(f"{where}: not a text (YAML) file") from None
        except yaml.YAMLError as e:
            raise ConfigFileError(f"{where}: not valid YAML ({_yaml_error_text(e)})") from None
        except OSError as e:
            raise ConfigFileError(f"{where}: cannot read ({e.strerror or e})") from None
        if not isinstance(data, dict):
            got = "nothing (an empty file)" if data is None else f"a {type(data).__name__}"
            raise ConfigFileError(f"{where}: the top level must be a mapping of KEY: value lines, got {got}")
        bases = data.get("_BASE_")
        if bases is None:
            return
        for base in bases if isinstance(bases, list) else [bases]:
            if not isinstance(base, str) or not base:
                raise ConfigFileError(f"{path}: _BASE_ {base!r} is not a file path")
            if base.startswith(("https://", "http://")):
                continue
            b = os.path.expanduser(base) if base.startswith("~") else base
            if not b.startswith("/"):
                b = os.path.join(os.path.dirname(path), b)
            visit(b, chain + [real], path, base)

    visit(str(config_file), [], None)


def load_config(config_file: Optional[str], opts=None, base=None):
    """Read a YAML (with ``_BASE_``) and trailing ``KEY VALUE`` overrides into ``base`` or a new cfg.

    ``base`` may be Detectron2's config (with :func:`add_deepacc_config` applied): both engines read
    configs through this function. An iteration count given on the command line
    (``SOLVER.MAX_ITER``) wins over the YAML's ``SOLVER.EPOCHS``.
    """
    cfg = base if base is not None else get_cfg()
    if config_file:
        check_config_file(config_file)
        cfg.merge_from_file(config_file)
    opts = list(opts or [])
    if opts:
        cfg.merge_from_list(opts)
        if "SOLVER.MAX_ITER" in opts[0::2]:
            cfg.SOLVER.EPOCHS = 0
    return cfg


class CallThresholds(NamedTuple):
    """``TEST.DEEPACC``'s thresholds: what a call is (score, class-agnostic NMS), the matching IoU of
    Acc/AER, and the review flags. The one source of these numbers for every signature."""

    score_thresh: float
    nms_thresh: float
    iou_thresh: float
    review_score: float
    review_margin: float


def call_thresholds(cfg=None) -> CallThresholds:
    """The thresholds of ``cfg`` (default: the project's defaults, :data:`CALLS`)."""
    t = (cfg if cfg is not None else get_cfg()).TEST.DEEPACC
    return CallThresholds(float(t.SCORE_THRESH), float(t.NMS_THRESH), float(t.IOU_THRESH),
                          float(t.REVIEW_SCORE), float(t.REVIEW_MARGIN))


#: The default thresholds (the paper's: score 0.5, NMS 0.7, IoU 0.5; review 0.7 / 0.2), read from the
#: default config: functions use these as their defaults instead of repeating the numbers.
CALLS = call_thresholds()
