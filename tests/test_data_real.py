"""Converters on small subsets of the real data (skipped when /work/shared/data is absent)."""
import glob
import json
import os

import numpy as np
import pytest
from PIL import Image

from deepacc.data.coco import load_coco_json, validate_coco_json
from deepacc.data.images import read_image
from deepacc.karyotype import CLASS_NAMES

from test_data_helpers import SHARED_DATA, assert_box_tight, load_script

GBAND = os.path.join(SHARED_DATA, "gband_cells")
MFISH = os.path.join(SHARED_DATA, "mfish")


def _all(out):
    return {s: load_coco_json(str(out / "annotations" / f"{s}.json")) for s in ("train", "val", "test")}


@pytest.mark.skipif(not os.path.isdir(GBAND), reason="real G-band crops not available")
def test_real_gband_subset(tmp_path):
    mod = load_script("prepare_gband_cells")
    out = tmp_path / "g"
    assert mod.main(["--src", GBAND, "--out", str(out), "--limit", "6"]) == 0
    splits = _all(out)
    for s in splits:
        assert validate_coco_json(str(out / "annotations" / f"{s}.json")) == []
    cases = {s: {d["case_id"] for d in ds} for s, ds in splits.items()}
    assert all(cases.values())
    assert not (cases["train"] & cases["val"] or cases["train"] & cases["test"] or cases["val"] & cases["test"])
    for ds in splits.values():
        for d in ds:
            name = os.path.splitext(os.path.basename(d["file_name"]))[0]
            crops = glob.glob(os.path.join(GBAND, name + ".tiff", "clase*", "*.tif*"))
            n_known = sum(1 for c in crops if 1 <= int(os.path.basename(os.path.dirname(c))[5:]) <= 24)
            assert len(d["annotations"]) == n_known  # counts round-trip: one box per labelled crop
            img = read_image(d["file_name"])
            for a in d["annotations"]:
                assert_box_tight(img, a["bbox"], 255 - mod.MASK_DARKNESS)


@pytest.mark.skipif(not os.path.isdir(MFISH), reason="ADIR M-FISH set not available")
def test_real_mfish_subset(tmp_path):
    mod = load_script("prepare_mfish")
    out = tmp_path / "m"
    assert mod.main(["--src", MFISH, "--out", str(out), "--limit", "6"]) == 0
    splits = _all(out)
    slides = {s: {d["case_id"] for d in ds} for s, ds in splits.items()}
    assert all(slides.values())
    assert not (slides["train"] & slides["val"] or slides["train"] & slides["test"] or slides["val"] & slides["test"])
    n = 0
    for s, ds in splits.items():
        assert validate_coco_json(str(out / "annotations" / f"{s}.json")) == []
        for d in ds:
            stem = os.path.splitext(os.path.basename(d["file_name"]))[0]
            kf = glob.glob(os.path.join(MFISH, "*", stem + "K.tif"))[0]
            K = np.array(Image.open(kf))
            assert K.shape == (d["height"], d["width"])
            assert 30 <= len(d["annotations"]) <= 52
            for a in d["annotations"]:
                x0, y0, x1, y1 = (int(v) for v in a["bbox"])
                assert 0 <= x0 < x1 <= d["width"] and 0 <= y0 < y1 <= d["height"]
                sub = np.isin(K[y0:y1, x0:x1], [a["category_id"] + 1, 255])
                assert sub[0].any() and sub[-1].any() and sub[:, 0].any() and sub[:, -1].any()
            if d.get("karyotype"):
                assert d["karyotype"] == mod.KARYOTYPE_CODES[os.path.basename(os.path.dirname(kf)).split("__")[1]]
            n += 1
    assert n == 6
