"""Issue 23: no silent wrong data and bounded memory.

Non-finite or absurd numbers in any input (VOC XML, COCO json, LabelMe json, results files scored by
deepacc-eval) skip that item with a named reason and never stop the rest; ``--resume`` from a
checkpoint that cannot be resumed is refused with one named line (exit 2) before any training;
deepacc-eval keeps at most K detections per image while it streams a results file; a 16-bit image
is converted block by block and a too large one is refused with the limit and how to raise it.
"""
import json
import logging
import math
import os
import tracemalloc

import numpy as np
import pytest
import torch
from PIL import Image

from deepacc.checkpoint_io import (CheckpointError, check_resume_checkpoint, check_resume_fit, check_resume_start,
                                   resume_problems)
from deepacc.data import images
from deepacc.data.coco import DatasetError, load_coco_json, validate_coco_json
from deepacc.data.images import ImageError, image_size, read_image
from deepacc.tools import eval as E
from deepacc.tools.data import main as data_main

from test_data_helpers import load_script
from tv_tiny import QUICK_CONFIG, TINY_OPTS

CATS = [{"id": k + 1, "name": n} for k, n in enumerate([str(j) for j in range(1, 23)] + ["X", "Y"])]


def _gray(h=30, w=40, seed=0):
    a = np.full((h, w), 220, np.uint8)
    a[5:20, 5 + seed:9 + seed] = 40
    return a


# ---------------------------------------------------------------------------------------------- VOC
def _voc_file(src, stem, objects, width="40", height="30", image=True):
    """One XML of ``objects`` = [(name, xmin, ymin, xmax, ymax) as text] and its 40x30 PNG."""
    ann, img = src / "Annotations", src / "JPEGImages"
    ann.mkdir(parents=True, exist_ok=True)
    img.mkdir(parents=True, exist_ok=True)
    objs = "".join(f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax>"
                   f"<ymax>{d}</ymax></bndbox></object>" for n, a, b, c, d in objects)
    (ann / f"{stem}.xml").write_text(f"<annotation><filename>{stem}.png</filename><size><width>{width}</width>"
                                     f"<height>{height}</height></size>{objs}</annotation>")
    if image:
        Image.fromarray(_gray()).save(img / f"{stem}.png")
    return str(ann / f"{stem}.xml")


def test_voc_bad_numbers_skip_their_image_and_the_rest_converts(tmp_path, capsys):
    mod = load_script("prepare_voc")
    src = tmp_path / "voc"
    good = [("1", "2", "2", "10", "20"), ("2", "12", "2", "20", "20")]
    _voc_file(src, "good1", good)
    _voc_file(src, "good2", good)
    bad = {
        "nan": (_voc_file(src, "nan", good + [("X", "nan", "3", "12", "20")]), "object 3 'X': xmin nan is not a finite number"),
        "inf": (_voc_file(src, "inf", good + [("Y", "-inf", "-inf", "inf", "inf")]),
                "object 3 'Y': xmin -inf is not a finite number"),
        "width": (_voc_file(src, "width", good, width="inf"), "<size><width> 'inf' is not a finite number >= 0"),
        "inverted": (_voc_file(src, "inverted", good + [("3", "15", "2", "10", "20")]),
                     "object 3 '3': negative width or height"),
        "outside": (_voc_file(src, "outside", good + [("3", "50", "2", "60", "20")]),
                    "object 3 '3': box [50, 2, 60, 20] lies outside the 40x30 image"),
        "far": (_voc_file(src, "far", good + [("3", "2", "2", "1e308", "20")]),
                "object 3 '3': box [2, 2, 1e+308, 20] reaches farther beyond the 40x30 image"),
    }
    (src / "Annotations" / "folder.xml").mkdir()
    os.symlink(str(tmp_path / "nowhere.xml"), str(src / "Annotations" / "dangling.xml"))
    out = tmp_path / "out"
    rc = mod.main(["--src", str(src), "--out", str(out), "--split", "1,0,0"])
    printed = capsys.readouterr().out
    assert rc == 0
    report = json.loads((out / "prepare_report.json").read_text())
    reasons = {os.path.basename(e["xml"]): e["reason"] for e in report["skipped_images"]}
    for xml, why in bad.values():
        assert reasons[os.path.basename(xml)] == f"{xml}: {why}" or reasons[os.path.basename(xml)].startswith(
            f"{xml}: {why}"), reasons[os.path.basename(xml)]
        assert f"{xml}: {why}" in printed  # named in the summary too
    folder, dangling = str(src / "Annotations" / "folder.xml"), str(src / "Annotations" / "dangling.xml")
    assert reasons["folder.xml"] == f"{folder}: is a folder, not an XML annotation file"
    assert reasons["dangling.xml"] == f"{dangling}: is a dangling symbolic link, not an XML annotation file"
    c = report["counts"]
    assert c["skipped_images_bad_box"] == 5 and c["skipped_images_bad_xml"] == 1 and c["skipped_not_a_file"] == 2
    assert c["images_written"] == 2 and c["train_images"] == 2
    train = out / "annotations" / "train.json"
    assert validate_coco_json(str(train)) == []
    data = json.loads(train.read_text())
    assert sorted(os.path.basename(im["file_name"]) for im in data["images"]) == ["good1.png", "good2.png"]
    assert all(math.isfinite(v) for a in data["annotations"] for v in a["bbox"])


