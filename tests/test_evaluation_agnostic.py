"""Class-agnostic scoring: ground truth without classes (category_id == AGNOSTIC), the class-agnostic
block of MetaphaseEvaluator (AP50 / AP of the top-1 detections, recall / precision of the calls, count
error on complete spreads), mixed sets scored per kind, deepacc-eval --class-agnostic and the
real_spreads benchmark. The hand-built cases are small enough to count on paper."""
import contextlib
import hashlib
import io
import json
import math
import os
import sys

import numpy as np
import pytest
import torch

from deepacc.evaluation import (
    MetaphaseEvaluator,
    build_coco_dt,
    build_coco_gt,
    coco_ap,
    coco_ap_subsets,
    flatten_scalars,
    format_agnostic_table,
    image_kind,
)
from deepacc.evaluation.coco_ap import _evaluated
from deepacc.karyotype.classes import AGNOSTIC

torch.set_num_threads(1)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------- a seeded 24-class set
def class_spreads(n_images=10, seed=0):
    """Random 24-class dataset dicts and noisy predictions (instances, top-1 with class_probs).
    numpy only: the golden numbers below were computed with the evaluator of before the
    class-agnostic block on exactly this data."""
    rng = np.random.default_rng(seed)
    dicts, preds = [], []
    for i in range(n_images):
        g = int(rng.integers(5, 40))
        cls = rng.integers(0, 24, g)
        x0 = rng.uniform(0, 500, g)
        y0 = rng.uniform(0, 400, g)
        boxes = np.stack([x0, y0, x0 + rng.uniform(8, 40, g), y0 + rng.uniform(15, 80, g)], 1)
        dicts.append({"file_name": f"/tmp/c{i}.png", "image_id": 500 + 3 * i, "height": 500, "width": 600,
                      "annotations": [{"bbox": b.tolist(), "bbox_mode": 0, "category_id": int(c), "iscrowd": 0}
                                      for b, c in zip(boxes, cls)]})
        n = int(rng.integers(0, 60))
        src = rng.integers(0, g, n)
        db = boxes[src] + rng.normal(0, 4, (n, 4))
        db[:, 2:] = np.maximum(db[:, 2:], db[:, :2] + 1)
        dc = np.where(rng.uniform(size=n) < 0.7, cls[src], rng.integers(0, 24, n))
        ds = rng.uniform(0.05, 1, n)
        probs = rng.uniform(size=(n, 25))
        probs[np.arange(n), dc] += 2.0
        top1 = {"boxes": db, "scores": ds, "classes": dc, "class_probs": probs / probs.sum(1, keepdims=True)}
        inst = {"boxes": np.concatenate([db, db]), "scores": np.concatenate([ds, ds * 0.3]),
                "classes": np.concatenate([dc, rng.integers(0, 24, n)])}
        preds.append({"image_id": 500 + 3 * i, "instances": inst, "instances_top1": top1})
    return dicts, preds
# end of generator


#: The evaluator of before the class-agnostic block (git 7d89ff1) on class_spreads(n, seed), without
#: and with the karyotype assignment (extra-copy cost): the headline numbers (repr, so exact) and the
#: sha256 of the whole result dict (json, sorted keys).
GOLDEN_RESULTS = {
    (10, 0, None): {"headline": {"mAP": "27.933813738875862", "mAP_max": "28.496160971408496",
                                 "AP": "10.670042717891963", "Acc": "42.2077922077922", "AER": "103.15789473684211",
                                 "TP": "65", "FP": "89", "FN": "107", "num_dets": "154", "num_gt": "190"},
                    "sha256": "02fe9b5f35ce68195018c37b34eddec3d51e6244f852f496d95bed6727cd0d23"},
    (10, 0, 3.0): {"headline": {"mAP": "27.933813738875862", "mAP_max": "28.496160971408496",
                                "AP": "10.670042717891963", "Acc": "38.961038961038966", "AER": "105.78947368421052",
                                "TP": "60", "FP": "94", "FN": "107", "num_dets": "154", "num_gt": "190"},
                   "sha256": "64111f1a959939ba5548a8afd87e4a37fe6d866b20ebfa7b363a747fd09914e4"},
    (6, 1, None): {"headline": {"mAP": "28.834856699955708", "mAP_max": "30.14829161487577",
                                "AP": "12.167380331547486", "Acc": "60.46511627906976", "AER": "84.69945355191257",
                                "TP": "52", "FP": "34", "FN": "121", "num_dets": "86", "num_gt": "183"},
                   "sha256": "e7771647e742b4385a0dff95afe6336837810201fa81a934862a4ff16a89de5f"},
}


