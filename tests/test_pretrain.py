"""In-domain pretraining: crops at detector scale, augmentations, the trunk checkpoint and its use as MODEL.WEIGHTS."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from deepacc.config import get_cfg, load_config
from deepacc.checkpoint_io import PRETRAIN_KEY
from deepacc.pretrain import (Augment, CropSet, PretrainConfig, build_classifier, crop_size_for,
                              cut_crops, detector_scale, pretrain, trunk_state_dict)
from deepacc.tools.pretrain import check_disjoint, default_output
from deepacc.tv.model import build_model
from tv_tiny import QUICK_CONFIG, REPO, TINY_OPTS, train_net


def test_detector_scale_follows_resize_shortest_edge():
    assert detector_scale(960, 1280, 720, 960) == pytest.approx(0.75)
    assert detector_scale(960, 1280, 480, 640) == pytest.approx(0.5)
    # long side capped: 600x2000 at short side 600 would be 2000 > 1000
    assert detector_scale(600, 2000, 600, 1000) == pytest.approx(0.5)
    assert detector_scale(100, 100, 200, 400) == pytest.approx(2.0)


def _image_with_two_chromosomes(tmp_path):
    import cv2

    img = np.full((100, 200), 255, np.uint8)
    img[20:60, 30:40] = 40   # a dark vertical bar, class index 0 ("1")
    img[70:80, 120:180] = 90  # a lighter horizontal bar, class index 23 ("Y")
    path = str(tmp_path / "spread.png")
    cv2.imwrite(path, img)
    return {"file_name": path, "height": 100, "width": 200, "image_id": 1, "annotations": [
        {"bbox": [30.0, 20.0, 40.0, 60.0], "bbox_mode": 0, "category_id": 0, "iscrowd": 0},
        {"bbox": [120.0, 70.0, 180.0, 80.0], "bbox_mode": 0, "category_id": 23, "iscrowd": 0},
        {"bbox": [0.0, 0.0, 5.0, 5.0], "bbox_mode": 0, "category_id": 5, "iscrowd": 1}]}


def test_crops_are_centred_at_detector_scale(tmp_path):
    d = _image_with_two_chromosomes(tmp_path)
    crops = cut_crops([d], min_size=50, max_size=100, size=32, progress=False)  # scale 0.5
    assert crops.dark.shape == (2, 32, 32) and crops.labels.tolist() == [0, 23]  # the crowd box is skipped
    # first crop: the bar is 5 x 20 px at 0.5x, centred in the window; darkness = 255 - 40
    c = crops.dark[0].numpy()
    assert c[16, 16] == 215 and c[16, 2] == 0 and c[3, 16] == 0 and c[27, 16] == 0
    assert (c > 100).sum() == pytest.approx(5 * 20, abs=12)
    # statistics are those of the resized image (the detector's per-image normalisation)
    assert crops.mean[0] == crops.mean[1] and crops.std[0] > 0
    # a window that leaves the image is padded with empty slide
    far = dict(d, annotations=[{"bbox": [0.0, 0.0, 4.0, 4.0], "category_id": 3, "iscrowd": 0}])
    assert cut_crops([far], 100, 200, 32, progress=False).dark[0, :10, :10].max() == 0
    # window side: 99th percentile of the long sides at detector scale (+15 %), multiple of 16
    assert crop_size_for([d], 100, 200, multiple=16) == 80  # 60 px * 1.15 = 69 -> 80


def test_eval_augment_is_the_detector_normalisation():
    dark = torch.tensor([[[0, 100], [255, 55]]], dtype=torch.uint8)
    mean, std = torch.tensor([200.0]), torch.tensor([50.0])
    x = Augment(train=False)(dark, mean, std)
    assert x.shape == (1, 3, 2, 2)
    expected = ((255.0 - dark.float()) - 200.0) / 50.0
    assert torch.allclose(x[0, 0], expected[0]) and torch.equal(x[0, 0], x[0, 2])
    # MODEL.PIXEL_MEAN / PIXEL_STD apply after the per-image standardisation, as in the model
    y = Augment(train=False, pixel_mean=1.0, pixel_std=2.0)(dark, mean, std)
    assert torch.allclose(y[0, 0], (expected[0] - 1.0) / 2.0)


def test_train_augment_keeps_background_and_moves_the_chromosome():
    dark = torch.zeros(8, 32, 32, dtype=torch.uint8)
    dark[:, 4:28, 14:18] = 200  # a vertical chromosome
    mean, std = torch.full((8,), 240.0), torch.full((8,), 20.0)
    g = torch.Generator().manual_seed(0)
    aug = Augment(train=True, gamma=(1.0, 1.0), contrast=(1.0, 1.0), brightness=0.0, blur_p=0.0, noise=0.0)
    x = aug(dark, mean, std, generator=g)
    white = (255.0 - 240.0) / 20.0
    # the corners stay empty slide, whatever the rotation (zero darkness padding = white)
    assert torch.allclose(x[:, 0, 0, 0], torch.full((8,), white), atol=1e-5)
    # the chromosome is still there (rotation preserves most of its mass) but not always upright
    mass = (white - x[:, 0]).clamp(min=0).sum(dim=(1, 2))
    ref = (white - Augment(train=False)(dark, mean, std)[:, 0]).clamp(min=0).sum(dim=(1, 2))
    assert torch.all(mass > 0.5 * ref) and torch.all(mass < 2.0 * ref)
    upright = (x[:, 0, 4:28, 14:18] < white - 1).float().mean(dim=(1, 2))
    assert (upright < 0.5).any()


def test_classifier_is_the_detector_trunk_and_its_checkpoint_loads_into_the_backbone():
    cfg = load_config(QUICK_CONFIG, TINY_OPTS + ["MODEL.RESNETS.NORM", "FrozenBN", "MODEL.FPN.NORM", ""])
    net = build_classifier(cfg)
    assert isinstance(net.bn1, torch.nn.BatchNorm2d) and net.fc.out_features == 24  # BN learns the statistics
    with torch.no_grad():
        net.layer3[0].conv1.weight.fill_(0.5)
        net.bn1.running_mean.fill_(3.0)
    state = trunk_state_dict(net, "FrozenBN")
    assert all(k.startswith("backbone.body.") for k in state) and not any("fc." in k for k in state)
    assert not any(k.endswith("num_batches_tracked") for k in state)
    model = build_model(cfg)
    body = {k for k in model.state_dict() if k.startswith("backbone.body.")}
    assert body == set(state)  # every trunk tensor, nothing else
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and not any(k.startswith("backbone.body.") for k in missing)
    assert torch.all(model.backbone.body.layer3[0].conv1.weight == 0.5)
    assert torch.all(model.backbone.body.bn1.running_mean == 3.0)  # frozen BN takes the learnt statistics


def test_disjoint_check_names_shared_images_and_cases():
    a = [{"file_name": "/d/x.png", "case_id": "7"}, {"file_name": "/d/y.png", "case_id": "8"}]
    assert check_disjoint(a, [{"file_name": "/d/z.png", "case_id": "9"}]) == []
    problems = check_disjoint(a, [{"file_name": "/d/x.png", "case_id": "9"}, {"file_name": "/d/w.png", "case_id": "8"}])
    assert len(problems) == 2 and "/d/x.png" in problems[0] and "8" in problems[1]


def test_default_output_is_where_the_recipe_expects_the_trunk():
    cfg = get_cfg()
    cfg.MODEL.WEIGHTS = "output/gband/pretrain_R18/model_pretrained.pth"
    assert default_output(cfg) == "output/gband/pretrain_R18"
    cfg.MODEL.WEIGHTS, cfg.OUTPUT_DIR = "", "out/x"
    assert default_output(cfg) == os.path.join("out/x", "pretrain")


def _tiny_crops(n=48, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 24
    dark = torch.zeros(n, size, size, dtype=torch.uint8)
    for i, k in enumerate(labels.tolist()):  # class k: a bar whose length encodes the class
        length = 4 + k
        dark[i, 16 - length // 2:16 + (length + 1) // 2, 14:18] = 180
    return CropSet(dark, labels, torch.full((n,), 240.0), torch.full((n,), 30.0), torch.arange(n))


def test_pretrain_writes_a_resumable_run_and_a_weights_only_trunk(tmp_path):
    cfg = load_config(QUICK_CONFIG, TINY_OPTS)
    train, val = _tiny_crops(), _tiny_crops(24, seed=1)
    out = str(tmp_path / "pt")
    pc = PretrainConfig(epochs=1, batch_size=16, lr=0.05)
    report = pretrain(cfg, train, val, pc, out, progress=False)
    assert report["epochs_run"] == 1 and 0.0 <= report["val"]["top1"] <= 1.0
    assert len(report["val"]["confusion"]) == 24 and sum(map(sum, report["val"]["confusion"])) == 24
    # a second call with more epochs continues from the saved epoch instead of starting over
    report = pretrain(cfg, train, val, PretrainConfig(epochs=2, batch_size=16, lr=0.05), out, progress=False)
    assert [h["epoch"] for h in report["history"]] == [1, 2]
    lines = [json.loads(l) for l in open(os.path.join(out, "metrics.json"))]
    assert [l["epoch"] for l in lines] == [1, 2] and all("val_top1" in l for l in lines)
    ckpt = torch.load(os.path.join(out, "model_pretrained.pth"), map_location="cpu", weights_only=True)
    assert ckpt[PRETRAIN_KEY]["depth"] == 18 and ckpt[PRETRAIN_KEY]["detector_norm"] == "GN"
    assert set(ckpt["model"]) == {k for k in build_model(cfg).state_dict() if k.startswith("backbone.body.")}
    # the report says how many epochs ran, of which schedule, in which precision
    assert report["epochs"] == 2 and report["precision"] in ("float32", "bfloat16") and report["precision_reason"]


def test_stop_after_runs_the_first_epochs_of_a_longer_schedule(tmp_path):
    cfg = load_config(QUICK_CONFIG, TINY_OPTS)
    train = _tiny_crops()
    report = pretrain(cfg, train, None, PretrainConfig(epochs=3, batch_size=16, lr=0.05, stop_after=1,
                                                       precision="float32"), str(tmp_path / "pt"), progress=False)
    assert report["epochs_run"] == 1 and report["epochs"] == 3 and report["stopped_early"]
    assert report["precision"] == "float32" and report["history"][0]["precision"] == "float32"
    # the LR followed the 3-epoch cosine schedule: after one of three epochs it is still high
    assert report["history"][0]["lr"] > 0.5 * 0.05


@pytest.mark.slow
def test_pretrain_cli_then_detector_starts_from_the_trunk(tiny_data_root, tmp_path):
    out = str(tmp_path / "trunk")
    env = dict(os.environ, DETECTRON2_DATASETS=tiny_data_root, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "deepacc.tools.pretrain", "--config-file", QUICK_CONFIG,
                        "--epochs", "1", "--batch-size", "16", "--output", out] + TINY_OPTS,
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    summary = json.loads([l for l in r.stdout.splitlines() if l.startswith("{")][-1])
    assert summary["train_crops"] > 100 and summary["val_crops"] > 10
    weights = os.path.join(out, "model_pretrained.pth")
    run = train_net(["--config-file", QUICK_CONFIG, *TINY_OPTS, "SOLVER.MAX_ITER", "2", "DATASETS.TEST", "()",
                     "MODEL.WEIGHTS", weights, "OUTPUT_DIR", str(tmp_path / "det")], tiny_data_root)
    assert run.returncode == 0, run.stdout + run.stderr
    # nothing of the trunk was skipped; only the parts pretraining does not have are new
    skipped = [l for l in run.stdout.splitlines() if "backbone.body." in l and ("not found" in l or "Skip" in l)]
    assert not skipped, skipped
    # a missing trunk is a named error that says how to make it
    run = train_net(["--config-file", QUICK_CONFIG, *TINY_OPTS, "SOLVER.MAX_ITER", "2", "DATASETS.TEST", "()",
                     "MODEL.WEIGHTS", str(tmp_path / "nope" / "model_pretrained.pth"),
                     "OUTPUT_DIR", str(tmp_path / "det2")], tiny_data_root)
    assert run.returncode != 0 and "deepacc-pretrain --config-file" in run.stdout + run.stderr
    assert "Traceback" not in run.stdout + run.stderr


def test_pretrain_refuses_validation_images_in_training(tiny_data_root, tmp_path):
    env = dict(os.environ, DETECTRON2_DATASETS=tiny_data_root, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "deepacc.tools.pretrain", "--config-file", QUICK_CONFIG,
                        "--train", "deepacc_synth_quick_val", "--val", "deepacc_synth_quick_val",
                        "--output", str(tmp_path / "x")] + TINY_OPTS,
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert r.returncode == 2 and "overlap" in r.stderr and "Traceback" not in r.stderr


def test_detectron2_names_of_the_trunk():
    from deepacc.checkpoint_io import to_detectron2_names

    t = torch.zeros(1)
    state = {"backbone.body.conv1.weight": t, "backbone.body.bn1.running_var": t,
             "backbone.body.layer1.0.conv2.weight": t, "backbone.body.layer1.0.bn2.bias": t,
             "backbone.body.layer3.0.downsample.0.weight": t, "backbone.body.layer3.0.downsample.1.running_mean": t,
             "backbone.body.layer4.2.conv3.weight": t, "backbone.body.bn1.num_batches_tracked": t}
    assert sorted(to_detectron2_names(state)) == sorted([
        "backbone.bottom_up.stem.conv1.weight", "backbone.bottom_up.stem.conv1.norm.running_var",
        "backbone.bottom_up.res2.0.conv2.weight", "backbone.bottom_up.res2.0.conv2.norm.bias",
        "backbone.bottom_up.res4.0.shortcut.weight", "backbone.bottom_up.res4.0.shortcut.norm.running_mean",
        "backbone.bottom_up.res5.2.conv3.weight"])
    with pytest.raises(KeyError, match="fc.weight"):
        to_detectron2_names({"backbone.body.fc.weight": t})