def test_voc_box_problem_rules():
    mod = load_script("prepare_voc")
    assert mod.box_problem(1, 1, 10, 20) is None and mod.box_problem(1, 1, 10, 20, 40, 30) is None
    assert mod.box_problem(1, 1, 10, 20, 10, 20) is None  # touching the border: fine
    assert mod.box_problem(-2, 1, 42, 20, 40, 30) is None  # a little past the border: clipped
    assert "not a finite number" in mod.box_problem(float("nan"), 1, 10, 20)
    assert "negative width or height" in mod.box_problem(5, 1, 4, 20)
    assert "outside the 40x30 image" in mod.box_problem(41, 1, 45, 20, 40, 30)
    assert "outside the 40x30 image" in mod.box_problem(-9, 1, 0, 20, 40, 30)


# --------------------------------------------------------------------------------------------- COCO
def _coco(tmp_path, extra_images=(), extra_anns=()):
    root = tmp_path / "ds"
    (root / "img").mkdir(parents=True)
    (root / "annotations").mkdir()
    images, anns = [], []
    for i in (1, 2):
        Image.fromarray(_gray(seed=i)).save(root / "img" / f"{i}.png")
        images.append({"id": i, "file_name": f"img/{i}.png", "height": 30, "width": 40})
        anns.append({"id": i, "image_id": i, "category_id": 1, "bbox": [5, 5, 4, 15], "area": 60, "iscrowd": 0})
    for im in extra_images:
        Image.fromarray(_gray()).save(root / "img" / f"{im['id']}.png")
        images.append(dict({"file_name": f"img/{im['id']}.png", "height": 30, "width": 40}, **im))
    anns += [dict({"id": 100 + k, "category_id": 1, "iscrowd": 0}, **a) for k, a in enumerate(extra_anns)]
    jf = root / "annotations" / "train.json"
    jf.write_text(json.dumps({"images": images, "annotations": anns, "categories": CATS}))  # NaN -> NaN
    return str(jf), root


