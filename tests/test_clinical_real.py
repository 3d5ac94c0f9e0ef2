"""Real spreads: clusters of overlapping calls, oversized round calls (nuclei), implausible counts."""
import json

import cv2
import numpy as np
import pytest

from deepacc.karyotype import CLASS_NAMES
from deepacc.clinical import karyogram as K
from deepacc.clinical.overlay import draw_overlay
from deepacc.clinical.report import build_report_html
from deepacc.clinical.summary import (KARYOTYPE_NOT_DETERMINED, box_overlap_fraction, format_summary_text,
                                      overlap_clusters, oversized_calls, summarize)
from test_karyotype import karyotype_names

CELL = 100  # grid pitch of the constructed calls: boxes 10 x (30..90) px never overlap


def constructed_calls(karyotype="46,XY", score=0.95):
    """Calls of a clean spread: one vertical box per chromosome on a grid, lengths by class."""
    names = karyotype_names(karyotype)
    boxes, classes = [], []
    for k, name in enumerate(names):
        r, c = divmod(k, 10)
        cls = CLASS_NAMES.index(name)
        h = 90 - 2.5 * min(cls, 22)  # chr1 90 px ... chr22 35 px
        x0, y0 = 20 + c * CELL, 20 + r * CELL
        boxes.append([x0, y0, x0 + 10, y0 + h])
        classes.append(cls)
    return {"boxes": np.asarray(boxes, np.float32), "scores": np.full(len(names), score, np.float32),
            "classes": np.asarray(classes, np.int64)}


def with_calls(calls, boxes, classes):
    """``calls`` with more calls appended (the last rows)."""
    out = dict(calls)
    out["boxes"] = np.concatenate([calls["boxes"], np.asarray(boxes, np.float32).reshape(-1, 4)])
    out["classes"] = np.concatenate([calls["classes"], np.asarray(classes, np.int64)])
    out["scores"] = np.concatenate([calls["scores"], np.full(len(classes), 0.9, np.float32)])
    return out


def kinds(summary, kind):
    return [f for f in summary.flags if f.kind == kind]


# ------------------------------------------------------------------------------------------- clusters
def test_box_overlap_fraction_is_intersection_over_the_smaller_box():
    b = np.array([[0, 0, 10, 40], [5, 0, 25, 40], [0, 0, 100, 100], [200, 200, 210, 210]], np.float32)
    f = box_overlap_fraction(b)
    assert f.shape == (4, 4) and np.all(np.diag(f) == 0)
    assert f[0, 1] == pytest.approx(200 / 400) and f[1, 0] == f[0, 1]  # 5x40 of the 10x40 box
    assert f[0, 2] == pytest.approx(1.0)  # inside the big box, whatever its size
    assert f[3].max() == 0.0


def test_two_overlapping_calls_form_one_cluster():
    calls = constructed_calls("46,XY")
    calls["boxes"][5] = calls["boxes"][4] + np.array([4, 20, 4, 20], np.float32)  # crosses call 4
    s = summarize(calls)
    assert s.clustered == [4, 5]
    assert len(s.clusters) == 1 and s.clusters[0]["detections"] == [4, 5]
    (flag,) = kinds(s, "cluster")
    assert flag.detections == [4, 5]
    names = [CLASS_NAMES[c] for c in calls["classes"][[4, 5]]]
    x0, y0 = calls["boxes"][4][:2]
    x1, y1 = calls["boxes"][5][2:]
    assert "cluster of 2 overlapping calls" in flag.message
    assert f"x={0.5 * (x0 + x1):.0f}, y={0.5 * (y0 + y1):.0f}" in flag.message
    assert all(n in flag.message for n in names) and "by eye" in flag.message
    assert s.clusters[0]["box"] == [float(x0), float(y0), float(x1), float(y1)]
    # the count and the karyotype are those of the calls; the cluster only asks for a look
    assert s.count == 46 and s.karyotype == "46,XY" and s.needs_review


