"""Tests of deepacc.evaluation: Acc/AER on hand-built cases, mAP against pycocotools, outputs."""
import contextlib
import csv
import io
import json
import math

import numpy as np
import pytest
import torch

from deepacc.evaluation import (
    MetaphaseEvaluator,
    acc_aer,
    box_iou,
    filter_top1,
    flatten_scalars,
    format_table,
    match_image,
    nms,
)
from deepacc.karyotype import normalize_karyotype, numerical_karyotype

torch.set_num_threads(1)

# Five well-separated chromosomes of classes 0..4 (names "1".."5"), 10 x 20 px each.
GT_BOXES = np.array([[100.0 * i, 0.0, 100.0 * i + 10, 20.0] for i in range(5)])
GT_CLASSES = np.arange(5)


def dets(*rows):
    """rows of (x0, y0, x1, y1, score, class) -> detection dict."""
    a = np.array(rows, dtype=np.float64).reshape(-1, 6)
    return {"boxes": a[:, :4], "scores": a[:, 4], "classes": a[:, 5].astype(np.int64)}


def perfect(score=0.9, skip=()):
    return [tuple(GT_BOXES[i]) + (score, i) for i in range(5) if i not in skip]


GT = {"boxes": GT_BOXES, "classes": GT_CLASSES}


def check(d, tp, fp, fn, gt=GT, **kw):
    r = acc_aer(d, gt, **kw)
    assert (r["tp"], r["fp"], r["fn"]) == (tp, fp, fn)
    assert r["num_dets"] == tp + fp
    assert r["acc"] == tp / (tp + fp)
    assert r["aer"] == (fp + fn) / len(gt["boxes"])
    return r


# --------------------------------------------------------------------------- Acc / AER
def test_perfect():
    check(dets(*perfect()), 5, 0, 0)


def test_misclassified_is_one_fp_not_fn():
    rows = perfect(skip=(1,)) + [tuple(GT_BOXES[1]) + (0.9, 7)]
    r = check(dets(*rows), 4, 1, 0)
    assert r["acc"] == 4 / 5 and r["aer"] == 1 / 5


def test_duplicate_second_box_on_one_chromosome_is_fp():
    # IoU(dup, gt0) = IoU(dup, det0) = 160/240 = 0.667: matches the gt, survives NMS at 0.7
    rows = perfect() + [(0, 4, 10, 24, 0.8, 0)]
    r = check(dets(*rows), 5, 1, 0)
    assert r["acc"] == 5 / 6 and r["aer"] == 1 / 5


def test_two_boxes_on_one_chromosome_higher_score_wrong_class():
    # the wrong class scores higher; the same-class box still claims the chromosome
    rows = perfect(skip=(0,)) + [(0, 0, 10, 20, 0.95, 9), (0, 4, 10, 24, 0.6, 0)]
    check(dets(*rows), 5, 1, 0)


def test_missed_chromosome_is_fn():
    r = check(dets(*perfect(skip=(4,))), 4, 0, 1)
    assert r["acc"] == 1.0 and r["aer"] == 1 / 5


def test_low_score_is_dropped_and_threshold_is_inclusive():
    rows = perfect(skip=(4,)) + [tuple(GT_BOXES[4]) + (0.49, 4)]
    check(dets(*rows), 4, 0, 1)
    rows = perfect(skip=(4,)) + [tuple(GT_BOXES[4]) + (0.5, 4)]
    check(dets(*rows), 5, 0, 0)
    # the threshold is an argument
    check(dets(*perfect(score=0.3)), 5, 0, 0, score_thresh=0.2)


def test_nothing_kept_gives_nan_acc():
    r = acc_aer(dets(*perfect(score=0.3)), GT)
    assert r["num_dets"] == 0 and math.isnan(r["acc"]) and r["aer"] == 1.0


