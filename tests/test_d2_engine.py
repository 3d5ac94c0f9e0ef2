"""Detectron2 engine (deepacc.d2): heads from YAML, training/inference, evaluator, mapper, catalog.

Skipped when Detectron2 is not installed (the torchvision engine's tests cover the same core).
"""
import copy
import math
import os
import types

import numpy as np
import pytest
import torch

pytest.importorskip("detectron2", reason="Detectron2 is not installed: the Detectron2 engine tests are skipped "
                                         "(see docs/detectron2.md to install it)")

from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from detectron2.data import transforms as T  # noqa: E402
from detectron2.evaluation import COCOEvaluator, DatasetEvaluators  # noqa: E402
from detectron2.layers import ShapeSpec  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.modeling.roi_heads import build_roi_heads  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402
from PIL import Image  # noqa: E402
from torchvision.models.detection._utils import BoxCoder  # noqa: E402

import deepacc.d2  # noqa: E402,F401  (registers the heads and the datasets)
from deepacc.d2 import (  # noqa: E402
    DeepACCDatasetMapper,
    DeepACCEvaluator,
    DeepACCOutputLayers,
    DeepACCRCNN,
    DeepACCROIHeads,
    register_datasets,
)
from deepacc.d2.config import get_cfg  # noqa: E402
from deepacc.d2.trainer import Trainer, main, setup  # noqa: E402
from deepacc.data import catalog  # noqa: E402
from deepacc.evaluation.evaluator import MetaphaseEvaluator, flatten_scalars  # noqa: E402
from deepacc.karyotype.classes import CLASS_NAMES  # noqa: E402
from deepacc.config import head_options  # noqa: E402
from deepacc.modeling import DecoupledBoxHead, DeepACCClassifier, DeepACCHead, select_detections  # noqa: E402

torch.set_num_threads(1)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K = len(CLASS_NAMES)


def core_head(cfg, in_channels: int) -> DeepACCHead:
    """The core head of ``cfg``, as the engines build it (the cfg read into HeadOptions once)."""
    return DeepACCHead.from_options(in_channels, int(cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION), head_options(cfg))

TINY_YAML = """
MODEL:
  META_ARCHITECTURE: "DeepACCRCNN"
  DEVICE: "cpu"
  PIXEL_MEAN: [0.0, 0.0, 0.0]
  PIXEL_STD: [1.0, 1.0, 1.0]
  BACKBONE:
    NAME: "build_resnet_fpn_backbone"
    FREEZE_AT: 0
  RESNETS:
    DEPTH: 18
    RES2_OUT_CHANNELS: 64
    OUT_FEATURES: ["res2", "res3", "res4", "res5"]
    NORM: "GN"
  FPN:
    IN_FEATURES: ["res2", "res3", "res4", "res5"]
    OUT_CHANNELS: 32
  ANCHOR_GENERATOR:
    SIZES: [[16], [32], [64], [128], [256]]
  RPN:
    IN_FEATURES: ["p2", "p3", "p4", "p5", "p6"]
    PRE_NMS_TOPK_TRAIN: 200
    PRE_NMS_TOPK_TEST: 200
    POST_NMS_TOPK_TRAIN: 50
    POST_NMS_TOPK_TEST: 50
  ROI_HEADS:
    NAME: "DeepACCROIHeads"
    NUM_CLASSES: 24
    IN_FEATURES: ["p2", "p3", "p4", "p5"]
    BATCH_SIZE_PER_IMAGE: 32
  ROI_BOX_HEAD:
    NUM_FC: 2
    FC_DIM: 64
    POOLER_RESOLUTION: 7
INPUT:
  MIN_SIZE_TRAIN: (96,)
  MAX_SIZE_TRAIN: 128
  MIN_SIZE_TEST: 96
  MAX_SIZE_TEST: 128
"""

FPN_SHAPES = {f"p{i}": ShapeSpec(channels=256, stride=2 ** i) for i in range(2, 7)}


@pytest.fixture
def tiny_yaml(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_YAML)
    return str(path)


def tiny_cfg(tiny_yaml, opts=()):
    cfg = get_cfg()
    cfg.merge_from_file(tiny_yaml)
    cfg.merge_from_list(list(opts))
    return cfg


def n_params(*modules):
    return sum(p.numel() for m in modules for p in m.parameters())


# ---------------------------------------------------------------------------------- registry / YAML
def test_heads_and_meta_arch_are_found_by_name_from_yaml(tiny_yaml):
    torch.manual_seed(0)
    model = build_model(tiny_cfg(tiny_yaml))
    assert type(model) is DeepACCRCNN
    assert type(model.roi_heads) is DeepACCROIHeads
    assert isinstance(model.roi_heads.box_head, DecoupledBoxHead)
    assert model.roi_heads.box_head.decoupled
    pred = model.roi_heads.box_predictor
    assert isinstance(pred, DeepACCOutputLayers)
    assert isinstance(pred.classifier, DeepACCClassifier)
    assert pred.classifier.siamese_enabled and pred.classifier.aam_enabled and pred.classifier.gia_enabled
    assert not hasattr(pred, "cls_score")  # the base class's linear classifier is replaced
    assert pred.bbox_pred.out_features == 4 * K


def test_deepacc_keys_come_from_the_core_config(tiny_yaml):
    cfg = tiny_cfg(tiny_yaml, ["MODEL.DEEPACC.SIAMESE.THRESHOLD", "0.7", "MODEL.DEEPACC.GIA.ENABLED", "False"])
    model = build_model(cfg)
    clf = model.roi_heads.box_predictor.classifier
    assert clf.threshold == pytest.approx(0.7)
    assert not clf.gia_enabled
    with pytest.raises(ValueError, match="NUM_CONV"):
        build_model(tiny_cfg(tiny_yaml, ["MODEL.ROI_BOX_HEAD.NUM_CONV", "2"]))