def test_coco_validate_flags_non_finite_and_absurd_numbers(tmp_path, capsys):
    nan, inf = float("nan"), float("inf")
    imgs = [{"id": k} for k in range(3, 11)] + [{"id": 11, "height": 0}, {"id": 12, "width": inf}]
    anns = [{"image_id": 3, "bbox": [5, 5, nan, 15]}, {"image_id": 4, "bbox": [5, 5, 4, 15], "area": inf},
            {"image_id": 5, "bbox": [5, 5, 4, 15], "area": -3}, {"image_id": 6, "bbox": [5, 5, 4, 15], "area": 1e12},
            {"image_id": 7, "bbox": [5, 5, 4, 15], "score": nan}, {"image_id": 8, "bbox": [5, 5, -4, 15]},
            {"image_id": 9, "bbox": [100, 100, 4, 15]}, {"image_id": 10, "bbox": [1e308, 5, 4, 15]},
            {"image_id": 11, "bbox": [5, 5, 4, 15]}, {"image_id": 12, "bbox": [5, 5, 4, 15]}]
    jf, root = _coco(tmp_path, imgs, anns)
    img = lambda k: str(root / "img" / f"{k}.png")  # noqa: E731
    expected = [
        f"{img(3)}: annotation 100: bbox [5, 5, nan, 15] must be 4 finite numbers [x, y, w, h]",
        f"{img(4)}: annotation 101: area inf is not a finite number",
        f"{img(5)}: annotation 102: area -3 is negative",
        f"{img(6)}: annotation 103: area 1000000000000.0 is larger than the 40x30 image",
        f"{img(7)}: annotation 104: score nan is not a finite number",
        f"{img(8)}: annotation 105: negative width or height in box [5, 5, -4, 15] (width/height must be > 0)",
        f"{img(9)}: annotation 106: box outside the image: xywh [100, 100, 4, 15] vs image 40x30",
        f"{img(10)}: annotation 107: box outside the image: xywh [1e+308, 5, 4, 15] vs image 40x30",
        f"{img(11)}: invalid height/width in json (0, 40): must be positive integers",
        f"{img(12)}: invalid height/width in json (30, inf): must be positive integers",
    ]
    assert data_main(["validate", jf]) == 1
    out, err = capsys.readouterr()
    for line in expected:
        assert line in out.splitlines(), (line, out)
    assert f"INVALID: {len(expected)} problem(s)" in err
    for kind in ("non-finite or absurd area", "non-finite score", "negative width or height", "malformed box",
                 "box outside the image", "invalid height/width"):
        assert kind in err
    assert img(1) not in out and img(2) not in out


def test_coco_bad_items_are_skipped_with_skip_invalid(tmp_path, caplog):
    from deepacc.config import load_config
    from deepacc.data.preflight import check_training_datasets

    jf, root = _coco(tmp_path, [{"id": 3}], [{"image_id": 3, "bbox": [5, 5, float("nan"), 15]}])
    with pytest.raises(DatasetError) as e:
        load_coco_json(jf)
    assert [d["image_id"] for d in e.value.usable] == [1, 2]
    cfg = load_config(QUICK_CONFIG, ["DATASETS.CHECK", "header"])
    with pytest.raises(DatasetError, match="bbox .* must be 4 finite numbers"):
        check_training_datasets(cfg, ["x"], get_dicts=lambda name: load_coco_json(jf, dataset_name=name))
    cfg = load_config(QUICK_CONFIG, ["DATASETS.CHECK", "header", "DATASETS.SKIP_INVALID", "True"])
    dicts = check_training_datasets(cfg, ["x"], get_dicts=lambda name: load_coco_json(jf, dataset_name=name))
    assert [d["image_id"] for d in dicts] == [1, 2]
    assert "DATASETS.SKIP_INVALID: 1 image(s) of x left out" in caplog.text and "3.png" in caplog.text
    # a problem of the json itself is never skipped: nothing tells which images it concerns
    data = json.loads(open(jf).read())
    data["categories"][0]["name"] = "banana"
    with open(jf, "w") as f:
        json.dump(data, f)
    with pytest.raises(DatasetError) as e:
        check_training_datasets(cfg, ["x"], get_dicts=lambda name: load_coco_json(jf, dataset_name=name))
    assert e.value.usable is None


