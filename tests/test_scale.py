"""Scale-aware resizing: the chromosome-size measurement follows magnification, the factor brings an
image's chromosomes to the reference size, and both engines' inference paths use it."""
import cv2
import numpy as np
import pytest
import torch

from deepacc.config import get_cfg, load_config
from deepacc.data.scale import (CHECKPOINT_KEY, FRAME_KEY, chromosome_size, framed_stats, measure_reference,
                                measure_spread, resize_factor, standard_factor)

from test_karyotype import make_spread
from tv_tiny import QUICK_CONFIG, TINY_OPTS


@pytest.fixture(scope="module")
def spread():
    img, boxes, classes = make_spread("46,XY", seed=4)
    return img


def _resize(img, f):
    return cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)


def test_size_follows_magnification_and_ignores_framing(spread):
    base = chromosome_size(spread)
    assert base is not None and base > 3
    resampled = {f: chromosome_size(_resize(spread, f)) / f for f in (0.5, 0.75, 1.5, 2.0)}
    # within 8 % from 0.5x to 2x on this small synthetic spread (on the composed G-band val images:
    # +4.4 % at 0.5x, -1.1 % at 2x)
    assert max(resampled.values()) / min(resampled.values()) < 1.08, resampled
    for f, v in resampled.items():
        assert v / base == pytest.approx(1.0, abs=0.08), f
    # framing: the same spread with a wide margin of background, or a darker / weaker staining
    h, w = spread.shape
    framed = np.full((h * 2, w * 2), int(np.percentile(spread, 90)), np.uint8)
    framed[h // 2:h // 2 + h, w // 4:w // 4 + w] = spread
    assert chromosome_size(framed) == pytest.approx(base, rel=0.03)
    faint = (255 - (255 - spread.astype(np.float32)) * 0.5).astype(np.uint8)
    assert chromosome_size(faint) == pytest.approx(base, rel=0.05)
    assert chromosome_size(np.full((50, 60), 200, np.uint8)) is None


def test_resize_factor_rules(spread):
    cfg = get_cfg()
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 480, 640
    h, w = spread.shape
    base = standard_factor(h, w, 480, 640)
    cfg.INPUT.SCALE_AWARE.ENABLED = False
    assert resize_factor(spread, cfg, 10.0) == (base, {"mode": "standard", "factor": base, "chromosome_size": None,
                                                       "reference": 10.0})
    cfg.INPUT.SCALE_AWARE.ENABLED = True
    assert resize_factor(spread, cfg)[1]["mode"] == "standard"  # no reference known
    # within the tolerance the usual factor stays; beyond it, the size goes to the tolerance's edge
    cfg.INPUT.SCALE_AWARE.TOLERANCE = 0.15
    size = chromosome_size(spread)
    assert resize_factor(spread, cfg, size * base * 1.1)[0] == pytest.approx(base)
    assert resize_factor(spread, cfg, size * base * 1.5)[0] == pytest.approx(base * 1.5 * 0.85)
    assert resize_factor(spread, cfg, size * base / 1.5)[0] == pytest.approx(base / 1.5 * 1.15)
    cfg.INPUT.SCALE_AWARE.TOLERANCE = 0.0
    f, info = resize_factor(spread, cfg, size * base * 1.3)
    assert info["mode"] == "scale_aware" and f == pytest.approx(base * 1.3)
    # the same spread at half the magnification gets twice the factor: equal chromosome size at the model
    f2, _ = resize_factor(_resize(spread, 0.5), cfg, size * base * 1.3)
    assert f2 == pytest.approx(2 * f, rel=0.08)  # the ~5 % native-vs-resampled offset above
    # bounds: MAX_FACTOR x the usual factor, and the long side
    f3, _ = resize_factor(spread, cfg, size * base * 100)
    assert f3 == pytest.approx(min(base * cfg.INPUT.SCALE_AWARE.MAX_FACTOR, cfg.INPUT.SCALE_AWARE.MAX_SIZE / max(h, w)))
    f4, _ = resize_factor(spread, cfg, size * base / 100)
    assert f4 == pytest.approx(base * cfg.INPUT.SCALE_AWARE.MIN_FACTOR)


def test_reference_measured_at_the_test_resize(spread, tmp_path):
    paths = []
    for f in (1.0, 2.0):  # the same content twice, at two magnifications and image sizes
        p = tmp_path / f"s{f}.png"
        cv2.imwrite(str(p), _resize(spread, f))
        paths.append(str(p))
    ref = measure_reference(paths[:1], 480, 640)[0]
    h, w = spread.shape
    assert ref == pytest.approx(chromosome_size(spread) * standard_factor(h, w, 480, 640), rel=1e-6)
    size, frame = measure_reference(paths[:1], 480, 640)
    assert size == ref and frame == pytest.approx(h * w / chromosome_size(spread) ** 2)
    assert measure_reference([], 480, 640) == (None, None)


def test_framed_stats_do_not_depend_on_framing(spread):
    """The same spread in a frame twice as wide: whole-image statistics change (the paper's per-image
    normalisation), the framed ones do not."""
    h, w = spread.shape
    bg = int(np.percentile(spread, 90))
    wide = np.full((h * 2, w * 2), bg, np.uint8)
    wide[h // 2:h // 2 + h, w // 2:w // 2 + w] = spread
    frame = h * w / measure_spread(spread).size ** 2  # this spread's own frame, in chromosome units
    a = framed_stats(spread, measure_spread(spread), frame)
    b = framed_stats(wide, measure_spread(wide), frame)
    assert b[0] == pytest.approx(a[0], abs=1.0) and b[1] == pytest.approx(a[1], rel=0.05)
    assert spread.std() / wide.std() > 1.5  # what the whole-image statistics would do
    # as the reference measurement records it: frame area over size squared
    cfg = get_cfg()
    f, info = resize_factor(wide, cfg, 10.0)
    assert "stats" not in info  # no REFERENCE_FRAME yet
    cfg.INPUT.SCALE_AWARE.REFERENCE_FRAME = frame
    f, info = resize_factor(wide, cfg, 10.0)
    assert info["stats"] == pytest.approx(list(b))
    cfg.INPUT.SCALE_AWARE.FRAMED_STATS = False
    assert "stats" not in resize_factor(wide, cfg, 10.0)[1]


def test_torchvision_predictor_uses_the_checkpoint_reference(spread, tmp_path):
    from deepacc.tv.predictor import TorchvisionPredictor
    from deepacc.tv.checkpoint import AtomicCheckpointer
    from deepacc.tv.model import build_model

    cfg = load_config(QUICK_CONFIG, TINY_OPTS)
    model = build_model(cfg)
    ck = AtomicCheckpointer(model, str(tmp_path))
    ck.extra_state = {CHECKPOINT_KEY: 7.5, FRAME_KEY: 900.0}
    ck.save("m")
    state = torch.load(str(tmp_path / "m.pth"), weights_only=True)
    assert state[CHECKPOINT_KEY] == 7.5 and state[FRAME_KEY] == 900.0
    p = TorchvisionPredictor(load_config(QUICK_CONFIG, TINY_OPTS + ["MODEL.WEIGHTS", str(tmp_path / "m.pth"),
                                                                 "INPUT.SCALE_AWARE.ENABLED", "True"]))
    assert (p.cfg.INPUT.SCALE_AWARE.REFERENCE_SIZE, p.cfg.INPUT.SCALE_AWARE.REFERENCE_FRAME) == (7.5, 900.0)
    sizes = []
    for f in (0.5, 1.0, 1.6):  # three image sizes of the same spread
        img = _resize(spread, f)
        out = p(img)
        info = out["input_scale"]
        assert info["mode"] == "scale_aware" and info["reference"] == 7.5 and len(info["stats"]) == 2
        sizes.append(info["chromosome_size"] * info["factor"])
        assert out["instances"]["boxes"].shape[1] == 4
        if len(out["instances"]["boxes"]):  # boxes in the input image's coordinates
            assert out["instances"]["boxes"][:, 2].max() <= img.shape[1] + 1e-3
    assert sizes == pytest.approx([7.5] * 3, rel=1e-6)  # every image brought to the reference size
    off = TorchvisionPredictor(load_config(QUICK_CONFIG, TINY_OPTS + ["MODEL.WEIGHTS", str(tmp_path / "m.pth"),
                                                                   "INPUT.SCALE_AWARE.ENABLED", "False"]))
    assert off(spread)["input_scale"]["mode"] == "standard"


def test_model_scales_follow_the_given_factor():
    from deepacc.tv.model import build_model

    torch.manual_seed(0)
    model = build_model(load_config(QUICK_CONFIG, TINY_OPTS)).eval()
    seen = []
    orig = model.backbone.forward

    def spy(x):
        seen.append(tuple(x.shape[-2:]))
        return orig(x)

    model.backbone.forward = spy
    img = torch.zeros(3, 100, 150)
    with torch.no_grad():
        model([img], scales=[0.5])
        model([img], scales=[None])
        model([img, img], scales=[2.0, None])
    # 0.5 x 100x150 -> 50x75, padded to the size divisibility 32; None -> the usual rule (min(144/100,
    # 192/150) = 1.28 -> 128x192); a batch of 2.0 (200x300) and the rule, padded together
    assert seen == [(64, 96), (128, 192), (224, 320)]
    with pytest.raises(ValueError, match="2 scales for 1 images"):
        model([img], scales=[1.0, 1.0])


@pytest.mark.slow
def test_loader_workers_after_opencv_in_the_parent(tiny_data_root, tmp_path):
    """Evaluation loaders fork workers that measure chromosome sizes: that must not deadlock after the
    parent process used OpenCV's thread pool (as the synthetic generator and the karyogram do)."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import cv2, numpy as np
        cv2.setNumThreads(4)
        big = np.random.default_rng(0).integers(0, 255, (2000, 2000), dtype=np.uint8)
        for _ in range(3):
            cv2.GaussianBlur(cv2.resize(big, (3000, 3000)), (31, 31), 5)  # starts OpenCV's thread pool
        from deepacc.config import load_config
        from deepacc.tv.dataloader import build_test_loader
        from deepacc.tv.dataloader import dataset_dicts
        cfg = load_config({QUICK_CONFIG!r}, {TINY_OPTS!r} + ["DATALOADER.NUM_WORKERS", "2", "INPUT.SCALE_AWARE.ENABLED", "True",
                          "INPUT.SCALE_AWARE.REFERENCE_SIZE", "5.0"])
        n = sum(1 for b in build_test_loader(cfg, dataset_dicts(["deepacc_synth_quick_val"]))
                if b[0][2]["input_scale"]["mode"] == "scale_aware")
        print("done", n)
    """)
    import os

    env = dict(os.environ, DETECTRON2_DATASETS=tiny_data_root)
    res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "done 2" in res.stdout, res.stdout + res.stderr