def _project_configs(sub=("", "ablation", "quick")):
    names = []
    for d in sub:
        folder = os.path.join(REPO, "configs", d)
        if os.path.isdir(folder):
            names += [os.path.join(d, n) for n in sorted(os.listdir(folder))
                      if n.endswith(".yaml") and not n.startswith("Base-")]
    return names


@pytest.mark.parametrize("variant", ["deepacc", "plain_d2_standard", "sep", "no_siamese", "agnostic"])
def test_same_yaml_same_head_parameter_count_on_both_engines(variant, tmp_path):
    """ROI box head + predictor built by Detectron2 == the core head the torchvision engine builds."""
    cfg = get_cfg()
    opts = ["MODEL.ROI_HEADS.NAME", "DeepACCROIHeads", "MODEL.ROI_HEADS.NUM_CLASSES", "24",
            "MODEL.ROI_HEADS.IN_FEATURES", "['p2','p3','p4','p5']", "MODEL.ROI_BOX_HEAD.NUM_FC", "2",
            "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION", "7"]
    if variant == "plain_d2_standard":  # Detectron2's own StandardROIHeads + FastRCNNConvFCHead
        opts += ["MODEL.ROI_HEADS.NAME", "StandardROIHeads", "MODEL.ROI_BOX_HEAD.NAME", "FastRCNNConvFCHead"]
    elif variant == "sep":
        opts += ["MODEL.DEEPACC.AAM.ENABLED", "False", "MODEL.DEEPACC.SIAMESE.ENABLED", "False",
                 "MODEL.DEEPACC.GIA.ENABLED", "False"]
    elif variant == "no_siamese":
        opts += ["MODEL.DEEPACC.SIAMESE.ENABLED", "False"]
    elif variant == "agnostic":
        opts += ["MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", "True"]
    cfg.merge_from_list(opts)
    roi = build_roi_heads(cfg, FPN_SHAPES)
    core = core_head(cfg, 256)
    d2_count = n_params(roi.box_head, roi.box_predictor)
    assert d2_count == n_params(core)
    expected_fc = 256 * 7 * 7 * 1024 + 1024 + 1024 * 1024 + 1024
    streams = 1 if variant == "plain_d2_standard" else 2
    assert d2_count > streams * expected_fc  # the FC streams are really there


@pytest.mark.parametrize("name", _project_configs() or ["<none>"])
def test_project_configs_build_the_same_head_on_both_engines(name):
    if name == "<none>":
        pytest.skip("configs/ not found")
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", name))
    in_channels = int(cfg.MODEL.FPN.OUT_CHANNELS)
    shapes = {f: ShapeSpec(channels=in_channels, stride=2 ** int(f[1])) for f in cfg.MODEL.ROI_HEADS.IN_FEATURES}
    roi = build_roi_heads(cfg, shapes)
    core = core_head(cfg, in_channels)
    assert n_params(roi.box_head, roi.box_predictor) == n_params(core)