# ------------------------------------------------------------------------------------------ LabelMe
def test_labelme_non_finite_items_skipped_and_non_files_named(tmp_path):
    from deepacc.data.labelme import convert_folder

    src = tmp_path / "lm"
    src.mkdir()
    tri = [[10, 5], [30, 5], [20, 25]]

    def write(stem, shapes, **kw):
        Image.fromarray(_gray(60, 80)).save(src / f"{stem}.png")
        data = dict({"shapes": shapes, "imagePath": f"{stem}.png", "imageData": None, "imageHeight": 60,
                     "imageWidth": 80}, **kw)
        (src / f"{stem}.json").write_text(json.dumps(data))

    shape = lambda pts: {"label": "chr", "points": pts, "shape_type": "polygon"}  # noqa: E731
    write("good", [shape(tri), shape([[40, 5], [50, 5], [float("nan"), 25]]),
                   shape([[40, 5], [float("inf"), 5], [45, 25]]), shape([[40, 5], [1e308, 5], [45, 25]])])
    write("badsize", [shape(tri)], imageWidth=float("inf"))
    (src / "dir.json").mkdir()
    os.symlink(str(tmp_path / "gone.json"), str(src / "link.json"))
    report = convert_folder(str(src), str(tmp_path / "out"), fractions=(1, 0, 0))
    assert report["counts"]["images_converted"] == 1 and report["counts"]["annotations"] == 1
    shapes = {s["shape"]: s["reason"] for s in report["skipped_shapes"]}
    assert shapes[1].startswith("non-finite coordinate (nan/inf) in point 2")
    assert shapes[2].startswith("non-finite coordinate (nan/inf) in point 1")
    assert shapes[3].startswith("coordinate far outside the 80x60 image")
    files = {os.path.basename(e["file"]): e["reason"] for e in report["skipped_files"]}
    assert files["badsize.json"] == "imageWidth inf is not a positive integer"
    assert files["dir.json"] == "is a folder, not a LabelMe json file"
    assert files["link.json"] == "is a dangling symbolic link, not a LabelMe json file"


# ------------------------------------------------------------------------------------- deepacc-eval
def _gt(tmp_path, n_images=2):
    images, anns = [], []
    for i in range(1, n_images + 1):
        images.append({"id": i, "file_name": f"img{i}.png", "height": 100, "width": 200})
        anns.append({"id": i, "image_id": i, "category_id": 1, "bbox": [0, 0, 10, 40], "area": 400, "iscrowd": 0})
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"images": images, "annotations": anns, "categories": CATS}))
    return gt


def _eval(argv, capsys):
    rc = E.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


GOOD = {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 40], "score": 0.9}


def test_results_with_non_finite_numbers_are_skipped_and_counted(tmp_path, capsys):
    gt = _gt(tmp_path)
    res = tmp_path / "res.json"
    rows = [json.dumps(GOOD), json.dumps(dict(GOOD, image_id=2)),
            '{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 40], "score": NaN}',
            '{"image_id": 1, "category_id": 1, "bbox": [0, 0, Infinity, 40], "score": 0.5}',
            json.dumps(dict(GOOD, bbox=[0, 0, -1, 4])),
            '{"image_id": 2, "category_id": 1, "bbox": [0, 0, 1, 4], "score": 0.5, "class_probs": [' +
            ", ".join(["NaN"] + ["0.04"] * 24) + "]}"]
    res.write_text("[" + ",\n".join(rows) + "]")
    rc, out, err = _eval(["--gt", gt, "--results", res, "--output", tmp_path / "ev"], capsys)
    assert rc == 0, err
    assert "deepacc-eval: warning: 4 detection(s) skipped for non-finite or absurd numbers" in err
    for reason in ("results[2]: score nan is not a finite number",
                   "results[3]: bbox [0, 0, inf, 40] has a non-finite value (nan or inf)",
                   "results[4]: bbox [0, 0, -1, 4] has a negative width or height",
                   "results[5]: class_probs [nan, 0.04, "):
        assert f"{res}: {reason}" in err
    assert "2 detection(s) on 2 image(s)" in out
    inputs = json.loads((tmp_path / "ev" / "metrics_deepacc.json").read_text())["inputs"]
    assert inputs["skipped_detections"]["count"] == 4 and len(inputs["skipped_detections"]["reasons"]) == 4
    assert inputs["dropped_detections"]["count"] == 0
    # a malformed entry is still an error (exit 2), its non-finite numbers named with it
    res.write_text('[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10], "score": NaN}]')
    rc, _, err = _eval(["--gt", gt, "--results", res], capsys)
    assert rc == 2 and "results[0]: bbox has 3 numbers" in err and "results[0]: score nan is not a finite" in err


