"""datasets/prepare_labelme.py (deepacc.data.labelme) and the class-agnostic COCO category, on LabelMe json
files written by the tests."""
import base64
import io
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from deepacc.data import catalog
from deepacc.data.coco import check_dataset_dicts, load_coco_json, validate_coco_json, write_coco_json
from deepacc.data.images import read_image
from deepacc.karyotype import AGNOSTIC, CLASS_NAMES

from test_data_helpers import REPO, load_script

H, W = 60, 80  # every test image: 80 wide, 60 high


def gray_image(seed=0, h=H, w=W):
    a = np.full((h, w), 230, np.uint8)
    a[5:25, 10:30] = 40 + seed  # a dark "chromosome"; the seed makes images differ
    a[30:40, 40:50] = 60
    return a


def png_b64(a, mode="L"):
    buf = io.BytesIO()
    img = Image.fromarray(a)
    if mode == "RGB":
        img = img.convert("RGB")
    img.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def poly(label, points, shape_type="polygon"):
    return {"label": label, "points": points, "group_id": None, "shape_type": shape_type, "flags": {}}


def write_labelme(path, shapes, image_data=None, image_path=None, h=H, w=W):
    """A LabelMe json as the annotation tool writes it (imageData base64, or null with imagePath)."""
    data = {"version": "5.2.1", "flags": {}, "shapes": shapes,
            "imagePath": image_path or os.path.basename(path)[:-5] + ".png",
            "imageData": image_data, "imageHeight": h, "imageWidth": w}
    with open(path, "w") as f:
        json.dump(data, f)  # NaN coordinates are written as NaN, as Python-written LabelMe files do


TRI = [[10, 5], [30, 5], [20, 25]]  # box [10, 5, 30, 25]


def mixed_folder(src):
    """The folder of the main test: every kind of file and shape; returns the source folder."""
    os.makedirs(src / "imgs")
    # embedded PNG: named classes, a rectangle, an agnostic polygon, bad shapes
    write_labelme(src / "spread_a.json", [
        poly("chr7", TRI),                                        # 0: class 7, box [10, 5, 30, 25]
        poly("X", [[50, 40], [40, 30]], "rectangle"),             # 1: class X, corners in any order
        poly("chr", [[-1.5, 3], [8, 3], [8, 12], [2, 12]]),       # 2: agnostic, clipped at x = 0
        poly("chr", [[1, 1], [5, 5]]),                            # 3: too few points
        poly("chr", [[40, 20], [45, 20]], "circle"),              # 4: not an area
        poly("chr", [[1, 1], [float("nan"), 2], [3, 9]]),         # 5: NaN
        poly("nucleus", [[60, 40], [70, 40], [65, 50]]),          # 6: unknown label
        poly("1", [[60, 10], [500, 10], [70, 20]]),               # 7: far outside the image
        poly("2", [[60, 10], [60, 30], [60, 20]]),                # 8: zero-area box
        poly("Y", [[60, 10], [70, 20], [80, 30]]),                # 9: collinear: no area
        poly("chr", [[60, 10], [70, 10]], "line"),                # 10: not an area
    ], image_data=png_b64(gray_image(0), "RGB"))
    # referenced image (imagePath in a subfolder), agnostic only
    Image.fromarray(gray_image(1)).save(src / "imgs" / "b.png")
    write_labelme(src / "spread_b.json", [poly("chr", TRI), poly("chromosome", [[40, 30], [50, 30], [50, 40]])],
                  image_path="imgs\\b.png")  # written on Windows
    # class names only
    write_labelme(src / "spread_c.json", [poly("1", TRI), poly("chr7", [[40, 30], [50, 40]], "rectangle")],
                  image_data=png_b64(gray_image(2)))
    # bad files
    write_labelme(src / "missing.json", [poly("chr", TRI)], image_path="nope.png")
    (src / "broken.json").write_text('{"shapes": [')
    Image.fromarray(gray_image(3)).save(src.parent / "outside.png")
    write_labelme(src / "escape.json", [poly("chr", TRI)], image_path="../outside.png")
    write_labelme(src / "badb64.json", [poly("chr", TRI)], image_data="this is not base64 !!!")
    write_labelme(src / "notimage.json", [poly("chr", TRI)], image_data=base64.b64encode(b"hello").decode())
    write_labelme(src / "mismatch.json", [poly("chr", TRI)], image_data=png_b64(gray_image(4)), h=100)
    write_labelme(src / "onlybad.json", [poly("nucleus", TRI)], image_data=png_b64(gray_image(5)))
    (src / "notlabelme.json").write_text('{"images": []}')
    return src


