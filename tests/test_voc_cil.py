"""datasets/prepare_voc.py on the Cell Image Library (CIL / Taichung) naming A1..G22, X, Y, on data built here."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from deepacc.data.coco import load_coco_json, validate_coco_json
from deepacc.data.images import read_image
from deepacc.karyotype import CLASS_NAMES, GROUP_OF

from test_data_helpers import load_script
from tv_tiny import QUICK_CONFIG, TINY_OPTS, train_net

GRID_COLS, CELL_W, CELL_H = 8, 20, 28


def cil_name(cls, variant):
    """A written name of class ``cls`` in the CIL naming, in one of several spellings."""
    base = cls if cls in ("X", "Y") else GROUP_OF[cls] + cls
    return [base, base.lower(), f" {base} ", base if cls in ("X", "Y") else cls, f"\n\t{base.lower()}  "][variant % 5]


def karyotype(kind):
    """Classes of a spread: ``46,XY``, ``47,XX,+21`` or ``45,X``."""
    autos = [str(i) for i in range(1, 23) for _ in range(2)]
    if kind == "47,XX,+21":
        return autos + ["21", "X", "X"]
    if kind == "45,X":
        return autos + ["X"]
    return autos + ["X", "Y"]


def write_spread(root_img, root_ann, stem, objects, mode="L", ext=".jpg", filename=None):
    """A light image with one dark box per object (``(written name, class or None)``) on a grid; writes the
    VOC XML and returns the expected ``[(class, [x0, y0, x1, y1])]`` (0-based pixel edges) of the chromosomes."""
    rows = (len(objects) + GRID_COLS - 1) // GRID_COLS
    w, h = GRID_COLS * CELL_W, rows * CELL_H
    a = np.full((h, w), 230, np.uint8)
    xml, expected = "", []
    for i, (name, cls) in enumerate(objects):
        cx, cy = (i % GRID_COLS) * CELL_W, (i // GRID_COLS) * CELL_H
        bh = 22 - (CLASS_NAMES.index(cls) % 12 if cls else 5)
        x0, y0, x1, y1 = cx + 4, cy + 3, cx + 4 + 9, cy + 3 + bh
        a[y0:y1, x0:x1] = 40
        xml += (f"<object><name>{name}</name><pose>Unspecified</pose><difficult>0</difficult><bndbox>"
                f"<xmin>{x0 + 1}</xmin><ymin>{y0 + 1}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>")
        if cls is not None:
            expected.append((cls, [float(x0), float(y0), float(x1), float(y1)]))
    img = Image.fromarray(a)
    if mode == "RGB":
        img = Image.merge("RGB", [img, img.point(lambda v: max(0, v - 10)), img])
    os.makedirs(root_img, exist_ok=True)
    os.makedirs(root_ann, exist_ok=True)
    img.save(os.path.join(root_img, stem + ext))
    with open(os.path.join(root_ann, stem + ".xml"), "w") as f:
        f.write(f"<annotation><folder>JPEGImages</folder><filename>{filename or stem + ext}</filename>"
                f"<size><width>{w}</width><height>{h}</height><depth>{3 if mode == 'RGB' else 1}</depth></size>"
                f"<segmented>0</segmented>{xml}</annotation>")
    return expected


def cil_tree(root):
    """A VOC folder in the CIL naming; returns ``{stem: expected boxes}`` of the images that must convert.

    K007_1 names one chromosome 7 ``B7`` (wrong letter: image skipped); K008_1 has one ``clase25`` stray."""
    img_dir, ann_dir = os.path.join(root, "JPEGImages"), os.path.join(root, "Annotations")
    spreads = {"K001_1": ("46,XY", "L"), "K001_2": ("46,XY", "RGB"), "K002_1": ("47,XX,+21", "L"),
               "K002_2": ("46,XY", "L"), "K003_1": ("45,X", "RGB"), "K004_1": ("46,XY", "L"),
               "K005_1": ("46,XY", "RGB"), "K005_2": ("47,XX,+21", "L"), "K006_1": ("46,XY", "L")}
    expected = {}
    for n, (stem, (kind, mode)) in enumerate(sorted(spreads.items())):
        objs = [(cil_name(c, n + i), c) for i, c in enumerate(karyotype(kind))]
        expected[stem] = write_spread(img_dir, ann_dir, stem, objs, mode)
    objs = [(cil_name(c, i), c) for i, c in enumerate(karyotype("46,XY"))]
    objs[13] = ("B7", "7")  # the second chromosome 7 (object 14)
    write_spread(img_dir, ann_dir, "K007_1", objs, "L")
    objs = [(cil_name(c, i), c) for i, c in enumerate(karyotype("46,XY"))] + [("clase25", None)]
    expected["K008_1"] = write_spread(img_dir, ann_dir, "K008_1", objs, "RGB")
    return expected


def test_parse_class_name_cil_and_plain_names():
    mod = load_script("prepare_voc")
    for cls in CLASS_NAMES[:22]:
        letter = GROUP_OF[cls]
        for name in (letter + cls, (letter + cls).lower(), f"  {letter}{cls} ", f"{letter.lower()}{cls}", cls,
                     f"chr{cls}", f"Chromosome {cls}"):
            assert mod.parse_class_name(name) == cls, name
    for name, cls in (("X", "X"), ("x", "X"), (" X ", "X"), ("y", "Y"), ("CX", "X"), ("gy", "Y"), ("23", "X"),
                      ("24", "Y"), ("clase24", "Y"), ("A01", "1"), ("g-21", "21")):
        assert mod.parse_class_name(name) == cls, name
    for name, msg in (("B7", "letter B does not match chromosome 7's Denver group C"),
                      ("a4", "letter A does not match chromosome 4's Denver group B"),
                      ("G13", "letter G does not match chromosome 13's Denver group D"),
                      ("CY", "letter C does not match chromosome Y's Denver group G")):
        with pytest.raises(mod.ClassNameError) as e:
            mod.parse_class_name(name)
        assert e.value.kind == "wrong_letter" and str(e.value) == msg
    for name in ("clase25", "25", "0", "chr25", "class 26"):
        with pytest.raises(mod.ClassNameError) as e:
            mod.parse_class_name(name)
        assert e.value.kind == "stray", name
    for name in ("banana", "A25", "XX", "", "H1"):
        with pytest.raises(mod.ClassNameError) as e:
            mod.parse_class_name(name)
        assert e.value.kind == "unknown", name


def test_cil_voc_converts_every_box_to_its_class(tmp_path):
    mod = load_script("prepare_voc")
    src, out = tmp_path / "cil", tmp_path / "out"
    expected = cil_tree(str(src))
    paths, stats, report = mod.run(str(src), str(out))
    got = {}
    for s, p in paths.items():
        assert validate_coco_json(p) == [], s
        for d in load_coco_json(p):
            stem = os.path.splitext(os.path.basename(d["file_name"]))[0]
            got[stem] = [(CLASS_NAMES[a["category_id"]], a["bbox"]) for a in d["annotations"]]
            img = read_image(d["file_name"])
            assert img.ndim == 2 and img.shape == (d["height"], d["width"])  # RGB JPEGs read as gray
            for a in d["annotations"]:
                x0, y0, x1, y1 = (int(v) for v in a["bbox"])
                assert img[y0:y1, x0:x1].mean() < 80 and img[y0:y1, x1:x1 + 2].mean() > 180  # on the dark box
    assert sorted(got) == sorted(expected)  # K007_1 (wrong letter) skipped
    for stem, exp in expected.items():
        assert got[stem] == exp, stem  # every box, its class and its coordinates
    assert sorted(len(v) for v in got.values()) == [45] + [46] * 7 + [47, 47]  # no limit on objects
    # the wrong letter: reported with the file and the object, the whole image skipped
    xml7 = str(src / "Annotations" / "K007_1.xml")
    assert report["skipped_images"] == [{
        "xml": xml7, "image": "K007_1",
        "reason": f"{xml7}: object 14 'B7': letter B does not match chromosome 7's Denver group C"}]
    assert stats["skipped_images_wrong_letter"] == 1 and stats["wrong_letter_objects"] == 1
    # the stray: dropped, counted, named with its file; its image kept
    assert report["stray_names"] == {"clase25": {"objects": 1, "files": [str(src / "Annotations" / "K008_1.xml")]}}
    assert stats["stray_objects"] == 1 and stats["images_written"] == 10
    assert report["objects_per_image"] == {"min": 45, "max": 47, "mean": round(sum(map(len, got.values())) / 10, 2)}
    with open(out / "prepare_report.json") as f:
        assert json.load(f) == json.loads(json.dumps(report))
    # cases stay together (K001, K002, K005 have two images each)
    split_of = {os.path.splitext(os.path.basename(d["file_name"]))[0]: s
                for s, p in paths.items() for d in load_coco_json(p)}
    for case in ("K001", "K002", "K005"):
        assert split_of[f"{case}_1"] == split_of[f"{case}_2"]
    assert "by case id" in report["split_rule"]
    assert {d["case_id"] for d in load_coco_json(paths["train"])} <= {f"K00{i}" for i in range(1, 9)}


def test_strays_skip_image_and_unknown_names(tmp_path):
    mod = load_script("prepare_voc")
    src = tmp_path / "cil"
    cil_tree(str(src))
    _, stats, report = mod.run(str(src), str(tmp_path / "o1"), strays="image")
    assert stats["skipped_images_with_strays"] == 1 and stats["images_written"] == 9
    xml8 = str(src / "Annotations" / "K008_1.xml")
    reason = f"{xml8}: object 47 'clase25': not one of the 24 chromosome classes (stray)"
    assert {"xml": xml8, "image": "K008_1", "reason": reason} in report["skipped_images"]
    # unknown names: stop by default, naming file and name; skipped and reported with unknown="skip"
    write_spread(str(src / "JPEGImages"), str(src / "Annotations"), "K009_1",
                 [("A1", "1"), ("banana", None), ("A25", None)])
    with pytest.raises(mod.VOCError, match=r"K009_1\.xml: unknown chromosome class 'banana' in <object><name> "
                                           r"\(object 2\) \(and 1 more object\(s\)\); unknown names: 'A25' x1, "
                                           r"'banana' x1 in 1 file\(s\)\. Use --unknown skip"):
        mod.run(str(src), str(tmp_path / "o2"))
    assert not (tmp_path / "o2").exists()  # nothing written
    _, stats, report = mod.run(str(src), str(tmp_path / "o3"), unknown="skip")
    assert stats["skipped_images_unknown_name"] == 1 and stats["images_written"] == 10
    assert sorted(report["unknown_names"]) == ["A25", "banana"]
    xml9 = str(src / "Annotations" / "K009_1.xml")
    assert {"xml": xml9, "image": "K009_1", "reason": f"{xml9}: object 2 'banana': unknown chromosome class; "
            f"object 3 'A25': unknown chromosome class"} in report["skipped_images"]


def test_rgb_and_gray_jpeg_png_tiff_in_a_flat_folder(tmp_path):
    mod = load_script("prepare_voc")
    src = str(tmp_path / "flat")
    objs = [(cil_name(c, i), c) for i, c in enumerate(karyotype("46,XY"))]
    exp = {"S1_rgb": write_spread(src, src, "S1_rgb", objs, "RGB", ".jpg"),
           "S2_gray": write_spread(src, src, "S2_gray", objs, "L", ".jpeg"),
           "S3_png": write_spread(src, src, "S3_png", objs, "RGB", ".png"),
           "S4_tif": write_spread(src, src, "S4_tif", objs, "L", ".tif", filename="C:\\scans\\S4_tif.tif")}
    assert Image.open(os.path.join(src, "S1_rgb.jpg")).mode == "RGB"
    assert Image.open(os.path.join(src, "S2_gray.jpeg")).mode == "L"
    paths, stats, report = mod.run(src, str(tmp_path / "out"), fractions=(1.0, 0.0, 0.0), copy_images=True)
    assert report["layout"] == "flat" and stats["train_images"] == 4 and not report["skipped_images"]
    assert validate_coco_json(paths["train"]) == []
    for d in load_coco_json(paths["train"]):
        stem = os.path.splitext(os.path.basename(d["file_name"]))[0]
        assert d["file_name"].startswith(str(tmp_path / "out" / "images"))
        assert [(CLASS_NAMES[a["category_id"]], a["bbox"]) for a in d["annotations"]] == exp[stem]
        assert read_image(d["file_name"]).ndim == 2


def _case_tree(root, stems):
    for stem in stems:
        write_spread(os.path.join(root, "JPEGImages"), os.path.join(root, "Annotations"), stem,
                     [("A1", "1"), ("x", "X")])


def test_split_keeps_cases_apart_and_is_reproducible(tmp_path):
    mod = load_script("prepare_voc")
    src = str(tmp_path / "voc")
    rng = np.random.default_rng(3)
    stems = [f"{case}_{k}" for case in [f"C{c:03d}" for c in range(20)] for k in range(int(rng.integers(1, 5)))]
    _case_tree(src, stems)

    def splits(**kw):
        paths, _, report = mod.run(src, str(tmp_path / "o"), **kw)
        return {os.path.splitext(os.path.basename(d["file_name"]))[0]: s
                for s, p in paths.items() for d in load_coco_json(p)}, report

    a, report = splits()
    assert sorted(a) == sorted(stems) and set(a.values()) == set(mod.SPLITS)
    for case in {s.split("_")[0] for s in stems}:
        assert len({a[s] for s in stems if s.startswith(case + "_")}) == 1, case  # never two splits
    assert "by case id" in report["split_rule"] and report["splits"]["train"]["cases"] >= 10
    assert splits()[0] == a  # same seed, same split
    assert splits(split_by="case")[0] == a
    assert splits(seed=1)[0] != a
    # adding images of a new case moves no other image
    _case_tree(src, ["C999_0", "C999_1"])
    b, _ = splits()
    assert sum(b[s] != a[s] for s in a) <= 8  # at most a group at each of the two boundaries (groups of <= 4)
    # split lists that put one case in two splits are honoured and reported
    sd = os.path.join(src, "ImageSets", "Main")
    os.makedirs(sd)
    with open(os.path.join(sd, "train.txt"), "w") as f:
        f.write("\n".join(s for s in sorted(b) if s != "C999_1") + "\n")
    with open(os.path.join(sd, "val.txt"), "w") as f:
        f.write("C999_1\n")
    _, report = splits()
    assert report["cases_in_several_splits"] == ["C999"] and report["split_rule"].startswith("lists")
    _, report = splits(splits_dir="none")
    assert report["cases_in_several_splits"] == []


def test_split_without_case_ids_falls_back_to_images(tmp_path):
    mod = load_script("prepare_voc")
    src = str(tmp_path / "voc")
    _case_tree(src, [f"img{i}" for i in range(6)] + ["metaphase_001", "metaphase_002"])
    paths, stats, report = mod.run(src, str(tmp_path / "o"))
    assert report["split_rule"].startswith("per image") and [stats[f"{s}_images"] for s in mod.SPLITS] == [6, 1, 1]
    with pytest.raises(mod.VOCError, match=r"--split-by case: 8 image\(s\) carry no case id"):
        mod.run(src, str(tmp_path / "o"), split_by="case")
    # one "case" for all (a date prefix): per image, with a note
    src2 = str(tmp_path / "dated")
    _case_tree(src2, [f"2019_{i}" for i in range(6)])
    paths, stats, report = mod.run(src2, str(tmp_path / "o"))
    assert report["split_note"].startswith("only 1 case(s) for 3 splits") and stats["train_images"] == 4
    # a custom regex: the case is the token before the last underscore
    paths, _, report = mod.run(src, str(tmp_path / "o"), case_regex=r"^(.+)_\d+$")
    cases = {d["case_id"]: s for s, p in paths.items() for d in load_coco_json(p) if d["case_id"] == "metaphase"}
    assert len(cases) == 1


def test_command_line_summary(tmp_path, capsys):
    mod = load_script("prepare_voc")
    src, out = tmp_path / "cil", tmp_path / "out"
    cil_tree(str(src))
    assert mod.main(["--src", str(src), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "object 14 'B7': letter B does not match chromosome 7's Denver group C" in text
    assert "'clase25': 1 object(s) in K008_1.xml" in text and "skipped 1 image(s)" in text
    assert "chromosomes per image: min 45" in text and (out / "prepare_report.json").exists()
    assert mod.main(["--src", str(src), "--out", str(out), "--split", "0.7,0.3"]) == 2
    write_spread(str(src / "JPEGImages"), str(src / "Annotations"), "K009_1", [("banana", None)])
    assert mod.main(["--src", str(src), "--out", str(out)]) == 1
    assert "unknown chromosome class 'banana'" in capsys.readouterr().err


@pytest.mark.slow
def test_smoke_training_on_converted_cil_set(tmp_path):
    mod = load_script("prepare_voc")
    cil_tree(str(tmp_path / "cil"))
    root = tmp_path / "data"
    paths, stats = mod.convert(str(tmp_path / "cil"), str(root / "voc_chromosomes"))
    assert stats["train_images"] >= 2
    res = train_net(["--config-file", QUICK_CONFIG] + TINY_OPTS + [
        "DATASETS.TRAIN", '("voc_chromosomes_train",)', "DATASETS.TEST", "()", "SOLVER.MAX_ITER", "2",
        "OUTPUT_DIR", str(tmp_path / "run")], str(root))
    log = res.stdout + res.stderr
    assert res.returncode == 0, log
    assert f"Training {stats['train_images']} images from iteration 0 to 2" in log
    assert os.path.exists(tmp_path / "run" / "model_final.pth")