def test_results_top_k_per_image_while_reading(tmp_path, capsys):
    gt = _gt(tmp_path)
    scores = [0.3, 0.9, 0.5, 0.9, 0.7, 0.1]  # image 1; the two 0.9 tie: file order
    rows = [dict(GOOD, bbox=[k, 0, 10, 40], score=s) for k, s in enumerate(scores)] + [dict(GOOD, image_id=2)]
    res = tmp_path / "res.json"
    res.write_text(json.dumps(rows))
    g, cats = E.load_ground_truth(str(gt))
    preds, info = E.read_coco_results(str(res), g, cats, max_dets_per_image=3)
    p1 = {p["image_id"]: p for p in preds}[1]["instances"]
    assert p1["scores"].tolist() == [0.9, 0.9, 0.7]  # the 3 best, kept in file order
    assert p1["boxes"][:, 0].tolist() == [1, 3, 4]
    assert info["num_dropped"] == 3 and info["images_capped"] == 1 and info["num_results"] == 7
    rc, out, err = _eval(["--gt", gt, "--results", res, "--max-dets-per-image", "3", "--output", tmp_path / "ev"],
                         capsys)
    assert rc == 0
    assert ("deepacc-eval: warning: 3 detection(s) dropped on 1 image(s): beyond the 3 highest-scored of their "
            "image (--max-dets-per-image 3;") in err
    assert "4 detection(s) on 2 image(s)" in out
    inputs = json.loads((tmp_path / "ev" / "metrics_deepacc.json").read_text())["inputs"]
    assert inputs["dropped_detections"] == {"count": 3, "images": 1, "max_dets_per_image": 3}
    # the same metrics as a file holding only the kept detections
    kept = tmp_path / "kept.json"
    kept.write_text(json.dumps([rows[1], rows[3], rows[4], rows[6]]))
    _, flat_kept, _ = _eval(["--gt", gt, "--results", kept, "--json"], capsys)
    _, flat_capped, _ = _eval(["--gt", gt, "--results", res, "--max-dets-per-image", "3", "--json"], capsys)
    assert json.loads(flat_capped) == json.loads(flat_kept)
    # the default is documented and far above a detector's 100
    assert E.MAX_DETECTIONS_PER_IMAGE == 2400 and E.get_parser().get_default("max_dets_per_image") == 2400
    rc, _, err = _eval(["--gt", gt, "--results", res, "--max-dets-per-image", "0"], capsys)
    assert rc == 2 and "--max-dets-per-image: expected an integer >= 1, got '0'" in err


def test_results_stream_named_errors_and_bounded_memory(tmp_path, capsys, monkeypatch):
    import deepacc.jsonstream as J

    gt = _gt(tmp_path, n_images=4)
    res = tmp_path / "res.json"
    res.write_text(json.dumps([GOOD, GOOD])[:-1] + ", {\"image_id\": 1 \"x\": 2}]")
    rc, _, err = _eval(["--gt", gt, "--results", res], capsys)
    assert rc == 2 and f"{res}: not valid json (Expecting ',' delimiter: line 1 (char " in err
    res.write_text(json.dumps({"annotations": []}))
    rc, _, err = _eval(["--gt", gt, "--results", res], capsys)
    assert rc == 2 and "top level must be a list of detections" in err and "got a dict" in err
    # 20000 detections read in chunks of 4 kB: only the kept ones stay in memory
    monkeypatch.setattr(J, "CHUNK_CHARS", 4096)
    rng = np.random.default_rng(0)
    rows = [{"image_id": int(rng.integers(1, 5)), "category_id": int(rng.integers(1, 25)),
             "bbox": [round(float(v), 2) for v in rng.uniform(1, 90, 4)], "score": round(float(rng.random()), 4)}
            for _ in range(20000)]
    res.write_text(json.dumps(rows))
    g, cats = E.load_ground_truth(str(gt))
    tracemalloc.start()
    try:
        preds, info = E.read_coco_results(str(res), g, cats, max_dets_per_image=50)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info["num_results"] == 20000 and info["num_dropped"] == 20000 - 4 * 50
    assert sum(len(p["instances"]["scores"]) for p in preds) == 200
    best = sorted((r["score"] for r in rows if r["image_id"] == 1), reverse=True)[:50]
    assert sorted({p["image_id"]: p for p in preds}[1]["instances"]["scores"].tolist(), reverse=True) == best
    assert peak < 2_000_000, peak  # json.load alone would hold the 20000 dicts (~10 MB)


