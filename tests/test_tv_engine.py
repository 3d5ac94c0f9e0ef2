"""The torchvision engine: label conversion, data mapping, schedule, checkpoints, resume, DDP, eval-only."""
import glob
import json
import os
import re
import signal
import time

import numpy as np
import pytest
import torch

from deepacc.config import get_cfg, load_config
from deepacc.tv.checkpoint import AtomicCheckpointer
from deepacc.data.transforms import normalize_image
from deepacc.tv.dataloader import MetaphaseMapper
from deepacc.tv.model import build_model
from deepacc.tv.roi_heads import core_to_tv_labels, tv_to_core_labels
from deepacc.tv.optim import WarmupMultiStep
from tv_tiny import QUICK_CONFIG, TINY_OPTS, train_net


def tiny_cfg(*extra):
    return load_config(QUICK_CONFIG, TINY_OPTS + list(extra))


def test_label_conversion_between_engine_and_core():
    tv = torch.tensor([0, 1, 2, 23, 24, 0])
    core = tv_to_core_labels(tv, 24)
    assert core.tolist() == [24, 0, 1, 22, 23, 24]  # background -> K, class "1" -> 0, "Y" -> 23
    fg = core < 24
    assert torch.equal(core_to_tv_labels(core[fg]), tv[fg])


def test_per_image_normalisation():
    img = np.array([[0, 50], [100, 250]], dtype=np.uint8)
    out = normalize_image(img, "per_image")
    assert out.mean() == pytest.approx(0.0, abs=1e-6) and out.std() == pytest.approx(1.0, abs=1e-5)
    assert np.all(normalize_image(np.full((3, 3), 7, np.uint8), "per_image") == 0)
    assert normalize_image(img, "none")[1, 1] == 250.0
    with pytest.raises(ValueError, match="per_image"):
        normalize_image(img, "zscore")


def test_mapper_flip_moves_boxes_with_pixels(tmp_path):
    import cv2

    img = np.full((40, 60), 255, np.uint8)
    img[10:20, 5:15] = 0  # a dark chromosome at x 5..15
    path = str(tmp_path / "a.png")
    cv2.imwrite(path, img)
    d = {"file_name": path, "height": 40, "width": 60, "image_id": 1,
         "annotations": [{"bbox": [5.0, 10.0, 15.0, 20.0], "bbox_mode": 0, "category_id": 20, "iscrowd": 0}]}
    mapper = MetaphaseMapper(get_cfg(), is_train=True)
    seen = set()
    torch.manual_seed(0)
    for _ in range(20):
        image, target, _ = mapper(d)
        x0, y0, x1, y1 = target["boxes"][0].round().int().tolist()
        plane = image[0].numpy()
        assert plane[y0:y1, x0:x1].max() < plane.mean()  # the box still covers the dark pixels
        assert target["classes"].tolist() == [20]  # core classes (the ROI heads convert for torchvision)
        seen.add(x0)
    assert seen == {5, 45}  # both orientations occur (p = 0.5)


def test_mapper_rejects_size_mismatch(tmp_path):
    import cv2

    path = str(tmp_path / "b.png")
    cv2.imwrite(path, np.zeros((10, 12), np.uint8))
    with pytest.raises(ValueError, match="b.png.*12x10"):
        MetaphaseMapper(get_cfg(), False)({"file_name": path, "height": 20, "width": 12, "annotations": []})


def test_warmup_multistep_schedule():
    cfg = get_cfg()
    cfg.merge_from_list(["SOLVER.MAX_ITER", 100, "SOLVER.STEPS", (60, 90), "SOLVER.WARMUP_ITERS", 10,
                         "SOLVER.WARMUP_FACTOR", 0.1, "SOLVER.GAMMA", 0.1])
    f = WarmupMultiStep(cfg)
    assert f(0) == pytest.approx(0.1)
    assert f(5) == pytest.approx(0.1 * 0.5 + 0.5)
    assert f(10) == pytest.approx(1.0) and f(59) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.1) and f(89) == pytest.approx(0.1)
    assert f(90) == pytest.approx(0.01) and f(99) == pytest.approx(0.01)


