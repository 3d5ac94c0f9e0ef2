"""Composed spreads that look real (deepacc.data.augment_spread and the composer's new flags)."""
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from deepacc.data.augment_spread import (SPREAD_PRESETS, bend_patch, layout_stats, occlusion, place_touching,
                                         render_bright_on_dark, resolve_spread, vary_photometric)
from deepacc.data.coco import load_coco_json, validate_coco_json
from deepacc.data.compose import crop_to_mask, place_patch, rotate_patch, spread_ellipse
from deepacc.data.images import read_image
from deepacc.data.slide import apply_slide, resolve_realism
from deepacc.karyotype import CLASS_NAMES

from test_data_helpers import load_script

SPLITS = ("train", "val", "test")
ARGS = ["--size", "640x480", "--split", "0.5,0.25,0.25"]
W, H = 640, 480


# ---------------------------------------------------------------- a tiny G-band crop tree


def _crop(rng, h, w):
    a = np.full((h, w), 255, np.uint8)
    a[2:h - 2, 2:w - 2] = rng.integers(20, 160, (h - 4, w - 4))
    return a


def _gband_tree(root, cases=("97000001", "97000002", "97000003", "97000004")):
    rng = np.random.default_rng(1)
    for case in cases:
        cdir = root / f"{case}.10.tiff"
        for k in range(1, 24):  # female cells
            (cdir / f"clase{k}").mkdir(parents=True)
            for i in range(2):
                h = int(70 - 2.0 * min(k, 22))
                Image.fromarray(_crop(rng, h, 14)).save(cdir / f"clase{k}" / f"clase{k}_{i}_{case}.10.tiff")


@pytest.fixture(scope="module")
def mod():
    return load_script("prepare_gband_cells")


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    s = tmp_path_factory.mktemp("gband_real") / "src"
    _gband_tree(s)
    return s


@pytest.fixture(scope="module")
def cells(mod, src):
    return mod.scan(str(src))[0]


def _file_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _reference_compose(mod, cell, width, height, seed=0):
    """The composer as it was before the new flags (frozen here as the reference)."""
    rng = mod._cell_rng(seed, cell["name"])
    pieces = []
    for path, name in cell["crops"]:
        a = read_image(path)
        dark = rotate_patch(255 - a, float(rng.uniform(0, 360)), border=0)
        mask = dark > mod.MASK_DARKNESS
        n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        areas = stats[1:, cv2.CC_STAT_AREA]
        keep = np.zeros(n, bool)
        keep[1:] = areas >= max(5, 0.05 * areas.max())
        mask = keep[lab]
        dark = np.where(mask | (cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0), dark, 0).astype(np.uint8)
        cr = crop_to_mask(dark, mask)
        pieces.append((name, cr[0], cr[1]))
    canvas = np.zeros((height, width), np.uint8)
    occ = np.zeros((height, width), bool)
    anns = []
    dens = float(rng.uniform(0.08, 0.14))
    orate = float(rng.uniform(0.04, 0.15))
    ell = spread_ellipse(rng, float(sum(m.sum() for _, _, m in pieces)), dens, width, height)
    for i in rng.permutation(len(pieces)):
        name, d, m = pieces[i]
        x, y = place_patch(rng, m, ell, occ, 0.35 if rng.random() < orate else 0.0)
        h, w = m.shape
        np.maximum(canvas[y:y + h, x:x + w], d, out=canvas[y:y + h, x:x + w])
        occ[y:y + h, x:x + w] |= m
        anns.append({"bbox": [float(x), float(y), float(x + w), float(y + h)], "bbox_mode": 0,
                     "category_id": CLASS_NAMES.index(name), "iscrowd": 0})
    return 255 - canvas, anns, occ


def _full(placed, shape=(H, W)):
    out = []
    for x, y, m in placed:
        f = np.zeros(shape, bool)
        f[y:y + m.shape[0], x:x + m.shape[1]] = m
        out.append(f)
    return out


# ---------------------------------------------------------------- without the flags: today's output