def coco(out, split):
    with open(out / "annotations" / f"{split}.json") as f:
        return json.load(f)


def test_conversion_boxes_segmentation_categories_and_named_problems(tmp_path, capsys):
    mod = load_script("prepare_labelme")
    src, out = mixed_folder(tmp_path / "src"), tmp_path / "out"
    assert mod.main(["--src", str(src), "--out", str(out), "--split", "1,0,0"]) == 0
    printed = capsys.readouterr().out

    # every problem named, all at once, in the summary and the report
    rep = json.load(open(out / "prepare_report.json"))
    files = {os.path.basename(e["file"]): e["reason"] for e in rep["skipped_files"]}
    assert set(files) == {"missing.json", "broken.json", "escape.json", "badb64.json", "notimage.json",
                          "mismatch.json", "onlybad.json", "notlabelme.json"}
    assert "nope.png" in files["missing.json"] and "missing file" in files["missing.json"]
    assert files["broken.json"].startswith("not valid json")
    assert "leads outside the source folder" in files["escape.json"] and "--allow-outside-src" in files["escape.json"]
    assert files["badb64.json"].startswith("imageData is not valid base64")
    assert files["notimage.json"].startswith("imageData does not decode to an image")
    assert files["mismatch.json"].startswith("size mismatch: imageWidth x imageHeight = 80x100, the image")
    assert files["onlybad.json"] == "no chromosome shape left of its 1 shape(s)"
    assert files["notlabelme.json"] == "not a LabelMe annotation: no 'shapes' list"
    shapes = {(os.path.basename(e["file"]), e["shape"]): e["reason"] for e in rep["skipped_shapes"]}
    a = "spread_a.json"
    assert set(shapes) == {(a, k) for k in (3, 4, 5, 6, 7, 8, 9, 10)} | {("onlybad.json", 0)}
    assert shapes[(a, 3)] == "too few points (2; a polygon needs at least 3)"
    assert shapes[(a, 4)].startswith("shape_type 'circle' is not an area")
    assert shapes[(a, 10)].startswith("shape_type 'line' is not an area")
    assert shapes[(a, 5)].startswith("non-finite coordinate (nan/inf) in point 1")
    assert shapes[(a, 6)].startswith("unknown label 'nucleus'")
    assert shapes[(a, 7)] == "coordinate far outside the 80x60 image: point 1 (500, 10)"
    assert shapes[(a, 8)].startswith("zero-area box")
    assert shapes[(a, 9)] == "the polygon encloses no area (its points lie on one line)"
    assert len(rep["problems"]) == 8 + 9
    for p in rep["problems"]:
        assert p in printed  # listed at the end
    assert f"{src / a}: shapes[3] (label 'chr'): too few points" in printed
    assert rep["unknown_labels"]["nucleus"]["shapes"] == 2
    assert "unknown label 'nucleus': 2 shape(s) skipped in 2 file(s)" in printed
    assert rep["counts"]["images_converted"] == 3 and rep["counts"]["shapes_clipped_to_the_image"] == 1
    assert rep["counts"]["images_from_imageData"] == 2 and rep["counts"]["images_from_imagePath"] == 1

    # boxes, segmentation, categories
    train = coco(out, "train")
    assert [im["file_name"] for im in train["images"]] == ["train/spread_a.png", "train/spread_b.png",
                                                          "train/spread_c.png"]
    cats = {c["id"]: c["name"] for c in train["categories"]}
    assert cats[25] == "chromosome" and cats[7] == "7" and cats[23] == "X" and len(cats) == 25
    anns = [x for x in train["annotations"] if x["image_id"] == 1]
    assert [(x["category_id"], x["bbox"]) for x in anns] == [
        (7, [10.0, 5.0, 20.0, 20.0]),       # COCO XYWH
        (23, [40.0, 30.0, 10.0, 10.0]),
        (25, [0.0, 3.0, 8.0, 9.0]),         # clipped at x = 0
    ]
    assert anns[0]["segmentation"] == [[10.0, 5.0, 30.0, 5.0, 20.0, 25.0]]
    assert anns[1]["segmentation"] == [[40.0, 30.0, 50.0, 30.0, 50.0, 40.0, 40.0, 40.0]]
    assert anns[2]["segmentation"] == [[0.0, 3.0, 8.0, 3.0, 8.0, 12.0, 2.0, 12.0]]
    kinds = {im["file_name"]: (im["annotation_kind"], im["annotation_complete"]) for im in train["images"]}
    assert kinds == {"train/spread_a.png": ("mixed", False), "train/spread_b.png": ("agnostic", False),
                     "train/spread_c.png": ("classes", False)}
    for s in ("val", "test"):
        assert coco(out, s)["images"] == [] and len(coco(out, s)["categories"]) == 24

    # the written images are the gray images, and the json loads with the class-agnostic class
    assert validate_coco_json(str(out / "annotations" / "train.json")) == []
    dicts = load_coco_json(str(out / "annotations" / "train.json"))
    assert (read_image(dicts[1]["file_name"]) == gray_image(1)).all()
    assert (read_image(dicts[2]["file_name"]) == gray_image(2)).all()
    assert np.abs(read_image(dicts[0]["file_name"]).astype(int) - gray_image(0)).max() <= 1  # RGB -> luma
    assert [a["category_id"] for a in dicts[0]["annotations"]] == [6, 22, AGNOSTIC]
    assert dicts[0]["annotations"][0]["bbox"] == [10.0, 5.0, 30.0, 25.0]
    assert [a["category_id"] for a in dicts[1]["annotations"]] == [AGNOSTIC, AGNOSTIC]
    assert dicts[1]["annotation_kind"] == "agnostic" and dicts[1]["annotation_complete"] is False