def test_predict_dir_skips_non_finite_detections_and_refuses_huge_files(tmp_path, capsys, monkeypatch):
    gt = _gt(tmp_path)
    pred = tmp_path / "pred"
    pred.mkdir()
    dets = [{"box": [0, 0, 10, 40], "class": "1", "score": 0.9}, {"box": [0, 0, 10, 40], "class": "1", "score": "NaN"},
            {"box": [5, 0, 1, 40], "class": "2", "score": 0.8}]
    text = json.dumps({"file_name": str(tmp_path / "img1.png"), "detections": dets}).replace('"NaN"', "NaN")
    (pred / "img1.json").write_text(text)
    rc, out, err = _eval(["--gt", gt, "--predict-dir", pred], capsys)
    assert rc == 0, err
    assert "warning: 2 detection(s) skipped for non-finite or absurd numbers" in err
    assert f"{pred / 'img1.json'}: detections[1]: score nan is not a finite number" in err
    assert f"{pred / 'img1.json'}: detections[2]: box [5, 0, 1, 40] has x1 < x0 or y1 < y0" in err
    monkeypatch.setattr(E, "MAX_PREDICT_FILE_BYTES", 100)
    rc, _, err = _eval(["--gt", gt, "--predict-dir", pred], capsys)
    assert rc == 2 and f"{pred / 'img1.json'}: 0 MiB, more than a deepacc-predict output can be" in err
    assert "deepacc.tools.eval.MAX_PREDICT_FILE_BYTES" in err


# -------------------------------------------------------------------------------------------- images
def test_image_over_the_pixel_limit_names_the_limit_and_how_to_raise_it(tmp_path, monkeypatch):
    p = tmp_path / "g.png"
    Image.fromarray(_gray(20, 30)).save(p)
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 500)
    for reader in (image_size, read_image):
        with pytest.raises(ImageError) as e:
            reader(p)
        assert str(e.value) == (f"{p}: image is 30 x 20 = 600 pixels, more than the maximum 500 (deepacc.data.images."
                                "MAX_IMAGE_PIXELS; raise it with the environment variable "
                                "DEEPACC_MAX_IMAGE_PIXELS=<pixels>)")
    monkeypatch.setenv("DEEPACC_MAX_IMAGE_PIXELS", "1_000")
    assert read_image(p).shape == (20, 30)
    monkeypatch.setenv("DEEPACC_MAX_IMAGE_PIXELS", "100")
    with pytest.raises(ImageError, match=r"more than the maximum 100 \(the environment variable "
                                         r"DEEPACC_MAX_IMAGE_PIXELS\)"):
        read_image(p)
    monkeypatch.setenv("DEEPACC_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ImageError, match="DEEPACC_MAX_IMAGE_PIXELS='lots' is not a positive integer"):
        image_size(p)
    # validate names it too
    jf, root = _coco(tmp_path)
    monkeypatch.delenv("DEEPACC_MAX_IMAGE_PIXELS")
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 1000)
    assert any("more than the maximum 1000" in str(q) for q in validate_coco_json(jf))


