"""Dataset validation: every bad input is a named problem line, never a traceback."""
import argparse
import json
import os

import numpy as np
import pytest
from PIL import Image

from deepacc.data import catalog
from deepacc.data.coco import (
    DatasetError,
    Problem,
    check_dataset_dicts,
    format_problems,
    load_coco_json,
    validate_coco_json,
    write_coco_json,
)
from deepacc.data.images import MAX_IMAGE_PIXELS
from deepacc.tools.data import build_parser
from deepacc.tools.data import main as data_main

from test_data_helpers import write_png_claiming_size

CATS = [{"id": k + 1, "name": n} for k, n in enumerate([str(j) for j in range(1, 23)] + ["X", "Y"])]


def _img(path, h=40, w=60):
    a = np.random.default_rng(0).integers(100, 255, (h, w), dtype=np.uint8)
    a[10:20, 10:14] = 30
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)
    return path


def _dataset(tmp_path, n=2, mutate=None):
    """``<tmp>/ds/annotations/train.json`` with n valid 60x40 images under ``<tmp>/ds/img``."""
    root = tmp_path / "ds"
    (root / "annotations").mkdir(parents=True)
    images, anns = [], []
    for i in range(1, n + 1):
        _img(root / "img" / f"{i}.png")
        images.append({"id": i, "file_name": f"img/{i}.png", "height": 40, "width": 60, "karyotype": "46,XY"})
        anns.append({"id": i, "image_id": i, "category_id": 1, "bbox": [10, 10, 4, 10], "iscrowd": 0})
    data = {"images": images, "annotations": anns, "categories": [dict(c) for c in CATS]}
    if mutate:
        mutate(data, root)
    jf = root / "annotations" / "train.json"
    jf.write_text(json.dumps(data))
    return str(jf), root


def _strs(problems):
    return [str(p) for p in problems]


# ---------------------------------------------------------------- 1. image size limit


def test_huge_image_is_one_problem_among_all(tmp_path, capsys):
    def mut(data, root):
        write_png_claiming_size(root / "img" / "bomb.png", 100000, 100000)
        data["images"].append({"id": 3, "file_name": "img/bomb.png", "height": 100000, "width": 100000})
        data["annotations"].append({"id": 3, "image_id": 3, "category_id": 1, "bbox": [1, 1, 2, 2]})
        data["annotations"][0]["bbox"] = [-9, 0, 4, 4]  # another problem, to be listed as well

    jf, root = _dataset(tmp_path, mutate=mut)
    bomb = str(root / "img" / "bomb.png")
    reason = (f"image is 100000 x 100000 = 10000000000 pixels, more than the maximum {MAX_IMAGE_PIXELS} "
              f"(deepacc.data.images.MAX_IMAGE_PIXELS; raise it with the environment variable "
              f"DEEPACC_MAX_IMAGE_PIXELS=<pixels>)")
    for mode in ("full", "header"):
        probs = _strs(validate_coco_json(jf, check_images=mode))
        assert f"{bomb}: {reason}" in probs and any("box outside the image" in p for p in probs), probs
    with pytest.raises(DatasetError, match="more than the maximum"):
        load_coco_json(jf)
    assert data_main(["validate", jf]) == 1
    out = capsys.readouterr()
    assert f"{bomb}: {reason}" in out.out and "image too large" in out.err
    d = {"file_name": bomb, "image_id": 1, "height": 100000, "width": 100000,
         "annotations": [{"bbox": [1, 1, 3, 3], "bbox_mode": 0, "category_id": 0, "iscrowd": 0}]}
    assert _strs(check_dataset_dicts([d])) == [f"{bomb}: {reason}"]


# ---------------------------------------------------------------- 2. structural problems of the json


