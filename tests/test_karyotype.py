"""Clinical output: calls, numerical summary, overlay, karyogram (deepacc.karyotype)."""
import math

import cv2
import numpy as np
import pytest

from deepacc.karyotype import CLASS_NAMES, GROUP_COLORS
from deepacc.clinical.karyogram import ISCN_ROWS, extract_chromosome, render_karyogram
from deepacc.clinical.overlay import draw_overlay
from deepacc.clinical.summary import REVIEW_NOTE, format_summary_text, select_calls, summarize

# Approximate relative lengths (Mb, hg38) so that the test spreads look like chromosomes.
LENGTH_MB = dict(zip(CLASS_NAMES, [248, 242, 198, 190, 181, 171, 159, 145, 138, 134, 135, 133, 114, 107, 102,
                                  90, 83, 80, 59, 64, 47, 51, 156, 57]))


def karyotype_names(karyotype: str):
    """Class names of a numerical karyotype such as '47,XY,+21' (test helper)."""
    parts = karyotype.split(",")
    names = [str(i) for i in range(1, 23) for _ in range(2)]
    names += list(parts[1])
    for p in parts[2:]:
        if p[0] == "+":
            names.append(p[1:])
        else:
            names.remove(p[1:])
    assert len(names) == int(parts[0])
    return names


