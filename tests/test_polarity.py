"""Image polarity (INPUT.POLARITY): bright-on-dark images recognised and inverted where they are read."""
import glob
import json
import os

import cv2
import numpy as np
import pytest
import torch

from deepacc.data.polarity import (
    POLARITIES,
    apply_polarity,
    detect_polarity,
    invert_gray,
    measure_polarity,
)
from deepacc.data.synthetic import generate_spread

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _spread(seed, batch="default", realism=None, size=(320, 240)):
    img, anns, _ = generate_spread(np.random.default_rng(seed), size[0], size[1], batch=batch, realism=realism)
    return img, anns


# ------------------------------------------------------------------------------------------ detection
@pytest.mark.parametrize("batch,realism", [("default", None), ("shifted", None), ("default", True),
                                           ("shifted", {"preset": "default", "nuclei": (3, 6)})])
def test_synthetic_spreads_and_their_inversions_are_classified_right(batch, realism):
    """G-band-like spreads from the project's generator (white or grey slides, uneven illumination,
    nuclei) are dark on light; inverted, they are bright on dark (like Q-band / DAPI)."""
    for seed in range(3):
        img, _ = _spread(seed, batch, realism)
        est = measure_polarity(img)
        assert est.decided and est.polarity == "dark_on_light" and est.margin > 0.5, est
        inv = measure_polarity(255 - img)
        assert inv.decided and inv.polarity == "bright_on_dark" and inv.margin < -0.5, inv
        assert detect_polarity(img) == "dark_on_light" and detect_polarity(255 - img) == "bright_on_dark"


def test_near_uniform_images_are_kept_and_say_so():
    rng = np.random.default_rng(0)
    flat = np.full((300, 400), 200, np.uint8)
    almost = np.clip(200 + rng.normal(0, 1.0, (300, 400)), 0, 255).astype(np.uint8)
    for img in (flat, almost, np.zeros((8, 9), np.uint8)):
        est = measure_polarity(img)
        assert not est.decided and est.polarity == "dark_on_light" and "near-uniform" in est.reason
        out, info = apply_polarity(img, "auto")
        assert out is img and info["inverted"] is False and info["decided"] is False
    # noise without objects: no side wins, no decision
    noise = rng.integers(0, 256, (300, 400)).astype(np.uint8)
    est = measure_polarity(noise)
    assert not est.decided and "no clear object side" in est.reason
    assert apply_polarity(noise)[0] is noise
    # "bright_on_dark" inverts whatever the detection says
    out, info = apply_polarity(flat, "bright_on_dark")
    assert info["inverted"] and np.all(out == 55)


def test_16_bit_and_float_images():
    img, _ = _spread(1)
    rng = np.random.default_rng(1)
    s16 = (img.astype(np.uint16) * 16 + rng.integers(0, 16, img.shape)).astype(np.uint16)  # 12-bit data
    assert measure_polarity(s16).polarity == "dark_on_light"
    inv16 = invert_gray(s16)
    assert inv16.dtype == np.uint16 and inv16.min() == s16.min() and inv16.max() == s16.max()
    est = measure_polarity(inv16)
    assert est.decided and est.polarity == "bright_on_dark"
    assert s16.min() <= est.background <= s16.max()  # in the image's own units
    assert detect_polarity(1.0 - img.astype(np.float32) / 255) == "bright_on_dark"
    # a near-uniform 16-bit image (1000 +- 3): no decision
    flat16 = (1000 + rng.integers(-3, 4, (200, 300))).astype(np.uint16)
    est = measure_polarity(flat16)
    assert not est.decided and "near-uniform" in est.reason


def test_16_bit_file_read_and_inverted_equals_the_original_within_rounding(tmp_path):
    """The reader rescales 16-bit files by their own min/max; inverting its 8-bit output (255 - x) is
    inverting the file's values within their own range."""
    from deepacc.data.images import read_image

    img, _ = _spread(2)
    s16 = (img.astype(np.uint16) * 257).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "dark.png"), s16)
    cv2.imwrite(str(tmp_path / "bright.png"), invert_gray(s16))
    dark, bright = read_image(str(tmp_path / "dark.png")), read_image(str(tmp_path / "bright.png"))
    out, info = apply_polarity(bright, "auto")
    assert info["detected"] == "bright_on_dark" and info["inverted"]
    assert np.abs(out.astype(int) - dark.astype(int)).max() <= 1


