"""Mixed precision on both devices (SOLVER.AMP.*), the memory-layout switch, the frozen BN (dtype, folding) and the fast IoU."""
import copy
import logging

import pytest
import torch

from deepacc.config import get_cfg, load_config
from deepacc.modeling import DeepACCClassifier
from deepacc import precision
from deepacc.precision import (amp_dtype, autocast, cpu_capability, cpu_precision, needs_grad_scaler, precision_name,
                               resolve_precision, use_channels_last)
from deepacc.tv.model import ConvFrozenBN, FrozenBN, build_model, build_resnet, fold_frozen_bn
from deepacc.tv.optim import build_optimizer
from deepacc.tv.trainer import train_step
from tv_tiny import QUICK_CONFIG, TINY_OPTS


def _cfg(*opts):
    cfg = get_cfg()
    cfg.merge_from_list(list(opts))
    return cfg


@pytest.fixture(params=[True, False], ids=["cpu-with-bf16-kernels", "cpu-without-bf16-kernels"])
def bf16_kernels(request, monkeypatch):
    """Both answers of the hardware probe, whatever this machine's CPU says."""
    monkeypatch.setattr(precision, "cpu_bf16_kernels", lambda: request.param)
    monkeypatch.setattr(precision, "_warned", set())
    return request.param


def test_amp_dtype_per_device_and_precision(bf16_kernels):
    assert amp_dtype(_cfg(), "cpu") is None and amp_dtype(_cfg(), "cuda") is None
    on = _cfg("SOLVER.AMP.ENABLED", True)
    # auto: bf16 on the CPU only where oneDNN has bf16 kernels, fp32 elsewhere; fp16 on CUDA
    assert amp_dtype(on, "cpu") == (torch.bfloat16 if bf16_kernels else None)
    assert amp_dtype(on, "cuda") == torch.float16
    assert needs_grad_scaler(on, "cuda") and not needs_grad_scaler(on, "cpu")
    bf = _cfg("SOLVER.AMP.ENABLED", True, "SOLVER.AMP.PRECISION", "bfloat16")
    assert amp_dtype(bf, "cuda") == torch.bfloat16 and not needs_grad_scaler(bf, "cuda")
    assert amp_dtype(bf, "cpu") == torch.bfloat16  # asked for: runs, warned when emulated
    fp32 = _cfg("SOLVER.AMP.ENABLED", True, "SOLVER.AMP.PRECISION", "float32")
    assert amp_dtype(fp32, "cpu") is None and amp_dtype(fp32, "cuda") is None
    with pytest.raises(ValueError, match="CUDA"):
        amp_dtype(_cfg("SOLVER.AMP.ENABLED", True, "SOLVER.AMP.PRECISION", "float16"), "cpu")
    with pytest.raises(ValueError, match="PRECISION"):
        amp_dtype(_cfg("SOLVER.AMP.ENABLED", True, "SOLVER.AMP.PRECISION", "fp8"), "cpu")
    with autocast(bf, "cpu"):
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
    with autocast(on, "cpu"):
        assert torch.is_autocast_enabled("cpu") == bf16_kernels
    with autocast(_cfg(), "cpu"):
        assert not torch.is_autocast_enabled("cpu")


def test_precision_choice_names_itself_and_why(bf16_kernels, caplog):
    on = _cfg("SOLVER.AMP.ENABLED", True)
    choice = resolve_precision(on, "cpu", log=False)
    assert choice.name == ("bfloat16" if bf16_kernels else "float32")
    assert ("has bf16 kernels" if bf16_kernels else "no bf16 kernels") in choice.reason
    assert cpu_capability() in choice.reason and "auto" in choice.reason
    assert str(choice).startswith(f"{choice.name} on cpu (")
    assert resolve_precision(_cfg(), "cpu").name == "float32"
    assert "ENABLED False" in resolve_precision(_cfg(), "cpu").reason
    assert precision_name(torch.float16) == "float16" and precision_name(None) == "float32"


def test_explicit_bf16_without_kernels_warns_once_with_the_slowdown(bf16_kernels, caplog):
    bf = _cfg("SOLVER.AMP.ENABLED", True, "SOLVER.AMP.PRECISION", "bfloat16")
    with caplog.at_level(logging.WARNING, logger="deepacc.precision"):
        for _ in range(3):
            assert resolve_precision(bf, "cpu").dtype == torch.bfloat16
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    if bf16_kernels:
        assert warnings == []
    else:
        assert len(warnings) == 1 and "emulates" in warnings[0] and "12-30x" in warnings[0]
        assert "emulated" in resolve_precision(bf, "cpu").reason