def test_structural_problems_all_listed(tmp_path):
    def mut(data, root):
        _img(root / "img" / "3.png")
        _img(root / "img" / "4.png")
        data["images"] += [
            {"id": [3], "file_name": "img/3.png", "height": 40, "width": 60},  # list-valued id
            {"id": 4, "file_name": None, "height": 40, "width": 60},  # file_name null
            "not an object",
            {"id": 5, "file_name": "img/4.png", "height": "40", "width": 60.0},  # strings / floats
            {"id": True, "file_name": "img/4.png"},  # a bool is not an id
            {"id": 6, "file_name": "img/4.png", "karyotype": 46, "case_id": ["a"]},
            {"id": 7, "file_name": "img/4.png", "karyotype": "forty-six"},
        ]
        data["annotations"] += [
            {"id": [9], "image_id": 5, "category_id": 1, "bbox": [1, 1, 2, 2]},
            {"id": 10, "image_id": [5], "category_id": 1, "bbox": [1, 1, 2, 2]},
            {"id": 11, "image_id": 5, "category_id": [1], "bbox": [1, 1, 2, 2]},
            {"id": 12, "image_id": 5, "category_id": 1, "bbox": ["1", 1, 2, 2]},
            {"id": 13, "image_id": 5, "category_id": 1, "bbox": [1, 1, 2, 2], "iscrowd": "yes"},
            {"id": 14, "image_id": 5, "category_id": 1, "bbox": [1, 1, float("nan"), 2]},
            42,
        ]
        data["categories"] += [{"id": [30], "name": "1"}, "cat", {"id": 31, "name": None}]

    jf, root = _dataset(tmp_path, mutate=mut)
    probs = validate_coco_json(jf)
    text = "\n".join(_strs(probs))
    img4 = str(root / "img" / "4.png")
    expect = [
        f"{jf}: images[2]: id [3] is not an integer",
        f"{jf}: images[3] (id 4): file_name None is not a non-empty string",
        f"{jf}: images[4] must be an object with 'id' and 'file_name', got 'not an object'",
        f"{img4}: invalid height/width in json ('40', 60.0): must be positive integers",
        f"{jf}: images[6]: id True is not an integer",
        f"{img4}: karyotype 46 is not a string",
        f"{img4}: case_id ['a'] is not a string or an integer",
        f"{img4}: karyotype 'forty-six' is not an ISCN string",
        f"{img4}: annotations[2]: id [9] is not an integer or a string",
        f"{jf}: annotation 10: image_id [5] is not an integer",
        f"{img4}: annotation 11: unknown category id [1]",
        f"{img4}: annotation 12: bbox ['1', 1, 2, 2] must be 4 finite numbers",
        f"{img4}: annotation 13: iscrowd 'yes' must be 0 or 1",
        f"{img4}: annotation 14: bbox [1, 1, nan, 2] must be 4 finite numbers",
        f"{jf}: annotations[8] must be an object, got 42",
        f"{jf}: categories[24]: id [30] is not an integer or a string",
        f"{jf}: categories[25] must be an object with 'id' and 'name', got 'cat'",
        f"{jf}: unknown category name None (id 31)",
    ]
    for e in expect:
        assert e in text, (e, text)
    assert all(isinstance(p, Problem) for p in probs)
    with pytest.raises(DatasetError) as e:
        load_coco_json(jf)
    assert len(e.value.problems) == len(probs)


@pytest.mark.parametrize("content,reason", [
    ("[1, 2]", "top level must be an object with images/annotations/categories, got a list"),
    ('"x"', "got a str"),
    ("{}", "missing key 'images'"),
    ('{"images": {}, "annotations": [], "categories": []}', "'images' must be a list, got a dict"),
    ('{"images": [], "annotations": null, "categories": []}', "'annotations' must be a list, got a NoneType"),
    ("[" * 100000, "not valid json"),
    ("\xff\xfe", "not valid json"),
])
def test_top_level_never_raises(tmp_path, content, reason):
    p = tmp_path / "x.json"
    p.write_bytes(content.encode("latin-1"))
    probs = validate_coco_json(str(p))
    assert probs and any(str(x).startswith(f"{p}: ") and reason in str(x) for x in probs), _strs(probs)
    with pytest.raises(DatasetError):
        load_coco_json(str(p))