def test_cutouts_of_one_chromosome():
    """Small images (single-chromosome crops, the cut-out rule): dark on white even when the
    chromosome covers most of the crop; a crop with room around it is recognised both ways."""
    crop = np.full((40, 20), 255, np.uint8)
    crop[2:38, 2:18] = np.linspace(40, 200, 36).astype(np.uint8)[:, None]  # banded, covers 72 %
    assert measure_polarity(crop).polarity == "dark_on_light" and measure_polarity(crop).decided
    roomy = np.full((60, 40), 250, np.uint8)
    roomy[10:50, 14:26] = 60
    assert detect_polarity(roomy) == "dark_on_light" and detect_polarity(255 - roomy) == "bright_on_dark"


def test_real_gband_crops_when_present():
    """A sample of the real G-band chromosome crops (docs/data.md: all 23,992 were measured)."""
    from deepacc.data.images import read_image

    files = sorted(glob.glob(os.path.join(REPO, "..", "shared", "data", "gband_cells", "*", "clase*", "*.tiff")))
    if not files:
        pytest.skip("../shared/data/gband_cells not present")
    for f in files[:: max(1, len(files) // 200)]:
        assert detect_polarity(read_image(f)) == "dark_on_light", f


def test_auto_leaves_a_gband_image_bit_identical():
    paths = sorted(glob.glob(os.path.join(REPO, "datasets", "gband_cells", "val", "*.png")))[:3]
    from deepacc.data.images import read_image

    images = [read_image(p) for p in paths] + [_spread(s)[0] for s in range(3)]
    for img in images:
        before = img.copy()
        out, info = apply_polarity(img, "auto")
        assert out is img and np.array_equal(out, before) and out.dtype == before.dtype
        assert info == {**info, "mode": "auto", "detected": "dark_on_light", "decided": True, "inverted": False}
    out, info = apply_polarity(images[0], "dark_on_light")
    assert out is images[0] and not info["inverted"]


def test_bad_mode_is_named():
    img = np.full((10, 10), 128, np.uint8)
    with pytest.raises(ValueError, match="INPUT.POLARITY must be one of 'auto', 'dark_on_light', 'bright_on_dark'"):
        apply_polarity(img, "inverted")
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        measure_polarity(np.zeros((4, 4, 3), np.uint8))


# ------------------------------------------------------------------------------------------- config
def test_config_key_default_and_validation():
    from deepacc.config import ConfigError, check_config, get_cfg, validate_config

    cfg = get_cfg()
    assert cfg.INPUT.POLARITY == "auto" and validate_config(cfg) == []
    for value in POLARITIES:
        cfg.INPUT.POLARITY = value
        assert validate_config(cfg) == []
    cfg.INPUT.POLARITY = "inverted"
    assert validate_config(cfg) == [
        "INPUT.POLARITY = 'inverted': must be one of 'auto', 'dark_on_light', 'bright_on_dark'"]
    with pytest.raises(ConfigError, match="INPUT.POLARITY = 'inverted'"):
        check_config(cfg, "my.yaml")


# -------------------------------------------------------------------------------------------- mappers
def _files(tmp_path, seed=3):
    img, anns = _spread(seed)
    cv2.imwrite(str(tmp_path / "dark.png"), img)
    cv2.imwrite(str(tmp_path / "bright.png"), 255 - img)
    h, w = img.shape
    d = {"height": h, "width": w, "image_id": 1,
         "annotations": [dict(a, bbox=[float(v) for v in a["bbox"]]) for a in anns]}
    return img, dict(d, file_name=str(tmp_path / "dark.png")), dict(d, file_name=str(tmp_path / "bright.png"))


@pytest.mark.parametrize("is_train", [True, False])
def test_tv_mapper_sees_an_inverted_image_as_its_original(tmp_path, is_train):
    from deepacc.config import get_cfg
    from deepacc.tv.dataloader import MetaphaseMapper

    _, dark, bright = _files(tmp_path)
    cfg = get_cfg()
    cfg.INPUT.RANDOM_FLIP = "none"
    a, ta, _ = MetaphaseMapper(cfg, is_train)(dark)
    b, tb, _ = MetaphaseMapper(cfg, is_train)(bright)
    assert torch.allclose(a, b, atol=1e-5) and torch.equal(ta["boxes"], tb["boxes"])
    # today's behaviour on request: the inverted image reaches the model as stored
    cfg.INPUT.POLARITY = "dark_on_light"
    c, _, _ = MetaphaseMapper(cfg, is_train)(bright)
    assert torch.allclose(c, -a, atol=1e-5)  # per-image standardisation of 255 - x is minus that of x
    # a G-band image: "auto" gives exactly what "dark_on_light" gives
    d, _, _ = MetaphaseMapper(cfg, is_train)(dark)
    assert torch.equal(a, d)
    cfg.INPUT.POLARITY = "upside_down"
    with pytest.raises(ValueError, match="INPUT.POLARITY"):
        MetaphaseMapper(cfg, is_train)


@pytest.mark.parametrize("is_train", [True, False])
def test_d2_mapper_sees_an_inverted_image_as_its_original(tmp_path, is_train):
    pytest.importorskip("detectron2", reason="Detectron2 is not installed: its mapper is not tested here")
    from detectron2.data import transforms as T

    from deepacc.d2 import DeepACCDatasetMapper

    _, dark, bright = _files(tmp_path)
    aug = [T.ResizeShortestEdge(200, 1000)]
    a = DeepACCDatasetMapper(is_train, augmentations=aug)(dark)
    b = DeepACCDatasetMapper(is_train, augmentations=aug)(bright)
    assert torch.allclose(a["image"], b["image"], atol=1e-5)
    if is_train:
        assert torch.equal(a["instances"].gt_boxes.tensor, b["instances"].gt_boxes.tensor)
    c = DeepACCDatasetMapper(is_train, augmentations=aug, polarity="dark_on_light")(dark)
    assert torch.equal(a["image"], c["image"])
    m = DeepACCDatasetMapper(is_train, augmentations=aug)
    m.prepare_image(255 - np.asarray(cv2.imread(dark["file_name"], 0)))
    assert m.last_polarity["inverted"] and m.last_polarity["detected"] == "bright_on_dark"
    with pytest.raises(ValueError, match="INPUT.POLARITY"):
        DeepACCDatasetMapper(is_train, augmentations=aug, polarity="upside_down")


def test_reference_size_and_pretraining_crops_see_the_model_view(tmp_path):
    """Scale-aware inference's reference size and deepacc-pretrain's crops are measured / cut on the
    images as the model sees them."""
    from deepacc.data.scale import measure_reference
    from deepacc.pretrain import cut_crops

    _, dark, bright = _files(tmp_path)
    assert measure_reference([bright["file_name"]], 240, 320) == measure_reference([dark["file_name"]], 240, 320)
    a, b = (cut_crops([d], 240, 320, 32, progress=False) for d in (dark, bright))
    assert torch.equal(a.dark, b.dark) and torch.equal(a.mean, b.mean) and len(a) == len(b) > 0
    raw = cut_crops([bright], 240, 320, 32, progress=False, polarity="dark_on_light")
    assert not torch.equal(raw.dark, a.dark)


# ---------------------------------------------------------------------------------- deepacc-predict
def test_predictor_inverts_and_the_json_records_it(tmp_path, capsys):
    """The torchvision predictor applies INPUT.POLARITY (the model gets the dark-on-light image) and
    deepacc-predict writes what was detected and done; --polarity overrides the config."""
    from deepacc.config import load_config
    from deepacc.tools import predict as P
    from deepacc.tv.predictor import TorchvisionPredictor
    from tv_tiny import QUICK_CONFIG, TINY_OPTS

    img, _ = _spread(4, size=(192, 144))
    cv2.imwrite(str(tmp_path / "q.png"), 255 - img)
    torch.manual_seed(0)
    predictor = TorchvisionPredictor(load_config(QUICK_CONFIG, TINY_OPTS), allow_untrained=True)
    seen = []
    inner = predictor.model
    predictor.model = lambda images, **kw: seen.append(images[0].clone()) or inner(images, **kw)
    pred = predictor(255 - img)
    assert pred["polarity"]["detected"] == "bright_on_dark" and pred["polarity"]["inverted"]
    from deepacc.data.transforms import to_model_input

    assert torch.allclose(seen[0], to_model_input(img), atol=1e-5)  # the model saw the original

    base = ["--config-file", QUICK_CONFIG, "--input", str(tmp_path / "q.png"), "--no-progress", "--engine",
            "torchvision", "--allow-untrained", "--report"]
    assert P.main(base + ["--output", str(tmp_path / "a")] + TINY_OPTS) == 0
    rec = json.loads((tmp_path / "a" / "q.json").read_text())
    assert rec["polarity"]["mode"] == "auto" and rec["polarity"]["detected"] == "bright_on_dark"
    assert rec["polarity"]["inverted"] is True and rec["settings"]["polarity"] == "auto"
    assert "Image polarity: bright on dark (detected); inverted for the model" in (
        tmp_path / "a" / "report.html").read_text()
    assert P.main(base + ["--output", str(tmp_path / "b"), "--polarity", "dark_on_light"] + TINY_OPTS) == 0
    rec = json.loads((tmp_path / "b" / "q.json").read_text())
    assert rec["polarity"]["mode"] == "dark_on_light" and rec["polarity"]["detected"] == "bright_on_dark"
    assert rec["polarity"]["inverted"] is False and rec["settings"]["polarity"] == "dark_on_light"
    capsys.readouterr()
    # a wrong value in the config: one line naming the key, exit 2, no traceback
    assert P.main(base + ["--output", str(tmp_path / "c")] + TINY_OPTS + ["INPUT.POLARITY", "inverted"]) == 2
    err = capsys.readouterr().err
    assert "INPUT.POLARITY = 'inverted': must be one of" in err and "Traceback" not in err
    # and on the command line: argparse names the choices
    with pytest.raises(SystemExit):
        P.main(base + ["--output", str(tmp_path / "d"), "--polarity", "inverted"])
    assert "--polarity: invalid choice: 'inverted'" in capsys.readouterr().err


def test_predict_json_karyogram_and_polarity_with_an_injected_predictor(tmp_path):
    """A predictor that applies the polarity reports it: the JSON records it and the karyogram is cut
    out of the dark-on-light image the model saw (the overlay shows the image as given). A predictor
    that says nothing gets ``"polarity": null``."""
    from deepacc.tools import predict as P
    from test_karyotype import fake_prediction, make_spread

    img, boxes, classes = make_spread("46,XX", seed=3)
    (tmp_path / "d").mkdir()
    (tmp_path / "b").mkdir()
    cv2.imwrite(str(tmp_path / "d" / "s.png"), img)
    cv2.imwrite(str(tmp_path / "b" / "s.png"), 255 - img)

    def factory(args):
        assert args.polarity in (None, "auto")

        def predictor(gray):
            gray, info = apply_polarity(gray, "auto")
            assert np.array_equal(gray, img)
            return dict(fake_prediction(boxes, classes), polarity=info)

        return predictor

    for name in ("d", "b"):
        assert P.main(["--input", str(tmp_path / name), "--output", str(tmp_path / f"o{name}"), "--no-progress"],
                      predictor_factory=factory) == 0
    rd = json.loads((tmp_path / "od" / "s.json").read_text())
    rb = json.loads((tmp_path / "ob" / "s.json").read_text())
    assert rd["polarity"]["inverted"] is False and rb["polarity"]["inverted"] is True
    assert rd["summary"]["karyotype"] == rb["summary"]["karyotype"] == "46,XX"
    assert (tmp_path / "od" / "s.karyogram.png").read_bytes() == (tmp_path / "ob" / "s.karyogram.png").read_bytes()
    assert (tmp_path / "od" / "s.overlay.png").read_bytes() != (tmp_path / "ob" / "s.overlay.png").read_bytes()

    silent = lambda args: (lambda gray: fake_prediction(boxes, classes))  # noqa: E731
    assert P.main(["--input", str(tmp_path / "d"), "--output", str(tmp_path / "os"), "--no-progress"],
                  predictor_factory=silent) == 0
    assert json.loads((tmp_path / "os" / "s.json").read_text())["polarity"] is None


def test_polarity_flag_reaches_the_config(tmp_path):
    import argparse

    from deepacc.tools.predict import get_parser, setup_cfg

    args = get_parser().parse_args(["--input", "x.png", "--output", str(tmp_path), "--polarity", "bright_on_dark"])
    assert setup_cfg(args).INPUT.POLARITY == "bright_on_dark"
    args = argparse.Namespace(**dict(vars(args), polarity=None))
    assert setup_cfg(args).INPUT.POLARITY == "auto"