def test_class_agnostic_nms_merges_two_boxes():
    # IoU(0,0,10,20 ; 0,1,10,21) = 190/210 = 0.905 > 0.7: the lower box goes, whatever its class
    rows = perfect() + [(0, 1, 10, 21, 0.8, 3)]
    check(dets(*rows), 5, 0, 0)
    # with NMS disabled (threshold 1) the second box survives and is an FP
    check(dets(*rows), 5, 1, 0, nms_thresh=1.0)
    # IoU exactly at the threshold is kept (torchvision removes only IoU > threshold)
    m = match_image(np.array([[0, 0, 10, 20], [0, 0, 10, 14]], float), np.array([0.9, 0.8]),
                    np.array([0, 0]), GT_BOXES[:1], GT_CLASSES[:1], nms_thresh=0.7)
    assert m["num_dets"] == 2


def test_background_box_is_fp_and_poor_localisation_is_fp_plus_fn():
    rows = perfect() + [(700, 700, 720, 740, 0.9, 2)]
    check(dets(*rows), 5, 1, 0)
    # IoU(gt0, box) = 100/300 < 0.5: the box is an FP and the chromosome an FN
    rows = perfect(skip=(0,)) + [(0, 10, 10, 30, 0.9, 0)]
    r = check(dets(*rows), 4, 1, 1)
    assert r["aer"] == 2 / 5


def test_greedy_claims_highest_iou_same_class_gt():
    # two touching chromosomes of class 0; det A overlaps both (0.6 with g_a, 0.739 with g_b)
    gt = {"boxes": np.array([[0, 0, 10, 20], [0, 8, 10, 28]], float), "classes": np.array([0, 0])}
    d = dets((0, 5, 10, 25, 0.9, 0), (0, 0, 10, 20, 0.8, 0))
    # A must take g_b (highest IoU), leaving g_a to the exact box: two TPs
    check(d, 2, 0, 0, gt=gt)


def test_greedy_by_score_duplicate_loses():
    gt = {"boxes": GT_BOXES[:1], "classes": GT_CLASSES[:1]}
    # the better-placed box has the lower score: it is the duplicate
    d = dets((0, 4, 10, 24, 0.9, 0), (0, 0, 10, 20, 0.6, 0))
    m = match_image(d["boxes"], d["scores"], d["classes"], gt["boxes"], gt["classes"])
    assert m["kept"].tolist() == [0, 1] and m["det_match"].tolist() == [0, -1]


def test_pooled_over_images():
    d1 = dets(*(perfect() + [(0, 4, 10, 24, 0.8, 0)]))  # 5 TP, 1 FP
    d2 = dets(*perfect(skip=(3, 4)))  # 3 TP, 2 FN
    r = acc_aer([d1, d2], [GT, GT])
    assert (r["tp"], r["fp"], r["fn"], r["num_dets"], r["num_gt"]) == (8, 1, 2, 9, 10)
    assert r["acc"] == 8 / 9 and r["aer"] == 3 / 10


def test_acc_aer_input_errors():
    with pytest.raises(ValueError, match="2 detection entries but 1"):
        acc_aer([GT, GT], [GT])
    with pytest.raises(KeyError, match="scores"):
        acc_aer({"boxes": GT_BOXES, "classes": GT_CLASSES}, GT)


# --------------------------------------------------------------------------- NMS and IoU
def test_nms_identical_to_torchvision():
    from torchvision.ops import nms as tv_nms

    rng = np.random.default_rng(0)
    for t in range(200):
        n = int(rng.integers(0, 60))
        xy = rng.uniform(0, 100, (n, 2))
        wh = rng.uniform(0, 30, (n, 2))
        if t % 3 == 0:
            xy, wh = np.round(xy), np.round(wh)  # exact IoU values and zero-area boxes
        dt = np.float32 if t % 2 else np.float64
        b = np.concatenate([xy, xy + wh], 1).astype(dt)
        s = rng.uniform(0, 1, n).astype(dt)
        if t % 5 == 0:
            s = (np.round(s * 4) / 4).astype(dt)  # ties
        thr = (0.7, 0.5, 0.3)[t % 3]
        ref = tv_nms(torch.from_numpy(b), torch.from_numpy(s), thr).numpy()
        assert np.array_equal(nms(b, s, thr), ref), t