def test_chain_of_overlaps_is_one_cluster_of_three():
    calls = constructed_calls("46,XX")
    a = calls["boxes"][0].copy()  # 10 x 90 px
    calls["boxes"][1] = a + np.array([6, 0, 6, 0], np.float32)  # overlaps a (4 of 10 px wide)
    calls["boxes"][2] = a + np.array([12, 0, 12, 0], np.float32)  # overlaps b, not a
    assert box_overlap_fraction(calls["boxes"][[0, 2]])[0, 1] == 0
    s = summarize(calls)
    assert [c["detections"] for c in s.clusters] == [[0, 1, 2]] and s.clustered == [0, 1, 2]
    (flag,) = kinds(s, "cluster")
    assert "cluster of 3 overlapping calls" in flag.message


def test_disjoint_and_slightly_overlapping_calls_make_no_cluster():
    s = summarize(constructed_calls("46,XY"))
    assert s.clusters == [] and s.clustered == [] and not kinds(s, "cluster")
    assert not s.needs_review  # a clean 46,XY: nothing to flag
    calls = constructed_calls("46,XY")
    calls["boxes"][1] = calls["boxes"][0] + np.array([8, 0, 8, 0], np.float32)  # 2 of 10 px: 0.2 of the box
    assert summarize(calls).clusters == []
    assert [c["detections"] for c in summarize(calls, cluster_overlap=0.15).clusters] == [[0, 1]]
    assert summarize(calls).thresholds["cluster_overlap"] == 0.25


def test_overlap_clusters_components():
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [50, 50, 60, 60], [12, 0, 22, 10], [52, 52, 58, 58],
                  [100, 100, 110, 110]], np.float32)
    assert overlap_clusters(b) == [[0, 1, 3], [2, 4]]
    assert overlap_clusters(b[:1]) == [] and overlap_clusters(np.zeros((0, 4))) == []


# ------------------------------------------------------------------------------------------ oversized
def test_oversized_round_call_is_excluded_and_flagged():
    calls = constructed_calls("46,XY")
    nucleus = [1100, 100, 1300, 300]  # 200 x 200 px: ~80x the median box, round
    calls = with_calls(calls, [nucleus], [CLASS_NAMES.index("3")])
    s = summarize(calls)
    assert s.count == 46 and s.karyotype == "46,XY" and s.karyotype_from_calls == "46,XY"
    assert [x["detection"] for x in s.excluded] == [46]
    ex = s.excluded[0]
    assert ex["class_name"] == "3" and ex["box"] == nucleus and ex["aspect"] == pytest.approx(1.0)
    assert ex["area_ratio"] > 10 and ex["fill"] is None and "nucleus" in ex["reason"]
    (flag,) = kinds(s, "oversized")
    assert flag.detection == 46 and "x=1200, y=200" in flag.message and "not counted" in flag.message
    by = {c.name: c for c in s.per_class}
    assert by["3"].copies == 2 and 46 not in by["3"].detections  # not a third chromosome 3
    assert not kinds(s, "copy_number") and not kinds(s, "count")
    # Without the exclusion it would have been a trisomy 3.
    assert summarize(calls, oversized_area=1e9).karyotype == "47,XY,+3"


def test_oversized_but_elongated_call_is_kept():
    calls = constructed_calls("46,XY")
    long1 = [1100, 100, 1130, 400]  # a long chromosome 1: 30 x 300 px, 12x the median area, aspect 10
    calls = with_calls(calls, [long1], [0])
    for kw in ({}, {"oversized_area": 4.0}):
        s = summarize(calls, **kw)
        assert s.excluded == [] and not kinds(s, "oversized")
        assert s.count == 47 and s.karyotype == "47,XY,+1"


def spread_image(calls, h=520, w=1400):
    """Light background with a dark filled rectangle per call box (the constructed chromosomes)."""
    img = np.full((h, w), 230, np.uint8)
    for x0, y0, x1, y1 in calls["boxes"].astype(int):
        cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), 70, -1)
    return img


