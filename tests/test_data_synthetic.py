"""Synthetic generator: band facts, karyotypes, tight boxes, determinism, batch distributions."""
import hashlib
import json
import os

import numpy as np
import pytest

from deepacc.data.bands import load_ideograms
from deepacc.data.coco import load_coco_json, validate_coco_json
from deepacc.karyotype import format_karyotype, parse_karyotype
from deepacc.data.synthetic import (BATCH_DISTRIBUTIONS, MASK_THRESHOLD, generate_dataset, generate_spread,
                                    sample_batch_params)
from deepacc.karyotype import CLASS_NAMES


def test_band_table_facts():
    ideo = load_ideograms()
    assert set(ideo) == set(CLASS_NAMES)
    for n, i in ideo.items():
        assert i.starts[0] == 0 and abs(i.ends[-1] - 1) < 1e-6
        assert np.all(np.diff(i.starts) > 0)
        assert 0.0 < i.centromere < 1.0
    assert ideo["1"].length_bp > ideo["2"].length_bp > ideo["21"].length_bp
    assert 0.15 < ideo["21"].length_bp / ideo["1"].length_bp < 0.22
    assert ideo["1"].centromere == pytest.approx(0.5, abs=0.04)  # metacentric
    for n in ("13", "14", "15", "21", "22"):
        assert ideo[n].stalks and ideo[n].centromere < 0.3  # acrocentric with satellites
    assert not ideo["1"].stalks


@pytest.mark.parametrize("text", ["46,XX", "46,XY", "47,XY,+21", "45,X", "47,XXY", "45,XY,-21"])
def test_karyotype_roundtrip(text):
    c = parse_karyotype(text)
    assert sum(c.values()) == int(text.split(",")[0])
    assert format_karyotype(c) == text


@pytest.mark.parametrize("bad", ["46", "46,XZ", "47,XY", "47,XY,+25", "XY,46"])
def test_karyotype_errors(bad):
    with pytest.raises(ValueError):
        parse_karyotype(bad)


@pytest.mark.parametrize("karyotype", ["46,XY", "47,XX,+21", "45,X"])
def test_spread_counts_and_tight_boxes(karyotype):
    rng = np.random.default_rng(7)
    img, anns, info = generate_spread(rng, 800, 600, karyotype=karyotype, return_masks=True)
    assert img.dtype == np.uint8 and img.shape == (600, 800)
    counts = parse_karyotype(karyotype)
    got = {n: 0 for n in CLASS_NAMES}
    for a in anns:
        got[CLASS_NAMES[a["category_id"]]] += 1
    assert got == counts
    assert info["karyotype"] == karyotype
    occupied = np.zeros(img.shape, bool)
    for a, (x0, y0, m) in zip(anns, info["masks"]):
        bx0, by0, bx1, by1 = a["bbox"]
        assert 0 <= bx0 < bx1 <= 800 and 0 <= by0 < by1 <= 600
        # tight: the mask touches all four box edges
        assert (bx0, by0, bx1 - bx0, by1 - by0) == (x0, y0, m.shape[1], m.shape[0])
        assert m[0].any() and m[-1].any() and m[:, 0].any() and m[:, -1].any()
        occupied[y0:y0 + m.shape[0], x0:x0 + m.shape[1]] |= m
    # chromosomes are dark on a light background
    assert img[occupied].mean() < img[~occupied].mean() - 40


def test_chromosome_size_scales_with_image():
    def long_sides(w, h, seed):
        _, anns, info = generate_spread(np.random.default_rng(seed), w, h, "46,XX")
        c1 = [max(a["bbox"][2] - a["bbox"][0], a["bbox"][3] - a["bbox"][1]) for a in anns if a["category_id"] == 0]
        c21 = [max(a["bbox"][2] - a["bbox"][0], a["bbox"][3] - a["bbox"][1]) for a in anns if a["category_id"] == 20]
        return np.mean(c1), np.mean(c21)

    big1, big21 = long_sides(1600, 1200, 3)
    small1, small21 = long_sides(640, 480, 3)
    assert 45 <= big1 <= 135  # chromosome 1 roughly 60-120 px long at 1600x1200 (bent/rotated box)
    assert big21 < 0.5 * big1
    assert small1 == pytest.approx(big1 * 0.4, rel=0.2)


