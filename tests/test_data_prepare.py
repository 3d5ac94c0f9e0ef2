"""Converters in datasets/: G-band crop composer, ADIR M-FISH, VOC XML - on data built by the tests."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from deepacc.data.coco import load_coco_json, validate_coco_json
from deepacc.data.images import read_image
from deepacc.karyotype import CLASS_NAMES

from test_data_helpers import assert_box_tight, load_script


# ---------------------------------------------------------------- G-band crops


def _crop(rng, h, w):
    a = np.full((h, w), 255, np.uint8)
    a[2:h - 2, 2:w - 2] = rng.integers(20, 160, (h - 4, w - 4))
    return a


def _gband_tree(root, cases=("97000001", "97000002", "97000003", "97000004", "97000426"), cells=2):
    rng = np.random.default_rng(0)
    n = 0
    for case in cases:
        for cell in range(cells):
            cdir = root / f"{case}.{cell + 10}.tiff"
            for k in list(range(1, 25)) + [25]:
                if k == 24:
                    continue  # female cells
                (cdir / f"clase{k}").mkdir(parents=True)
                for i in range(2 if k != 23 else 2):
                    h = int(60 - 1.8 * min(k, 22))
                    Image.fromarray(_crop(rng, h, 14)).save(cdir / f"clase{k}" / f"clase{k}_{i}_{case}.{cell + 10}.tiff")
                    n += k != 25
    return n


def test_gband_compose_roundtrip_tight_boxes_split_by_case(tmp_path):
    mod = load_script("prepare_gband_cells")
    src = tmp_path / "src"
    _gband_tree(src)
    out = tmp_path / "out"
    assert mod.main(["--src", str(src), "--out", str(out), "--size", "640x480", "--split", "0.5,0.25,0.25"]) == 0
    rep = json.load(open(out / "prepare_report.json"))
    assert rep["excluded_case_426_cells"] == 2
    assert rep["skipped_unknown_class_crops"] == 2 * 2 * 5  # clase25: 2 crops x 2 cells x 5 cases
    cases = {}
    total = 0
    for s in ("train", "val", "test"):
        jf = out / "annotations" / f"{s}.json"
        assert validate_coco_json(str(jf)) == []
        dicts = load_coco_json(str(jf))
        cases[s] = {d["case_id"] for d in dicts}
        for d in dicts:
            assert len(d["annotations"]) == 46 and d["karyotype"] == "46,XX"
            img = read_image(d["file_name"])
            for a in d["annotations"]:
                assert_box_tight(img, a["bbox"], 255 - mod.MASK_DARKNESS)
            total += 1
    assert total == 8  # 4 cases x 2 cells (case 426 excluded)
    assert not (cases["train"] & cases["val"]) and not (cases["train"] & cases["test"]) and not (cases["val"] & cases["test"])
    assert all(cases.values())
    # deterministic by seed
    out2 = tmp_path / "out2"
    mod.main(["--src", str(src), "--out", str(out2), "--size", "640x480", "--split", "0.5,0.25,0.25"])
    for s in ("train", "val", "test"):
        a = json.load(open(out / "annotations" / f"{s}.json"))
        b = json.load(open(out2 / "annotations" / f"{s}.json"))
        assert a["annotations"] == b["annotations"]


def test_gband_aneuploid_splits_add_one_abnormality_per_cell(tmp_path):
    mod = load_script("prepare_gband_cells")
    src = tmp_path / "src"
    _gband_tree(src, cells=3)
    out = tmp_path / "out"
    args = ["--src", str(src), "--out", str(out), "--size", "640x480", "--split", "0.5,0.25,0.25"]
    assert mod.main(args) == 0
    before = {s: json.load(open(out / "annotations" / f"{s}.json")) for s in ("train", "val", "test")}
    # added to the prepared folder without rewriting the other splits
    assert mod.main(args + ["--aneuploid", "--only", "val_aneuploid,test_aneuploid"]) == 0
    for s in ("train", "val", "test"):
        assert json.load(open(out / "annotations" / f"{s}.json")) == before[s]
    rep = json.load(open(out / "prepare_report.json"))
    assert set(rep["splits"]) == {"train", "val", "test", "val_aneuploid", "test_aneuploid"}
    for s in ("val", "test"):
        normal = load_coco_json(str(out / "annotations" / f"{s}.json"))
        abnormal = load_coco_json(str(out / "annotations" / f"{s}_aneuploid.json"))
        assert len(abnormal) == len(normal) == 3
        kts = [d["karyotype"] for d in abnormal]
        # female cells: +21, -7, 45,X (one X dropped) in turn; the stored string follows the boxes
        assert kts == ["47,XX,+21", "45,XX,-7", "45,X"]
        for d in abnormal:
            assert d["file_name"].endswith("_aneuploid.png") and os.path.isfile(d["file_name"])
            n = {"47": 47, "45": 45}[d["karyotype"][:2]]
            assert len(d["annotations"]) == n
    with pytest.raises(SystemExit):
        mod.main(args + ["--only", "val_aneuploid"])  # needs --aneuploid


# ---------------------------------------------------------------- M-FISH


def _mfish_tree(root):
    """Three slides; one spread each with known components."""
    specs = {}
    for slide, code in (("A01", "XY"), ("P02", "21"), ("V03", "EX")):
        d = root / f"{slide}__{code}"
        d.mkdir(parents=True)
        K = np.zeros((120, 160), np.uint8)
        K[10:40, 10:20] = 1  # chromosome 1
        K[25:30, 15:45] = 2  # chromosome 2 crossing 1 ...
        K[25:30, 15:20] = 255  # ... the crossing is labelled "overlap"
        K[55:75, 60:68] = 21  # two touching 21s (one component, joined by a short neck)
        K[63:67, 68:70] = 21
        K[55:75, 70:78] = 21
        K[100:103, 100:103] = 5  # a 9-pixel fragment: dropped
        K[80:110, 120:128] = 23  # X
        dapi = np.where(K > 0, 200, 10).astype(np.uint8)
        stem = f"{slide}01{code}"
        Image.fromarray(K).save(d / f"{stem}K.tif")
        Image.fromarray(dapi).save(d / f"{stem}D.tif")
        specs[stem] = (slide, code)
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(root / "A01__XY" / "A0199XYD.tif")  # D without K
    (root / "README-ADIR.md").write_text("notice")
    return specs


def test_mfish_boxes_overlap_fragments_karyotypes(tmp_path):
    mod = load_script("prepare_mfish")
    src = tmp_path / "src"
    _mfish_tree(src)
    out = tmp_path / "out"
    assert mod.main(["--src", str(src), "--out", str(out), "--min-area", "20"]) == 0
    rep = json.load(open(out / "prepare_report.json"))
    assert rep["skipped_without_label_image"] == 1 and rep["dropped_fragments"] == 3 and rep["overlap_pixels"] == 75
    assert os.path.exists(out / "README-ADIR.md")
    found = {}
    for s in ("train", "val", "test"):
        jf = out / "annotations" / f"{s}.json"
        assert validate_coco_json(str(jf)) == []
        for d in load_coco_json(str(jf)):
            found[d["case_id"]] = (s, d)
    assert set(found) == {"A01", "P02", "V03"}
    assert len({s for s, _ in found.values()}) == 3  # three slides -> three splits, disjoint
    _, d = found["A01"]
    boxes = {(CLASS_NAMES[a["category_id"]], tuple(a["bbox"])) for a in d["annotations"]}
    # overlap pixels count for both chromosomes touching them
    assert ("1", (10.0, 10.0, 20.0, 40.0)) in boxes and ("2", (15.0, 25.0, 45.0, 30.0)) in boxes
    assert ("X", (120.0, 80.0, 128.0, 110.0)) in boxes
    assert not any(n == "5" for n, _ in boxes)  # fragment dropped
    r21 = sorted(b for n, b in boxes if n == "21")
    assert len(r21) == 2  # touching pair split by the distance-transform watershed
    assert r21[0][0] == 60.0 and r21[1][2] == 78.0 and r21[0][2] <= 70.0 and r21[1][0] >= 68.0
    assert d["karyotype"] == "46,XY"
    assert found["P02"][1]["karyotype"] == "45,XY,-21"
    assert len([a for a in found["P02"][1]["annotations"] if a["category_id"] == 20]) == 1  # 1 expected: no split
    assert "karyotype" not in found["V03"][1]
    img = read_image(d["file_name"])
    assert img[0, 0] == 245 and img[15, 15] == 55  # inverted DAPI
    with pytest.raises(KeyError):
        mod.iscn_of_code("99")


def test_mfish_no_split_option(tmp_path):
    mod = load_script("prepare_mfish")
    src = tmp_path / "src"
    _mfish_tree(src)
    out = tmp_path / "out"
    mod.main(["--src", str(src), "--out", str(out), "--no-split-touching"])
    dicts = [d for s in ("train", "val", "test") for d in load_coco_json(str(out / "annotations" / f"{s}.json"))]
    a01 = [d for d in dicts if d["case_id"] == "A01"][0]
    assert [a["bbox"] for a in a01["annotations"] if a["category_id"] == 20] == [[60.0, 55.0, 78.0, 75.0]]


# ---------------------------------------------------------------- VOC


def _voc_tree(root, bad_name=None):
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    for i in range(6):
        a = np.full((50, 80), 230, np.uint8)
        Image.fromarray(a).save(root / "JPEGImages" / f"img{i}.jpg")
        objs = ""
        for name, box in ((bad_name or "chr1", (5, 6, 15, 30)), ("X", (20, 10, 30, 40)), ("24", (70, 40, 85, 55))):
            objs += (f"<object><name>{name}</name><bndbox><xmin>{box[0]}</xmin><ymin>{box[1]}</ymin>"
                     f"<xmax>{box[2]}</xmax><ymax>{box[3]}</ymax></bndbox></object>")
        (root / "Annotations" / f"img{i}.xml").write_text(
            f"<annotation><filename>img{i}.jpg</filename><size><width>80</width><height>50</height></size>{objs}</annotation>")


def test_voc_conversion(tmp_path):
    mod = load_script("prepare_voc")
    _voc_tree(tmp_path / "voc")
    paths, stats = mod.convert(str(tmp_path / "voc"), str(tmp_path / "out"), fractions=(0.66, 0.17, 0.17))
    all_d = []
    for s, p in paths.items():
        assert validate_coco_json(p) == []
        all_d += load_coco_json(p)
    assert len(all_d) == 6 and stats["train_images"] == 4
    d = all_d[0]
    assert [CLASS_NAMES[a["category_id"]] for a in d["annotations"]] == ["1", "X", "Y"]
    assert d["annotations"][0]["bbox"] == [4.0, 5.0, 15.0, 30.0]  # 1-based inclusive -> 0-based edges
    assert d["annotations"][2]["bbox"] == [69.0, 39.0, 80.0, 50.0]  # clipped to the image
    # ImageSets/Main splits are honoured
    sd = tmp_path / "voc" / "ImageSets" / "Main"
    sd.mkdir(parents=True)
    (sd / "train.txt").write_text("img0\nimg1\nimg2\nimg3\n")
    (sd / "val.txt").write_text("img4\n")
    (sd / "test.txt").write_text("img5\n")
    paths, stats = mod.convert(str(tmp_path / "voc"), str(tmp_path / "out2"))
    assert [stats[f"{s}_images"] for s in ("train", "val", "test")] == [4, 1, 1]


def test_voc_unknown_class_names_file(tmp_path):
    mod = load_script("prepare_voc")
    _voc_tree(tmp_path / "voc", bad_name="banana")
    with pytest.raises(mod.VOCError, match=r"img0\.xml: unknown chromosome class 'banana'"):
        mod.convert(str(tmp_path / "voc"), str(tmp_path / "out"))
