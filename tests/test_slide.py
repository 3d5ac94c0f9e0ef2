"""Slide appearance step (deepacc.data.slide): opt-in realism of the composer and the generator."""
import json
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from deepacc.data.coco import load_coco_json, validate_coco_json
from deepacc.data.images import read_image
from deepacc.data.slide import REALISM_PRESETS, apply_slide, chromosome_width, measure_slide, resolve_realism
from deepacc.data.synthetic import generate_dataset, generate_spread

from test_data_helpers import load_script

SPLITS = ("train", "val", "test")


# ---------------------------------------------------------------- a tiny G-band crop tree (as in test_data_prepare)


def _crop(rng, h, w):
    a = np.full((h, w), 255, np.uint8)
    a[2:h - 2, 2:w - 2] = rng.integers(20, 160, (h - 4, w - 4))
    return a


def _gband_tree(root, cases=("97000001", "97000002", "97000003", "97000004"), cells=1):
    rng = np.random.default_rng(0)
    for case in cases:
        for cell in range(cells):
            cdir = root / f"{case}.{cell + 10}.tiff"
            for k in range(1, 24):  # female cells
                (cdir / f"clase{k}").mkdir(parents=True)
                for i in range(2):
                    h = int(60 - 1.8 * min(k, 22))
                    Image.fromarray(_crop(rng, h, 14)).save(cdir / f"clase{k}" / f"clase{k}_{i}_{case}.{cell + 10}.tiff")


ARGS = ["--size", "640x480", "--split", "0.5,0.25,0.25"]


@pytest.fixture(scope="module")
def gband_src(tmp_path_factory):
    src = tmp_path_factory.mktemp("gband") / "src"
    _gband_tree(src)
    return src


def _spread(seed=0):
    """A small synthetic spread with its chromosome mask (no realism)."""
    img, anns, info = generate_spread(np.random.default_rng(seed), 640, 480, "46,XY", return_masks=True)
    mask = np.zeros(img.shape, bool)
    for x, y, m in info["masks"]:
        mask[y:y + m.shape[0], x:x + m.shape[1]] |= m
    return img, anns, mask


def _file_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- the appearance step


def test_apply_slide_is_deterministic_by_seed():
    img, anns, mask = _spread()
    boxes = [a["bbox"] for a in anns]
    a, ia = apply_slide(img, boxes, np.random.default_rng(7), "default", mask=mask)
    b, ib = apply_slide(img, boxes, np.random.default_rng(7), "default", mask=mask)
    c, _ = apply_slide(img, boxes, np.random.default_rng(8), "default", mask=mask)
    assert a.dtype == np.uint8 and a.shape == img.shape
    assert np.array_equal(a, b) and ia == ib
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, img)


def test_generator_boxes_and_classes_unchanged_by_realism():
    base, anns0, info0 = generate_spread(np.random.default_rng(3), 640, 480, "47,XY,+21")
    for realism in (True, "default", {"rgb": True, "jpeg": (50, 80), "nuclei": (3, 3)}):
        img, anns, info = generate_spread(np.random.default_rng(3), 640, 480, "47,XY,+21", realism=realism)
        assert anns == anns0 and info["batch_params"] == info0["batch_params"]
        assert "realism_params" in info and not np.array_equal(img.reshape(-1)[:base.size], base.reshape(-1))
    # realism=None is today's generator, pixel for pixel
    again, anns1, info1 = generate_spread(np.random.default_rng(3), 640, 480, "47,XY,+21", realism=None)
    assert np.array_equal(again, base) and anns1 == anns0 and "realism_params" not in info1


def test_composer_boxes_unchanged_and_chromosome_pixels_only_lit(gband_src):
    mod = load_script("prepare_gband_cells")
    cells, _ = mod.scan(str(gband_src))
    flat = {k: (0.0, 0.0) for k in ("noise", "texture", "vignetting", "tilt", "halo")}
    spec = resolve_realism({**flat, "nuclei": (2, 2), "debris": (20.0, 20.0)})
    for cell in cells:
        plain, anns0, _ = mod.compose_cell(cell, 640, 480, seed=0)
        real, anns, _, info = mod.compose_cell(cell, 640, 480, seed=0, realism=spec, return_info=True)
        assert anns == anns0
        # with flat illumination, no noise and no halo the chromosome pixels are the plain ones times
        # the background level: no nucleus or speck lands on them
        chrom = plain < 255 - mod.MASK_DARKNESS
        ratio = real[chrom].astype(float) / plain[chrom].astype(float)
        bright = plain[chrom] > 40  # the darkest pixels are dominated by rounding
        assert np.all(np.abs(ratio[bright] - info["params"]["background"] / 255.0) < 0.02)
        assert info["params"]["nuclei"] == 2 and info["debris"] > 0
        assert (real[~chrom] < 250).any()