def test_pretraining_precision_follows_the_same_rule(bf16_kernels):
    assert cpu_precision("auto").dtype == (torch.bfloat16 if bf16_kernels else None)
    assert cpu_precision("float32").dtype is None and cpu_precision("bfloat16").dtype == torch.bfloat16
    with pytest.raises(ValueError, match="CUDA"):
        cpu_precision("float16")


def test_the_probe_asks_pytorch():
    assert precision.cpu_bf16_kernels() == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def test_channels_last_auto_only_with_cpu_bf16_and_without_groupnorm(bf16_kernels):
    amp = ("SOLVER.AMP.ENABLED", True)
    # NHWC on the CPU only where it runs in bf16 (fast kernels); fp32 NHWC is 2x slower on AVX2
    assert use_channels_last(_cfg("MODEL.RESNETS.NORM", "FrozenBN", *amp), "cpu") == bf16_kernels
    assert not use_channels_last(_cfg("MODEL.RESNETS.NORM", "FrozenBN"), "cpu")  # AMP off: fp32
    assert not use_channels_last(_cfg("MODEL.RESNETS.NORM", "GN", *amp), "cpu")
    assert not use_channels_last(_cfg("MODEL.RESNETS.NORM", "FrozenBN", "MODEL.FPN.NORM", "GN", *amp), "cpu")
    assert use_channels_last(_cfg("MODEL.RESNETS.NORM", "GN"), "cuda")
    assert use_channels_last(_cfg("MODEL.RESNETS.NORM", "GN", "MODEL.CHANNELS_LAST", "on"), "cpu")
    assert not use_channels_last(_cfg("MODEL.CHANNELS_LAST", "off"), "cuda")
    with pytest.raises(ValueError, match="CHANNELS_LAST"):
        use_channels_last(_cfg("MODEL.CHANNELS_LAST", "maybe"), "cpu")
    model = build_model(load_config(QUICK_CONFIG, TINY_OPTS))  # GN on the CPU
    assert model.memory_format == torch.contiguous_format


def test_frozen_bn_is_the_same_affine_map_and_keeps_the_dtype():
    torch.manual_seed(0)
    bn = FrozenBN(4)
    bn.weight.uniform_(0.5, 2), bn.bias.uniform_(-1, 1), bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 4, 3, 3)
    ref = (x - bn.running_mean.view(1, -1, 1, 1)) / torch.sqrt(bn.running_var.view(1, -1, 1, 1) + bn.eps) \
        * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)
    assert torch.allclose(bn(x), ref, atol=1e-5)
    y = bn(x.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16 and torch.allclose(y.float(), ref, atol=0.05)


def _random_frozen_bn(model):
    for m in model.modules():
        if isinstance(m, FrozenBN):
            m.weight.uniform_(0.5, 2), m.bias.uniform_(-1, 1)
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2)


def test_folded_frozen_bn_trunk_computes_the_same_function_and_gradients_with_the_same_checkpoint_keys():
    cfg = load_config(QUICK_CONFIG, TINY_OPTS + ["MODEL.RESNETS.NORM", "FrozenBN"])
    torch.manual_seed(0)
    plain = build_resnet(cfg)
    _random_frozen_bn(plain)
    folded = copy.deepcopy(plain)
    assert fold_frozen_bn(folded) == 20  # ResNet-18: stem, 16 block convolutions, 3 shortcuts
    assert list(folded.state_dict()) == list(plain.state_dict())
    assert not any(isinstance(m, FrozenBN) and not m.folded for m in folded.modules())
    x = torch.randn(2, 3, 40, 48)
    y_plain, y_folded = plain(x), folded(x)
    assert torch.allclose(y_folded, y_plain, rtol=1e-4, atol=1e-5 * float(y_plain.abs().max()))
    y_plain.square().sum().backward()
    y_folded.square().sum().backward()
    for (name, p), q in zip(plain.named_parameters(), folded.parameters()):
        assert torch.allclose(q.grad, p.grad, rtol=1e-3, atol=1e-4 * float(p.grad.abs().max())), name
    # a changed buffer (a loaded checkpoint) is used at the next call, and a deep copy folds into its own BN
    twin = copy.deepcopy(folded)
    assert twin.conv1._frozen_bn[0] is twin.bn1
    folded.bn1.running_mean.add_(3.0)
    plain.bn1.running_mean.add_(3.0)
    assert torch.allclose(folded(x), plain(x), rtol=1e-4, atol=1e-5 * float(y_plain.abs().max()))
    assert not torch.allclose(twin(x), folded(x))
    # other norms are left alone; the detector's trunk is folded
    assert fold_frozen_bn(build_resnet(load_config(QUICK_CONFIG, TINY_OPTS + ["MODEL.RESNETS.NORM", "GN"]))) == 0
    model = build_model(cfg)
    assert isinstance(model.backbone.body.conv1, ConvFrozenBN)