@pytest.mark.parametrize("name", _project_configs(("quick",)) or ["<none>"])
def test_quick_configs_same_head_as_the_torchvision_engine_model(name):
    """The torchvision engine's whole model, built from the same YAML, has the same ROI head size."""
    if name == "<none>":
        pytest.skip("configs/quick not found")
    tv_model = pytest.importorskip("deepacc.tv.model", reason="torchvision engine not available")
    from deepacc.config import load_config

    path = os.path.join(REPO, "configs", name)
    tv_cfg = load_config(path, ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu"])
    tv = tv_model.build_model(tv_cfg)
    d2_cfg = get_cfg()
    d2_cfg.merge_from_file(path)
    d2_cfg.merge_from_list(["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu"])
    d2 = build_model(d2_cfg)
    assert n_params(d2.roi_heads.box_head, d2.roi_heads.box_predictor) == n_params(tv.head)


# ---------------------------------------------------------------------------------- training
def _targets(image_size, boxes, classes):
    t = Instances(image_size)
    t.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    t.gt_classes = torch.tensor(classes, dtype=torch.long)
    return t


def _proposals(image_size, boxes):
    p = Instances(image_size)
    p.proposal_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    p.objectness_logits = torch.zeros(len(p))
    return p


def _roi_heads(tiny_yaml, opts=()):
    torch.manual_seed(0)
    cfg = tiny_cfg(tiny_yaml, opts)
    shapes = {f"p{i}": ShapeSpec(channels=32, stride=2 ** i) for i in range(2, 7)}
    roi = build_roi_heads(cfg, shapes)
    feats = {f"p{i}": torch.randn(2, 32, 128 // 2 ** i, 128 // 2 ** i) for i in range(2, 7)}
    return roi, feats


def _grads_ok(module):
    missing = [n for n, p in module.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient reached {missing}"
    assert all(torch.isfinite(p.grad).all() for p in module.parameters() if p.grad is not None)


def test_roi_heads_forward_backward_non_empty(tiny_yaml):
    roi, feats = _roi_heads(tiny_yaml)
    roi.train()
    size = (128, 128)
    gt = [_targets(size, [[10, 10, 40, 60], [60, 20, 90, 50], [20, 70, 50, 120]], [0, 1, 22]),
          _targets(size, [[5, 5, 60, 30]], [23])]
    props = [_proposals(size, [[12, 8, 42, 58], [0, 0, 100, 100]]), _proposals(size, [[4, 6, 58, 32]])]
    with EventStorage():
        _, losses = roi(None, feats, props, gt)
    assert set(losses) == {"loss_aam", "loss_siamese", "loss_gia", "loss_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_aam"] > 0 and losses["loss_siamese"] > 0 and losses["loss_box_reg"] > 0
    sum(losses.values()).backward()
    _grads_ok(roi)


def test_roi_heads_forward_backward_empty_batch(tiny_yaml):
    """No proposal and no ground truth at all: losses are zero-valued and still backpropagate."""
    roi, feats = _roi_heads(tiny_yaml)
    roi.train()
    size = (128, 128)
    with EventStorage():
        _, losses = roi(None, feats, [_proposals(size, []), _proposals(size, [])],
                        [_targets(size, [], []), _targets(size, [], [])])
    for k, v in losses.items():
        assert torch.isfinite(v) and float(v) == 0.0, k
    sum(losses.values()).backward()
    for n, p in roi.box_predictor.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) == 0.0, n


def test_predictor_empty_batch_plain_classifier(tiny_yaml):
    roi, _ = _roi_heads(tiny_yaml, ["MODEL.DEEPACC.AAM.ENABLED", "False", "MODEL.DEEPACC.SIAMESE.ENABLED", "False",
                                    "MODEL.DEEPACC.GIA.ENABLED", "False"])
    pred = roi.box_predictor
    x = torch.empty(0, pred.classifier.cls_score.in_features)
    with EventStorage():
        out = pred((x, x), [0])
        losses = pred.losses(out, [])
    assert set(losses) == {"loss_cls", "loss_box_reg"}
    sum(losses.values()).backward()
    assert pred.classifier.cls_score.weight.grad is not None


def test_model_trains_on_mixed_batch(tiny_yaml):
    torch.manual_seed(0)
    model = build_model(tiny_cfg(tiny_yaml))
    model.train()
    batch = [{"image": torch.randn(3, 96, 128), "height": 96, "width": 128,
              "instances": _targets((96, 128), [[10, 10, 40, 30], [50, 20, 90, 60]], [3, 20])},
             {"image": torch.randn(3, 96, 128), "height": 96, "width": 128, "instances": _targets((96, 128), [], [])}]
    with EventStorage():
        losses = model(batch)
    assert {"loss_aam", "loss_siamese", "loss_gia", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"} <= set(losses)
    sum(losses.values()).backward()
    assert model.roi_heads.box_predictor.classifier.siamese_bias.grad is not None


# ---------------------------------------------------------------------------------- inference
def test_inference_returns_instances_with_class_probs_and_top1(tiny_yaml):
    torch.manual_seed(0)
    model = build_model(tiny_cfg(tiny_yaml, ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]))
    model.eval()
    with torch.no_grad():
        outs = model([{"image": torch.randn(3, 96, 128), "height": 192, "width": 256},
                      {"image": torch.randn(3, 96, 128)}])
    assert len(outs) == 2
    for out, size in zip(outs, [(192, 256), (96, 128)]):
        for key in ("instances", "instances_top1"):
            inst = out[key]
            assert isinstance(inst, Instances) and inst.image_size == size and len(inst) > 0
            assert inst.class_probs.shape == (len(inst), K + 1)
            assert torch.allclose(inst.class_probs.sum(1), torch.ones(len(inst)), atol=1e-5)
            assert torch.allclose(inst.scores, inst.class_probs[torch.arange(len(inst)), inst.pred_classes])
            b = inst.pred_boxes.tensor
            assert (b[:, 2] <= size[1] + 1e-3).all() and (b[:, 3] <= size[0] + 1e-3).all()
        top1 = out["instances_top1"]
        # top-1: each detection's class is its proposal's most probable foreground class
        assert torch.equal(top1.pred_classes, top1.class_probs[:, :K].argmax(1))
    # do_postprocess=False keeps GeneralizedRCNN's contract (a list of Instances)
    with torch.no_grad():
        raw = model.inference([{"image": torch.randn(3, 96, 128)}], do_postprocess=False)
    assert isinstance(raw[0], Instances)


def test_plain_d2_standard_roi_heads_also_give_top1(tiny_yaml):
    torch.manual_seed(0)
    cfg = tiny_cfg(tiny_yaml, ["MODEL.ROI_HEADS.NAME", "StandardROIHeads", "MODEL.ROI_BOX_HEAD.NAME",
                               "FastRCNNConvFCHead", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"])
    model = build_model(cfg).eval()
    with torch.no_grad():
        out = model([{"image": torch.randn(3, 96, 128)}])[0]
    assert len(out["instances_top1"]) > 0
    assert out["instances"].class_probs.shape[1] == K + 1


@pytest.mark.parametrize("agnostic", [False, True])
def test_detections_identical_to_core_pipeline_of_the_torchvision_engine(tiny_yaml, agnostic):
    """Same weights + same pooled features + same proposals -> the same detections as the core head
    followed by torchvision's box decoding and the core select_detections (the torchvision engine)."""
    roi, _ = _roi_heads(tiny_yaml, ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.02",
                                    "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", str(agnostic)])
    roi.eval()
    cfg = tiny_cfg(tiny_yaml, ["MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", str(agnostic)])
    core = core_head(cfg, 32).eval()
    core.box_head.load_state_dict(roi.box_head.state_dict())
    core.classifier.load_state_dict(roi.box_predictor.classifier.state_dict())
    core.bbox_pred.load_state_dict(roi.box_predictor.bbox_pred.state_dict())
    g = torch.Generator().manual_seed(1)
    sizes = [(100, 120), (90, 110)]
    props = []
    for n, (h, w) in zip([40, 30], sizes):
        xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.7, h * 0.7])
        wh = 5 + torch.rand(n, 2, generator=g) * 30
        props.append(_proposals((h, w), torch.cat([xy, xy + wh], 1).tolist()))
    pooled = torch.randn(70, 32, 7, 7, generator=g)
    with torch.no_grad():
        preds = roi.box_predictor(roi.box_head(pooled), [40, 30])
        d2_all, d2_top1 = roi.box_predictor.detection_sets(preds, props)
        out, deltas = core(pooled, [40, 30])
    coder = BoxCoder(tuple(cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS))
    boxes = coder.decode(deltas, [p.proposal_boxes.tensor for p in props])
    if agnostic:
        boxes = boxes[:, 0]
    probs = out.probs()
    start = 0
    for i, (p, size) in enumerate(zip(props, sizes)):
        b, pr = boxes[start:start + len(p)], probs[start:start + len(p)]
        start += len(p)
        for d2, top1 in ((d2_all[i], False), (d2_top1[i], True)):
            ref = select_detections(b, pr, size, 0.02, cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST, 100, top1=top1)
            assert len(d2) == len(ref.scores) > 0
            assert torch.equal(d2.pred_classes, ref.classes)
            assert torch.allclose(d2.scores, ref.scores, atol=1e-6)
            assert torch.allclose(d2.pred_boxes.tensor, ref.boxes, atol=1e-3)
            assert torch.allclose(d2.class_probs, pr[ref.proposal_index], atol=1e-6)


# ---------------------------------------------------------------------------------- evaluator
def _random_dataset(n_images=4, seed=0, file_root="/nonexistent"):
    rng = np.random.default_rng(seed)
    dicts = []
    for i in range(n_images):
        anns = []
        for c in rng.choice(K, size=10, replace=False):
            for _ in range(2):
                x, y = rng.uniform(0, 500, 2)
                w, h = rng.uniform(10, 60, 2)
                anns.append({"bbox": [float(x), float(y), float(x + w), float(y + h)], "bbox_mode": 0,
                             "category_id": int(c), "iscrowd": 0})
        dicts.append({"file_name": f"{file_root}/img{i}.png", "height": 600, "width": 600, "image_id": 100 + i,
                      "annotations": anns, "karyotype": "46,XY"})
    return dicts


def _noisy_instances(d, rng, top1):
    gt = np.array([a["bbox"] for a in d["annotations"]], dtype=np.float32)
    cls = np.array([a["category_id"] for a in d["annotations"]])
    keep = rng.random(len(gt)) < 0.85
    boxes = gt[keep] + rng.normal(0, 3, size=(keep.sum(), 4)).astype(np.float32)
    classes = np.where(rng.random(keep.sum()) < 0.8, cls[keep], rng.integers(0, K, keep.sum()))
    n_fp = 3
    boxes = np.concatenate([boxes, rng.uniform(0, 500, (n_fp, 2)).repeat(2, 1).astype(np.float32) + [0, 0, 30, 30]])
    classes = np.concatenate([classes, rng.integers(0, K, n_fp)])
    scores = rng.uniform(0.3 if top1 else 0.05, 1.0, len(boxes)).astype(np.float32)
    probs = rng.dirichlet(np.ones(K + 1), len(boxes)).astype(np.float32)
    inst = Instances((d["height"], d["width"]))
    inst.pred_boxes = Boxes(torch.from_numpy(boxes))
    inst.scores = torch.from_numpy(scores)
    inst.pred_classes = torch.from_numpy(classes.astype(np.int64))
    inst.class_probs = torch.from_numpy(probs)
    return inst


@pytest.fixture
def temp_d2_dataset():
    name = "test_d2_engine_eval_tmp"
    dicts = _random_dataset()
    DatasetCatalog.register(name, lambda: copy.deepcopy(dicts))
    MetadataCatalog.get(name).set(thing_classes=list(CLASS_NAMES), evaluator_type="deepacc")
    yield name, dicts
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_evaluator_equals_core_evaluator_and_combines_with_coco(temp_d2_dataset, tmp_path):
    name, dicts = temp_d2_dataset
    rng = np.random.default_rng(3)
    inputs = [{"image_id": d["image_id"], "file_name": d["file_name"]} for d in dicts]
    outputs = [{"instances": _noisy_instances(d, rng, False), "instances_top1": _noisy_instances(d, rng, True)}
               for d in dicts]
    ev = DeepACCEvaluator(name, str(tmp_path / "d2"), distributed=False)
    coco = COCOEvaluator(name, tasks=("bbox",), distributed=False, output_dir=str(tmp_path / "coco"))
    both = DatasetEvaluators([ev, coco])
    both.reset()
    both.process(inputs[:2], outputs[:2])
    both.process(inputs[2:], outputs[2:])
    res = both.evaluate()
    assert set(res) == {"deepacc", "bbox"}

    core = MetaphaseEvaluator(dicts, CLASS_NAMES, output_dir=None, distributed=False, save_plot=False)
    core.process([{"image_id": d["image_id"],
                   "instances": {"boxes": o["instances"].pred_boxes.tensor.numpy(),
                                 "scores": o["instances"].scores.numpy(),
                                 "classes": o["instances"].pred_classes.numpy(),
                                 "class_probs": o["instances"].class_probs.numpy()},
                   "instances_top1": {"boxes": o["instances_top1"].pred_boxes.tensor.numpy(),
                                      "scores": o["instances_top1"].scores.numpy(),
                                      "classes": o["instances_top1"].pred_classes.numpy(),
                                      "class_probs": o["instances_top1"].class_probs.numpy()}}
                  for d, o in zip(dicts, outputs)])
    ref = flatten_scalars(core.evaluate())
    assert res["deepacc"].keys() == ref.keys()
    for k, v in ref.items():
        got = res["deepacc"][k]
        assert (math.isnan(v) and math.isnan(got)) or got == pytest.approx(v, abs=1e-9), k
    assert 0 < ref["mAP"] < 100 and 0 < ref["Acc"] < 100 and ref["AER"] > 0
    # the same pycocotools AP@0.5 as Detectron2's COCOEvaluator on the same instances
    assert res["deepacc"]["mAP"] == pytest.approx(res["bbox"]["AP50"], abs=1e-6)
    assert res["deepacc"]["AP"] == pytest.approx(res["bbox"]["AP"], abs=1e-6)
    assert os.path.exists(tmp_path / "d2" / "metrics_deepacc.json")


def test_evaluator_from_config_reads_the_assignment_switch(temp_d2_dataset):
    name, _ = temp_d2_dataset
    cfg = get_cfg()
    assert DeepACCEvaluator.from_config(cfg, name)._core.extra_copy_cost == cfg.TEST.DEEPACC.ASSIGNMENT.EXTRA_COPY_COST
    cfg.TEST.DEEPACC.ASSIGNMENT.ENABLED = False
    assert DeepACCEvaluator.from_config(cfg, name)._core.extra_copy_cost is None
    cfg.TEST.DEEPACC.ASSIGNMENT.ENABLED = True
    cfg.TEST.DEEPACC.ASSIGNMENT.EXTRA_COPY_COST = 1.5
    assert DeepACCEvaluator.from_config(cfg, name)._core.extra_copy_cost == 1.5


def test_evaluator_from_config_names_the_configs_method(temp_d2_dataset):
    """The table of ``--eval-only`` names the model of the config: "Faster R-CNN" for Detectron2's
    StandardROIHeads, "DeepACC" for the full head; "DeepACC" when no config is known."""
    name, _ = temp_d2_dataset
    cfg = get_cfg()
    assert DeepACCEvaluator.from_config(cfg, name)._core.method == "DeepACC"
    cfg.MODEL.ROI_HEADS.NAME = "StandardROIHeads"
    assert DeepACCEvaluator.from_config(cfg, name)._core.method == "Faster R-CNN"
    cfg.MODEL.ROI_HEADS.NAME = "DeepACCROIHeads"
    cfg.MODEL.DEEPACC.GIA.ENABLED = False
    assert DeepACCEvaluator.from_config(cfg, name)._core.method == "DeepACC (AAM+siamese)"
    assert DeepACCEvaluator(name, distributed=False)._core.method == "DeepACC"


def test_evaluator_requires_top1_set(temp_d2_dataset):
    name, dicts = temp_d2_dataset
    ev = DeepACCEvaluator(name, distributed=False)
    inst = _noisy_instances(dicts[0], np.random.default_rng(0), False)
    with pytest.raises(KeyError, match="DeepACCRCNN"):
        ev.process([{"image_id": dicts[0]["image_id"]}], [{"instances": inst}])


# ---------------------------------------------------------------------------------- data
def _write_dataset(root, n=4, size=(96, 128), seed=0):
    """Tiny images (dark boxes on a light background) and their dataset dicts."""
    rng = np.random.default_rng(seed)
    dicts = []
    h, w = size
    for i in range(n):
        img = np.full((h, w), 220, np.uint8)
        anns = []
        for j in range(3):
            x, y = int(rng.integers(2, w - 30)), int(rng.integers(2, h - 30))
            bw, bh = int(rng.integers(8, 26)), int(rng.integers(8, 26))
            img[y:y + bh, x:x + bw] = 40 + 30 * j
            anns.append({"bbox": [float(x), float(y), float(x + bw), float(y + bh)], "bbox_mode": 0,
                         "category_id": int((i + j) % K), "iscrowd": 0})
        path = os.path.join(root, f"img{i}.png")
        Image.fromarray(img).save(path)
        dicts.append({"file_name": path, "height": h, "width": w, "image_id": i + 1, "annotations": anns})
    return dicts


def test_mapper_reads_grayscale_normalises_resizes_and_flips(tmp_path, tiny_yaml):
    d = _write_dataset(str(tmp_path), n=1)[0]
    cfg = tiny_cfg(tiny_yaml)
    test_mapper = DeepACCDatasetMapper(cfg, False)
    out = test_mapper(d)
    img = out["image"]
    assert img.dtype == torch.float32 and img.shape == (3, 96, 128)
    assert torch.equal(img[0], img[1]) and torch.equal(img[0], img[2])
    assert abs(float(img.mean())) < 1e-4 and float(img.std(unbiased=False)) == pytest.approx(1.0, abs=1e-3)
    assert "instances" not in out and out["height"] == 96 and out["width"] == 128

    # resize to MIN_SIZE 192 + a flip that always happens
    flip = DeepACCDatasetMapper(True, augmentations=[T.ResizeShortestEdge(192, 1000), T.RandomFlip(prob=1.0)],
                                normalization="none")
    out = flip(d)
    assert out["image"].shape == (3, 192, 256)
    assert float(out["image"].max()) > 200  # "none": raw 0..255 values
    b = torch.tensor([a["bbox"] for a in d["annotations"]]) * 2
    expected = torch.stack([256 - b[:, 2], b[:, 1], 256 - b[:, 0], b[:, 3]], 1)
    assert torch.allclose(out["instances"].gt_boxes.tensor, expected, atol=1e-3)
    assert out["instances"].gt_classes.tolist() == [a["category_id"] for a in d["annotations"]]
    # the flipped image really is flipped: the darkest box moved with its annotation
    x0, y0, x1, y1 = [int(round(v)) for v in expected[0].tolist()]
    assert float(out["image"][0, y0 + 2:y1 - 2, x0 + 2:x1 - 2].mean()) < 60

    bad = dict(d, height=50)
    with pytest.raises(Exception, match="img0.png"):
        test_mapper(bad)
    with pytest.raises(ValueError, match="NORMALIZATION"):
        DeepACCDatasetMapper(False, augmentations=[], normalization="imagenet")


def test_datasets_are_mirrored_into_detectron2_catalogs(tmp_path):
    builtin = "deepacc_synth_quick_train"
    assert builtin in DatasetCatalog.list()
    assert MetadataCatalog.get(builtin).thing_classes == list(CLASS_NAMES)
    assert MetadataCatalog.get(builtin).evaluator_type == "deepacc"

    name = "test_d2_engine_catalog_tmp"
    dicts = _write_dataset(str(tmp_path), n=2)
    catalog.register(name, lambda: copy.deepcopy(dicts))
    try:
        assert register_datasets([name]) == [name]
        assert register_datasets([name]) == [name]  # idempotent
        assert DatasetCatalog.get(name) == dicts
        assert MetadataCatalog.get(name).thing_classes == list(CLASS_NAMES)
        with pytest.raises(KeyError, match="no_such_dataset"):
            register_datasets(["no_such_dataset"])
    finally:
        catalog.unregister(name)
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


# ---------------------------------------------------------------------------------- train_net
def _args(config_file, *opts, eval_only=False, resume=False):
    return types.SimpleNamespace(config_file=config_file, opts=list(opts), eval_only=eval_only, resume=resume,
                                 num_gpus=1, num_machines=1, machine_rank=0, dist_url="auto")


@pytest.fixture
def tiny_train_dataset(tmp_path):
    names = ("test_d2_train_tmp", "test_d2_val_tmp")
    dicts = _write_dataset(str(tmp_path), n=4)
    catalog.register(names[0], lambda: copy.deepcopy(dicts))
    catalog.register(names[1], lambda: copy.deepcopy(dicts[:2]))
    yield names
    for n in names:
        catalog.unregister(n)
        if n in DatasetCatalog.list():
            DatasetCatalog.remove(n)
            MetadataCatalog.remove(n)


def test_setup_resolves_epochs_and_meta_arch(tiny_yaml, tiny_train_dataset, tmp_path):
    train, val = tiny_train_dataset
    common = ["DATASETS.TRAIN", f"('{train}',)", "DATASETS.TEST", f"('{val}',)", "OUTPUT_DIR", str(tmp_path / "out"),
              "MODEL.META_ARCHITECTURE", "GeneralizedRCNN", "SOLVER.IMS_PER_BATCH", "3"]
    cfg = setup(_args(tiny_yaml, *common, "SOLVER.EPOCHS", "5", "SOLVER.EPOCH_STEPS", "(2, 4)"))
    assert cfg.SOLVER.MAX_ITER == 10 and tuple(cfg.SOLVER.STEPS) == (4, 8)  # 4 images / 3 per batch = 2 it/epoch
    assert cfg.MODEL.META_ARCHITECTURE == "DeepACCRCNN"
    assert train in DatasetCatalog.list()
    cfg = setup(_args(tiny_yaml, *common, "SOLVER.EPOCHS", "5", "SOLVER.MAX_ITER", "7"))
    assert cfg.SOLVER.MAX_ITER == 7 and cfg.SOLVER.EPOCHS == 0  # an explicit iteration count wins


@pytest.mark.slow
def test_train_evaluate_resume_eval_only(tiny_yaml, tiny_train_dataset, tmp_path):
    train, val = tiny_train_dataset
    out = str(tmp_path / "out")
    common = ["DATASETS.TRAIN", f"('{train}',)", "DATASETS.TEST", f"('{val}',)", "OUTPUT_DIR", out,
              "SOLVER.IMS_PER_BATCH", "2", "SOLVER.BASE_LR", "0.001", "SOLVER.WARMUP_ITERS", "1",
              "DATALOADER.NUM_WORKERS", "0", "SOLVER.CHECKPOINT_PERIOD", "2", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]
    main(_args(tiny_yaml, *common, "SOLVER.MAX_ITER", "2"))
    assert os.path.exists(os.path.join(out, "model_final.pth"))
    trainer = Trainer(setup(_args(tiny_yaml, *common, "SOLVER.MAX_ITER", "3", resume=True)))
    trainer.resume_or_load(resume=True)
    assert trainer.start_iter == 2  # continues after the 2 finished iterations
    trainer.train()
    assert torch.load(os.path.join(out, "model_final.pth"), weights_only=False)["iteration"] == 2
    res = main(_args(tiny_yaml, *common, "MODEL.WEIGHTS", os.path.join(out, "model_final.pth"), eval_only=True))
    assert {"deepacc", "bbox"} <= set(res)
    for key in ("mAP", "mAP_max", "Acc", "AER", "num_gt"):
        assert key in res["deepacc"]
    assert res["deepacc"]["num_gt"] == 6


# ---------------------------------------------------------------------------------- predictor
def test_predictor_from_framework_free_cfg(tiny_yaml, tmp_path):
    """deepacc-predict's path: a framework-free cfg -> Detectron2 model -> the project's prediction dict."""
    from deepacc.config import load_config
    from deepacc.d2 import Detectron2Predictor, to_detectron2_cfg
    from deepacc.d2.evaluator import instances_to_dict

    torch.manual_seed(0)
    cfg = load_config(tiny_yaml, ["MODEL.DEEPACC.SIAMESE.THRESHOLD", "0.3", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
                                  "MODEL.META_ARCHITECTURE", "GeneralizedRCNN"])
    d2cfg = to_detectron2_cfg(cfg)
    assert d2cfg.MODEL.DEEPACC.SIAMESE.THRESHOLD == pytest.approx(0.3) and d2cfg.MODEL.META_ARCHITECTURE == "DeepACCRCNN"
    model = build_model(d2cfg).eval()
    weights = str(tmp_path / "w.pth")
    torch.save({"model": model.state_dict()}, weights)
    cfg.merge_from_list(["MODEL.WEIGHTS", weights])
    predictor = Detectron2Predictor(cfg)
    d = _write_dataset(str(tmp_path), n=1, size=(150, 200))[0]
    gray = np.asarray(Image.open(d["file_name"]))
    out = predictor(gray)
    with torch.no_grad():
        ref = model([DeepACCDatasetMapper(d2cfg, False)(d)])[0]
    for key in ("instances", "instances_top1"):
        r = instances_to_dict(ref[key])
        assert set(out[key]) == {"boxes", "scores", "classes", "class_probs"} and len(r["scores"]) > 0
        np.testing.assert_allclose(out[key]["boxes"], r["boxes"], atol=1e-3)
        np.testing.assert_allclose(out[key]["scores"], r["scores"], atol=1e-6)
        assert out[key]["boxes"][:, 2].max() <= 200 + 1e-3 and out[key]["boxes"][:, 3].max() <= 150 + 1e-3
    assert predictor.weights_info["status"] == "trained" and predictor.weights_info["sha256"]
    with pytest.raises(FileNotFoundError, match="no_such.pth"):
        cfg.merge_from_list(["MODEL.WEIGHTS", str(tmp_path / "no_such.pth")])
        Detectron2Predictor(cfg)


def test_predictor_reads_the_scale_reference_from_its_checkpoint(tiny_yaml, tmp_path):
    from deepacc.config import load_config
    from deepacc.d2 import Detectron2Predictor, to_detectron2_cfg
    from deepacc.data.scale import CHECKPOINT_KEY, FRAME_KEY

    cfg = load_config(tiny_yaml, ["INPUT.SCALE_AWARE.ENABLED", "True"])
    model = build_model(to_detectron2_cfg(cfg))
    path = str(tmp_path / "w.pth")
    torch.save({"model": model.state_dict(), CHECKPOINT_KEY: 7.5, FRAME_KEY: 900.0}, path)
    cfg.merge_from_list(["MODEL.WEIGHTS", path])
    p = Detectron2Predictor(cfg)
    assert (p.cfg.INPUT.SCALE_AWARE.REFERENCE_SIZE, p.cfg.INPUT.SCALE_AWARE.REFERENCE_FRAME) == (7.5, 900.0)
    assert p.mapper.scale_cfg.INPUT.SCALE_AWARE.REFERENCE_SIZE == 7.5


def test_predictor_refuses_untrained_and_unsafe_weights(tiny_yaml, tmp_path):
    import pickle

    from deepacc.checkpoint_io import CheckpointError, UntrainedModelError
    from deepacc.config import load_config
    from deepacc.d2 import Detectron2Predictor, to_detectron2_cfg

    cfg = load_config(tiny_yaml, ["MODEL.WEIGHTS", ""])
    with pytest.raises(UntrainedModelError, match="--allow-untrained"):
        Detectron2Predictor(cfg)
    assert Detectron2Predictor(cfg, allow_untrained=True).weights_info["status"] == "untrained"
    # a trunk-only checkpoint: the heads stay random -> refused
    model = build_model(to_detectron2_cfg(cfg))
    trunk = {k: v for k, v in model.state_dict().items() if k.startswith("backbone.bottom_up.")}
    torch.save({"model": trunk}, str(tmp_path / "trunk.pth"))
    with pytest.raises(UntrainedModelError, match="missing"):
        Detectron2Predictor(load_config(tiny_yaml, ["MODEL.WEIGHTS", str(tmp_path / "trunk.pth")]))
    # pickled code in a .pth or a model-zoo .pkl never runs
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"model": {"x": Payload()}}, str(tmp_path / "evil.pth"))
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"blobs": {"conv1_w": Payload()}}, f)
    for name in ("evil.pth", "evil.pkl"):
        with pytest.raises(CheckpointError, match="refused"):
            Detectron2Predictor(load_config(tiny_yaml, ["MODEL.WEIGHTS", str(tmp_path / name)]))
    assert not marker.exists()