def test_box_iou_matches_torchvision():
    from torchvision.ops import box_iou as tv_iou

    rng = np.random.default_rng(1)
    a = np.concatenate([rng.uniform(0, 50, (7, 2)), rng.uniform(50, 90, (7, 2))], 1)
    b = np.concatenate([rng.uniform(0, 50, (5, 2)), rng.uniform(50, 90, (5, 2))], 1)
    np.testing.assert_allclose(box_iou(a, b), tv_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy(), rtol=1e-12)
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 5)


def test_filter_top1_orders_by_score():
    b = np.array([[0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 10, 11]], float)
    assert filter_top1(b, np.array([0.6, 0.9, 0.7])).tolist() == [1, 2]


# --------------------------------------------------------------------------- karyotype strings
def full(extra=(), drop=()):
    cls = [c for c in range(22) for _ in range(2)]
    for c in drop:
        cls.remove(c)
    return cls + list(extra)


@pytest.mark.parametrize("classes,expected", [
    (full([22, 23]), "46,XY"),
    (full([22, 22]), "46,XX"),
    (full([22, 23, 20]), "47,XY,+21"),
    (full([22]), "45,X"),
    (full([22, 22, 23]), "47,XXY"),
    (full([22, 22], drop=[20]), "45,XX,-21"),
    (full([22, 23, 20, 20]), "48,XY,+21,+21"),
    (full([23, 7, 22], drop=[6]), "46,XY,-7,+8"),
    (full(), "44,--"),
])
def test_numerical_karyotype(classes, expected):
    assert numerical_karyotype(classes) == expected
    assert numerical_karyotype([str(c + 1) if c < 22 else "XY"[c - 22] for c in classes]) == expected
    assert normalize_karyotype(expected) == expected


def test_numerical_karyotype_errors_and_normalize():
    with pytest.raises(ValueError, match="out of range"):
        numerical_karyotype([24])
    with pytest.raises(ValueError, match="unknown chromosome category"):
        numerical_karyotype(["Z"])
    assert normalize_karyotype(" 47, yx , +21") == "47,XY,+21"
    assert normalize_karyotype("46,XY,t(9;22)(q34;q11)") == "46,XY"
    assert normalize_karyotype("47,XX,+21,-7,+8") == "47,XX,-7,+8,+21"
    with pytest.raises(ValueError, match="not an ISCN string"):
        normalize_karyotype("XY,46")


def test_empty_set_gets_a_plain_marker_not_a_loss_of_everything():
    from deepacc.karyotype import NO_CHROMOSOMES, format_karyotype

    assert numerical_karyotype([]) == NO_CHROMOSOMES == "no chromosomes called"
    assert format_karyotype({}) == NO_CHROMOSOMES
    assert normalize_karyotype(NO_CHROMOSOMES) == NO_CHROMOSOMES
    assert normalize_karyotype("  No chromosomes  called ") == NO_CHROMOSOMES
    # A few calls still list every missing autosome (long, but ISCN-correct).
    few = numerical_karyotype([0, 20, 22])
    assert few.startswith("3,X,-1,-2,-2,-3,-3,") and few.endswith(",-21,-22,-22") and "+" not in few
    assert normalize_karyotype(few) == few