def test_options_ignore_label_outside_src_complete_min_invert(tmp_path, capsys):
    mod = load_script("prepare_labelme")
    src, out = mixed_folder(tmp_path / "src"), tmp_path / "out"
    assert mod.main(["--src", str(src), "--out", str(out), "--split", "1,0,0", "--ignore-label", "Nucleus",
                     "--allow-outside-src", "--complete-min", "2", "--invert"]) == 0
    rep = json.load(open(out / "prepare_report.json"))
    assert rep["unknown_labels"] == {} and rep["labels"]["nucleus"] == {"ignored": 2}
    assert not any("nucleus" in p for p in rep["problems"])
    skipped = {os.path.basename(e["file"]) for e in rep["skipped_files"]}
    assert "escape.json" not in skipped and "onlybad.json" in skipped  # still no chromosome there
    train = coco(out, "train")
    assert {im["file_name"]: im["annotation_complete"] for im in train["images"]} == {
        "train/spread_a.png": True, "train/spread_b.png": True, "train/spread_c.png": True,
        "train/escape.png": False}  # one polygon < 2
    assert (read_image(out / "train" / "spread_b.png") == 255 - gray_image(1)).all()
    assert (read_image(out / "train" / "escape.png") == 255 - gray_image(3)).all()  # ../outside.png
    assert "ignored labels (--ignore-label): {'nucleus': 2}" in capsys.readouterr().out