def test_chromosome_scale_set_apart_from_image_size():
    """``scale`` fixes the chromosomes' pixel size whatever the image size (a magnified part of a
    slide: the quick spreads); the default follows the image; out-of-range scales are refused."""
    def c1_long_side(w, h, scale):
        _, anns, _ = generate_spread(np.random.default_rng(3), w, h, "46,XX", scale=scale)
        return np.mean([max(a["bbox"][2] - a["bbox"][0], a["bbox"][3] - a["bbox"][1])
                        for a in anns if a["category_id"] == 0]), len(anns)

    ref, _ = c1_long_side(1600, 1200, None)
    same, _ = c1_long_side(1600, 1200, 1.0)
    assert same == pytest.approx(ref, rel=1e-6)
    magnified, n = c1_long_side(640, 480, 0.7)
    assert magnified == pytest.approx(ref * 0.7, rel=0.2)
    assert n == 46  # all chromosomes still fit on the small image
    with pytest.raises(ValueError, match="scale"):
        generate_spread(np.random.default_rng(0), 640, 480, "46,XX", scale=0.0)


def test_batch_distributions_differ():
    rng = np.random.default_rng(0)
    d = [sample_batch_params(rng, "default") for _ in range(50)]
    s = [sample_batch_params(rng, "shifted") for _ in range(50)]
    assert np.mean([x["noise"] for x in s]) > np.mean([x["noise"] for x in d]) + 2
    assert np.mean([x["contrast"] for x in s]) < np.mean([x["contrast"] for x in d]) - 0.1
    for x in d:
        for k, (lo, hi) in BATCH_DISTRIBUTIONS["default"].items():
            assert lo <= x[k] <= hi
    with pytest.raises(KeyError, match="unknown batch"):
        sample_batch_params(rng, "nope")


def _digest(folder):
    h = hashlib.sha256()
    for dp, _, fs in sorted(os.walk(folder)):
        for f in sorted(fs):
            h.update(f.encode())
            with open(os.path.join(dp, f), "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()


def test_generate_dataset_deterministic_and_valid(tmp_path):
    a = generate_dataset(tmp_path / "a", 3, seed=5, width=320, height=240, progress=False)
    b = generate_dataset(tmp_path / "b", 3, seed=5, width=320, height=240, progress=False, workers=2)
    c = generate_dataset(tmp_path / "c", 3, seed=6, width=320, height=240, progress=False)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    assert validate_coco_json(a) == []
    data = json.load(open(a))
    assert [c["name"] for c in data["categories"]] == list(CLASS_NAMES)
    dicts = load_coco_json(a)
    assert len(dicts) == 3
    for d, im in zip(dicts, data["images"]):
        assert len(d["annotations"]) == sum(parse_karyotype(im["karyotype"]).values())
    assert sum(len(d["annotations"]) for d in dicts) == len(data["annotations"])


def test_generate_dataset_karyotype_list_and_shifted(tmp_path):
    j = generate_dataset(tmp_path, 2, seed=1, width=320, height=240, karyotypes=["47,XY,+21", "45,X"],
                         batch="shifted", progress=False, split="test")
    assert j.endswith(os.path.join("annotations", "test.json"))
    d = load_coco_json(j)
    assert [x["karyotype"] for x in d] == ["47,XY,+21", "45,X"]
    assert [len(x["annotations"]) for x in d] == [47, 45]
    assert json.load(open(j))["info"]["batch"] == "shifted"


def test_band_table_script(tmp_path):
    from test_data_helpers import SHARED_DATA, load_script
    from deepacc.data.bands import BAND_TABLE

    mod = load_script("make_band_table")
    names = [str(i) for i in range(1, 23)] + ["X", "Y"]
    rows = []
    for n in names:
        rows += [f"chr{n}\t0\t400\tp11\tgneg", f"chr{n}\t400\t500\tp11.1\tacen", f"chr{n}\t500\t600\tq11\tacen",
                 f"chr{n}\t600\t1000\tq12\tgpos50"]
    rows.append("chrM\t0\t100\tx\tgneg")
    src = tmp_path / "c.tsv"
    src.write_text("\n".join(rows) + "\n")
    text = mod.build(str(src))
    assert "UCSC Genome Browser" in text
    line = [ln for ln in text.splitlines() if ln.startswith("7\t")][1]
    assert line == "7\t1000\tp11.1\t0.400000\t0.500000\tacen"
    real = os.path.join(SHARED_DATA, "hg38_cytoBand.tsv")
    if os.path.exists(real):  # the shipped table is exactly what the script makes from the UCSC file
        assert mod.build(real) == open(BAND_TABLE).read()