def _reference_minmax(a):
    """The whole-image conversion the block-wise one must equal."""
    a = a.astype(np.float64)
    finite = np.isfinite(a)
    a = np.where(finite, a, np.nan)
    lo, hi = np.nanmin(a), np.nanmax(a)
    if hi <= lo:
        return np.full(a.shape, 0 if hi == 0 else 255, np.uint8)
    return np.clip(np.rint(np.nan_to_num((a - lo) * (255.0 / (hi - lo)), nan=0.0)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("kind", ["u16", "i32", "f32"])
def test_high_bit_images_convert_block_by_block_with_the_same_result(tmp_path, monkeypatch, kind):
    rng = np.random.default_rng(1)
    a = {"u16": lambda: rng.integers(300, 4000, (97, 61)).astype(np.uint16),
         "i32": lambda: rng.integers(-70000, 70000, (97, 61)).astype(np.int32),
         "f32": lambda: (rng.random((97, 61)) * 500).astype(np.float32)}[kind]()
    if kind == "f32":
        a[3, 4], a[5, 6] = np.nan, np.inf
    p = tmp_path / "x.tif"
    Image.fromarray(a).save(p)
    monkeypatch.setattr(images, "_BLOCK_PIXELS", 500)  # many blocks
    assert np.array_equal(read_image(p), _reference_minmax(a))


def test_16bit_image_peak_memory_is_bounded(tmp_path):
    h, w = 1500, 2000  # 3 MP; numpy's allocations are traced (Pillow's own are not)
    a = np.random.default_rng(0).integers(200, 4000, (h, w)).astype(np.uint16)
    p = tmp_path / "g16.tif"
    Image.fromarray(a).save(p)
    del a
    tracemalloc.start()
    try:
        out = read_image(p)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.shape == (h, w)
    # the 8-bit output (1 B/pixel) + a few MB of blocks, whatever the size (measured: + 6 MB); the
    # whole-image float64 conversion took more than 24 B/pixel (a 100-megapixel TIFF peaked at 3.45 GB)
    assert peak < h * w + 10 * 2 ** 20, (peak - h * w) / 2 ** 20


# -------------------------------------------------------------------------------------------- resume
@pytest.fixture
def data_root(tiny_data_root, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", tiny_data_root)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield tiny_data_root
    # train_net.py's logging writes to this test's captured stderr: detach it, so that it never
    # writes to a closed stream in later tests
    root = logging.getLogger()
    for h in getattr(root, "_deepacc_handlers", []):
        root.removeHandler(h)
        h.close()
    root._deepacc_handlers = []


def _train(capsys, *argv):
    from deepacc.tools import train as T

    flags = [a for a in argv if a.startswith("--")]
    opts = [a for a in argv if not a.startswith("--")]
    with pytest.raises(SystemExit) as e:
        T.main(["--engine", "torchvision", "--config-file", QUICK_CONFIG] + flags + TINY_OPTS + opts)
    return e.value.code, capsys.readouterr().err


def _run_dir(tmp_path, name, content):
    out = tmp_path / name
    out.mkdir()
    if isinstance(content, dict):
        torch.save(content, str(out / "model_0000005.pth"))
    (out / "last_checkpoint").write_text("model_0000005.pth")
    return out


def _tiny_model_state(*opts):
    from deepacc.config import load_config
    from deepacc.tv.model import build_model

    return build_model(load_config(QUICK_CONFIG, TINY_OPTS + list(opts))).state_dict()


@pytest.mark.parametrize("case,content,message", [
    ("weightless", {"iteration": 5}, "holds no 'model' entry (only iteration): not a checkpoint written by training"),
    ("optimizer_only", {"optimizer": {"state": {}, "param_groups": []}, "iteration": 5},
     "holds no 'model' entry (only iteration, optimizer)"),
    ("empty_model", {"model": {}, "iteration": 5}, "'model' holds no weights (an empty dict)"),
    ("bad_iteration", {"model": {"w": torch.zeros(2)}, "iteration": "abc"},
     "'iteration' 'abc' (str) is not an iteration number (an integer >= 0)"),
    ("negative_iteration", {"model": {"w": torch.zeros(2)}, "iteration": -3}, "'iteration' -3 (int) is not"),
    ("bad_optimizer", {"model": {"w": torch.zeros(2)}, "iteration": 5, "optimizer": "x"},
     "'optimizer' is a str, expected the dict of its state"),
])
def test_resume_refuses_a_checkpoint_it_cannot_resume(capsys, tmp_path, data_root, case, content, message):
    out = _run_dir(tmp_path, case, content)
    ckpt = out / "model_0000005.pth"
    code, err = _train(capsys, "--resume", "SOLVER.MAX_ITER", "2", "DATASETS.TEST", "()", "OUTPUT_DIR", str(out))
    assert code == 2 and "Traceback" not in err
    assert f"train_net.py: {ckpt}: {message}" in err, err
    assert f"--resume refused; delete {out / 'last_checkpoint'} to start from MODEL.WEIGHTS" in err
    assert not (out / "model_final.pth").exists() and not (out / "metrics.json").exists()


def test_resume_refuses_weights_of_another_model_before_training(capsys, tmp_path, data_root):
    out = _run_dir(tmp_path, "other", {"model": _tiny_model_state("MODEL.ROI_BOX_HEAD.FC_DIM", "32"), "iteration": 1})
    code, err = _train(capsys, "--resume", "SOLVER.MAX_ITER", "3", "DATASETS.TEST", "()", "OUTPUT_DIR", str(out))
    assert code == 2 and "Traceback" not in err
    assert f"{out / 'model_0000005.pth'}: does not hold this model's weights: " in err
    assert "parameter(s) of another shape (roi_heads.box_head" in err and "--resume refused" in err
    assert not (out / "model_final.pth").exists() and not (out / "metrics.json").exists()


def test_resume_tag_naming_a_folder_or_being_one(capsys, tmp_path, data_root):
    out = _run_dir(tmp_path, "names_folder", None)
    (out / "model_0000005.pth").mkdir()
    code, err = _train(capsys, "--resume", "SOLVER.MAX_ITER", "2", "OUTPUT_DIR", str(out))
    assert code == 2 and (f"{out / 'last_checkpoint'}: names 'model_0000005.pth', which is a folder of {out}, "
                          "not a checkpoint file") in err
    out2 = tmp_path / "is_folder"
    (out2 / "last_checkpoint").mkdir(parents=True)
    code, err = _train(capsys, "--resume", "SOLVER.MAX_ITER", "2", "OUTPUT_DIR", str(out2))
    assert code == 2 and f"{out2 / 'last_checkpoint'}: is a folder, not the tag file naming the last checkpoint" in err
    # --eval-only --resume reads the same checkpoint through the same check
    out3 = _run_dir(tmp_path, "eval_weightless", {"iteration": 5})
    code, err = _train(capsys, "--eval-only", "--resume", "OUTPUT_DIR", str(out3))
    assert code == 2 and "holds no 'model' entry" in err


def test_resume_checks_without_the_command_line(tmp_path):
    from deepacc.tv.checkpoint import AtomicCheckpointer

    model = torch.nn.Linear(3, 2)
    ck = AtomicCheckpointer(model, str(tmp_path))
    assert check_resume_start(str(tmp_path)) == ""  # no tag: nothing to resume
    ck.save("model_0000004", iteration=4)
    assert check_resume_start(str(tmp_path)) == str(tmp_path / "model_0000004.pth")
    assert AtomicCheckpointer(torch.nn.Linear(3, 2), str(tmp_path)).resume_or_load("", resume=True)["iteration"] == 4
    # another model: refused by the fit check (and by nothing when the caller judges the fit itself)
    other = AtomicCheckpointer(torch.nn.Linear(5, 2), str(tmp_path))
    with pytest.raises(CheckpointError, match=r"model_0000004\.pth: does not hold this model's weights: 1 "
                                              r"parameter\(s\) of another shape \(weight: checkpoint \(2, 3\) vs "
                                              r"model \(2, 5\)\) \(a checkpoint of another config\?\)"):
        other.resume_or_load("", resume=True)
    other = AtomicCheckpointer(torch.nn.Sequential(torch.nn.Linear(3, 2)), str(tmp_path))
    other.refuse_unfit_resume = False
    other.resume_or_load("", resume=True)
    assert other.incompatible.missing_keys  # left to check_loaded_weights (--eval-only, --allow-untrained)
    # a state that does not load is named, not a traceback
    torch.save({"model": model.state_dict(), "iteration": 4, "optimizer": {"state": {}, "param_groups": [{}]}},
               str(tmp_path / "model_0000004.pth"))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(CheckpointError, match=r"its saved state does not load into this run \(KeyError: 'params'\)"):
        AtomicCheckpointer(model, str(tmp_path), optimizer=opt).resume_or_load("", resume=True)
    assert resume_problems({"model": {"w": torch.zeros(1)}, "iteration": 3, "input_reference_size": float("nan")}) \
        == ["'input_reference_size' nan is not a finite number >= 0"]
    assert resume_problems({"model": {"w": "x"}, "iteration": True})[0] == "'model' entry 'w' is a str, not a tensor"
    with pytest.raises(CheckpointError, match="no such file"):
        check_resume_checkpoint(str(tmp_path / "absent.pth"))

    class Incompatible:
        missing_keys = ["a.weight", "bn.num_batches_tracked"]
        incorrect_shapes = []

    with pytest.raises(CheckpointError, match=r"1 parameter\(s\) of the model missing \(a.weight\)"):
        check_resume_fit("x.pth", Incompatible())