def test_nuclei_never_cover_a_box_more_than_the_documented_fraction():
    limit = REALISM_PRESETS["default"]["max_box_cover"]
    assert limit == 0.1
    placed = skipped = 0
    for seed in range(6):
        img, anns, mask = _spread(seed)
        boxes = [a["bbox"] for a in anns]
        out, info = apply_slide(img, boxes, np.random.default_rng(seed), {"nuclei": (6, 6), "nucleus_size": (4.0, 9.0)},
                                mask=mask, return_masks=True)
        nm = info["nucleus_mask"]
        placed += len(info["nuclei"])
        skipped += info["nuclei_skipped"]
        assert len(info["nuclei"]) + info["nuclei_skipped"] == 6
        assert not (nm & mask).any()  # never on a chromosome pixel
        for x0, y0, x1, y1 in (map(int, b) for b in boxes):
            assert nm[y0:y1, x0:x1].sum() <= limit * (x1 - x0) * (y1 - y0) + 1e-9
        for n in info["nuclei"]:
            assert n["box_cover"] <= limit
    assert placed >= 10  # most nuclei find a place near the spread
    # a spread that fills the whole image leaves no room: nuclei are skipped, not forced onto boxes
    img = np.full((200, 200), 255, np.uint8)
    img[10:190, 10:190] = 90
    _, info = apply_slide(img, [[0, 0, 200, 200]], np.random.default_rng(0), {"nuclei": (3, 3)},
                          mask=img < 200, white=255)
    assert info["nuclei"] == [] and info["nuclei_skipped"] == 3


def test_jpeg_and_rgb_outputs_are_read_by_the_project_reader(tmp_path):
    img, anns, mask = _spread(1)
    boxes = [a["bbox"] for a in anns]
    gray, _ = apply_slide(img, boxes, np.random.default_rng(0), {"jpeg": (40, 40)}, mask=mask)
    rgb, info = apply_slide(img, boxes, np.random.default_rng(0), {"rgb": True, "jpeg": (60, 90)}, mask=mask)
    assert gray.shape == img.shape and rgb.shape == img.shape + (3,) and rgb.dtype == np.uint8
    assert 60 <= info["params"]["jpeg"] <= 90 and info["params"]["rgb"] is True
    # a colour cast: channels differ on the chromosomes, and the reader's luma is close to the gray rendering
    nojpeg, _ = apply_slide(img, boxes, np.random.default_rng(0), {"rgb": True}, mask=mask)
    plain, _ = apply_slide(img, boxes, np.random.default_rng(0), {}, mask=mask)
    assert np.abs(nojpeg[..., 2].astype(int) - nojpeg[..., 0].astype(int))[mask].mean() > 3
    for arr, name in ((gray, "g.png"), (rgb, "c.png"), (nojpeg, "n.png"), (rgb, "c.jpg"), (gray, "g.tif")):
        assert cv2.imwrite(str(tmp_path / name), arr)
        back = read_image(tmp_path / name)
        assert back.shape == img.shape and back.dtype == np.uint8
    luma = read_image(tmp_path / "n.png").astype(int)
    assert np.abs(luma - plain.astype(int)).mean() < 3.0  # the noise of the channels differs


def test_resolve_realism_presets_and_errors():
    assert resolve_realism(None) is None and resolve_realism(False) is None
    assert resolve_realism(True) == resolve_realism("default") == REALISM_PRESETS["default"]
    assert resolve_realism(True, preset="synthetic")["background"] is None
    spec = resolve_realism({"nuclei": [1, 4], "rgb": True})
    assert spec["nuclei"] == (1, 4) and spec["rgb"] is True and spec["noise"] == REALISM_PRESETS["default"]["noise"]
    assert resolve_realism(spec) == spec  # a resolved spec resolves to itself (json round trip too)
    assert resolve_realism(json.loads(json.dumps(spec))) == spec
    with pytest.raises(KeyError, match="unknown realism parameter"):
        resolve_realism({"sparkles": (0, 1)})
    with pytest.raises(KeyError, match="unknown realism preset"):
        resolve_realism("glossy")
    with pytest.raises(ValueError, match="range"):
        resolve_realism({"noise": (3, 1)})
    with pytest.raises(ValueError, match="1..100"):
        resolve_realism({"jpeg": (0, 50)})