def test_with_the_image_a_diagonal_chromosome_is_kept_and_a_nucleus_excluded():
    calls = constructed_calls("46,XY")
    img = spread_image(calls)
    # A chromosome 1 lying diagonally: nearly square box, 8x the median call box area ...
    cv2.ellipse(img, (1160, 160), (45, 6), 45, 0, 360, 70, -1)
    ys, xs = np.nonzero(img[90:240, 1080:1240] < 150)
    diag = [1080 + xs.min(), 90 + ys.min(), 1080 + xs.max() + 1, 90 + ys.max() + 1]
    # ... and a nucleus, a filled disc of about the same box.
    cv2.circle(img, (1200, 400), 35, 90, -1)
    nucleus = [1165, 365, 1236, 436]
    calls = with_calls(calls, [diag, nucleus], [0, 4])
    mask, measures = oversized_calls(calls["boxes"], img)
    assert measures[46]["area_ratio"] > 4 and measures[46]["aspect"] < 1.5 and measures[46]["fill"] < 0.35
    assert measures[47]["fill"] > 0.7
    assert mask.tolist() == [False] * 47 + [True]
    s = summarize(calls, image=img)
    assert [x["detection"] for x in s.excluded] == [47] and s.excluded[0]["fill"] > 0.7
    assert s.count == 47 and s.karyotype == "47,XY,+1"
    assert s.thresholds["oversized_area"] == 4.0 and s.thresholds["oversized_fill"] == 0.5
    # Boxes alone cannot tell them apart at 4x (hence the higher box-only default, 10x) ...
    assert [x["detection"] for x in summarize(calls, oversized_area=4.0).excluded] == [46, 47]
    # ... and both are below 10x: without the image neither is excluded.
    assert summarize(calls).excluded == [] and summarize(calls).thresholds["oversized_area"] == 10.0


# -------------------------------------------------------------------------------------------- counts
def test_count_30_is_not_determined_and_the_karyogram_says_so(monkeypatch):
    calls = constructed_calls("46,XY")
    keep = np.arange(30)
    calls = {k: v[keep] for k, v in calls.items()}
    s = summarize(calls)
    assert s.count == 30
    assert s.karyotype == KARYOTYPE_NOT_DETERMINED == "not determined"
    assert not s.karyotype_determined and s.karyotype_from_calls.startswith("30,")
    (flag,) = kinds(s, "count")
    assert "outside the plausible range 40-52" in flag.message and "missed, merged" in flag.message
    assert s.flags.index(flag) <= 1
    text = format_summary_text(s)
    assert "Karyotype (suggested): not determined" in text and s.karyotype_from_calls in text

    assert K.karyogram_title(s) == "Karyotype not determined: 30 chromosomes called"
    drawn = []
    real_text = K._text
    monkeypatch.setattr(K, "_text", lambda canvas, txt, *a, **kw: (drawn.append(txt), real_text(canvas, txt, *a, **kw))[1])
    img = spread_image(calls)
    k = K.render_karyogram(img, calls, s)
    assert k.ndim == 3 and k.dtype == np.uint8
    assert drawn[0] == "Karyotype not determined: 30 chromosomes called"
    assert drawn[1].startswith("Outside the plausible count 40-52")
    assert not any("Suggested karyotype" in t for t in drawn)
    title_band = k[10:32, 20:400]
    assert ((title_band[:, :, 0] > 180) & (title_band[:, :, 1] < 60)).sum() > 100  # the title is red
    ok, png = cv2.imencode(".png", k)
    assert ok and cv2.imdecode(png, cv2.IMREAD_COLOR).shape == k.shape


def test_count_47_with_trisomy_21_is_unchanged(monkeypatch):
    calls = constructed_calls("47,XY,+21")
    s = summarize(calls)
    assert s.karyotype == s.karyotype_from_calls == "47,XY,+21" and s.karyotype_determined
    assert [f.message for f in kinds(s, "count")] == ["47 chromosomes called (46 expected)"]
    assert K.karyogram_title(s) == "Suggested karyotype: 47,XY,+21"
    drawn = []
    real_text = K._text
    monkeypatch.setattr(K, "_text", lambda canvas, txt, *a, **kw: (drawn.append(txt), real_text(canvas, txt, *a, **kw))[1])
    K.render_karyogram(spread_image(calls), calls, s)
    assert drawn[0] == "Suggested karyotype: 47,XY,+21"
    assert "not determined" not in format_summary_text(s)