def test_without_flags_the_composer_is_byte_identical_to_the_reference(mod, src, cells, tmp_path):
    for cell in cells:
        ref_img, ref_anns, ref_occ = _reference_compose(mod, cell, W, H)
        img, anns, problems = mod.compose_cell(cell, W, H, 0)
        assert problems == [] and np.array_equal(img, ref_img) and anns == ref_anns
        # --realistic alone: the same slide step on the same spread
        spec = resolve_realism("default")
        real, _ = apply_slide(ref_img, [a["bbox"] for a in ref_anns], mod._realism_rng(0, cell["name"]), spec,
                              mask=ref_occ, white=255)
        img2, anns2, _ = mod.compose_cell(cell, W, H, 0, realism=spec)
        assert np.array_equal(img2, real) and anns2 == ref_anns
    # the written files: images as the reference, plain json without any new key
    out = tmp_path / "plain"
    assert mod.main(["--src", str(src), "--out", str(out), *ARGS]) == 0
    by_name = {c["name"]: c for c in cells}
    for s in SPLITS:
        raw = json.load(open(out / "annotations" / f"{s}.json"))
        assert set(raw["info"]) == {"description", "split", "seed"}
        assert all(set(im) == {"id", "file_name", "height", "width", "karyotype", "case_id"} for im in raw["images"])
        assert all("occlusion_order" not in a for a in raw["annotations"])
        for d in load_coco_json(str(out / "annotations" / f"{s}.json")):
            name = d["file_name"].rsplit("/", 1)[-1][:-4]
            ref_img, ref_anns, _ = _reference_compose(mod, by_name[name], W, H)
            assert np.array_equal(read_image(d["file_name"]), ref_img)
            assert [a["bbox"] for a in d["annotations"]] == [a["bbox"] for a in ref_anns]
    assert "spread" not in json.load(open(out / "prepare_report.json"))
    # deterministic: a second run gives the same bytes
    again = tmp_path / "again"
    mod.main(["--src", str(src), "--out", str(again), *ARGS])
    assert _file_bytes(out / "val") == _file_bytes(again / "val")
    assert _file_bytes(out / "annotations") == _file_bytes(again / "annotations")


def test_each_variation_has_its_own_random_stream(mod, cells):
    """Photometric values, bright-on-dark and a density / overlap range equal to today's move no chromosome."""
    cell = cells[0]
    ref_img, ref_anns, _ = _reference_compose(mod, cell, W, H)
    boxes = [a["bbox"] for a in ref_anns]
    for spec in ({"density": (0.08, 0.14), "overlap_rate": (0.04, 0.15), "overlap_allow": 0.35},
                 {"contrast": (0.7, 0.9), "gamma": (0.8, 1.2), "blur": (1.0, 2.0)}, {"bright_on_dark": 1.0}):
        img, anns, _ = mod.compose_cell(cell, W, H, 0, spread=resolve_spread(spec))
        assert [a["bbox"] for a in anns] == boxes and [a["category_id"] for a in anns] == \
            [a["category_id"] for a in ref_anns]
    img, _, _ = mod.compose_cell(cell, W, H, 0, spread=resolve_spread({"density": (0.08, 0.14)}))
    assert np.array_equal(img, ref_img)  # a spread spec with today's values: today's image


# ---------------------------------------------------------------- bends


def _rod(h=90, w=16):
    a = np.zeros((h + 8, w + 8), np.uint8)
    yy = np.arange(h)[:, None]
    a[4:4 + h, 4:4 + w] = (120 + 60 * np.sin(yy / 5.0)).astype(np.uint8)  # a banded rod
    return a


def _fill(mask):
    ys, xs = np.nonzero(mask)
    (_, _), (a, b), _ = cv2.minAreaRect(np.stack([xs, ys], 1).astype(np.float32))
    return ys.size / (a * b)


def test_bent_crop_keeps_its_area_and_is_bent():
    rod = _rod()
    half = 75  # about half the rod's mean darkness: the area at this level does not depend on edge sampling
    area, mass = np.count_nonzero(rod > half), float(rod.sum())
    assert np.array_equal(bend_patch(rod, 0.0, threshold=25), rod)
    for ang, center, extent in ((30, 0.5, 1.0), (60, 0.5, 0.5), (-90, 0.3, 0.4), (120, 0.5, 1.0), (45, 0.7, 0.3),
                                (170, 0.4, 0.2)):
        b = bend_patch(rod, ang, center, extent, threshold=25)
        assert abs(np.count_nonzero(b > half) / area - 1.0) < 0.05, ang
        assert abs(float(b.sum()) / mass - 1.0) < 0.01, ang  # nothing lost or doubled
        m = b > 25
        assert _fill(m) < 0.9 * _fill(rod > 25), ang  # no longer a straight rod
        n, _ = cv2.connectedComponents(m.astype(np.uint8))
        assert n == 2, ang  # still one piece
    # the sign picks the side: mirror images
    l, r = bend_patch(rod, 50, threshold=25) > half, bend_patch(rod, -50, threshold=25) > half
    assert abs(np.count_nonzero(l) - np.count_nonzero(r)) <= 0.02 * area