def test_pairwise_iou_is_torchvisions_bit_for_bit():
    from torchvision.ops import box_iou

    from deepacc.tv.model import pairwise_iou

    g = torch.Generator().manual_seed(0)
    xy = torch.rand(300, 2, generator=g) * 500
    boxes = torch.cat([xy, xy + torch.rand(300, 2, generator=g) * 120], 1)
    boxes[5] = boxes[4]  # identical boxes, IoU exactly 1
    boxes[6, 2:] = boxes[6, :2] + torch.tensor([0.0, 10.0])  # zero area
    gt = boxes[:23]
    iou, ref = pairwise_iou(gt, boxes), box_iou(gt, boxes)
    assert iou.shape == (23, 300) and torch.equal(iou.isnan(), ref.isnan())  # 0 / 0 of the zero-area box
    assert torch.equal(iou.nan_to_num(-1.0), ref.nan_to_num(-1.0))
    assert iou[4, 5] == 1 and iou[6, 6].isnan() and 0 < int((iou > 0.5).sum()) < iou.numel()
    model = build_model(load_config(QUICK_CONFIG, TINY_OPTS))
    assert model.rpn.box_similarity is pairwise_iou and model.roi_heads.box_similarity is pairwise_iou


def test_bf16_training_step_on_cpu_learns_and_keeps_the_margin_branch_fp32(tiny_data_root, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", tiny_data_root)
    from deepacc.tv.dataloader import MetaphaseMapper
    from deepacc.data.catalog import get_dataset_dicts

    cfg = load_config(QUICK_CONFIG, TINY_OPTS + ["SOLVER.AMP.ENABLED", "True", "MODEL.RESNETS.NORM", "FrozenBN",
                                                 "MODEL.FPN.NORM", "", "SOLVER.BASE_LR", "0.01"])
    torch.manual_seed(0)
    model = build_model(cfg)
    opt = build_optimizer(cfg, model)
    mapper = MetaphaseMapper(cfg, True)
    batch = [mapper(d) for d in get_dataset_dicts("deepacc_synth_quick_train")[:2]]
    seen = {}
    classifier = model.head.classifier
    orig = classifier.margin_branch.forward

    def spy(x):
        out = orig(x)
        seen["cos"] = out.dtype
        return out

    monkeypatch.setattr(classifier.margin_branch, "forward", spy)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    model.train()
    first = train_step(model, opt, scaler, cfg.SOLVER.CLIP_GRADIENTS, batch, torch.device("cpu"), 0, torch.bfloat16)
    for i in range(1, 8):
        last = train_step(model, opt, scaler, cfg.SOLVER.CLIP_GRADIENTS, batch, torch.device("cpu"), i, torch.bfloat16)
    assert seen["cos"] == torch.float32  # margin branch in fp32 under bf16 autocast
    assert all(torch.isfinite(v) for v in last.values())
    assert float(sum(v.detach() for v in last.values())) < float(sum(v.detach() for v in first.values()))
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32


def test_siamese_centre_usage_is_counted_at_inference_only():
    torch.manual_seed(0)
    clf = DeepACCClassifier(8, 24, siamese_threshold=0.5)
    feats = torch.randn(10, 8)
    clf.train()
    clf(feats, [6, 4])
    assert clf.pop_centre_usage() == (0.0, 0)
    clf.eval()
    with torch.no_grad():
        out = clf(feats, [6, 4])
    total, images = clf.pop_centre_usage()
    expected = (out.top_score > 0.5).float().mean(dim=1)  # per image: classes with a local centre
    assert images == 2 and total == pytest.approx(float(expected.sum()))
    assert clf.pop_centre_usage() == (0.0, 0)  # reset after reading
    # a margin branch whose weights point at the features makes every class confident somewhere
    with torch.no_grad():
        w = torch.randn(25, 8)
        clf.margin_branch.weight.copy_(w)
        clf(w[:24] * 10, [24])
    total, images = clf.pop_centre_usage()
    assert images == 1 and total == pytest.approx(1.0)


def test_config_yaml_names_the_precision_and_still_loads(tmp_path, bf16_kernels):
    from deepacc.config import dump_config

    cfg = _cfg("SOLVER.AMP.ENABLED", True, "SOLVER.BASE_LR", 0.005)
    path = dump_config(cfg, str(tmp_path), resolve_precision(cfg, "cpu", log=False))
    with open(path) as f:
        first = f.readline()
    assert first.startswith("# precision: " + ("bfloat16" if bf16_kernels else "float32") + " on cpu (")
    back = load_config(path, [], get_cfg())
    assert back.SOLVER.BASE_LR == 0.005 and back.SOLVER.AMP.ENABLED