def test_training_checkpoint_loads_with_weights_only(tmp_path):
    from deepacc.tv.optim import build_lr_scheduler, build_optimizer

    cfg = tiny_cfg("SOLVER.MAX_ITER", "100", "SOLVER.STEPS", "(60, 90)")
    model = build_model(cfg)
    opt = build_optimizer(cfg, model)
    sched = build_lr_scheduler(cfg, opt)
    opt.step()
    sched.step()
    AtomicCheckpointer(model, str(tmp_path), optimizer=opt, scheduler=sched).save("model_final", iteration=0)
    state = torch.load(str(tmp_path / "model_final.pth"), map_location="cpu", weights_only=True)
    assert state["scheduler"]["lr_lambdas"][0]["milestones"] == [60, 90]
    fresh = build_model(cfg)
    fresh_sched = build_lr_scheduler(cfg, build_optimizer(cfg, fresh))
    AtomicCheckpointer(fresh, str(tmp_path), scheduler=fresh_sched).resume_or_load("", resume=True)
    assert fresh_sched.last_epoch == 1


def test_epoch_schedule_from_config():
    from deepacc.config import resolve_epoch_schedule

    cfg = load_config(os.path.join(os.path.dirname(QUICK_CONFIG), "..", "DeepACC_R101_FPN_2x.yaml"))
    resolve_epoch_schedule(cfg, 2034)  # the paper's training set, batch size 1
    assert cfg.SOLVER.MAX_ITER == 24 * 2034 and cfg.SOLVER.STEPS == (16 * 2034, 22 * 2034)
    assert cfg.SOLVER.BASE_LR == 0.02 and cfg.SOLVER.MOMENTUM == 0.9 and cfg.INPUT.RANDOM_FLIP == "horizontal"


@pytest.mark.parametrize("config,method", [("faster_rcnn_R18_synth_cpu.yaml", "Faster R-CNN"),
                                           ("DeepACC_R18_synth_cpu.yaml", "DeepACC")])
def test_evaluator_table_names_the_configs_method(config, method, tmp_path):
    """The printed table of the engine's evaluation names the config's model, not always DeepACC."""
    import contextlib
    import io

    from deepacc.tv.evaluation import build_evaluator

    cfg = load_config(os.path.join(os.path.dirname(QUICK_CONFIG), config), ["OUTPUT_DIR", str(tmp_path)])
    dicts = [{"image_id": 1, "file_name": "a.png", "height": 100, "width": 100,
              "annotations": [{"bbox": [10.0, 10.0, 30.0, 60.0], "bbox_mode": 0, "category_id": 0}]}]
    probs = np.zeros((1, 25))
    probs[0, 0], probs[0, 24] = 0.9, 0.1
    det = {"boxes": np.array([[10.0, 10.0, 30.0, 60.0]]), "scores": np.array([0.9]), "classes": np.array([0]),
           "class_probs": probs}
    ev = build_evaluator(cfg, "toy", dicts)
    assert ev.method == method
    ev.process([{"image_id": 1, "instances": det, "instances_top1": det}])
    with contextlib.redirect_stdout(io.StringIO()) as out:
        res = ev.evaluate()
    assert res["Acc"] == 100.0
    rows = [r for r in out.getvalue().splitlines() if r.startswith("| ")]
    assert rows[0].startswith("| Method ") and rows[1].startswith(f"| {method} ")


def test_model_outputs_both_detection_sets_in_image_coordinates():
    torch.manual_seed(0)
    cfg = tiny_cfg("INPUT.MIN_SIZE_TEST", "100", "INPUT.MAX_SIZE_TEST", "400")
    model = build_model(cfg).eval()
    with torch.no_grad():
        out = model([torch.randn(3, 150, 200)])[0]  # resized to 100x133 inside, boxes mapped back
    for det in (out.instances, out.instances_top1):
        assert det.class_probs.shape[1] == 25
        b = det.boxes
        assert b.shape[0] > 0 and float(b[:, 2].max()) <= 200 + 1e-3 and float(b[:, 3].max()) <= 150 + 1e-3
        assert float(b[:, 2].max()) > 140  # not left in the 133-pixel-wide resized frame
    # top-1 detections carry the arg-max foreground class of their proposal
    top1 = out.instances_top1
    assert torch.equal(top1.class_probs[:, :24].argmax(1), top1.classes)