def test_bent_chromosomes_boxes_hold_their_masks(mod, cells):
    spec = resolve_spread({"bend": (60, 90), "bend_rate": 1.0})
    img, anns, _, info = mod.compose_cell(cells[1], W, H, 0, spread=spec, return_info=True, return_masks=True)
    assert info["spread"]["bent"] == len(cells[1]["crops"])
    _, plain_anns, _ = _reference_compose(mod, cells[1], W, H)
    assert len(anns) == len(plain_anns)
    for a, (x, y, m) in zip(anns, info["masks"]):
        h, w = m.shape
        assert a["bbox"] == [float(x), float(y), float(x + w), float(y + h)]
        assert m[0].any() and m[-1].any() and m[:, 0].any() and m[:, -1].any()  # tight around the mask
        assert (img[y:y + h, x:x + w][m] < 255).all()
    plain_fill = np.median([_fill(f) for f in _full(mod.compose_cell(cells[1], W, H, 0, return_info=True,
                                                                         return_masks=True)[3]["masks"])])
    bent_fill = np.median([_fill(f) for f in _full(info["masks"])])
    assert bent_fill < plain_fill


# ---------------------------------------------------------------- touching, occlusion


def test_occlusion_order_and_fraction_on_a_constructed_overlap():
    a = np.ones((10, 10), bool)  # placed first, at (0, 0)
    b = np.ones((10, 4), bool)  # placed second at (8, 0): covers columns 8, 9 of a
    c = np.ones((2, 2), bool)  # placed third at (8, 8): on top of a and b
    res = occlusion([(0, 0, a), (8, 0, b), (8, 8, c)], (20, 20))
    assert [o for o, _ in res] == [0, 1, 2]
    assert res[0][1] == pytest.approx(20 / 100)  # columns 8-9 under b (c's pixels lie there too)
    assert res[1][1] == pytest.approx(4 / 40)  # 2 x 2 under c
    assert res[2][1] == 0.0  # the top one is not hidden


def test_place_touching_touches_without_overlap():
    occ = np.zeros((120, 160), bool)
    occ[40:80, 60:70] = True
    m = np.ones((30, 8), bool)
    rng = np.random.default_rng(0)
    near = np.zeros_like(occ)
    for _ in range(20):
        x, y = place_touching(rng, m, occ, allow=0.0)
        assert not (occ[y:y + 30, x:x + 8] & m).any()
        near[:] = False
        near[y:y + 30, x:x + 8] = m
        assert (cv2.dilate(near.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=2) > 0)[occ].any()
    assert place_touching(rng, m, np.zeros_like(occ)) is None  # nothing placed yet: caller falls back


def test_touch_and_overlap_raise_contacts_and_annotations_record_the_order(mod, cells):
    base = [layout_stats(_full(mod.compose_cell(c, W, H, 0, return_info=True, return_masks=True)[3]["masks"]),
                         (H, W))["touching"] for c in cells]
    spec = resolve_spread({"touch": 0.6, "overlap_rate": (0.3, 0.3), "overlap_allow": 0.3, "blend": "multiply"})
    touched = []
    for c in cells:
        img, anns, _, info = mod.compose_cell(c, W, H, 0, spread=spec, return_info=True, return_masks=True)
        full = _full(info["masks"])
        touched.append(layout_stats(full, (H, W))["touching"])
        assert info["spread"]["touching_placed"] > 0
        assert [a["occlusion_order"] for a in anns] == list(range(len(anns)))
        for k, a in enumerate(anns):
            later = np.any(full[k + 1:], 0) if k + 1 < len(full) else np.zeros((H, W), bool)
            want = np.count_nonzero(full[k] & later) / np.count_nonzero(full[k])
            assert a["occluded_fraction"] == pytest.approx(want, abs=1e-4)
        assert anns[-1]["occluded_fraction"] == 0.0
    assert np.mean(touched) > np.mean(base) + 0.15