def test_missing_key_still_checks_the_rest(tmp_path):
    def mut(data, root):
        del data["categories"]
        data["images"][0]["file_name"] = "img/nope.png"

    jf, root = _dataset(tmp_path, mutate=mut)
    probs = _strs(validate_coco_json(jf))
    assert probs == [f"{jf}: missing key 'categories'", f"{root / 'img' / 'nope.png'}: missing file (no such file)"]


WEIRD = [None, [1], {"a": 1}, "x", True, 1.5, -1, 0, 10**400, float("inf"), float("nan"), "", [[[[]]]]]
FIELDS = [("images", k) for k in ("id", "file_name", "height", "width", "karyotype", "case_id")] + \
         [("annotations", k) for k in ("id", "image_id", "category_id", "bbox", "iscrowd")] + \
         [("categories", k) for k in ("id", "name")]


def test_any_value_of_any_field_never_raises(tmp_path):
    jf, root = _dataset(tmp_path, n=1)
    good = json.loads(open(jf).read())
    for section, key in FIELDS:
        for v in WEIRD + ["delete"]:
            data = json.loads(json.dumps(good))
            entry = data[section][0]
            if v == "delete":
                entry.pop(key, None)
            else:
                entry[key] = v
            with open(jf, "w") as f:
                json.dump(data, f)
            probs = validate_coco_json(jf, check_images="header")  # must not raise
            assert all(isinstance(p, Problem) and str(p) for p in probs)
            assert not any("internal error" in p.reason for p in probs), (section, key, v, probs)
            try:
                load_coco_json(jf)
            except DatasetError:
                pass