def test_one_gray_plane_as_three_channels_gives_the_same_model_input_and_losses():
    """The mapper hands the model one plane seen as three channels; the model resizes it once and skips
    the identity normalisation. The model input equals that of a materialised 3-channel image up to the
    last bit of the resize (the CPU's 1- and 3-channel bilinear kernels round differently), and so do
    the losses."""
    from deepacc.data.transforms import to_model_input

    gray = (np.random.default_rng(0).random((300, 400)) * 255).astype(np.uint8)
    plane = to_model_input(gray)
    assert plane.shape == (3, 300, 400) and plane.stride(0) == 0
    torch.manual_seed(0)
    cfg = tiny_cfg("INPUT.MIN_SIZE_TEST", "150", "INPUT.MAX_SIZE_TEST", "200", "INPUT.MIN_SIZE_TRAIN", "(150,)",
                   "INPUT.MAX_SIZE_TRAIN", "200")
    model = build_model(cfg).eval()
    assert model.transform._identity_normalize
    (a, _), (b, _) = model.transform([plane]), model.transform([plane.contiguous()])
    assert a.image_sizes == b.image_sizes == [(150, 200)] and a.tensors.shape == b.tensors.shape
    assert torch.equal(a.tensors[0, 0], a.tensors[0, 2]) and torch.allclose(a.tensors, b.tensors, rtol=0, atol=1e-5)
    with torch.no_grad():
        assert len(model([plane])[0].instances.boxes) > 0
    model.train()
    target = {"boxes": torch.tensor([[10.0, 10.0, 60.0, 40.0], [100.0, 100.0, 130.0, 190.0]]),
              "classes": torch.tensor([3, 7])}
    torch.manual_seed(1)
    la = model([plane], [dict(target)])
    torch.manual_seed(1)
    lb = model([plane.contiguous()], [dict(target)])
    assert la.keys() == lb.keys() and all(torch.allclose(la[k], lb[k], rtol=1e-3, atol=1e-5) for k in la)
    # a model that normalises (PIXEL_MEAN/STD not 0/1) still does
    assert not build_model(tiny_cfg("MODEL.PIXEL_MEAN", "[1.0, 2.0, 3.0]")).transform._identity_normalize


def test_image_without_proposals_gives_empty_detections():
    torch.manual_seed(0)
    model = build_model(tiny_cfg()).eval()
    features = {k: torch.zeros(1, 32, 8, 8) for k in ("0", "1", "2", "3")}
    with torch.no_grad():
        out, _ = model.roi_heads(features, [torch.zeros(0, 4)], [(144, 192)])
    for det in (out[0].instances, out[0].instances_top1):
        assert det.boxes.shape == (0, 4) and det.class_probs.shape == (0, 25)


class _FakeWeights:
    def __init__(self, state, fail=False):
        self.state, self.fail = state, fail

    def get_state_dict(self, progress=True, **kwargs):
        assert kwargs == {"check_hash": True, "weights_only": True}  # read safely, hash-checked
        if self.fail:
            raise OSError("no network")
        return self.state


def test_imagenet_weights_are_loaded_and_rescaled_to_the_input_convention(monkeypatch):
    import torchvision

    from deepacc.tv.model import imagenet_input_scale, load_imagenet_backbone

    cfg = load_config(os.path.join(os.path.dirname(QUICK_CONFIG), "..", "DeepACC_R101_FPN_2x.yaml"),
                      ["MODEL.RESNETS.DEPTH", "18", "MODEL.WEIGHTS", ""])
    reference = torchvision.models.resnet18(weights=None).state_dict()
    enum = type("W", (), {"DEFAULT": _FakeWeights(reference)})
    monkeypatch.setattr(torchvision.models, "get_model_weights", lambda name: enum)
    model = build_model(cfg)
    load_imagenet_backbone(model, cfg)
    body = model.backbone.body.state_dict()
    assert torch.equal(body["layer3.0.conv1.weight"], reference["layer3.0.conv1.weight"])
    k = imagenet_input_scale(cfg)
    assert torch.allclose(k, torch.full((3,), 1 / 57.375), rtol=1e-4)  # per-image z-scores x 57.375
    assert torch.allclose(body["conv1.weight"], reference["conv1.weight"] * k.view(1, 3, 1, 1))
    # raw 0..255 pixels with torchvision's own mean/std give back torchvision's filters
    cfg.merge_from_list(["INPUT.NORMALIZATION", "none", "MODEL.PIXEL_STD", [58.395, 57.12, 57.375]])
    assert torch.allclose(imagenet_input_scale(cfg), torch.ones(3), atol=1e-3)

    enum.DEFAULT = _FakeWeights(reference, fail=True)
    with pytest.raises(RuntimeError, match="ImageNet weights for ResNet-18.*MODEL.WEIGHTS"):
        load_imagenet_backbone(model, cfg)