def test_measure_slide_sees_background_noise_and_nuclei():
    img, anns, mask = _spread(2)
    white = np.where(mask, img, 255).astype(np.uint8)
    m0 = measure_slide(white, mask)
    assert m0["bg"] == 255 and m0["noise"] == 0 and m0["nuclei"] == 0 and m0["white_pct"] > 90
    out, info = apply_slide(white, [a["bbox"] for a in anns], np.random.default_rng(0),
                            {"nuclei": (2, 2), "noise": (1.0, 1.0), "vignetting": (0.08, 0.08)}, mask=mask, white=255)
    m1 = measure_slide(out, mask)
    assert 0.7 < m1["noise"] < 1.5 and m1["bg"] < 253 and m1["grad"] > 1 and m1["white_pct"] < 1
    assert m1["nuclei"] == len(info["nuclei"]) == 2
    assert 3.0 < m1["nucleus_size"] < 10.0
    assert abs(chromosome_width(mask) - info["chromosome_width"]) < 0.01


def test_measure_command_line_reads_mfish_pairs(tmp_path, capsys):
    """``python -m deepacc.tools.realism measure`` on a tiny M-FISH-like folder: pairs found (one
    without its label image left out), the DAPI inverted, one table row per measure."""
    from deepacc.data.mfish import mfish_pairs, read_mfish
    from deepacc.tools.realism import main as slide_main

    folder = tmp_path / "A01__XY"
    folder.mkdir()
    dapi = np.full((60, 80), 10, np.uint8)
    labels = np.zeros((60, 80), np.uint8)
    dapi[10:40, 20:28], labels[10:40, 20:28] = 200, 1
    for stem in ("A0101XY", "A0102XY"):
        Image.fromarray(dapi).save(folder / f"{stem}D.tif")
        Image.fromarray(labels).save(folder / f"{stem}K.tif")
    Image.fromarray(dapi).save(folder / "A0103XYD.tif")  # no label image
    pairs = list(mfish_pairs(str(tmp_path)))
    assert [p[0] for p in pairs] == [str(folder / "A0101XYD.tif"), str(folder / "A0102XYD.tif")]
    img, mask = read_mfish(*pairs[0])
    assert img[0, 0] == 245 and img[20, 24] == 55 and mask.sum() == 30 * 8
    assert slide_main(["measure", "--mfish", str(tmp_path)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0] == "| measure | real ADIR |" and len(table) == 2 + 14 + 1 and table[2].startswith("| `bg` | 245.00")


# ---------------------------------------------------------------- defaults unchanged


def test_default_outputs_do_not_need_the_module(tmp_path, gband_src, monkeypatch):
    """The default paths never run the appearance step: the composer gives the same bytes when
    ``apply_slide`` would fail, and the generator the same bytes when the module cannot be imported."""
    import deepacc.data.slide as slide

    mod = load_script("prepare_gband_cells")
    assert mod.main(["--src", str(gband_src), "--out", str(tmp_path / "with"), *ARGS]) == 0
    generate_dataset(str(tmp_path / "synth_with"), 2, seed=5, width=320, height=240, progress=False)

    def boom(*a, **k):
        raise AssertionError("the appearance step ran on a default path")

    monkeypatch.setattr(slide, "apply_slide", boom)
    assert mod.main(["--src", str(gband_src), "--out", str(tmp_path / "without"), *ARGS]) == 0
    monkeypatch.setitem(sys.modules, "deepacc.data.slide", None)  # any import of it now fails
    with pytest.raises(ImportError):
        import deepacc.data.slide  # noqa: F401
    generate_dataset(str(tmp_path / "synth_without"), 2, seed=5, width=320, height=240, progress=False)

    def norm(files, root):  # absolute paths in the report / json differ by the folder name only
        return {k: v.replace(str(root).encode(), b"ROOT") for k, v in files.items()}

    a, b = _file_bytes(tmp_path / "with"), _file_bytes(tmp_path / "without")
    assert norm(a, tmp_path / "with") == norm(b, tmp_path / "without") and len(a) == 4 + 3 + 1  # images, jsons, report
    a, b = _file_bytes(tmp_path / "synth_with"), _file_bytes(tmp_path / "synth_without")
    assert norm(a, tmp_path / "synth_with") == norm(b, tmp_path / "synth_without")
    assert "realism" not in json.loads(a["annotations/train.json"])["info"]


# ---------------------------------------------------------------- the composer's --realistic


def test_composer_realistic_run_validates(tmp_path, gband_src):
    mod = load_script("prepare_gband_cells")
    plain, real = tmp_path / "plain", tmp_path / "real"
    assert mod.main(["--src", str(gband_src), "--out", str(plain), *ARGS]) == 0
    assert mod.main(["--src", str(gband_src), "--out", str(real), *ARGS, "--realistic", "--rgb", "--jpeg", "60,90",
                     "--nuclei", "1,2"]) == 0
    rep = json.load(open(real / "prepare_report.json"))
    assert rep["realism"]["rgb"] is True and rep["realism"]["jpeg"] == [60, 90] and rep["realism"]["nuclei"] == [1, 2]
    assert "realism" not in json.load(open(plain / "prepare_report.json"))
    n = 0
    for s in SPLITS:
        jf = real / "annotations" / f"{s}.json"
        assert validate_coco_json(str(jf)) == []
        data, ref = json.load(open(jf)), json.load(open(plain / "annotations" / f"{s}.json"))
        assert data["annotations"] == ref["annotations"]
        assert [i["file_name"] for i in data["images"]] == [i["file_name"] for i in ref["images"]]
        params = data["info"]["realism_params"]
        assert len(params) == len(data["images"])
        assert all(60 <= p["jpeg"] <= 90 and 1 <= p["nuclei"] <= 2 for p in params)
        for d in load_coco_json(str(jf)):
            with Image.open(d["file_name"]) as im:
                assert im.mode == "RGB"
            g = read_image(d["file_name"])
            assert g.shape == (480, 640) and g.dtype == np.uint8
            assert (g == 255).mean() < 0.05  # no plain white canvas any more
            n += 1
    assert n == 4
    # deterministic: a second run gives the same bytes
    again = tmp_path / "again"
    mod.main(["--src", str(gband_src), "--out", str(again), *ARGS, "--realistic", "--rgb", "--jpeg", "60,90",
              "--nuclei", "1,2"])
    assert _file_bytes(real / "val") == _file_bytes(again / "val")


def test_composer_realistic_drops_a_cell_without_usable_crops(tmp_path, gband_src):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(gband_src, src)
    blank = src / "97000005.10.tiff" / "clase1"
    blank.mkdir(parents=True)
    Image.fromarray(np.full((40, 14), 255, np.uint8)).save(blank / "clase1_0_97000005.10.tiff")
    mod = load_script("prepare_gband_cells")
    assert mod.main(["--src", str(src), "--out", str(tmp_path / "out"), *ARGS, "--realistic"]) == 0
    n = sum(len(json.load(open(tmp_path / "out" / "annotations" / f"{s}.json"))["images"]) for s in SPLITS)
    assert n == 4  # the blank cell is dropped, the others keep their realism


def test_composer_fine_flags_need_realistic(tmp_path, gband_src):
    mod = load_script("prepare_gband_cells")
    for extra in (["--rgb"], ["--jpeg", "50,90"], ["--nuclei", "0,1"], ["--debris", "0,5"]):
        with pytest.raises(SystemExit):
            mod.main(["--src", str(gband_src), "--out", str(tmp_path / "x"), *ARGS, *extra])
    with pytest.raises(SystemExit):
        mod.main(["--src", str(gband_src), "--out", str(tmp_path / "x"), *ARGS, "--realistic", "--jpeg", "0,101"])


def test_generate_dataset_realism_is_recorded_and_readable(tmp_path):
    js = generate_dataset(str(tmp_path / "s"), 2, seed=4, width=320, height=240, progress=False,
                          realism={"rgb": True, "jpeg": (70, 90)})
    plain = generate_dataset(str(tmp_path / "p"), 2, seed=4, width=320, height=240, progress=False)
    assert validate_coco_json(js) == []
    data, ref = json.load(open(js)), json.load(open(plain))
    assert data["annotations"] == ref["annotations"]
    assert data["info"]["realism"]["background"] is None  # the generator's preset keeps its level
    assert len(data["info"]["realism_params"]) == 2
    for d in load_coco_json(js):
        assert read_image(d["file_name"]).shape == (240, 320)
