"""COCO loader / validator: every bad input is reported with the file and the reason."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from deepacc.data.coco import DatasetError, load_coco_json, validate_coco_json, write_coco_json
from deepacc.tools.data import main as data_main


def _make(tmp_path, n_images=3, categories=None, mutate=None):
    root = tmp_path / "ds"
    (root / "annotations").mkdir(parents=True)
    (root / "img").mkdir()
    images, anns = [], []
    aid = 1
    for i in range(1, n_images + 1):
        a = np.full((40, 60), 230, np.uint8)
        a[10:20, 10:14] = 30
        Image.fromarray(a).save(root / "img" / f"{i}.png")
        images.append({"id": i, "file_name": f"img/{i}.png", "height": 40, "width": 60, "karyotype": "46,XY"})
        for c in (1, 23):
            anns.append({"id": aid, "image_id": i, "category_id": c, "bbox": [10, 10, 4, 10], "area": 40, "iscrowd": 0})
            aid += 1
    cats = categories or [{"id": k + 1, "name": n} for k, n in enumerate([str(j) for j in range(1, 23)] + ["X", "Y"])]
    data = {"images": images, "annotations": anns, "categories": cats}
    if mutate:
        mutate(data, root)
    jf = root / "annotations" / "train.json"
    jf.write_text(json.dumps(data))
    return str(jf), root


def test_load_valid_and_roundtrip(tmp_path):
    jf, root = _make(tmp_path)
    d = load_coco_json(jf)
    assert len(d) == 3 and [x["image_id"] for x in d] == [1, 2, 3]
    assert d[0]["file_name"] == str(root / "img" / "1.png")
    assert d[0]["annotations"][0] == {"bbox": [10.0, 10.0, 14.0, 20.0], "bbox_mode": 0, "category_id": 0, "iscrowd": 0}
    assert d[0]["annotations"][1]["category_id"] == 22  # X
    assert d[0]["karyotype"] == "46,XY"
    out = tmp_path / "rt" / "annotations" / "x.json"
    write_coco_json(d, str(out), str(root))
    d2 = load_coco_json(str(out), str(root))
    assert d2 == d
    assert validate_coco_json(jf) == []


def test_category_aliases_and_order(tmp_path):
    # categories in a scrambled order with aliases: mapping is by name, not id
    names = ["chrY", "chr1"] + [f"chr{j}" for j in range(2, 23)] + ["23"]
    cats = [{"id": k + 1, "name": n} for k, n in enumerate(names)]

    def mut(data, root):
        for a in data["annotations"]:
            a["category_id"] = 2 if a["category_id"] == 1 else 24  # chr1 / "23"=X

    jf, _ = _make(tmp_path, categories=cats, mutate=mut)
    d = load_coco_json(jf)
    assert [a["category_id"] for a in d[0]["annotations"]] == [0, 22]


def _problems(tmp_path, mutate, **kw):
    jf, root = _make(tmp_path, mutate=mutate, **kw)
    return jf, root, [str(p) for p in validate_coco_json(jf)]


def test_unknown_category_refused(tmp_path):
    cats = [{"id": 1, "name": "1"}, {"id": 23, "name": "X"}, {"id": 99, "name": "banana"}]
    jf, _, probs = _problems(tmp_path, None, categories=cats)
    assert any("unknown category name 'banana'" in p and jf in p for p in probs)
    with pytest.raises(DatasetError, match="banana"):
        load_coco_json(jf)


def test_each_bad_case_names_file_and_reason(tmp_path):
    def mut(data, root):
        data["annotations"][0]["bbox"] = [50, 30, 20, 20]  # outside (img 1)
        data["annotations"][2]["bbox"] = [5, 5, 0, 10]  # zero area (img 2)
        data["annotations"][3]["id"] = data["annotations"][2]["id"]  # duplicate annotation id (img 2)
        data["annotations"][4]["category_id"] = 77  # unknown category id (img 3)
        data["images"].append({"id": 3, "file_name": "img/1.png", "height": 40, "width": 60})  # duplicate image id
        data["images"].append({"id": 4, "file_name": "img/missing.png", "height": 40, "width": 60})
        Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "img" / "small.png")
        data["images"].append({"id": 5, "file_name": "img/small.png", "height": 40, "width": 60})  # size mismatch
        (root / "img" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
        data["images"].append({"id": 6, "file_name": "img/bad.png", "height": 40, "width": 60})  # corrupt
        data["annotations"].append({"id": 999, "image_id": 4, "category_id": 1, "bbox": [1, 1, 2, 2]})
        data["annotations"].append({"id": 1000, "image_id": 6, "category_id": 1, "bbox": [1, 1, 2, 2]})

    jf, root, probs = _problems(tmp_path, mut)
    img = lambda n: str(root / "img" / n)  # noqa: E731
    expect = [
        (img("1.png"), "box outside the image"),
        (img("2.png"), "zero-area box"),
        (img("2.png"), "duplicate annotation id"),
        (img("3.png"), "unknown category id 77"),
        (img("1.png"), "duplicate image id 3"),
        (img("missing.png"), "missing file"),
        (img("small.png"), "size mismatch"),
        (img("bad.png"), "corrupt"),
        (img("small.png"), "no chromosome annotations"),
    ]
    for f, reason in expect:
        assert any(p.startswith(f + ":") and reason in p for p in probs), (f, reason, probs)
    with pytest.raises(DatasetError) as e:
        load_coco_json(jf)
    assert len(e.value.problems) >= len(expect) - 1  # header check does not decode, so "corrupt" may read as such
    assert "missing.png: missing file" in str(e.value)


def test_truncated_image_caught_by_full_validation(tmp_path):
    def mut(data, root):
        p = root / "img" / "2.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60), dtype=np.uint8)).save(p)
        b = p.read_bytes()
        p.write_bytes(b[: len(b) - 200])

    jf, root, probs = _problems(tmp_path, mut)
    assert any(p.startswith(str(root / "img" / "2.png")) and ("truncated" in p or "corrupt" in p) for p in probs), probs


def test_empty_spread_rejected(tmp_path):
    def mut(data, root):
        data["annotations"] = [a for a in data["annotations"] if a["image_id"] != 2]

    jf, root, probs = _problems(tmp_path, mut)
    assert probs == [f"{root / 'img' / '2.png'}: image with no chromosome annotations (empty spread)"]


def test_16bit_rgba_palette_images_accepted(tmp_path):
    def mut(data, root):
        a16 = np.full((40, 60), 4000, np.uint16)
        a16[10:20, 10:14] = 100
        Image.fromarray(a16).save(root / "img" / "1.png")
        rgba = np.zeros((40, 60, 4), np.uint8)
        rgba[10:20, 10:14] = (0, 0, 0, 255)
        Image.fromarray(rgba, "RGBA").save(root / "img" / "2.png")
        g = np.full((40, 60), 230, np.uint8)
        Image.fromarray(g).convert("P").save(root / "img" / "3.png")

    jf, root, probs = _problems(tmp_path, mut)
    assert probs == []


def test_validate_cli_lists_every_problem(tmp_path, capsys):
    def mut(data, root):
        data["annotations"][0]["bbox"] = [-5, 0, 4, 4]
        data["annotations"][2]["bbox"] = [5, 5, 3, 0]
        os.remove(root / "img" / "3.png")

    jf, root = _make(tmp_path, mutate=mut)
    rc = data_main(["validate", jf])
    out = capsys.readouterr()
    assert rc == 1
    lines = [ln for ln in out.out.splitlines() if ln.strip()]
    assert len(lines) == 3
    assert any("box outside the image" in ln and "1.png:" in ln for ln in lines)
    assert any("zero-area" in ln and "2.png:" in ln for ln in lines)
    assert any("3.png: missing file" in ln for ln in lines)
    assert "INVALID: 3 problem(s)" in out.err
    jf2, _ = _make(tmp_path / "ok")
    assert data_main(["validate", jf2]) == 0


def test_bad_json_and_missing_json(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("{not json")
    probs = validate_coco_json(str(p))
    assert len(probs) == 1 and "not valid json" in str(probs[0]) and str(p) in str(probs[0])
    with pytest.raises(DatasetError, match="missing json"):
        load_coco_json(str(tmp_path / "nope.json"))