# ---------------------------------------------------------------- 3. corrupt / truncated images


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
@pytest.mark.parametrize("ext,kw", [("png", {}), ("tif", {}), ("jpg", {"quality": 90})])
def test_truncated_image_reported_by_full_check(tmp_path, ext, kw):
    def mut(data, root):
        p = root / "img" / f"t.{ext}"
        Image.fromarray(np.random.default_rng(2).integers(0, 255, (40, 60), dtype=np.uint8)).save(p, **kw)
        b = p.read_bytes()
        p.write_bytes(b[: len(b) * 2 // 3])
        data["images"][1]["file_name"] = f"img/t.{ext}"

    jf, root = _dataset(tmp_path, mutate=mut)
    bad = str(root / "img" / f"t.{ext}")
    probs = _strs(validate_coco_json(jf, check_images="full"))
    assert len(probs) == 1 and probs[0].startswith(f"{bad}: corrupt or truncated file"), probs
    dicts = load_coco_json(jf, check_images="none")
    assert _strs(check_dataset_dicts(dicts)) == probs
    assert check_dataset_dicts(dicts, decode_images=False) == []  # the header alone looks fine


# ---------------------------------------------------------------- 4. paths confined to the image root


def test_file_name_outside_root_refused_unless_allowed(tmp_path, capsys):
    outside = _img(tmp_path / "elsewhere" / "x.png")

    def mut(data, root):
        data["images"][0]["file_name"] = "../elsewhere/x.png"
        data["images"][1]["file_name"] = str(outside)  # absolute, outside
        _img(root / "img" / "abs.png")
        data["images"].append({"id": 3, "file_name": str(root / "img" / "abs.png"), "height": 40, "width": 60})
        data["annotations"].append({"id": 3, "image_id": 3, "category_id": 1, "bbox": [1, 1, 2, 2]})

    jf, root = _dataset(tmp_path, mutate=mut)
    probs = _strs(validate_coco_json(jf))
    assert len(probs) == 2, probs  # the absolute path inside the root is fine
    assert probs[0].startswith(f"{jf}: images[0] (id 1): file_name '../elsewhere/x.png' points outside the image "
                               f"root {root} (allow it with")
    assert f"file_name '{outside}' points outside the image root {root}" in probs[1]
    with pytest.raises(DatasetError, match="points outside the image root"):
        load_coco_json(jf)
    assert validate_coco_json(jf, allow_outside_root=True) == []
    d = load_coco_json(jf, allow_outside_root=True)
    assert d[0]["file_name"] == str(outside) and d[1]["file_name"] == str(outside)
    assert data_main(["validate", jf]) == 1
    assert "points outside the image root" in capsys.readouterr().out
    assert data_main(["validate", jf, "--allow-outside-root"]) == 0
    # the project's own writer marks a json that references images outside its root
    out = tmp_path / "new" / "annotations" / "train.json"
    write_coco_json(d, str(out), str(tmp_path / "new"))
    assert json.loads(out.read_text())["allow_outside_root"] is True
    assert validate_coco_json(str(out)) == [] and load_coco_json(str(out)) == d
    capsys.readouterr()
    assert data_main(["validate", str(out)]) == 0  # valid, but the opt-in is pointed out
    err = capsys.readouterr().err
    assert 'declares "allow_outside_root": true; 3 image(s) are read from outside' in err and "elsewhere/x.png" in err
    write_coco_json(d[2:], str(out), str(root))
    assert "allow_outside_root" not in json.loads(out.read_text())
    # already loaded dicts: confined when an image root is given
    probs = _strs(check_dataset_dicts(d, image_root=str(root)))
    assert len(probs) == 2 and all("points outside the image root" in p for p in probs)
    assert check_dataset_dicts(d, image_root=str(root), allow_outside_root=True) == []


# ---------------------------------------------------------------- 5. deepacc-data validate


def test_validate_by_dataset_name_and_exit_codes(tmp_path, capsys, monkeypatch):
    jf, root = _dataset(tmp_path)
    name = "test_validation_ds"
    catalog.unregister(name)
    catalog.register_coco_dataset(name, jf, str(root))
    try:
        assert data_main(["validate", name]) == 0
        assert capsys.readouterr().out.startswith(f"OK: {name} ({jf}): 2 images, 2 chromosomes")
        assert data_main(["validate", name, "--quick"]) == 0
        capsys.readouterr()
        os.remove(root / "img" / "2.png")
        assert data_main(["validate", name]) == 1
        out = capsys.readouterr()
        assert out.out.strip() == f"{root / 'img' / '2.png'}: missing file (no such file)"
        assert f"INVALID: 1 problem(s) in {name} ({jf})" in out.err
        os.remove(jf)
        assert data_main(["validate", name]) == 2
        assert capsys.readouterr().err.strip() == f"deepacc-data validate: error: dataset {name!r}: {jf}: no such file"
    finally:
        catalog.unregister(name)
    for target in ("no_such_dataset", str(tmp_path / "nope.json"), str(tmp_path)):
        assert data_main(["validate", target]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("deepacc-data validate: error: "), err
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "empty_root"))
    assert data_main(["validate", "gband_cells_train"]) == 2
    assert "prepare_gband_cells.py" in capsys.readouterr().err


def test_validate_function_registered_dataset(tmp_path, capsys):
    good = str(_img(tmp_path / "a.png"))
    dicts = [{"file_name": good, "image_id": 1, "height": 40, "width": 60,
              "annotations": [{"bbox": [1, 1, 5, 9], "bbox_mode": 0, "category_id": 3, "iscrowd": 0}]},
             {"file_name": good, "image_id": 1, "height": 40, "width": 60,
              "annotations": [{"bbox": [1, 1, 5, 99], "bbox_mode": 1, "category_id": 24}]}]
    name = "test_validation_func"
    catalog.unregister(name)
    catalog.register(name, lambda: dicts)
    try:
        assert data_main(["validate", name]) == 1
        lines = capsys.readouterr().out.strip().splitlines()
        assert lines == [f"{name}: duplicate image_id 1: dataset dict [1] ({good}) and dataset dict [0] ({good})",
                         f"{good}: annotation [0]: bbox_mode 1 is not supported (only 0 = XYXY_ABS)",
                         f"{good}: annotation [0]: box outside the image: xyxy [1, 1, 5, 99] vs image 60x40",
                         f"{good}: annotation [0]: category_id 24 must be an integer 0..23 or 25 (class-agnostic chromosome)"]
        del dicts[1]
        assert data_main(["validate", name]) == 0
    finally:
        catalog.unregister(name)


# ---------------------------------------------------------------- 6. help for every option


def test_every_option_has_help():
    parser = build_parser()
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)][0]
    assert set(subs.choices) == {"validate", "stats", "synth", "overlay", "list"}
    for cmd, sp in subs.choices.items():
        for action in sp._actions:
            assert action.help and action.help != argparse.SUPPRESS, (cmd, action.dest)
    v = subs.choices["validate"]
    assert {o for a in v._actions for o in a.option_strings} >= {"--image-root", "--quick", "--allow-outside-root"}