def test_atomic_checkpoint_survives_a_failed_save(tmp_path, monkeypatch):
    model = torch.nn.Linear(3, 2)
    ck = AtomicCheckpointer(model, str(tmp_path))
    ck.save("model_final", iteration=1)
    good = (tmp_path / "model_final.pth").read_bytes()

    def broken_save(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # killed mid-write

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        ck.save("model_final", iteration=2)
    assert (tmp_path / "model_final.pth").read_bytes() == good
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_final.pth"]  # no temp file left


def _iterations(output_dir):
    with open(os.path.join(output_dir, "metrics.json")) as f:
        return [json.loads(line)["iteration"] for line in f if '"total_loss"' in line]


@pytest.mark.slow
def test_killed_run_resumes_from_last_checkpoint(tiny_data_root, tmp_path):
    out = str(tmp_path / "run")
    args = ["--config-file", QUICK_CONFIG] + TINY_OPTS + [
        "SOLVER.MAX_ITER", "40", "SOLVER.CHECKPOINT_PERIOD", "3", "DATASETS.TEST", "()",
        "INPUT.SCALE_AWARE.ENABLED", "True", "OUTPUT_DIR", out]
    proc = train_net(args, tiny_data_root, popen=True)
    deadline = time.time() + 300
    while not glob.glob(os.path.join(out, "model_0000005.pth")):
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "no checkpoint written"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)  # no chance to clean up
    proc.wait()
    last = open(os.path.join(out, "last_checkpoint")).read().strip()
    done = int(re.search(r"model_(\d+)\.pth", last).group(1))
    assert done >= 5 and not glob.glob(os.path.join(out, ".tmp-*"))
    # What a kill during a checkpoint write leaves (the temp file of the dead process), and rows the
    # killed run logged after its last checkpoint, the last one cut mid-write
    stale = os.path.join(out, f".tmp-{proc.pid}-model_{done + 3:07d}.pth")
    with open(stale, "wb") as f:
        f.write(b"x" * 1000)
    with open(os.path.join(out, "metrics.json"), "a") as f:
        f.write(json.dumps({"iteration": done + 1, "total_loss": 9.0, "from_killed_run": True}) + "\n")
        f.write('{"iteration": ')

    res = train_net(["--resume"] + args[:-2] + ["SOLVER.MAX_ITER", str(done + 4), "OUTPUT_DIR", out], tiny_data_root)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"at iteration {done + 1}" in res.stdout + res.stderr
    iters = _iterations(out)
    assert iters[-1] == done + 3  # the last iteration of the resumed run
    assert len(iters) == len(set(iters))  # one row per iteration after the resume
    assert "from_killed_run" not in open(os.path.join(out, "metrics.json")).read()
    assert not os.path.exists(stale) and not glob.glob(os.path.join(out, ".tmp-*"))
    assert "temporary file of a run killed while writing" in res.stdout + res.stderr
    assert os.path.exists(os.path.join(out, "model_final.pth"))
    state = torch.load(os.path.join(out, "model_final.pth"), map_location="cpu", weights_only=False)
    assert state["iteration"] == done + 3 and "optimizer" in state and "scheduler" in state
    # the scale-aware reference measured on the training images travels with every checkpoint and the config
    ref, frame = state["input_reference_size"], state["input_reference_frame"]
    written = open(os.path.join(out, "config.yaml")).read()
    assert ref > 0 and frame > 0 and f"REFERENCE_SIZE: {ref}" in written and f"REFERENCE_FRAME: {frame}" in written


@pytest.mark.slow
def test_two_process_gloo_training_and_eval_only(tiny_data_root, tmp_path):
    out = str(tmp_path / "ddp")
    base = ["--config-file", QUICK_CONFIG] + TINY_OPTS
    res = train_net(["--num-gpus", "2", "--dist-url", "auto"] + base + [
        "SOLVER.MAX_ITER", "3", "SOLVER.IMS_PER_BATCH", "2", "OUTPUT_DIR", out], tiny_data_root)
    log = res.stdout + res.stderr
    assert res.returncode == 0, log
    assert "running on the torchvision engine" in log and "(2 process(es))" in log
    assert "mAP_max" in log  # evaluation ran across both processes and printed the table
    final = os.path.join(out, "model_final.pth")
    model = build_model(tiny_cfg())
    AtomicCheckpointer(model).load(final, checkpointables=[])  # loads into a fresh model
    state = torch.load(final, map_location="cpu", weights_only=False)
    assert torch.equal(model.state_dict()["roi_heads.box_head.bbox_pred.weight"],
                       state["model"]["roi_heads.box_head.bbox_pred.weight"])

    res = train_net(["--eval-only"] + base + ["MODEL.WEIGHTS", final, "OUTPUT_DIR", str(tmp_path / "ev")], tiny_data_root)
    assert res.returncode == 0, res.stdout + res.stderr
    metrics = json.load(open(tmp_path / "ev" / "inference" / "deepacc_synth_quick_val" / "metrics_deepacc.json"))
    assert metrics["num_images"] == 2 and "mAP_max" in metrics