def test_karyotype_agreement_with_an_image_without_calls():
    full_cls = [c for c in range(22) for _ in range(2)] + [22, 23]  # 46,XY
    boxes = np.array([[60.0 * (i % 10), 100.0 * (i // 10), 60.0 * (i % 10) + 20, 100.0 * (i // 10) + 50]
                      for i in range(46)])
    dicts = [{"file_name": f"/x/{iid}.png", "image_id": iid, "height": 600, "width": 600, "karyotype": kar,
              "annotations": [{"bbox": b.tolist(), "bbox_mode": 0, "category_id": c} for b, c in zip(boxes, full_cls)]}
             for iid, kar in ((1, "46,XY"), (2, "no chromosomes called"))]
    dicts[1]["annotations"] = []  # an empty image: its truth is the marker too
    full = {"boxes": boxes, "scores": np.full(46, 0.9), "classes": np.array(full_cls)}
    empty = {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "classes": np.zeros(0, int)}
    preds = [{"image_id": 1, "instances": empty, "instances_top1": empty},
             {"image_id": 2, "instances": empty, "instances_top1": empty}]
    kar = run_eval(dicts, preds, output_dir=None)["karyotype"]
    assert kar["num_with_stored"] == 2 and kar["agreement_with_stored"] == pytest.approx(50.0)
    assert kar["agreement_with_gt_boxes"] == pytest.approx(50.0)
    preds[0] = {"image_id": 1, "instances": full, "instances_top1": full}
    kar = run_eval(dicts, preds, output_dir=None)["karyotype"]
    assert kar["agreement_with_stored"] == pytest.approx(100.0)


# --------------------------------------------------------------------------- evaluator
def make_dataset(n_images=12, seed=0, karyotype=False):
    """Random metaphase-like dataset dicts and noisy predictions (instances + top-1)."""
    rng = np.random.default_rng(seed)
    dicts, preds = [], []
    for i in range(n_images):
        g = int(rng.integers(5, 40))
        cls = rng.integers(0, 23, g)  # class 23 ("Y") never in the ground truth
        x0 = rng.uniform(0, 500, g)
        y0 = rng.uniform(0, 400, g)
        boxes = np.stack([x0, y0, x0 + rng.uniform(8, 40, g), y0 + rng.uniform(15, 80, g)], 1)
        d = {"file_name": f"/tmp/img{i}.png", "image_id": 1000 + 7 * i, "height": 500, "width": 600,
             "annotations": [{"bbox": b.tolist(), "bbox_mode": 0, "category_id": int(c), "iscrowd": 0}
                             for b, c in zip(boxes, cls)]}
        if karyotype:
            d["karyotype"] = numerical_karyotype(cls.tolist())
        dicts.append(d)
        n = int(rng.integers(0, 60))
        src = rng.integers(0, g, n)
        db = boxes[src] + rng.normal(0, 4, (n, 4))
        db[:, 2:] = np.maximum(db[:, 2:], db[:, :2] + 1)
        dc = np.where(rng.uniform(size=n) < 0.7, cls[src], rng.integers(0, 24, n))
        ds = rng.uniform(0.05, 1, n)
        extra = rng.integers(0, 24, n)
        top1 = {"boxes": db, "scores": ds, "classes": dc, "class_probs": rng.uniform(size=(n, 25))}
        inst = {"boxes": np.concatenate([db, db]), "scores": np.concatenate([ds, ds * 0.3]),
                "classes": np.concatenate([dc, extra])}
        preds.append({"image_id": d["image_id"], "instances": inst, "instances_top1": top1})
    return dicts, preds


def coco_reference(tmp_path, dicts, preds, key="instances"):
    """pycocotools' own numbers, through COCO json files on disk and a default COCOeval."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns = [], []
    for d in dicts:
        images.append({"id": d["image_id"], "file_name": d["file_name"], "height": d["height"], "width": d["width"]})
        for a in d["annotations"]:
            x0, y0, x1, y1 = a["bbox"]
            anns.append({"id": len(anns) + 1, "image_id": d["image_id"], "category_id": a["category_id"] + 1,
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
    cats = [{"id": i + 1, "name": n} for i, n in enumerate([str(i) for i in range(1, 23)] + ["X", "Y"])]
    gt_file, dt_file = tmp_path / "gt.json", tmp_path / "dt.json"
    gt_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    res = []
    for p in preds:
        inst = p[key]
        for b, s, c in zip(np.asarray(inst["boxes"]).tolist(), np.asarray(inst["scores"]).tolist(),
                           np.asarray(inst["classes"]).tolist()):
            res.append({"image_id": p["image_id"], "category_id": int(c) + 1,
                        "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": s})
    dt_file.write_text(json.dumps(res))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_file))
        dt = gt.loadRes(str(dt_file))
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    prec = ev.eval["precision"]
    per50 = []
    for k in range(24):
        s = prec[0, :, k, 0, 2]
        per50.append(float(np.mean(s[s > -1])) if (s > -1).any() else float("nan"))
    return ev.stats, per50


def run_eval(dicts, preds, **kw):
    ev = MetaphaseEvaluator(dicts, distributed=False, **kw)
    ev.reset()
    for i in range(0, len(preds), 3):
        ev.process(preds[i:i + 3])
    with contextlib.redirect_stdout(io.StringIO()):
        return ev.evaluate()


def test_map_equals_pycocotools(tmp_path):
    dicts, preds = make_dataset()
    res = run_eval(dicts, preds)
    stats, per50 = coco_reference(tmp_path, dicts, preds)
    assert res["mAP"] == 100 * stats[1]
    assert res["AP"] == 100 * stats[0]
    assert 5 < res["mAP"] < 95  # a non-trivial value
    for name, ref in zip(res["per_class_AP50"], per50):
        v = res["per_class_AP50"][name]
        assert (math.isnan(v) and math.isnan(ref)) or v == pytest.approx(100 * ref, abs=1e-9)
    assert math.isnan(res["per_class_AP50"]["Y"])  # no ground truth
    # mAP_max is pycocotools' AP50 on the top-1 detections
    stats_top1, _ = coco_reference(tmp_path, dicts, preds, key="instances_top1")
    assert res["mAP_max"] == 100 * stats_top1[1]
    assert res["mAP_max"] != res["mAP"]


def test_map_max_equals_map_when_one_class_per_proposal():
    dicts, preds = make_dataset(seed=3)
    for p in preds:
        p["instances"] = p["instances_top1"]
    res = run_eval(dicts, preds)
    assert res["mAP_max"] == res["mAP"]


def test_order_of_processing_and_torch_tensors_do_not_matter():
    dicts, preds = make_dataset(seed=4, karyotype=True)
    ref = run_eval(dicts, preds)
    tensors = [{"image_id": torch.tensor(p["image_id"]),
                "instances": {k: torch.from_numpy(np.asarray(v)) for k, v in p["instances"].items()},
                "instances_top1": {k: torch.from_numpy(np.asarray(v)) for k, v in p["instances_top1"].items()}}
               for p in preds[::-1]]
    res = run_eval(dicts, tensors + tensors[:2])  # repeated images are counted once
    assert json.dumps(res, sort_keys=True, default=str) == json.dumps(ref, sort_keys=True, default=str)


def test_acc_aer_confusion_count_karyotype_on_hand_built_dataset(tmp_path):
    names = [str(i) for i in range(1, 23)] + ["X", "Y"]
    full_cls = [c for c in range(22) for _ in range(2)] + [22, 23]  # 46,XY
    boxes = np.array([[60.0 * (i % 10), 100.0 * (i // 10), 60.0 * (i % 10) + 20, 100.0 * (i // 10) + 50]
                      for i in range(46)])

    def d(iid, kar):
        return {"file_name": f"/x/{iid}.png", "image_id": iid, "height": 600, "width": 600, "karyotype": kar,
                "annotations": [{"bbox": b.tolist(), "bbox_mode": 0, "category_id": c} for b, c in zip(boxes, full_cls)]}

    def p(iid, cls, extra=()):
        b = np.concatenate([boxes, np.array([e[0] for e in extra]).reshape(-1, 4)])
        c = np.concatenate([cls, [e[1] for e in extra]]).astype(int)
        s = np.full(len(c), 0.9)
        inst = {"boxes": b, "scores": s, "classes": c}
        return {"image_id": iid, "instances": inst, "instances_top1": inst}

    # image 1: perfect, stored karyotype 46,XY
    # image 2: chromosome "1" (class 0) called "3" (class 2, same group A), chromosome "2" called "6"
    #          (group C), one background box (class 20) -> stored "47,XY,+21" disagrees with 46 boxes
    # image 3: X missed entirely (no box) -> 45 kept, FN 1
    cls2 = np.array(full_cls)
    cls2[0], cls2[2] = 2, 5
    keep3 = [i for i in range(46) if full_cls[i] != 22]
    preds = [p(1, np.array(full_cls)), p(2, cls2, extra=[([590, 590, 599, 599], 20)])]
    p3 = p(3, np.array(full_cls))
    p3["instances"] = p3["instances_top1"] = {k: v[keep3] for k, v in p3["instances"].items()}
    preds.append(p3)
    dicts = [d(1, "46,XY"), d(2, "47,XY,+21"), d(3, "45,Y")]
    out = tmp_path / "out"
    res = run_eval(dicts, preds, output_dir=str(out))

    assert (res["TP"], res["FP"], res["FN"], res["num_dets"], res["num_gt"]) == (46 + 44 + 45, 3, 1, 138, 138)
    assert res["Acc"] == 100 * (135 / 138) and res["AER"] == 100 * (4 / 138)
    conf = np.array(res["confusion"]["matrix"])
    assert conf.shape == (24, 24) and conf.sum() == 46 + 46 + 45 and np.trace(conf) == 135
    assert conf[0, 2] == 1 and conf[1, 5] == 1 and conf[22, 22] == 2
    assert res["confusion"]["unmatched_dets"] == 1 and res["confusion"]["unmatched_gt"] == 1
    den = res["confusion"]["denver"]
    assert (den["misclassified"], den["within_group"], den["across_groups"]) == (2, 1, 1)
    assert den["within_group_fraction"] == 0.5
    assert den["within_group_chance"] == pytest.approx((2 / 23 + 2 / 23) / 2)  # "1" and "2" are in A (3 classes)
    assert res["count_error"]["mean"] == pytest.approx(2 / 3)
    assert res["count_error"]["histogram"] == {"0": 1, "1": 2}
    assert res["count_error"]["mean_signed"] == 0.0
    kar = res["karyotype"]
    # predicted 46,XY / 47,XY,-1,-2,+3,+6,+21 / 45,Y; stored 46,XY / 47,XY,+21 / 45,Y; boxes 46,XY x 3
    assert kar["num_with_stored"] == 3 and kar["agreement_with_stored"] == pytest.approx(200 / 3)
    assert kar["agreement_with_gt_boxes"] == pytest.approx(100 / 3)

    # files
    js = json.loads((out / "metrics_deepacc.json").read_text())
    assert js["Acc"] == res["Acc"] and js["per_class_AP50"]["Y"] == res["per_class_AP50"]["Y"]
    rows = list(csv.reader(open(out / "confusion_matrix.csv")))
    assert rows[0][1:] == names and len(rows) == 25 and rows[1][3] == "1"
    png = (out / "confusion_matrix.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10000
    flat = flatten_scalars(res)
    assert flat["Acc"] == res["Acc"] and flat["AP50-1"] == res["per_class_AP50"]["1"]
    assert flat["within_group_fraction"] == 0.5


def test_format_table():
    rows = {"(a)Faster R-CNN": {"mAP": 90.82, "mAP_max": 88.10, "AER": 18.09, "Acc": 83.34, "AP": float("nan")},
            "(f)DeepACC": {"mAP": 91.43, "mAP_max": 89.38, "AER": 16.22, "Acc": 84.85, "AP": 61.5}}
    t = format_table(rows).splitlines()
    head = [c.strip() for c in t[0].strip("|").split("|")]
    assert head == ["Method", "mAP(%)", "mAP_max(%)", "AER(%)", "Acc(%)", "AP@[.5:.95](%)"]
    assert [c.strip() for c in t[2].strip("|").split("|")] == ["(a)Faster R-CNN", "90.82", "88.10", "18.09", "83.34", "-"]
    assert [c.strip() for c in t[3].strip("|").split("|")] == ["(f)DeepACC", "91.43", "89.38", "16.22", "84.85", "61.50"]
    single = format_table(rows["(f)DeepACC"], name="test").splitlines()
    assert len(single) == 3 and single[2].startswith("| test")


@pytest.mark.parametrize("method", [None, "Faster R-CNN", "DeepACC (AAM+siamese)"])
def test_printed_table_names_the_method(method):
    """The evaluator's printed table names the evaluated model (``method``, the engines pass the
    config's); "DeepACC" when it is not given."""
    dicts, preds = make_dataset(n_images=3)
    ev = MetaphaseEvaluator(dicts, distributed=False, save_plot=False, **({} if method is None else {"method": method}))
    ev.process(preds)
    with contextlib.redirect_stdout(io.StringIO()) as out:
        ev.evaluate()
    rows = [r for r in out.getvalue().splitlines() if r.startswith("| ")]
    assert rows[0].startswith("| Method ") and rows[1].startswith(f"| {method or 'DeepACC'} ")


def test_bad_input_errors():
    dicts, preds = make_dataset(n_images=2)
    bad = [dict(dicts[0], annotations=[{"bbox": [0, 0, 5, 5], "bbox_mode": 0, "category_id": 30}])]
    with pytest.raises(ValueError, match=r"/tmp/img0.png.*category_id 30"):
        MetaphaseEvaluator(bad)
    with pytest.raises(ValueError, match="bbox_mode 4"):
        MetaphaseEvaluator([dict(dicts[0], annotations=[{"bbox": [0, 0, 5, 5], "bbox_mode": 4, "category_id": 1}])])
    with pytest.raises(ValueError, match="not unique"):
        MetaphaseEvaluator([dicts[0], dicts[0]])
    ev = MetaphaseEvaluator(dicts, distributed=False)
    with pytest.raises(ValueError, match="image_id=5: no such image"):
        ev.process([dict(preds[0], image_id=5)])
    with pytest.raises(ValueError, match="missing 'instances_top1'"):
        ev.process([{"image_id": preds[0]["image_id"], "instances": preds[0]["instances"]}])
    with pytest.raises(ValueError, match="classes outside"):
        top1 = dict(preds[0]["instances_top1"], classes=np.full(len(preds[0]["instances_top1"]["scores"]), 24))
        ev.process([dict(preds[0], instances_top1=top1)])
    assert MetaphaseEvaluator(dicts, distributed=False).evaluate() == {}


def test_xywh_bbox_mode_and_crowd():
    dicts, preds = make_dataset(n_images=3, seed=5)
    ref = run_eval(dicts, preds)
    xywh = [dict(d, annotations=[dict(a, bbox=[a["bbox"][0], a["bbox"][1], a["bbox"][2] - a["bbox"][0],
                                                a["bbox"][3] - a["bbox"][1]], bbox_mode=1)
                                 for a in d["annotations"]]) for d in dicts]
    res = run_eval(xywh, preds)
    assert res["mAP"] == pytest.approx(ref["mAP"], abs=1e-9) and res["AER"] == pytest.approx(ref["AER"], abs=1e-9)
    # a crowd annotation is not part of the Acc/AER ground truth
    crowd = [dict(dicts[0], annotations=dicts[0]["annotations"] + [
        {"bbox": [0, 0, 600, 500], "bbox_mode": 0, "category_id": 0, "iscrowd": 1}])] + dicts[1:]
    assert run_eval(crowd, preds)["num_gt"] == ref["num_gt"]


def test_no_detections_at_all():
    d = [{"image_id": 1, "annotations": [{"bbox": [0, 0, 10, 10], "bbox_mode": 0, "category_id": 3}]}]
    empty = {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "classes": np.zeros(0, dtype=int)}
    res = run_eval(d, [{"image_id": 1, "instances": empty, "instances_top1": empty}])
    assert res["mAP"] == 0.0 and res["mAP_max"] == 0.0 and res["AER"] == 100.0 and math.isnan(res["Acc"])
    assert res["FN"] == 1 and res["count_error"]["histogram"] == {"1": 1}