def test_full_model_gradient_clipping_on_detectron2():
    cfg = get_cfg()
    cfg.merge_from_list(["SOLVER.CLIP_GRADIENTS.ENABLED", True, "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "full_model",
                         "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", 6.5, "SOLVER.BASE_LR", 1.0, "SOLVER.MOMENTUM", 0.0,
                         "SOLVER.WEIGHT_DECAY", 0.0])
    model = torch.nn.Linear(2, 1, bias=False)
    opt = Trainer.build_optimizer(cfg, model)
    w0 = model.weight.detach().clone()
    model.weight.grad = torch.tensor([[5.0, 12.0]])  # total norm 13, clipped to 6.5 before the SGD step
    opt.step()
    assert (w0 - model.weight.detach()).view(-1).tolist() == pytest.approx([2.5, 6.0], rel=1e-5)


# ---------------------------------------------------------------------------------- pretrained trunk
@pytest.mark.parametrize("depth,norm", [(18, "FrozenBN"), (18, "GN"), (50, "FrozenBN")])
def test_pretrained_trunk_loads_into_detectron2_backbone(depth, norm, tmp_path):
    """A deepacc-pretrain checkpoint fills every tensor of Detectron2's ResNet with the trunk's values."""
    from deepacc.config import load_config
    from deepacc.d2 import DeepACCCheckpointer
    from deepacc.checkpoint_io import PRETRAIN_KEY
    from deepacc.pretrain import build_classifier, trunk_state_dict

    opts = ["MODEL.RESNETS.DEPTH", depth, "MODEL.RESNETS.NORM", norm, "MODEL.RESNETS.RES2_OUT_CHANNELS",
            64 if depth < 50 else 256, "MODEL.RESNETS.STRIDE_IN_1X1", False, "MODEL.BACKBONE.FREEZE_AT", 0,
            "MODEL.FPN.NORM", "GN" if norm == "GN" else ""]
    torch.manual_seed(0)
    tv_cfg = load_config(QUICK_TV_CONFIG, ["MODEL.WEIGHTS", ""] + opts)
    net = build_classifier(tv_cfg)
    with torch.no_grad():
        for p in net.parameters():
            p.uniform_(-1, 1)
    path = str(tmp_path / "model_pretrained.pth")
    torch.save({"model": trunk_state_dict(net, norm), PRETRAIN_KEY: {"depth": depth}}, path)

    cfg = get_cfg()
    cfg.merge_from_file(QUICK_TV_CONFIG)
    cfg.merge_from_list(["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu"] + opts)
    model = build_model(cfg)
    DeepACCCheckpointer(model).load(path)
    bottom_up = model.backbone.bottom_up
    assert torch.equal(bottom_up.stem.conv1.weight, net.conv1.weight)
    assert torch.equal(bottom_up.res3[0].shortcut.weight, net.layer2[0].downsample[0].weight)
    assert torch.equal(bottom_up.res5[1].conv2.weight, net.layer4[1].conv2.weight)
    assert torch.equal(bottom_up.res4[0].conv1.norm.weight, net.layer3[0].bn1.weight)
    if norm == "FrozenBN":
        assert torch.equal(bottom_up.stem.conv1.norm.running_var, net.bn1.running_var)
    # every trunk tensor of Detectron2's model got a value (none left at its initialisation)
    d2_keys = {k for k in model.state_dict() if k.startswith("backbone.bottom_up.")}
    from deepacc.checkpoint_io import to_detectron2_names

    assert d2_keys == set(to_detectron2_names(trunk_state_dict(net, norm)))