# ---------------------------------------------------------------- 7. check_dataset_dicts


def test_check_dataset_dicts_never_raises(tmp_path):
    good = str(_img(tmp_path / "a.png"))
    ok = {"file_name": good, "image_id": 7, "height": 40, "width": 60, "karyotype": "46,XX",
          "annotations": [{"bbox": [1.0, 1.0, 5.0, 9.0], "bbox_mode": 0, "category_id": 23, "iscrowd": 0}]}
    assert check_dataset_dicts([ok]) == []
    assert _strs(check_dataset_dicts([], source="s")) == ["s: the dataset has no images"]
    assert _strs(check_dataset_dicts(None, source="s"))[0].startswith("s: the dataset must be a list of dicts")
    bad = [
        "nope",
        dict(ok, file_name=None),
        dict(ok, file_name=str(tmp_path / "missing.png"), image_id=8),
        dict(ok, image_id="9"),
        dict(ok, image_id=10, height=41),
        dict(ok, image_id=11, annotations=None),
        dict(ok, image_id=12, annotations=[]),
        dict(ok, image_id=13, annotations=["x", {"bbox": [5, 5, 5, 9], "category_id": 0},
                                           {"bbox": [1, 2, 3], "category_id": 1.0, "iscrowd": 2}]),
        dict(ok, image_id=14, karyotype=["46,XX"], case_id={}),
    ]
    probs = _strs(check_dataset_dicts(bad, source="myset"))
    missing = str(tmp_path / "missing.png")
    expect = [
        "myset: dataset dict [0] is a str, not a dict",
        "myset: dataset dict [1]: file_name None is not a non-empty string",
        f"{missing}: missing file (no such file)",
        f"{good}: dataset dict [3]: image_id '9' is not an integer",
        f"{good}: size mismatch: the dataset says 60x41 (WxH), image is 60x40",
        f"{good}: annotations None must be a list",
        f"{good}: image with no chromosome annotations (empty spread)",
        f"{good}: annotation [0] is a str, not a dict",
        f"{good}: annotation [1]: zero-area box [5, 5, 5, 9] (x1 > x0 and y1 > y0 needed)",
        f"{good}: annotation [2]: bbox [1, 2, 3] must be 4 finite numbers [x0, y0, x1, y1]",
        f"{good}: annotation [2]: category_id 1.0 must be an integer 0..23 or 25 (class-agnostic chromosome)",
        f"{good}: annotation [2]: iscrowd 2 must be 0 or 1",
        f"{good}: karyotype ['46,XX'] is not a string",
        f"{good}: case_id {{}} is not a string or an integer",
    ]
    for e in expect:
        assert e in probs, (e, probs)
    assert len(probs) == len(expect)
    msg = str(DatasetError("myset", check_dataset_dicts(bad, source="myset"), max_lines=3))
    assert msg == format_problems("myset", check_dataset_dicts(bad, source="myset"), max_lines=3)
    assert msg.startswith(f"{len(expect)} problem(s) in dataset myset:\n  myset: dataset dict [0]")
    assert msg.endswith(f"... and {len(expect) - 3} more (run `deepacc-data validate myset` to list all)")