def same(a, b):
    """Equal, NaN included (json spells NaN the same on both sides)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def evaluate(dicts, preds, **kw):
    ev = MetaphaseEvaluator(dicts, distributed=False, save_plot=False, **kw)
    ev.reset()
    for i in range(0, len(preds), 2):
        ev.process(preds[i:i + 2])
    with contextlib.redirect_stdout(io.StringIO()) as out:
        res = ev.evaluate()
    res["_printed"] = out.getvalue()
    return res


# ----------------------------------------------------------------------------- hand-built spreads
# Four well-separated chromosomes, 10 x 20 px, 100 px apart.
BOXES = np.array([[100.0 * i, 0.0, 100.0 * i + 10, 20.0] for i in range(4)])


def spread(iid, classes, boxes=BOXES, **extra):
    """Dataset dict; ``classes`` per box (AGNOSTIC for a chromosome without class)."""
    return dict({"file_name": f"/x/{iid}.png", "image_id": iid, "height": 100, "width": 500,
                 "annotations": [{"bbox": [float(v) for v in b], "bbox_mode": 0, "category_id": int(c)}
                                 for b, c in zip(boxes, classes)]}, **extra)


def pred(iid, rows, extra=()):
    """Prediction dict from rows (x0, y0, x1, y1, score, class): ``instances_top1`` = rows and
    ``instances`` = rows + ``extra`` (other classes of the same proposals)."""
    a = np.array(list(rows), np.float64).reshape(-1, 6)
    top1 = {"boxes": a[:, :4], "scores": a[:, 4], "classes": a[:, 5].astype(np.int64)}
    b = np.array(list(rows) + list(extra), np.float64).reshape(-1, 6)
    inst = {"boxes": b[:, :4], "scores": b[:, 4], "classes": b[:, 5].astype(np.int64)}
    return {"image_id": iid, "instances": inst, "instances_top1": top1}


def on(i, score=0.9, cls=0, dy=0.0):
    """A detection on chromosome ``i`` (shifted down by ``dy`` px)."""
    x0, y0, x1, y1 = BOXES[i]
    return (x0, y0 + dy, x1, y1 + dy, score, cls)


AG = [AGNOSTIC] * 4


def ap_points(found, total, precision=1.0):
    """COCO's 101-point AP when the first ``found`` of ``total`` chromosomes are found at a constant
    ``precision`` and nothing else: the recall thresholds 0, 0.01, ... <= found/total count."""
    n = sum(1 for r in np.linspace(0, 1, 101) if r <= found / total + 1e-12)
    return 100.0 * precision * n / 101


def test_perfect_boxes_give_ap50_100_and_no_24_class_metric():
    res = evaluate([spread(1, AG), spread(2, AG)], [pred(1, [on(i, cls=i) for i in range(4)]),
                                                    pred(2, [on(i, 0.8, cls=7) for i in range(4)])])
    assert set(res["agnostic"]) == {"agnostic_images", "all"}
    a = res["agnostic"]["all"]
    assert a["AP50"] == pytest.approx(100.0) and a["AP"] == pytest.approx(100.0)
    assert (a["TP"], a["FP"], a["FN"], a["num_calls"], a["num_gt"], a["num_images"]) == (8, 0, 0, 8, 8, 2)
    assert a["recall"] == 100.0 and a["precision"] == 100.0
    assert same(res["agnostic"]["agnostic_images"], a)
    # the 24-class metrics do not exist on such a set: None, not 0
    for k in ("mAP", "mAP_max", "AER", "Acc", "AP", "TP", "FP", "FN", "num_dets", "num_gt"):
        assert res[k] is None, k
    assert res["num_images"] == 0 and res["image_kinds"] == {"classes": 0, "agnostic": 2}
    assert "confusion" not in res and "per_class_AP50" not in res and "karyotype" not in res
    flat = flatten_scalars(res)
    assert "mAP" not in flat and "Acc" not in flat
    assert flat["agnostic/all/AP50"] == pytest.approx(100.0) and flat["agnostic/agnostic_images/recall"] == 100.0
    # printed: no paper table of dashes or zeros, the class-agnostic table instead
    out = res["_printed"]
    assert "24-class metrics (mAP, mAP_max, Acc, AER, AP) not computed" in out
    assert "| Method" not in out and "AP50(%)" in out and "| class-agnostic GT |" in out


def test_missed_chromosome_halves_recall():
    res = evaluate([spread(1, AG[:2], BOXES[:2])], [pred(1, [on(0)])])
    a = res["agnostic"]["all"]
    assert (a["TP"], a["FP"], a["FN"]) == (1, 0, 1)
    assert a["recall"] == 50.0 and a["precision"] == 100.0
    assert a["AP50"] == pytest.approx(ap_points(1, 2))  # recall 0..0.5 at precision 1: 51 of 101 points
    assert a["AP50"] == pytest.approx(100 * 51 / 101)


def test_wrong_class_well_placed_is_an_agnostic_tp_but_an_acc_fp():
    # a 24-class spread: chromosomes "1".."4"; chromosome "2" (class 1) is called "3" (class 2)
    res = evaluate([spread(1, [0, 1, 2, 3])], [pred(1, [on(0, cls=0), on(1, cls=2), on(2, cls=2), on(3, cls=3)])])
    assert (res["TP"], res["FP"], res["FN"]) == (3, 1, 0)  # Acc: the misnamed call is an FP
    assert res["Acc"] == 75.0
    a = res["agnostic"]["all"]
    assert (a["TP"], a["FP"], a["FN"]) == (4, 0, 0)  # class-agnostically a hit
    assert a["precision"] == 100.0 and a["recall"] == 100.0 and a["AP50"] == pytest.approx(100.0)
    assert set(res["agnostic"]) == {"class_images", "all"}


def test_duplicates_are_false_positives():
    # chromosome 0 gets a second box 4 px lower: IoU 160/240 = 0.667 with the first, kept by NMS at 0.7
    res = evaluate([spread(1, AG)], [pred(1, [on(i) for i in range(4)] + [on(0, 0.8, dy=4)])])
    a = res["agnostic"]["all"]
    assert (a["TP"], a["FP"], a["FN"], a["num_calls"]) == (4, 1, 0, 5)
    assert a["precision"] == 80.0 and a["recall"] == 100.0
    assert a["AP50"] == pytest.approx(100.0)  # the duplicate ranks after every hit
    # one pixel lower instead: IoU 190/210 > 0.7, removed by the class-agnostic NMS: not a call
    res = evaluate([spread(1, AG)], [pred(1, [on(i) for i in range(4)] + [on(0, 0.8, dy=1)])])
    a = res["agnostic"]["all"]
    assert (a["TP"], a["FP"], a["num_calls"]) == (4, 0, 4)
    # a duplicate scored above a hit costs AP: ranking 0.9 hit, 0.85 duplicate, 0.6 hit ...
    res = evaluate([spread(1, AG[:2], BOXES[:2])], [pred(1, [on(0, 0.9), on(0, 0.85, dy=4), on(1, 0.6)])])
    a = res["agnostic"]["all"]
    assert (a["TP"], a["FP"]) == (2, 1)
    # precision envelope: 1 up to recall 0.5, then 2/3 up to recall 1
    assert a["AP50"] == pytest.approx(100 * (51 * 1.0 + 50 * 2 / 3) / 101)


def test_ap_ranks_what_the_class_agnostic_nms_keeps():
    # two proposals on chromosome 0 whose top-1 classes differ (both survive a per-class NMS): the
    # second, 1 px lower (IoU 190/210 > 0.7), ranks above the hit on chromosome 1. The calls never hold
    # it (NMS), so neither does the ranking of AP; before that NMS it was a false positive.
    dup = [on(0, 0.9, cls=0), on(0, 0.85, cls=5, dy=1), on(1, 0.6, cls=1)]
    res = evaluate([spread(1, AG[:2], BOXES[:2])], [pred(1, dup)])
    a = res["agnostic"]["all"]
    assert (a["TP"], a["FP"], a["num_calls"]) == (2, 0, 2)
    assert a["AP50"] == pytest.approx(100.0) and a["AP"] == pytest.approx(100.0)
    assert a["AP50_before_nms"] == pytest.approx(100 * (51 * 1.0 + 50 * 2 / 3) / 101)
    # the NMS is the evaluator's (TEST.DEEPACC.NMS_THRESH): at 0.95 the duplicate stays and costs AP
    a = evaluate([spread(1, AG[:2], BOXES[:2])], [pred(1, dup)], nms_thresh=0.95)["agnostic"]["all"]
    assert a["AP50"] == pytest.approx(a["AP50_before_nms"]) == pytest.approx(100 * (51 * 1.0 + 50 * 2 / 3) / 101)
    # no score threshold in the ranking: a chromosome found only at 0.2 still counts for AP
    a = evaluate([spread(1, AG[:2], BOXES[:2])], [pred(1, [on(0, 0.9), on(1, 0.2)])])["agnostic"]["all"]
    assert a["AP50"] == pytest.approx(100.0) and a["recall"] == 50.0


def test_calls_use_the_clinical_threshold_but_ap_ranks_every_top1():
    # chromosome 3 detected only at score 0.3: not a call (recall 3/4) but a hit for AP (ranked last)
    res = evaluate([spread(1, AG)], [pred(1, [on(0), on(1), on(2), on(3, 0.3)])])
    a = res["agnostic"]["all"]
    assert (a["TP"], a["FN"], a["num_calls"]) == (3, 1, 3) and a["recall"] == 75.0
    assert a["AP50"] == pytest.approx(100.0)
    # the threshold is the evaluator's (TEST.DEEPACC.SCORE_THRESH in the engines)
    res = evaluate([spread(1, AG)], [pred(1, [on(0), on(1), on(2), on(3, 0.3)])], score_thresh=0.25)
    assert res["agnostic"]["all"]["recall"] == 100.0


def test_agnostic_ap_ranks_the_top1_set_not_every_class():
    # proposal A (chromosome 0): top-1 0.9, its second class 0.8; proposal B (chromosome 1): top-1 0.6.
    # On instances the second class of A would be a duplicate ranked before B's hit (AP < 100).
    res = evaluate([spread(1, AG[:2], BOXES[:2])], [pred(1, [on(0, 0.9, 0), on(1, 0.6, 1)], extra=[on(0, 0.8, 5)])])
    assert res["agnostic"]["all"]["AP50"] == pytest.approx(100.0)
    gt = build_coco_gt([{"image_id": 1, "boxes": BOXES[:2], "classes": np.zeros(2, int)}], ["chromosome"])
    inst = pred(1, [on(0, 0.9, 0), on(1, 0.6, 1)], extra=[on(0, 0.8, 5)])["instances"]
    dt = build_coco_dt(gt, [dict(inst, classes=np.zeros(3, int), image_id=1)])
    assert 100 * coco_ap(gt, dt, [1], ["chromosome"])["AP50"] < 90  # what instances would have given


def test_count_error_on_complete_spreads_only():
    dicts = [
        spread(1, AG, annotation_complete=True),   # 6 calls on 4 chromosomes: +2
        spread(2, AG, annotation_complete=False),  # 1 call: -3, but incomplete: left out
        spread(3, AG),                             # key absent, agnostic: incomplete, left out
        spread(4, [0, 1, 2, 3]),                   # key absent, 24 classes: complete; 3 calls: -1
        spread(5, [0, 1, 2, 3], annotation_complete=False),  # says incomplete: left out
    ]
    extra = [(300, 50, 320, 90, 0.9, 0), (400, 50, 420, 90, 0.9, 0)]  # two calls on background
    preds = [pred(1, [on(i) for i in range(4)] + extra), pred(2, [on(0)]), pred(3, [on(0)]),
             pred(4, [on(i, cls=i) for i in range(3)]), pred(5, [on(0, cls=0)])]
    res = evaluate(dicts, preds)
    ag, cl, al = (res["agnostic"][k]["count_error"] for k in ("agnostic_images", "class_images", "all"))
    assert (ag["n_spreads"], ag["n_incomplete"], ag["median_abs"], ag["mean_signed"]) == (1, 2, 2.0, 2.0)
    assert (cl["n_spreads"], cl["n_incomplete"], cl["median_abs"], cl["mean_signed"]) == (1, 1, 1.0, -1.0)
    assert (al["n_spreads"], al["n_incomplete"]) == (2, 3)
    assert al["median_abs"] == 1.5 and al["mean_abs"] == 1.5 and al["mean_signed"] == 0.5
    # the 24-class count_error keeps its definition (every class image, no completeness)
    assert res["count_error"]["histogram"] == {"1": 1, "3": 1}
    # no complete spread: NaN, and '-' in the table
    res = evaluate([spread(1, AG)], [pred(1, [on(0)])])
    ce = res["agnostic"]["all"]["count_error"]
    assert ce["n_spreads"] == 0 and math.isnan(ce["median_abs"]) and ce["n_incomplete"] == 1
    row = [line for line in format_agnostic_table(res).splitlines() if line.startswith("| all")][0]
    assert row.rstrip(" |").endswith("-")


def test_mixed_sets_are_scored_per_kind():
    cdicts, cpreds = class_spreads(6, seed=2)
    adicts = [spread(900 + j, AG, annotation_complete=True) for j in range(3)]
    # a "mixed" spread (two chromosomes named, two not) is agnostic: its classes are incomplete
    adicts.append(spread(950, [0, 1, AGNOSTIC, AGNOSTIC], annotation_complete=True))
    apreds = [pred(900, [on(i) for i in range(4)]), pred(901, [on(0), on(1)]),
              pred(902, [on(0), (300, 50, 320, 90, 0.7, 3)]), pred(950, [on(i, cls=i) for i in range(4)])]
    mixed = evaluate(cdicts + adicts, cpreds + apreds)
    alone = evaluate(cdicts, cpreds)
    agn_alone = evaluate(adicts, apreds)
    assert [image_kind(d) for d in adicts] == ["agnostic"] * 4
    assert mixed["image_kinds"] == {"classes": 6, "agnostic": 4}
    # the 24-class metrics: over the class images only, exactly as without the agnostic ones
    for k in ("mAP", "mAP_max", "AP", "Acc", "AER", "TP", "FP", "FN", "num_dets", "num_gt", "num_images",
              "per_class_AP50", "per_class_AP", "count_error", "confusion", "karyotype"):
        assert same(mixed[k], alone[k]), k
    assert mixed["num_images"] == 6
    # the class-agnostic block per kind
    assert same(mixed["agnostic"]["class_images"], alone["agnostic"]["class_images"])
    assert same(mixed["agnostic"]["agnostic_images"], agn_alone["agnostic"]["agnostic_images"])
    a = mixed["agnostic"]["agnostic_images"]
    # 4 + 2 + 1 + 4 hits, one call on background; 16 chromosomes
    assert (a["TP"], a["FP"], a["FN"], a["num_calls"], a["num_gt"]) == (11, 1, 5, 12, 16)
    tot = mixed["agnostic"]["all"]
    c = mixed["agnostic"]["class_images"]
    for k in ("TP", "FP", "FN", "num_calls", "num_gt", "num_images"):
        assert tot[k] == a[k] + c[k], k
    assert min(a["AP50"], c["AP50"]) <= tot["AP50"] <= max(a["AP50"], c["AP50"])
    # table: one row per kind, then all
    rows = [line.split("|")[1].strip() for line in format_agnostic_table(mixed).splitlines()[2:]]
    assert rows == ["class-agnostic GT", "24-class GT", "all"]
    assert "| Method" in mixed["_printed"] and "| class-agnostic GT |" in mixed["_printed"]


def test_24_class_sets_are_unchanged():
    """The numbers of the evaluator before the class-agnostic block, on the same data (golden values
    from git 7d89ff1): nothing moves, to the last bit, with and without the karyotype assignment."""
    for (n, seed, cost), want in GOLDEN_RESULTS.items():
        dicts, preds = class_spreads(n, seed)
        res = evaluate(dicts, preds, extra_copy_cost=cost)
        for k, v in want["headline"].items():
            assert repr(res[k]) == v, (n, seed, cost, k)
        old = {k: v for k, v in res.items() if k not in ("agnostic", "image_kinds", "_printed")}
        old["settings"] = {k: v for k, v in old["settings"].items() if k != "class_agnostic"}
        digest = hashlib.sha256(json.dumps(old, sort_keys=True, default=str).encode()).hexdigest()
        assert digest == want["sha256"], (n, seed, cost)
        assert set(res["agnostic"]) == {"class_images", "all"}
        assert same(res["agnostic"]["class_images"], res["agnostic"]["all"])


def test_class_agnostic_mode_ignores_every_class():
    dicts, preds = class_spreads(5, seed=3)
    normal = evaluate(dicts, preds)
    res = evaluate(dicts, preds, class_agnostic=True, extra_copy_cost=3.0)
    assert res["mAP"] is None and res["Acc"] is None and "confusion" not in res and "assignment" not in res
    assert same(res["agnostic"], normal["agnostic"])  # the same block: classes play no part in it
    assert res["settings"]["class_agnostic"] is True
    assert "classes ignored (class-agnostic scoring)" in res["_printed"]


def test_print_table_false_shows_nothing_and_returns_the_same_results(capsys):
    """The caller prints the tables (deepacc-eval): evaluate(print_table=False) neither prints nor logs them."""
    dicts, preds = class_spreads(3, seed=4)
    loud = evaluate(dicts, preds)
    assert loud["_printed"].startswith("DeepACC evaluation on 3 images:\n| Method")
    ev = MetaphaseEvaluator(dicts, distributed=False, save_plot=False)
    ev.process(preds)
    quiet = ev.evaluate(print_table=False)
    assert capsys.readouterr().out == ""
    assert same(flatten_scalars(quiet), flatten_scalars(loud))


def test_category_ids_accepted():
    MetaphaseEvaluator([spread(1, [AGNOSTIC, 23, 0, 5])])  # mixed spread: fine
    with pytest.raises(ValueError, match=r"category_id 24, expected 0..23 \(or 25: a chromosome without class\)"):
        MetaphaseEvaluator([spread(1, [24, 0, 1, 2])])  # background is not a ground-truth class
    assert image_kind({"annotations": []}) == "classes"
    assert image_kind({"annotations": [], "annotation_kind": "agnostic"}) == "agnostic"
    assert image_kind({"annotations": [{"category_id": AGNOSTIC, "iscrowd": 1}, {"category_id": 3}]}) == "classes"


def test_results_file_and_flat_scalars(tmp_path):
    ev = MetaphaseEvaluator([spread(1, AG), spread(2, [0, 1, 2, 3])], output_dir=str(tmp_path), distributed=False,
                            save_plot=False)
    ev.process([pred(1, [on(0), on(1)]), pred(2, [on(i, cls=i) for i in range(4)])])
    with contextlib.redirect_stdout(io.StringIO()):
        res = ev.evaluate()
    js = json.loads((tmp_path / "metrics_deepacc.json").read_text())
    assert js["agnostic"]["agnostic_images"]["recall"] == 50.0 and js["agnostic"]["class_images"]["recall"] == 100.0
    assert js["image_kinds"] == {"classes": 1, "agnostic": 1}
    flat = flatten_scalars(res)
    assert flat["agnostic/all/recall"] == 75.0 and flat["agnostic/class_images/count_error_n_spreads"] == 1.0
    assert flat["mAP"] == pytest.approx(100.0) and flat["num_images"] == 1.0
    # only class-agnostic ground truth: the metrics file without the confusion files
    out = tmp_path / "agn"
    ev = MetaphaseEvaluator([spread(1, AG)], output_dir=str(out), distributed=False)
    ev.process([pred(1, [on(0)])])
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
    assert sorted(os.listdir(out)) == ["metrics_deepacc.json"]
    assert json.loads((out / "metrics_deepacc.json").read_text())["mAP"] is None


def test_agnostic_table_layout():
    a = evaluate([spread(1, AG, annotation_complete=True), spread(2, [0, 1, 2, 3])],
                 [pred(1, [on(0), on(1), on(2)]), pred(2, [on(i, cls=i) for i in range(4)])])
    lines = format_agnostic_table(a).splitlines()
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    assert all(len(c) == 8 for c in cells)  # no stray '|' in a header: a valid markdown table
    assert cells[0] == ["kind", "images", "AP50(%)", "AP(%)", "recall(%)", "precision(%)", "calls/GT",
                        "median abs(count err) (complete spreads)"]
    assert cells[2] == ["class-agnostic GT", "1", "75.25", "75.25", "75.00", "100.00", "3/4", "1 (1)"]
    assert cells[3] == ["24-class GT", "1", "100.00", "100.00", "100.00", "100.00", "4/4", "0 (1)"]
    assert cells[4] == ["all", "2", "87.13", "87.13", "87.50", "100.00", "7/8", "0.5 (2)"]
    assert a["agnostic"]["agnostic_images"]["AP50"] == pytest.approx(ap_points(3, 4))
    # several result dicts: one Method column more, one row per (method, kind)
    b = evaluate([spread(1, AG)], [pred(1, [on(0)])])
    many = [[c.strip() for c in line.strip("|").split("|")]
            for line in format_agnostic_table({"m1": a, "m2": b}).splitlines()]
    assert many[0][0] == "Method" and [r[:2] for r in many[2:]] == [
        ["m1", "class-agnostic GT"], ["m1", "24-class GT"], ["m1", "all"], ["m2", "class-agnostic GT"], ["m2", "all"]]
    assert format_agnostic_table({"mAP": 1.0}) == ""


# ----------------------------------------------------------------------- pycocotools, faster matching
def _random_coco(rng, n_images=8, n_classes=2):
    imgs, dets = [], []
    for i in range(n_images):
        g = int(rng.integers(0, 30))
        xy = np.round(rng.uniform(0, 200, (g, 2)))
        wh = np.round(rng.uniform(3, 40, (g, 2)))  # integer boxes: exact, tied IoUs
        b = np.concatenate([xy, xy + wh], 1)
        imgs.append({"image_id": i + 1, "height": 300, "width": 300, "boxes": b,
                     "classes": rng.integers(0, n_classes, g), "iscrowd": (rng.uniform(size=g) < 0.15).astype(int)})
        n = int(rng.integers(0, 60))
        src = rng.integers(0, max(g, 1), n)
        db = (b[src] if g else np.zeros((n, 4)) + [0, 0, 10, 10]) + np.round(rng.normal(0, 3, (n, 4)))
        db[:, 2:] = np.maximum(db[:, 2:], db[:, :2] + 1)
        dets.append({"image_id": i + 1, "boxes": db, "scores": np.round(rng.uniform(0, 1, n) * 5) / 5,
                     "classes": rng.integers(0, n_classes, n)})
    return imgs, dets


@pytest.mark.parametrize("n_classes", [1, 3])
def test_fast_matching_equals_pycocotools(n_classes):
    rng = np.random.default_rng(n_classes)
    names = [str(k) for k in range(n_classes)]
    for _ in range(15):
        imgs, dets = _random_coco(rng, n_classes=n_classes)
        gt = build_coco_gt(imgs, names)
        dt = build_coco_dt(gt, dets)
        ids = [r["image_id"] for r in imgs]
        slow = _evaluated(gt, dt, ids, n_classes, None, 100, fast_matching=False)
        fast = _evaluated(gt, dt, ids, n_classes, None, 100, fast_matching=True)
        assert len(slow.evalImgs) == len(fast.evalImgs)
        for a, b in zip(slow.evalImgs, fast.evalImgs):
            assert (a is None) == (b is None)
            if a is None:
                continue
            for k in a:
                if isinstance(a[k], np.ndarray):
                    assert np.array_equal(a[k], b[k]), k
                else:
                    assert a[k] == b[k], k
        sub = coco_ap_subsets(gt, dt, {"first": ids[:4], "all": ids, "last": ids[4:]}, names)
        for key, part in (("first", ids[:4]), ("all", ids), ("last", ids[4:])):
            ref = coco_ap(gt, dt, part, names)
            for m in ("AP50", "AP"):
                assert (math.isnan(ref[m]) and math.isnan(sub[key][m])) or sub[key][m] == ref[m], (key, m)
            assert np.array_equal(np.nan_to_num(sub[key]["per_class_AP50"], nan=-1),
                                  np.nan_to_num(ref["per_class_AP50"], nan=-1))


# --------------------------------------------------------------------------------------- deepacc-eval
def _run_cli(argv, capsys):
    from deepacc.tools import eval as E

    rc = E.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def test_cli_class_agnostic_on_the_hand_case(tmp_path, capsys):
    from test_eval_cli import write_hand

    gt, res = write_hand(tmp_path)
    rc, out, err = _run_cli(["--gt", gt, "--results", res, "--class-agnostic", "--output", tmp_path / "e"], capsys)
    assert rc == 0, err
    m = json.loads((tmp_path / "e" / "metrics_deepacc.json").read_text())
    a = m["agnostic"]["all"]
    # calls: image 1 d4 (background), d1, d2, d3 (on 1, 2, 4); image 2 d6, d7, d8 (on X, Y, 7) and d10
    # (a second box on Y, IoU 0.5): TP 6, FP 2 (d4, d10), FN 1 (chromosome 21)
    assert (a["TP"], a["FP"], a["FN"], a["num_calls"], a["num_gt"]) == (6, 2, 1, 8, 7)
    assert a["recall"] == pytest.approx(600 / 7) and a["precision"] == 75.0
    # every result ranked as a chromosome: d4 (0.95, FP) first, then six hits (d1 d6 d7 d2 d3 d8), then
    # d9 d10 d5 (boxes on already found chromosomes): precision envelope 6/7 up to recall 6/7 (86 points)
    assert a["AP50"] == pytest.approx(100 * 86 * (6 / 7) / 101)
    assert a["AP"] == pytest.approx(a["AP50"])  # exact boxes: every IoU threshold alike
    # count error: both spreads complete (24-class ground truth), 4 - 4 and 4 - 3
    ce = a["count_error"]
    assert (ce["n_spreads"], ce["median_abs"], ce["mean_signed"]) == (2, 0.5, 0.5)
    assert m["mAP"] is None and m["Acc"] is None and "confusion" not in m
    assert m["inputs"]["class_agnostic"] is True and m["settings"]["class_agnostic"] is True
    assert "| 24-class GT " in out and "| all " in out and "85.71" in out and "75.00" in out and "8/7" in out
    assert "| results |" not in out and "AP50_max(%)" not in out  # no 24-class tables
    assert "classes ignored (--class-agnostic)" in out + err
    assert sorted(os.listdir(tmp_path / "e")) == ["metrics_deepacc.json"]
    # --json: the flat scalars, without the metrics that were not computed
    rc, out, err = _run_cli(["--gt", gt, "--results", res, "--class-agnostic", "--json"], capsys)
    flat = json.loads(out)
    assert "mAP" not in flat and flat["agnostic/all/precision"] == 75.0 and flat["agnostic/all/FN"] == 1
    # without the flag the 24-class scoring is as before, and the class-agnostic table follows it
    rc, out, err = _run_cli(["--gt", gt, "--results", res], capsys)
    assert rc == 0 and "| results | " in out and "37.50" in out and "| 24-class GT " in out
    assert out.index("| results |") < out.index("| 24-class GT ")
    # the assignment makes no sense without classes
    rc, out, err = _run_cli(["--gt", gt, "--results", res, "--class-agnostic", "--assignment", "on"], capsys)
    assert rc == 2 and "--assignment on does not apply to --class-agnostic" in err


def test_cli_scores_class_less_ground_truth_per_kind(tmp_path, capsys, monkeypatch):
    """A ground truth with chromosomes without class, as the COCO reader gives it (AGNOSTIC), scored
    per kind without any flag (the reader is replaced here; the next test reads a real file)."""
    from deepacc.tools import eval as E

    dicts = [spread(1, AG, annotation_complete=True), spread(2, [0, 1, 2, 3])]
    for d in dicts:  # COCO-style file names for the results' image ids
        d["file_name"] = str(tmp_path / f"img{d['image_id']}.png")
    monkeypatch.setattr(E, "load_ground_truth", lambda *a, **k: ([dict(d) for d in dicts], {1: 0, 2: 1, 3: 2,
                                                                                         4: 3, 99: AGNOSTIC}))
    rows = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 20], "score": 0.9},
            {"image_id": 1, "category_id": 1, "bbox": [100, 0, 10, 20], "score": 0.9},
            {"image_id": 2, "category_id": 1, "bbox": [0, 0, 10, 20], "score": 0.9},
            {"image_id": 2, "category_id": 3, "bbox": [100, 0, 10, 20], "score": 0.8}]
    res = tmp_path / "r.json"
    res.write_text(json.dumps(rows))
    rc, out, err = _run_cli(["--gt", tmp_path / "gt.json", "--results", res, "--output", tmp_path / "e"], capsys)
    assert rc == 0, err
    m = json.loads((tmp_path / "e" / "metrics_deepacc.json").read_text())
    assert m["num_images"] == 1 and (m["TP"], m["FP"], m["FN"]) == (1, 1, 2)  # image 2 only
    assert m["agnostic"]["agnostic_images"]["recall"] == 50.0 and m["agnostic"]["class_images"]["recall"] == 50.0
    assert m["inputs"]["image_kinds"] == {"classes": 1, "agnostic": 1}
    assert "1 image(s) without classes (scored class-agnostically), 1 with the 24 classes" in out
    assert "DeepACC evaluation on 1 image(s) with classes (1 class-agnostic image(s) in the table below)" in out
    assert "| class-agnostic GT |" in out
    # a class-less result (the 'chromosome' category) cannot be scored per class ...
    res.write_text(json.dumps(rows + [{"image_id": 2, "category_id": 99, "bbox": [200, 0, 10, 20], "score": 0.9}]))
    rc, out, err = _run_cli(["--gt", tmp_path / "gt.json", "--results", res], capsys)
    assert rc == 2 and "results[4]: category id 99 is the class-less 'chromosome' category" in err
    # ... but is, class-agnostically
    rc, out, err = _run_cli(["--gt", tmp_path / "gt.json", "--results", res, "--class-agnostic", "--json"], capsys)
    assert rc == 0, err
    flat = json.loads(out)
    assert flat["agnostic/class_images/TP"] == 3 and flat["agnostic/all/num_calls"] == 5


def _reader_maps_chromosome(tmp_path):
    from deepacc.data.coco import load_coco_json

    f = tmp_path / "probe.json"
    f.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png", "height": 50, "width": 50}],
                             "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [1, 1, 5, 9],
                                              "area": 45, "iscrowd": 0}],
                             "categories": [{"id": 7, "name": "chromosome"}]}))
    try:
        d = load_coco_json(str(f), check_images="none")
    except Exception:  # noqa: BLE001 - the reader does not know the category yet
        return False
    return d[0]["annotations"][0]["category_id"] == AGNOSTIC


def test_cli_reads_a_chromosome_category_ground_truth(tmp_path, capsys):
    if not _reader_maps_chromosome(tmp_path):
        pytest.skip("the COCO reader (deepacc.data.coco) does not map a 'chromosome' category to AGNOSTIC yet")
    images = [{"id": 1, "file_name": "s1.png", "height": 100, "width": 500}]
    anns = [{"id": j + 1, "image_id": 1, "category_id": 1, "bbox": [100.0 * j, 0, 10, 20], "area": 200, "iscrowd": 0}
            for j in range(4)]
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"images": images, "annotations": anns,
                              "categories": [{"id": 1, "name": "chromosome"}]}))
    res = tmp_path / "res.json"
    res.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [100.0 * j, 0, 10, 20], "score": 0.9}
                               for j in range(3)]))
    rc, out, err = _run_cli(["--gt", gt, "--results", res, "--json"], capsys)
    assert rc == 0, err
    flat = json.loads(out)
    assert "mAP" not in flat and flat["agnostic/agnostic_images/recall"] == 75.0
    assert flat["agnostic/all/AP50"] == pytest.approx(ap_points(3, 4))


# ------------------------------------------------------------------------ real_spreads benchmark
def test_real_spreads_benchmark_rows_equal_eval_only(tiny_data_root, tmp_path, monkeypatch):
    """The benchmark on a tiny synthetic set (24 classes) and the same spreads without classes, with a
    randomly initialised tiny model: one row per (model, dataset), the figures of --eval-only."""
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    import real_spreads as rs
    from tv_tiny import QUICK_CONFIG, TINY_OPTS

    from deepacc.config import load_config
    from deepacc.data.catalog import register, unregister
    from deepacc.data.coco import load_coco_json
    from deepacc.tv.checkpoint import AtomicCheckpointer
    from deepacc.tv.evaluation import test as eval_only
    from deepacc.tv.metrics import flatten_results
    from deepacc.tv.model import build_model

    monkeypatch.setenv("DETECTRON2_DATASETS", tiny_data_root)
    base = os.path.join(tiny_data_root, "deepacc_synth_quick")
    val = os.path.join(base, "annotations", "val.json")

    def classes():
        return load_coco_json(val, base, check_images="none")

    def agnostic():
        return [dict(d, annotation_complete=True, annotations=[dict(a, category_id=AGNOSTIC) for a in d["annotations"]])
                for d in classes()]

    register("rs_test_classes", classes)
    register("rs_test_agnostic", agnostic)
    try:
        opts = TINY_OPTS + ["DATASETS.TRAIN", "('rs_test_classes',)", "DATASETS.TEST", "('rs_test_classes',)",
                            "TEST.DEEPACC.SCORE_THRESH", "0.05", "OUTPUT_DIR", str(tmp_path / "run")]
        cfg = load_config(QUICK_CONFIG, opts)
        torch.manual_seed(0)
        AtomicCheckpointer(build_model(cfg), str(tmp_path)).save("tiny")
        weights = str(tmp_path / "tiny.pth")
        cfg_file = tmp_path / "tiny.yaml"
        cfg_file.write_text(cfg.dump())
        out = str(tmp_path / "bench" / "real_spreads_tiny")
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            rc = rs.main(["--model", f"tiny={cfg_file}:{weights}", "--datasets", "rs_test_classes", "rs_test_agnostic",
                          "--out", out, "--overlays", "1"])
        assert rc == 0
        # one model's row with a config override (--set); a malformed one is an argparse error
        with contextlib.redirect_stdout(io.StringIO()):
            assert rs.main(["--model", f"strict={cfg_file}:{weights}", "--datasets", "rs_test_agnostic",
                            "--out", out + "_strict", "--set", "strict:TEST.DEEPACC.SCORE_THRESH=1.0"]) == 0
        strict = json.load(open(out + "_strict.json"))["rows"][0]
        assert strict["overrides"] == ["TEST.DEEPACC.SCORE_THRESH", "1.0"] and strict["thresholds"]["score"] == 1.0
        for bad in ("strict:TEST.DEEPACC.SCORE_THRESH", "other:INPUT.POLARITY=auto"):
            with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
                rs.main(["--model", f"strict={cfg_file}:{weights}", "--datasets", "rs_test_agnostic", "--set", bad])
        md = open(out + ".md").read()
        lines = [line for line in md.splitlines() if line.startswith("| tiny")]
        assert len(lines) == 2
        cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
        head = [c.strip() for c in md.splitlines()[[i for i, line in enumerate(md.splitlines())
                                                     if line.startswith("| model")][0]].strip("|").split("|")]
        assert head[:9] == ["model", "dataset", "kind", "images", "AP50(%)", "AP(%)", "recall(%)", "precision(%)",
                            "median abs(count err) (n)"]
        assert head[9:13] == ["mAP(%)", "Acc(%)", "AER(%)", "AP50 before NMS(%)"]
        assert cells[0][:4] == ["tiny", "rs_test_classes", "classes", "2"]
        assert cells[1][:4] == ["tiny", "rs_test_agnostic", "agnostic", "2"]
        assert cells[1][9:12] == ["-", "-", "-"] and cells[0][9] != "-"  # 24-class metrics: class data only
        assert cells[0][4] == cells[1][4] and cells[0][6] == cells[1][6]  # same spreads, same detections
        assert cells[0][8].endswith("(2)") and cells[1][8].endswith("(2)")  # both complete
        assert "rs_test_agnostic" in printed.getvalue()
        js = json.load(open(out + ".json"))
        assert js["command"].startswith("python benchmarks/real_spreads.py --model tiny=")
        assert js["cpu_capability"] and js["precision"] and len(js["rows"]) == 2
        for r in js["rows"]:
            assert r["wall_s"] > 0 and r["precision_used"] in ("float32", "bfloat16")
            assert len(r["overlays"]) == 1 and open(r["overlays"][0], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
        # the figures of train_net.py --eval-only: the engine's own evaluation of the same weights
        ecfg = load_config(str(cfg_file), ["MODEL.WEIGHTS", weights, "MODEL.DEVICE", "cpu",
                                           "DATASETS.TEST", "('rs_test_classes', 'rs_test_agnostic')"])
        model = build_model(ecfg)
        AtomicCheckpointer(model).load(weights, checkpointables=[])
        with contextlib.redirect_stdout(io.StringIO()):
            ref = eval_only(ecfg, model, torch.device("cpu"))
        for r in js["rows"]:
            e = ref[r["dataset"]]
            assert r["agnostic_AP50"] == pytest.approx(e["agnostic/all/AP50"], nan_ok=True)
            assert r["recall"] == pytest.approx(e["agnostic/all/recall"], nan_ok=True)
            assert r["mAP"] == (None if e["mAP"] is None else pytest.approx(e["mAP"]))
        flat = flatten_results(ref)  # what the trainer writes to metrics.json
        assert "rs_test_agnostic/agnostic/all/AP50" in flat and "rs_test_agnostic/mAP" not in flat
        assert "rs_test_classes/mAP" in flat and "rs_test_classes/agnostic/class_images/recall" in flat
    finally:
        unregister("rs_test_classes")
        unregister("rs_test_agnostic")


# ---------------------------------------------------------------------- the chromosome score
def test_agnostic_block_ranks_and_counts_by_the_chromosome_probability():
    """A chromosome whose class the model hesitates between two (p = 0.45 each, top-1 score 0.45 < 0.5)
    is found with P(chromosome) = 0.9; a confident background box is not. With the top-1 class score
    (agnostic_score="class", or no class_probs) only the confident call counts."""
    gt_boxes = [[10, 10, 30, 60], [100, 10, 120, 70], [200, 10, 220, 50]]
    d = {"file_name": "/tmp/x.png", "image_id": 1, "height": 300, "width": 300, "annotation_complete": True,
         "annotations": [{"bbox": b, "bbox_mode": 0, "category_id": AGNOSTIC, "iscrowd": 0} for b in gt_boxes]}
    probs = np.zeros((4, 25))
    probs[0, 3] = 0.95                       # confident call of chromosome 4
    probs[1, 5] = probs[1, 6] = 0.45         # hesitant between 6 and 7: P(chromosome) 0.9
    probs[2, 8] = 0.3
    probs[2, 24] = 0.7                       # mostly background: P(chromosome) 0.3
    probs[3, 1] = 0.2
    probs[3, 24] = 0.8                       # a box on nothing, background
    probs[:, 24] += 1 - probs.sum(1)
    boxes = np.array(gt_boxes + [[250, 200, 270, 240]], dtype=float)
    top1 = {"boxes": boxes, "scores": probs[:, :24].max(1), "classes": probs[:, :24].argmax(1), "class_probs": probs}
    pred = {"image_id": 1, "instances": dict(top1), "instances_top1": top1}

    def block(**kw):
        ev = MetaphaseEvaluator([d], output_dir=None, distributed=False, save_plot=False, **kw)
        ev.process([pred])
        with contextlib.redirect_stdout(io.StringIO()):
            return ev.evaluate()["agnostic"]["all"]

    chrom = block()
    assert (chrom["TP"], chrom["num_calls"], chrom["num_gt"]) == (2, 2, 3)
    assert chrom["count_error"]["median_abs"] == 1.0
    # AP: the three chromosomes rank 0.95, 0.9, 0.3 above the background box (0.2): all found first
    assert chrom["AP50"] == pytest.approx(100.0, abs=0.5)
    cls = block(agnostic_score="class")
    assert (cls["TP"], cls["num_calls"]) == (1, 1) and cls["count_error"]["median_abs"] == 2.0
    # scores 0.95, 0.45, 0.3, 0.2: still every chromosome before the background box
    assert cls["AP50"] == pytest.approx(100.0, abs=0.5)
    with pytest.raises(ValueError, match="agnostic_score"):
        MetaphaseEvaluator([d], output_dir=None, agnostic_score="maybe")