@pytest.mark.parametrize("n,determined", [(39, False), (40, True), (52, True), (53, False), (60, False)])
def test_count_range_bounds(n, determined):
    calls = constructed_calls("46,XY")
    extra = n - 46
    if extra > 0:
        boxes = [[20 + (k % 10) * CELL, 520 + (k // 10) * CELL, 30 + (k % 10) * CELL, 580 + (k // 10) * CELL]
                 for k in range(extra)]
        calls = with_calls(calls, boxes, [k % 22 for k in range(extra)])
    else:
        calls = {k: v[:n] for k, v in calls.items()}
    s = summarize(calls)
    assert s.count == n and s.karyotype_determined == determined
    assert (s.karyotype == KARYOTYPE_NOT_DETERMINED) == (not determined)
    assert s.karyotype_from_calls.startswith(f"{n},")
    assert summarize(calls, count_range=(0, 100)).karyotype == s.karyotype_from_calls


def test_empty_spread_keeps_its_marker():
    empty = {"boxes": np.zeros((0, 4), np.float32), "scores": np.zeros(0, np.float32), "classes": np.zeros(0, int)}
    s = summarize(empty)
    assert s.karyotype == "no chromosomes called" and s.count == 0 and s.excluded == [] and s.clusters == []
    assert K.karyogram_title(s) == "Suggested karyotype: no chromosomes called"


# ---------------------------------------------------------------------------------- outputs and JSON
def test_json_report_overlay_and_karyogram_show_the_new_fields(tmp_path, monkeypatch):
    calls = constructed_calls("46,XY")
    calls["boxes"][5] = calls["boxes"][4] + np.array([4, 20, 4, 20], np.float32)
    calls = {k: v[:34] for k, v in calls.items()}
    calls = with_calls(calls, [[1100, 100, 1300, 300]], [2])  # a nucleus
    s = summarize(calls)
    d = json.loads(json.dumps(s.to_dict()))  # JSON-ready
    old_keys = {"count", "sex_chromosomes", "inferred_sex", "karyotype", "per_class", "flags", "uncertain",
                "thresholds", "review_note", "relabelled", "assignment", "needs_review"}
    assert old_keys < set(d)  # backward compatible: new keys only
    assert d["karyotype"] == "not determined" and d["karyotype_from_calls"].startswith("34,")
    assert d["clustered"] == [4, 5] and d["excluded"][0]["detection"] == 34 and d["count"] == 34
    assert {f["kind"] for f in d["flags"]} >= {"count", "cluster", "oversized"}

    html = build_report_html([{"file_name": "/x/a.png", "name": "a.png", "summary": d, "outputs": {}}], str(tmp_path))
    assert "not determined" in html and d["karyotype_from_calls"] in html
    assert "Not counted (1)" in html and "nucleus" in html and "cluster(s) of overlapping calls" in html
    old = {k: v for k, v in d.items() if k in old_keys}  # a record written before these fields existed
    old["karyotype"] = "46,XY"
    assert "Suggested karyotype" in build_report_html([{"file_name": "/x/b.png", "summary": old}], str(tmp_path))

    img = spread_image(calls)
    excl = [x["detection"] for x in s.excluded]
    ov = draw_overlay(img, calls, excluded=excl, clusters=[c["box"] for c in s.clusters], legend=False)
    plain = draw_overlay(img, calls, legend=False)
    magenta = lambda a: ((a[:, :, 0] == 200) & (a[:, :, 1] == 0) & (a[:, :, 2] == 200)).sum()  # noqa: E731
    assert magenta(ov) > 50 and magenta(plain) == 0
    assert tuple(ov[200, 1100]) == (120, 120, 120)  # the nucleus box in gray
    assert draw_overlay(img, calls, excluded=excl).shape[0] > draw_overlay(img, calls).shape[0] - 1

    cut = []
    real = K.extract_chromosome
    monkeypatch.setattr(K, "extract_chromosome", lambda image, box, **kw: (cut.append(list(box)), real(image, box))[1])
    K.render_karyogram(img, calls, s)
    assert len(cut) == 34 and [1100, 100, 1300, 300] not in cut  # the nucleus is not laid out