def make_spread(karyotype="46,XY", seed=0, cell=96):
    """Synthetic G-band-like spread: dark banded rods of class-dependent length on light background,
    one per grid cell, random orientation. Returns (image uint8 HxW, boxes (N,4), classes (N,))."""
    rng = np.random.default_rng(seed)
    names = karyotype_names(karyotype)
    order = rng.permutation(len(names))
    cols = 8
    rows = math.ceil(len(names) / cols)
    H, W = rows * cell + 20, cols * cell + 20
    img = np.clip(rng.normal(236, 4, (H, W)), 0, 255).astype(np.uint8)
    boxes, classes = [], []
    for k, j in enumerate(order):
        name = names[j]
        length = int(18 + 0.3 * LENGTH_MB[name])
        width = 10
        patch = np.full((length + 6, width + 6), 255, np.uint8)
        cv2.ellipse(patch, ((width + 6) // 2, (length + 6) // 2), (width // 2, length // 2), 0, 0, 360, 70, -1)
        for b in range(3, length, 9):  # pale bands
            row = patch[b + 3 : b + 6]
            row[row < 255] = 130
        d = int(math.hypot(*patch.shape)) + 2
        big = np.full((d, d), 255, np.uint8)
        oy, ox = (d - patch.shape[0]) // 2, (d - patch.shape[1]) // 2
        big[oy : oy + patch.shape[0], ox : ox + patch.shape[1]] = patch
        M = cv2.getRotationMatrix2D((d / 2, d / 2), float(rng.uniform(0, 180)), 1.0)
        big = cv2.warpAffine(big, M, (d, d), borderValue=255)
        r, c = divmod(k, cols)
        y0 = 10 + r * cell + (cell - d) // 2
        x0 = 10 + c * cell + (cell - d) // 2
        region = img[y0 : y0 + d, x0 : x0 + d]
        np.minimum(region, big, out=region)
        ys, xs = np.nonzero(big < 200)
        boxes.append([x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1])
        classes.append(CLASS_NAMES.index(name))
    return img, np.asarray(boxes, np.float32), np.asarray(classes, np.int64)


def fake_prediction(boxes, classes, scores=None, p_true=0.9):
    """Prediction dict (contract format) whose top-1 detections are the given boxes and classes."""
    n = len(classes)
    scores = np.full(n, p_true, np.float32) if scores is None else np.asarray(scores, np.float32)
    probs = np.full((n, 25), 0.0, np.float32)
    probs[np.arange(n), classes] = scores
    rest = (1.0 - scores) / 24.0
    for i in range(n):
        probs[i, [c for c in range(25) if c != classes[i]]] = rest[i]
    inst = {"boxes": np.asarray(boxes, np.float32), "scores": scores, "classes": np.asarray(classes, np.int64),
            "class_probs": probs}
    return {"instances": dict(inst), "instances_top1": dict(inst)}


# ----------------------------------------------------------------------------------------- summary
@pytest.mark.parametrize("karyotype,sex,count,abnormal", [
    ("46,XX", "female", 46, set()),
    ("46,XY", "male", 46, set()),
    ("47,XY,+21", "male", 47, {"21"}),
    ("45,X", "female", 45, {"X"}),
    ("47,XXY", "male", 47, {"X"}),
    ("45,XY,-7", "male", 45, {"7"}),
])
def test_summary_string_from_ground_truth(karyotype, sex, count, abnormal):
    img, boxes, classes = make_spread(karyotype, seed=len(karyotype))
    calls = select_calls(fake_prediction(boxes, classes)["instances_top1"])
    s = summarize(calls)
    assert s.karyotype == karyotype
    assert s.count == count
    assert s.inferred_sex == sex
    assert {c.name for c in s.per_class if c.abnormal} == abnormal
    flagged = {f.class_name for f in s.flags if f.kind == "copy_number"}
    assert flagged == abnormal
    assert (count != 46) == any(f.kind == "count" for f in s.flags)
    assert s.needs_review == bool(abnormal or count != 46)
    assert s.uncertain == []
    d = s.to_dict()
    assert d["review_note"] == REVIEW_NOTE and "cytogeneticist" in d["review_note"]
    assert d["needs_review"] == s.needs_review
    by = {c.name: c for c in s.per_class}
    assert by["1"].copies == 2 and by["1"].mean_score == pytest.approx(0.9)


def test_expected_sex_chromosome_copies():
    # Female: X expected twice, Y never; male: one of each.
    s = summarize(select_calls(fake_prediction(np.zeros((0, 4)), np.zeros(0, int))["instances_top1"]))
    assert s.karyotype == "no chromosomes called" and s.inferred_sex == "undetermined"
    assert "Karyotype (suggested): no chromosomes called" in format_summary_text(s)
    assert any(f.kind == "sex" for f in s.flags)
    _, boxes, classes = make_spread("46,XX")
    by = {c.name: c for c in summarize(select_calls(fake_prediction(boxes, classes)["instances_top1"])).per_class}
    assert (by["X"].expected, by["Y"].expected) == (2, 0)
    _, boxes, classes = make_spread("46,XY")
    by = {c.name: c for c in summarize(select_calls(fake_prediction(boxes, classes)["instances_top1"])).per_class}
    assert (by["X"].expected, by["Y"].expected) == (1, 1)


def test_select_calls_threshold_and_class_agnostic_nms():
    boxes = np.array([[0, 0, 10, 40], [0, 1, 10, 41], [50, 50, 60, 90], [100, 0, 110, 30]], np.float32)
    classes = np.array([0, 1, 2, 3])
    scores = np.array([0.9, 0.8, 0.95, 0.4], np.float32)
    pred = fake_prediction(boxes, classes, scores)
    calls = select_calls(pred["instances_top1"], 0.5, 0.7)
    # box 1 overlaps box 0 (IoU ~0.95) with another class: removed by class-agnostic NMS;
    # box 3 is below the threshold.
    assert calls["classes"].tolist() == [2, 0]
    assert calls["index"].tolist() == [2, 0]
    assert calls["class_probs"].shape == (2, 25)
    no_nms = select_calls(pred["instances_top1"], 0.5, None)
    assert sorted(no_nms["classes"].tolist()) == [0, 1, 2]
    assert len(select_calls(pred["instances_top1"], 0.3, 0.7)["scores"]) == 3
    with pytest.raises(ValueError, match="class indices"):
        select_calls({"boxes": boxes[:1], "scores": scores[:1], "classes": np.array([24])})


def test_uncertain_calls_flagged_by_score_and_margin():
    img, boxes, classes = make_spread("46,XX")
    pred = fake_prediction(boxes, classes)
    top1 = pred["instances_top1"]
    top1["scores"][3] = 0.55  # low score
    top1["class_probs"][3, classes[3]] = 0.55
    # call 7: confident score, but the runner-up class is close behind
    other = (classes[7] + 1) % 24
    top1["class_probs"][7, other] = top1["class_probs"][7, classes[7]] - 0.05
    calls = select_calls(top1)
    s = summarize(calls, review_score=0.7, review_margin=0.2)
    rows = {int(calls["index"][i]) for i in s.uncertain}
    assert rows == {3, 7}
    msgs = [f.message for f in s.flags if f.kind == "uncertain_call"]
    assert any("score 0.55" in m for m in msgs)
    assert any("margin 0.05" in m and f"runner-up: {CLASS_NAMES[other]}" in m and "at x=" in m for m in msgs)
    assert s.karyotype == "46,XX" and s.needs_review
    text = format_summary_text(s)
    assert "46,XX" in text and "Review flags (2)" in text and "cytogeneticist" in text


# -------------------------------------------------------------------------------------- karyogram
@pytest.mark.parametrize("angle", [0, 30, 60, 90, 125, 170])
def test_extract_chromosome_is_upright(angle):
    img = np.full((160, 160), 235, np.uint8)
    cv2.ellipse(img, (80, 80), (50, 7), angle, 0, 360, 60, -1)
    ys, xs = np.nonzero(img < 128)
    cut = extract_chromosome(img, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    h, w = cut.image.shape
    assert cut.mask_found
    assert h > 4 * w, (h, w)
    assert 95 <= h <= 106  # the full length is kept
    assert cut.image[~cut.mask].min() == 255  # background whitened


def test_extract_chromosome_suppresses_neighbour_in_box():
    img = np.full((120, 120), 235, np.uint8)
    cv2.rectangle(img, (50, 20), (62, 100), 60, -1)  # the chromosome (vertical)
    cv2.rectangle(img, (66, 20), (90, 32), 60, -1)  # a neighbour poking into its box corner
    cut = extract_chromosome(img, [44, 16, 80, 104])
    h, w = cut.image.shape
    assert cut.mask_found
    assert w <= 15 and h >= 80, (h, w)  # the neighbour is not part of the cut-out


def test_extract_chromosome_blank_box_falls_back_to_box():
    img = np.full((50, 50), 200, np.uint8)
    cut = extract_chromosome(img, [10, 10, 20, 40])
    assert not cut.mask_found and cut.image.shape == (30, 10)


def test_karyogram_layout_order_and_consistent_scale():
    img, boxes, classes = make_spread("47,XY,+21", seed=3)
    calls = select_calls(fake_prediction(boxes, classes)["instances_top1"])
    s = summarize(calls)
    k = render_karyogram(img, calls, s, max_chromosome_height=120)
    assert k.ndim == 3 and k.dtype == np.uint8
    # Four rows of chromosomes: find dark (chromosome) pixels and the row bands they occupy.
    dark = (k.min(axis=2) < 150) & (np.abs(k[:, :, 0].astype(int) - k[:, :, 2]) < 10)
    assert dark.sum() > 1000
    # Layout is ISCN: the flattened rows cover 1..22, X, Y exactly once.
    flat = [n for row in ISCN_ROWS for n in row]
    assert sorted(flat, key=CLASS_NAMES.index) == list(CLASS_NAMES)
    assert ISCN_ROWS[1][-1] == "X" and ISCN_ROWS[3][-1] == "Y"
    # The longest chromosome (chr 1) is drawn max_chromosome_height tall; chr 21 shorter.
    cut1 = [extract_chromosome(img, b).image.shape[0] for b, c in zip(calls["boxes"], calls["classes"]) if c == 0]
    cut21 = [extract_chromosome(img, b).image.shape[0] for b, c in zip(calls["boxes"], calls["classes"]) if c == 20]
    assert len(cut21) == 3 and max(cut21) < 0.5 * min(cut1)


def test_karyogram_marks_uncertain_and_abnormal_in_red():
    img, boxes, classes = make_spread("46,XY", seed=5)
    pred = fake_prediction(boxes, classes)
    calls = select_calls(pred["instances_top1"])
    s = summarize(calls)
    clean = render_karyogram(img, calls, s)
    red = lambda a: ((a[:, :, 0] > 180) & (a[:, :, 1] < 60) & (a[:, :, 2] < 60)).sum()  # noqa: E731
    assert red(clean) == 0
    pred["instances_top1"]["scores"][0] = 0.6
    calls = select_calls(pred["instances_top1"])
    s = summarize(calls)
    marked = render_karyogram(img, calls, s)
    assert red(marked) > 50


def test_overlay_colours_by_denver_group():
    img = np.full((200, 300), 230, np.uint8)
    calls = {"boxes": np.array([[20, 40, 60, 150], [150, 40, 200, 150]], np.float32),
             "scores": np.array([0.9, 0.8], np.float32), "classes": np.array([0, 20])}
    ov = draw_overlay(img, calls, legend=False)
    assert ov.shape == (200, 300, 3)
    assert tuple(ov[100, 20]) == GROUP_COLORS["A"]  # left edge of the chr1 box
    assert tuple(ov[100, 200]) == GROUP_COLORS["G"]  # right edge of the chr21 box
    assert tuple(ov[100, 100]) == (230, 230, 230)  # untouched elsewhere
    ov2 = draw_overlay(img, calls, uncertain=[1], legend=False)
    assert tuple(ov2[100, 202]) == (220, 0, 0)  # red outer frame of the uncertain call
    ov3 = draw_overlay(img, calls)  # legend strip added below, image untouched
    assert ov3.shape[0] > 200 and ov3.shape[1] == 300
    np.testing.assert_array_equal(ov3[:200], ov)


def test_extract_chromosome_keeps_pieces_on_axis_drops_crossing_neighbour():
    img = np.full((140, 140), 235, np.uint8)
    cv2.rectangle(img, (60, 20), (72, 80), 60, -1)  # chromosome, split by a pale gap near its end ...
    cv2.rectangle(img, (60, 90), (72, 110), 60, -1)  # ... this end piece belongs to it
    cv2.line(img, (38, 40), (52, 18), 60, 5)  # a neighbour crossing the box corner
    cut = extract_chromosome(img, [50, 16, 82, 114])
    h, w = cut.image.shape
    assert cut.mask_found
    assert h >= 88 and w <= 15, (h, w)


def test_scale_cutouts_one_scale_and_robust_to_a_huge_box():
    from deepacc.clinical.karyogram import scale_cutouts

    ims = [np.full((h, 12), 80, np.uint8) for h in (100, 90, 80, 60, 50, 40, 30, 20, 100, 95)]
    out, s = scale_cutouts(ims, 150)
    for o, i in zip(out, ims):  # one scale for all (up to rounding to whole pixels)
        assert abs(o.shape[0] - i.shape[0] * s) <= 0.51 and abs(o.shape[1] - i.shape[1] * s) <= 0.51
    assert max(o.shape[0] for o in out) <= 150
    huge = ims + [np.full((900, 700), 200, np.uint8)]
    out2, s2 = scale_cutouts(huge, 150)
    assert s2 == pytest.approx(s, rel=0.1)  # the outlier does not shrink the others
    assert out2[-1].shape[0] <= 150  # it is shrunk on its own


def test_report_html_is_offline_escaped_and_folds_long_uncertain_lists(tmp_path):
    from deepacc.clinical.report import build_report_html, write_report

    _, boxes, classes = make_spread("46,XY", seed=2)

    def record(n_low, name):
        pred = fake_prediction(boxes, classes)
        pred["instances_top1"]["scores"][:n_low] = 0.6
        s = summarize(select_calls(pred["instances_top1"]))
        return {"file_name": f"/x/{name}", "name": name, "summary": s.to_dict(),
                "outputs": {"overlay": "a.overlay.png", "karyogram": "a.karyogram.png"}}

    (tmp_path / "a.karyogram.png").write_bytes(cv2.imencode(".png", np.zeros((4, 4), np.uint8))[1].tobytes())
    recs = [record(2, "few<b>.png"), record(12, "many.png")]
    html = build_report_html(recs, str(tmp_path), failures=[("/x/bad.tif", "corrupt <file>")])
    assert "few&lt;b&gt;.png" in html and "corrupt &lt;file&gt;" in html  # escaped
    assert html.count("<details open>") == 1 and html.count("<details>") == 1
    assert "12 uncertain call(s)" in html
    assert 'src="a.karyogram.png"' in html and html.count("image missing") == 2  # one overlay per spread absent
    assert "<script" not in html and "http" not in html
    emb = build_report_html(recs, str(tmp_path), embed_images=True)
    assert "data:image/png;base64," in emb and 'src="a.karyogram.png"' not in emb
    path = write_report(recs, str(tmp_path))
    assert open(path, encoding="utf-8").read().startswith("<!DOCTYPE html>")


def test_report_links_are_url_encoded_and_resolve(tmp_path):
    import html as html_mod
    import re
    from urllib.parse import unquote

    from deepacc.clinical.report import build_report_html

    _, boxes, classes = make_spread("46,XX", seed=3)
    s = summarize(select_calls(fake_prediction(boxes, classes)["instances_top1"]))
    png = cv2.imencode(".png", np.zeros((4, 4), np.uint8))[1].tobytes()
    recs = []
    for stem in ("case#7", "50% done?", "x&y"):
        outs = {"overlay": f"{stem}.overlay.png", "karyogram": f"{stem}.karyogram.png"}
        for f in outs.values():
            (tmp_path / f).write_bytes(png)
        recs.append({"file_name": f"/x/{stem}.png", "name": f"{stem}.png", "summary": s.to_dict(), "outputs": outs})
    page = build_report_html(recs, str(tmp_path))
    links = [v for v in re.findall(r'(?:href|src)="([^"]*)"', page) if not v.startswith("#")]
    assert len(links) == 12 and 'src="case%237.overlay.png"' in page and 'src="50%25%20done%3F.karyogram.png"' in page
    for v in links:
        assert (tmp_path / unquote(html_mod.unescape(v))).is_file(), v


def test_flag_numbers_never_print_as_the_threshold():
    img, boxes, classes = make_spread("46,XX", seed=4)
    pred = fake_prediction(boxes, classes)
    pred["instances_top1"]["scores"][0] = 0.6999
    pred["instances_top1"]["scores"][1] = 0.58
    msgs = [f.message for f in summarize(select_calls(pred["instances_top1"]), review_score=0.7).flags]
    assert any("score 0.6999 < 0.7" in m for m in msgs), msgs
    assert any("score 0.58 < 0.7" in m for m in msgs), msgs


@pytest.mark.parametrize("angle", [0, 40, 90, 180, 250])
def test_extract_chromosome_puts_the_constriction_in_the_upper_half(angle):
    # Upright rod with a constriction at 30 % of its length, then rotated by `angle`.
    rod = np.full((120, 40), 235, np.uint8)
    cv2.rectangle(rod, (12, 10), (28, 110), 60, -1)
    rod[36:42, 12:16] = 235  # constriction: both sides pinched
    rod[36:42, 24:29] = 235
    big = np.full((200, 200), 235, np.uint8)
    big[40:160, 80:120] = rod
    M = cv2.getRotationMatrix2D((100, 100), angle, 1.0)
    img = cv2.warpAffine(big, M, (200, 200), borderValue=235)
    ys, xs = np.nonzero(img < 150)
    cut = extract_chromosome(img, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    h = cut.mask.shape[0]
    width = cut.mask.sum(axis=1)
    narrow = int(np.argmin(width[int(0.15 * h) : int(0.85 * h)])) + int(0.15 * h)
    assert narrow < 0.5 * h, (narrow, h)
    assert h > 3 * cut.mask.shape[1]