def test_agnostic_category_only_when_needed(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_labelme(src / "a.json", [poly("chr7", TRI), poly("X", [[40, 30], [50, 40]], "rectangle")],
                  image_data=png_b64(gray_image()))
    mod = load_script("prepare_labelme")
    assert mod.main(["--src", str(src), "--out", str(tmp_path / "out"), "--split", "1,0,0"]) == 0
    train = coco(tmp_path / "out", "train")
    assert [c["name"] for c in train["categories"]] == list(CLASS_NAMES)
    assert train["images"][0]["annotation_kind"] == "classes"


def _spreads(src, stems):
    os.makedirs(src, exist_ok=True)
    b64 = png_b64(gray_image())
    for s in stems:
        write_labelme(src / f"{s}.json", [poly("chr", TRI)], image_data=b64)


def test_split_reproducible_and_independent_of_file_order(tmp_path, monkeypatch):
    from deepacc.data.labelme import convert_folder

    stems = [f"cell{i:02d}" for i in range(20)]
    _spreads(tmp_path / "src", stems)
    r1 = convert_folder(str(tmp_path / "src"), str(tmp_path / "o1"), seed=0)
    r2 = convert_folder(str(tmp_path / "src"), str(tmp_path / "o2"), seed=0)
    assert r1["split_of"] == r2["split_of"]
    assert {s: v["images"] for s, v in r1["splits"].items()} == {"train": 14, "val": 3, "test": 3}
    assert r1["split_of"] != convert_folder(str(tmp_path / "src"), str(tmp_path / "o3"), seed=1)["split_of"]
    # files created in another order, and listed by the file system in reverse: the same split
    _spreads(tmp_path / "src2", list(reversed(stems)))
    real = os.listdir
    monkeypatch.setattr(os, "listdir", lambda p=".": list(reversed(real(p))))
    r4 = convert_folder(str(tmp_path / "src2"), str(tmp_path / "o4"), seed=0)
    assert r4["split_of"] == r1["split_of"]
    for s in ("train", "val", "test"):  # same images, same ids
        assert coco(tmp_path / "o4", s)["images"] == coco(tmp_path / "o1", s)["images"]


def test_split_by_case_regex(tmp_path):
    from deepacc.data.labelme import convert_folder

    stems = [f"case{c}_{k}" for c in range(8) for k in range(3)] + ["loose"]
    _spreads(tmp_path / "src", stems)
    rep = convert_folder(str(tmp_path / "src"), str(tmp_path / "out"), seed=3, case_regex=r"^(case\d+)_")
    for c in range(8):
        assert len({rep["split_of"][f"case{c}_{k}"] for k in range(3)}) == 1
    assert rep["stems_without_case_id"] == ["loose"]
    assert sum(v["groups"] for v in rep["splits"].values()) == 9
    cases = {im["case_id"] for s in ("train", "val", "test") for im in coco(tmp_path / "out", s)["images"]
             if "case_id" in im}
    assert cases == {f"case{c}" for c in range(8)}


def test_exit_codes_and_one_line_errors(tmp_path, capsys):
    mod = load_script("prepare_labelme")
    src = tmp_path / "src"
    src.mkdir()
    # no json at all, no folder, bad options: 2 and one named line
    for argv, needle in ((["--src", str(src)], "no LabelMe *.json file"),
                         (["--src", str(tmp_path / "none")], "source folder not found"),
                         (["--src", str(src), "--split", "a,b"], "split fractions"),
                         (["--src", str(src), "--case-regex", "("], "--case-regex")):
        assert mod.main(argv + ["--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("prepare_labelme: error: ") and needle in err
    # files, none convertible: the problems listed, then one error line, exit status 2, no traceback
    (src / "broken.json").write_text("{")
    write_labelme(src / "missing.json", [poly("chr", TRI)], image_path="nope.png")
    r = subprocess.run([sys.executable, os.path.join(REPO, "datasets", "prepare_labelme.py"), "--src", str(src),
                        "--out", str(tmp_path / "out")], capture_output=True, text=True,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "no image converted from 2 LabelMe file(s)" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert f"{src / 'broken.json'}: not valid json" in r.stdout and f"{src / 'missing.json'}: image of" in r.stdout
    assert (tmp_path / "out" / "prepare_report.json").exists()
    assert not (tmp_path / "out" / "annotations").exists()
    # one good file: exit 0
    write_labelme(src / "good.json", [poly("chr", TRI)], image_data=png_b64(gray_image()))
    assert mod.main(["--src", str(src), "--out", str(tmp_path / "out")]) == 0


# ---------------------------------------------------------------- the class-agnostic category in COCO


def _agnostic_coco(tmp_path, name="chromosome"):
    Image.fromarray(gray_image()).save(tmp_path / "a.png")
    data = {"images": [{"id": 1, "file_name": "a.png", "height": H, "width": W}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 5, 20, 20]},
                            {"id": 2, "image_id": 1, "category_id": 99, "bbox": [40, 30, 10, 10]}],
            "categories": [{"id": 7, "name": "chr7"}, {"id": 99, "name": name}]}
    jf = tmp_path / "a.json"
    jf.write_text(json.dumps(data))
    return jf


@pytest.mark.parametrize("name", ["chromosome", "chr", "Chromosome"])
def test_coco_reader_maps_chromosome_to_agnostic_and_validator_accepts(tmp_path, capsys, name):
    from deepacc.tools.data import main as data_main

    jf = _agnostic_coco(tmp_path, name)
    assert validate_coco_json(str(jf)) == []
    d = load_coco_json(str(jf))
    assert [a["category_id"] for a in d[0]["annotations"]] == [6, AGNOSTIC]
    assert check_dataset_dicts(d) == []
    assert data_main(["validate", str(jf)]) == 0
    assert "OK:" in capsys.readouterr().out
    assert data_main(["stats", str(jf), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["per_class"]["chromosome"] == 1
    # written back: category id 25 'chromosome', read again as AGNOSTIC
    out = tmp_path / "w" / "annotations" / "x.json"
    write_coco_json(d, str(out), str(tmp_path))
    w = json.load(open(out))
    assert w["categories"][-1] == {"id": 25, "name": "chromosome", "supercategory": "chromosome"}
    assert [a["category_id"] for a in w["annotations"]] == [7, 25]
    assert [a["category_id"] for a in load_coco_json(str(out), str(tmp_path))[0]["annotations"]] == [6, AGNOSTIC]


def test_dict_check_accepts_agnostic_only(tmp_path):
    Image.fromarray(gray_image()).save(tmp_path / "a.png")
    for c, ok in ((0, True), (23, True), (AGNOSTIC, True), (24, False), (26, False), (-1, False)):
        d = [{"file_name": str(tmp_path / "a.png"), "height": H, "width": W, "image_id": 1,
              "annotation_complete": True, "annotation_kind": "agnostic",
              "annotations": [{"bbox": [1, 1, 5, 5], "bbox_mode": 0, "category_id": c, "iscrowd": 0}]}]
        problems = check_dataset_dicts(d)
        assert (problems == []) == ok, (c, problems)
    d[0]["annotations"][0]["category_id"] = 0
    d[0]["annotation_complete"], d[0]["annotation_kind"] = "yes", "some"
    reasons = [p.reason for p in check_dataset_dicts(d)]
    assert reasons == ["annotation_complete 'yes' is not true or false",
                       "annotation_kind 'some' is not one of agnostic, classes, mixed"]
    with pytest.raises(ValueError, match="category_id 26"):
        write_coco_json([dict(d[0], annotation_complete=True, annotation_kind="mixed",
                              annotations=[{"bbox": [1, 1, 5, 5], "category_id": 26}])],
                        str(tmp_path / "x.json"), str(tmp_path))


def test_writer_keeps_fractional_boxes_inside_the_image(tmp_path):
    Image.fromarray(gray_image()).save(tmp_path / "a.png")
    d = [{"file_name": str(tmp_path / "a.png"), "height": H, "width": W, "image_id": 1,
          "annotations": [{"bbox": [33.545454545, 1.0 / 3, 80.0, 60.0], "bbox_mode": 0, "category_id": AGNOSTIC}]}]
    jf = write_coco_json(d, str(tmp_path / "annotations" / "t.json"), str(tmp_path))
    assert validate_coco_json(jf) == []
    x, y, w, h = json.load(open(jf))["annotations"][0]["bbox"]
    assert math.isclose(x + w, 80.0) and math.isclose(y + h, 60.0)


def test_mapper_passes_agnostic_class_and_overlay_draws_it(tmp_path):
    import torch

    from deepacc.config import get_cfg
    from deepacc.data.draw import AGNOSTIC_COLOR, draw_annotations
    from deepacc.tv.dataloader import MetaphaseMapper

    Image.fromarray(gray_image()).save(tmp_path / "a.png")
    anns = [{"bbox": [10.0, 5.0, 30.0, 25.0], "bbox_mode": 0, "category_id": AGNOSTIC, "iscrowd": 0},
            {"bbox": [40.0, 30.0, 50.0, 40.0], "bbox_mode": 0, "category_id": 6, "iscrowd": 0}]
    d = {"file_name": str(tmp_path / "a.png"), "height": H, "width": W, "image_id": 1, "annotations": anns}
    torch.manual_seed(0)
    for train in (True, False):
        _, target, _ = MetaphaseMapper(get_cfg(), is_train=train)(d)
        assert target["classes"].tolist() == [AGNOSTIC, 6]
    img = draw_annotations(gray_image(), anns)
    assert img.shape == (H, W, 3)
    assert tuple(img[5, 20]) == AGNOSTIC_COLOR  # the top edge of the agnostic box
    assert tuple(img[30, 45]) != AGNOSTIC_COLOR  # the named class keeps its group colour


def test_d2_mapper_passes_agnostic_class(tmp_path):
    pytest.importorskip("detectron2", reason="Detectron2 is not installed")
    from deepacc.d2 import DeepACCDatasetMapper
    from deepacc.d2.config import get_cfg

    Image.fromarray(gray_image()).save(tmp_path / "a.png")
    d = {"file_name": str(tmp_path / "a.png"), "height": H, "width": W, "image_id": 1,
         "annotations": [{"bbox": [10.0, 5.0, 30.0, 25.0], "bbox_mode": 0, "category_id": AGNOSTIC, "iscrowd": 0}]}
    out = DeepACCDatasetMapper(get_cfg(), is_train=True)(d)
    assert out["instances"].gt_classes.tolist() == [AGNOSTIC]


# ---------------------------------------------------------------- the registered bioimlab splits


def test_bioimlab_builtin_reads_a_prepared_root(tmp_path, monkeypatch):
    from deepacc.data.labelme import convert_folder

    root = tmp_path / "root"
    monkeypatch.setenv("DETECTRON2_DATASETS", str(root))
    with pytest.raises(catalog.DatasetNotPreparedError, match="prepare_labelme.py --src <LabelMe folder> --out"):
        catalog.get_dataset_dicts("bioimlab_val")
    _spreads(tmp_path / "src", ["s1", "s2"])
    convert_folder(str(tmp_path / "src"), str(root / "bioimlab"), fractions=(0, 1, 0))
    d = catalog.get_dataset_dicts("bioimlab_val")
    assert [os.path.relpath(x["file_name"], root) for x in d] == ["bioimlab/val/s1.png", "bioimlab/val/s2.png"]
    assert d[0]["annotations"][0]["category_id"] == AGNOSTIC and d[0]["annotations"][0]["bbox"] == [10, 5, 30, 25]
    assert d[0]["annotation_complete"] is False and d[0]["annotation_kind"] == "agnostic"
    meta = catalog.get_metadata("bioimlab_test")
    assert meta["json_file"] == str(root / "bioimlab" / "annotations" / "test.json")
    assert catalog.get_dataset_dicts("bioimlab_train") == []