def test_multiply_blend_darkens_a_crossing(mod, cells):
    ov = {"overlap_rate": (0.5, 0.5), "overlap_allow": 0.3}
    imax, amax, _, info = mod.compose_cell(cells[0], W, H, 0, spread=resolve_spread(ov), return_info=True,
                                           return_masks=True)
    imul, amul, _ = mod.compose_cell(cells[0], W, H, 0, spread=resolve_spread({**ov, "blend": "multiply"}))
    assert amax == amul  # the blend moves nothing
    cnt = np.sum(_full(info["masks"]), 0)
    both, one = cnt >= 2, cnt == 1
    assert both.sum() > 50
    assert (imul[both] <= imax[both]).all() and (imul[both] < imax[both]).mean() > 0.9  # stacked absorbers
    assert np.array_equal(imul[one & ~(cv2.dilate(both.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0)],
                          imax[one & ~(cv2.dilate(both.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0)])


# ---------------------------------------------------------------- density, photometric, polarity


def test_density_changes_the_spread_extent(mod, cells):
    hull = {}
    for dens in (0.05, 0.3):
        spec = resolve_spread({"density": (dens, dens)})
        rows = [layout_stats(_full(mod.compose_cell(c, W, H, 0, spread=spec, return_info=True,
                                                    return_masks=True)[3]["masks"]), (H, W)) for c in cells]
        hull[dens] = np.median([r["hull_pct"] for r in rows])
        assert all(r["n"] == 46 for r in rows)
    assert hull[0.05] > 2.0 * hull[0.3]


def test_photometric_variation():
    img = np.full((60, 80), 255, np.uint8)
    img[20:40, 30:50] = 100
    assert np.array_equal(vary_photometric(img), img)
    lighter = vary_photometric(img, contrast=0.5)
    assert lighter[30, 40] == 178 and lighter[0, 0] == 255  # 255 - 0.5 * 155, canvas stays white
    assert vary_photometric(img, gamma=1.5)[30, 40] < 100 < vary_photometric(img, gamma=0.7)[30, 40]
    blurred = vary_photometric(img, blur=2.0)
    assert blurred[30, 29] < 255 and blurred[30, 40] == 100 and blurred[0, 0] == 255


def test_bright_on_dark_images_have_a_dark_background(mod, src, tmp_path):
    out = tmp_path / "bod"
    assert mod.main(["--src", str(src), "--out", str(out), *ARGS, "--bright-on-dark", "1"]) == 0
    n = 0
    for s in SPLITS:
        jf = out / "annotations" / f"{s}.json"
        assert validate_coco_json(str(jf)) == []
        raw = json.load(open(jf))
        assert all(im["polarity"] == "bright_on_dark" for im in raw["images"])
        assert all(p["polarity"] == "bright_on_dark" and 4 <= p["dark_level"] <= 30 and 170 <= p["bright_level"] <= 250
                   for p in raw["info"]["spread_params"])
        for d in load_coco_json(str(jf)):
            img = read_image(d["file_name"])
            inbox = np.zeros(img.shape, bool)
            for x0, y0, x1, y1 in (map(int, a["bbox"]) for a in d["annotations"]):
                inbox[y0:y1, x0:x1] = True
            assert np.median(img[~inbox]) <= 30 and (img == 255).mean() < 0.01  # no white canvas
            assert np.percentile(img[inbox], 95) > 150  # bright chromosomes
            n += 1
    assert n == 4
    # the function alone: background to the dark level, chromosomes to the bright level
    g = np.full((50, 50), 250, np.uint8)
    g[10:30, 10:30] = 90
    m = g < 200
    o = render_bright_on_dark(g, m, 10, 220)
    assert o[0, 0] == 10 and o[20, 20] == 220


def test_nuclei_may_lie_against_and_partly_under_chromosomes(mod, cells):
    img, anns, occ = _reference_compose(mod, cells[2], W, H)
    boxes = [a["bbox"] for a in anns]
    spec = resolve_realism({"nuclei": (3, 3), "nucleus_touch": 1.0})
    assert spec["nucleus_under"] == 0.2 and spec["touch_box_cover"] == 0.5
    out, info = apply_slide(img, boxes, np.random.default_rng(3), spec, mask=occ, white=255, return_masks=True)
    touching = [n for n in info["nuclei"] if n.get("touching")]
    assert touching and len(info["nuclei"]) + info["nuclei_skipped"] == 3  # the others placed as usual
    nm = info["nucleus_mask"]
    near = cv2.dilate(occ.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=3) > 0
    assert (nm & near).any()  # against the chromosomes
    assert all(n["under_chromosomes"] <= 0.2 and n["box_cover"] <= 0.5 for n in touching)
    under = nm & occ
    assert under.any() == any(n["under_chromosomes"] > 0 for n in touching)
    if under.any():  # both absorb: chromosome pixels over a nucleus darken more than the others
        ratio = out.astype(np.float64) / np.maximum(img, 1)
        assert np.median(ratio[under]) < np.median(ratio[occ & ~nm]) - 0.05
    with pytest.raises(ValueError):
        resolve_realism({"nucleus_touch": 1.5})
    assert "nucleus_touch" not in resolve_realism("default")  # the presets are unchanged


# ---------------------------------------------------------------- --real-like: recorded, split unchanged


def test_real_like_run_records_its_spec_and_keeps_the_split(mod, src, tmp_path):
    plain, real = tmp_path / "plain", tmp_path / "real"
    assert mod.main(["--src", str(src), "--out", str(plain), *ARGS]) == 0
    assert mod.main(["--src", str(src), "--out", str(real), *ARGS, "--real-like", "--touch", "0.3"]) == 0
    want = dict(resolve_spread("real_like"), touch=0.3)
    rep = json.load(open(real / "prepare_report.json"))
    assert rep["spread"]["touch"] == 0.3 and rep["realism"]["nucleus_touch"] == 0.2
    for s in SPLITS:
        jf = real / "annotations" / f"{s}.json"
        assert validate_coco_json(str(jf)) == []
        raw, ref = json.load(open(jf)), json.load(open(plain / "annotations" / f"{s}.json"))
        assert [i["file_name"] for i in raw["images"]] == [i["file_name"] for i in ref["images"]]  # same cells
        info = raw["info"]
        assert {k: (tuple(v) if isinstance(v, list) else v) for k, v in info["spread"].items()} == want
        assert info["realism"]["nucleus_touch"] == 0.2
        assert len(info["spread_params"]) == len(info["realism_params"]) == len(raw["images"])
        for p in info["spread_params"]:
            assert 0.1 <= p["density"] <= 0.3 and 0.6 <= p["contrast"] <= 1.05 and 0.6 <= p["blur"] <= 3.2
            assert p["polarity"] in ("bright_on_dark", "dark_on_light")
        assert all(im["polarity"] in ("bright_on_dark", "dark_on_light") for im in raw["images"])
        assert all(isinstance(a["occlusion_order"], int) and 0 <= a["occluded_fraction"] <= 1
                   for a in raw["annotations"])
        assert len(raw["annotations"]) == len(ref["annotations"])  # one box per chromosome
    again = tmp_path / "again"
    mod.main(["--src", str(src), "--out", str(again), *ARGS, "--real-like", "--touch", "0.3"])
    assert _file_bytes(real / "val") == _file_bytes(again / "val")


def test_flags_and_specs_are_checked(mod, src, tmp_path):
    base = ["--src", str(src), "--out", str(tmp_path / "x"), *ARGS]
    for extra in (["--bend-rate", "0.5"], ["--nuclei-touch", "0.3"], ["--touch", "2"], ["--density", "0.3,0.1"],
                  ["--blend", "sum"], ["--bright-on-dark", "x"]):
        with pytest.raises(SystemExit):
            mod.main(base + extra)
    assert resolve_spread(None) is None and resolve_spread({}) is None
    assert resolve_spread({"bend": (10, 20)})["bend_rate"] == 0.5
    assert resolve_spread("real_like") == {k: SPREAD_PRESETS["real_like"][k] for k in sorted(SPREAD_PRESETS["real_like"])}
    with pytest.raises(KeyError):
        resolve_spread({"wobble": 1})
    with pytest.raises(ValueError):
        resolve_spread({"bend": (10, 200)})