QUICK_TV_CONFIG = os.path.join(REPO, "configs", "quick", "DeepACC_R18_synth_cpu.yaml")


# ---------------------------------------------------------------------------------- mixed precision
def test_amp_on_cpu_runs_detectron2_iterations_under_bf16(tiny_yaml):
    """SOLVER.AMP.ENABLED on the CPU: Detectron2's AMPTrainer is CUDA-only, so the engine runs its own
    bf16 autocast trainer; parameters stay fp32 and the margin branch computes in fp32."""
    from deepacc.d2.trainer import CPUAutocastTrainer, build_step_trainer

    torch.manual_seed(0)
    cfg = tiny_cfg(tiny_yaml, ["SOLVER.AMP.ENABLED", True, "SOLVER.AMP.PRECISION", "bfloat16"])
    model = build_model(cfg)
    seen = []
    model.register_forward_pre_hook(
        lambda m, a: seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None))
    cos = []
    model.roi_heads.box_predictor.classifier.margin_branch.register_forward_hook(
        lambda m, a, out: cos.append(out.dtype))
    item = {"image": torch.rand(3, 96, 128) * 255, "height": 96, "width": 128,
            "instances": _targets((96, 128), [[10, 10, 40, 60], [60, 20, 90, 40]], [3, 21])}
    opt = torch.optim.SGD(model.parameters(), lr=0.001)
    trainer = build_step_trainer(cfg, model, [[item]] * 2, opt)
    assert isinstance(trainer, CPUAutocastTrainer)
    with EventStorage(0):
        trainer.iter = 0
        trainer.run_step()
    assert seen == [torch.bfloat16]
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert cos and all(d == torch.float32 for d in cos)
    plain = build_step_trainer(tiny_cfg(tiny_yaml), model, [[item]], opt)
    assert type(plain).__name__ == "SimpleTrainer"


def test_framework_free_config_equals_detectron2s():
    """deepacc.config keeps a copy of Detectron2's defaults for the torchvision engine. Every key of it
    that Detectron2's get_cfg() has holds Detectron2's default (same value, same type); DeepACC's own
    keys are the same on both engines; every YAML of configs/ loads to the same values on both."""
    import glob

    from detectron2.config import get_cfg as d2_defaults

    from deepacc.config import get_cfg as ff_get_cfg
    from deepacc.config import load_config

    def leaves(node, prefix=""):
        for k, v in node.items():
            if hasattr(v, "items"):
                yield from leaves(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v

    def differ(a, b):
        return {k: (v, b.get(k, "<absent>")) for k, v in a.items()
                if k not in b or type(v) is not type(b[k]) or v != b[k]}

    d2 = dict(leaves(d2_defaults()))
    ff = dict(leaves(ff_get_cfg()))
    engine = dict(leaves(get_cfg()))  # deepacc.d2.config.get_cfg: Detectron2's defaults + DeepACC's keys
    shared = {k: v for k, v in ff.items() if k in d2}
    assert len(shared) > 100
    # an intended difference from Detectron2's default would be listed here, KEY: "one-line reason"
    intended = {}
    assert set(differ(shared, d2)) == set(intended), differ(shared, d2)
    own = {k: v for k, v in ff.items() if k not in d2}
    assert sorted(own) == sorted(k for k in engine if k not in d2)
    assert differ(own, engine) == {}
    # keys of ours outside MODEL.DEEPACC / TEST.DEEPACC are DeepACC's additions, listed here on purpose
    assert sorted(k for k in own if ".DEEPACC." not in k and not k.startswith("MODEL.DEEPACC")) == sorted([
        "DATASETS.CHECK", "DATASETS.SKIP_INVALID", "INPUT.NORMALIZATION", "INPUT.POLARITY",
        "INPUT.SCALE_AWARE.ENABLED",
        "INPUT.SCALE_AWARE.FRAMED_STATS", "INPUT.SCALE_AWARE.MAX_FACTOR", "INPUT.SCALE_AWARE.MAX_SIZE",
        "INPUT.SCALE_AWARE.MIN_FACTOR", "INPUT.SCALE_AWARE.REFERENCE_FRAME", "INPUT.SCALE_AWARE.REFERENCE_SIZE",
        "INPUT.SCALE_AWARE.TOLERANCE",
        "MODEL.CHANNELS_LAST", "SOLVER.AMP.PRECISION", "SOLVER.EPOCHS", "SOLVER.EPOCH_STEPS"])
    files = sorted(glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True))
    assert len(files) > 10
    for path in files:
        assert differ(dict(leaves(load_config(path))), dict(leaves(load_config(path, None, get_cfg())))) == {}, path
