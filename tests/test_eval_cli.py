"""deepacc-eval: a hand-counted case, equality with MetaphaseEvaluator on COCO results and on a
deepacc-predict folder, and every bad input named with exit status 2."""
import hashlib
import json
import math
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from deepacc.data.coco import load_coco_json, write_coco_json
from deepacc.evaluation import MetaphaseEvaluator
from deepacc.karyotype.classes import CLASS_NAMES, group_of
from deepacc.tools import eval as E
from deepacc.tools import predict as P
from test_karyotype import fake_prediction, make_spread

# Category ids deliberately not the contiguous order: id 24 is "chr1", ..., id 1 is "chrY".
CATS = [{"id": 24 - i, "name": f"chr{n}"} for i, n in enumerate(CLASS_NAMES)]


def cid(name):
    return 24 - CLASS_NAMES.index(name)


def run(argv, capsys):
    rc = E.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


# ------------------------------------------------------------------------------------ hand case
# Image 1 (200x100): 1 @[0,0,10,40]  2 @[20,0,10,40]  4 @[40,0,10,40]  21 @[60,0,10,20]
# Image 2 (200x100): X @[0,0,10,30]  Y @[20,0,10,15]  7 @[40,0,10,30]
HAND_GT = {1: [("1", [0, 0, 10, 40]), ("2", [20, 0, 10, 40]), ("4", [40, 0, 10, 40]), ("21", [60, 0, 10, 20])],
           2: [("X", [0, 0, 10, 30]), ("Y", [20, 0, 10, 15]), ("7", [40, 0, 10, 30])]}
HAND_RESULTS = [
    # image 1
    (1, "1", [0, 0, 10, 40], 0.9),     # d1: on "1", right class                      -> TP
    (1, "3", [20, 0, 10, 40], 0.8),    # d2: on "2", called 3 (both Denver A)         -> FP, within group
    (1, "13", [40, 0, 10, 40], 0.7),   # d3: on "4", called 13 (B -> D)               -> FP, across groups
    (1, "5", [100, 50, 10, 10], 0.95),  # d4: on background                           -> FP, unmatched det
    (1, "1", [1, 0, 10, 40], 0.3),     # d5: below the 0.5 score threshold            -> dropped
    #                                    "21" has no box                              -> FN
    # image 2
    (2, "X", [0, 0, 10, 30], 0.9),     # d6: on X, right                              -> TP
    (2, "Y", [20, 0, 10, 15], 0.85),   # d7: on Y, right                              -> TP
    (2, "X", [40, 0, 10, 30], 0.6),    # d8: on "7", called X (both Denver C)         -> FP, within group
    (2, "7", [0, 0, 10, 28], 0.55),    # d9: IoU 280/300 = 0.93 > 0.7 with d6         -> removed by NMS
    (2, "Y", [20, 5, 10, 15], 0.52),   # d10: IoU 100/200 = 0.5 <= 0.7 with d7, kept; Y already
    #                                          claimed by d7                           -> FP (duplicate)
]


def write_hand(tmp_path, results=HAND_RESULTS):
    images, anns = [], []
    for iid, objs in HAND_GT.items():
        images.append({"id": iid, "file_name": f"img{iid}.png", "height": 100, "width": 200})
        for name, box in objs:
            anns.append({"id": len(anns) + 1, "image_id": iid, "category_id": cid(name), "bbox": box,
                         "area": box[2] * box[3], "iscrowd": 0})
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"images": images, "annotations": anns, "categories": CATS}))
    res = tmp_path / "results.json"
    res.write_text(json.dumps([{"image_id": i, "category_id": cid(n), "bbox": b, "score": s}
                               for i, n, b, s in results]))
    return gt, res


def test_hand_counted_case(tmp_path, capsys):
    gt, res = write_hand(tmp_path)
    out_dir = tmp_path / "eval"
    rc, out, err = run(["--gt", gt, "--results", res, "--output", out_dir], capsys)
    assert rc == 0, err
    m = json.loads((out_dir / "metrics_deepacc.json").read_text())
    # kept: image 1 d4 d1 d2 d3 (4), image 2 d6 d7 d8 d10 (4) -> 8 calls; 7 chromosomes
    assert (m["num_dets"], m["num_gt"], m["num_images"]) == (8, 7, 2)
    # TP d1 d6 d7 = 3; FP d2 d3 d4 d8 d10 = 5; FN: only "21" (2, 4 and 7 are covered by wrong-class boxes) = 1
    assert (m["TP"], m["FP"], m["FN"]) == (3, 5, 1)
    assert m["Acc"] == pytest.approx(100 * 3 / 8)            # 37.5
    assert m["AER"] == pytest.approx(100 * (5 + 1) / 7)      # 85.71
    # confusion (class-agnostic): 1->1, 2->3, 4->13, X->X, Y->Y, 7->X; d4, d10 unmatched; "21" unmatched
    c = m["confusion"]
    idx = CLASS_NAMES.index
    mat = np.asarray(c["matrix"])
    assert mat.sum() == 6 and np.trace(mat) == 3
    for t, p in (("1", "1"), ("2", "3"), ("4", "13"), ("X", "X"), ("Y", "Y"), ("7", "X")):
        assert mat[idx(t), idx(p)] == 1
    assert (c["unmatched_dets"], c["unmatched_gt"]) == (2, 1)
    # misnamed 3: 2->3 (A, A) and 7->X (C, C) within the group, 4->13 (B, D) across
    assert group_of("2") == group_of("3") and group_of("7") == group_of("X") and group_of("4") != group_of("13")
    assert (c["denver"]["misclassified"], c["denver"]["within_group"], c["denver"]["across_groups"]) == (3, 2, 1)
    assert c["denver"]["within_group_fraction"] == pytest.approx(2 / 3)
    # count error: image 1 4 calls vs 4 chromosomes, image 2 4 vs 3 -> mean 0.5, 1 of 2 exact
    assert m["count_error"]["mean"] == pytest.approx(0.5) and m["count_error"]["exact"] == pytest.approx(0.5)
    # karyotypes: image 1 calls {1, 3, 13, 5} vs {1, 2, 4, 21}, image 2 {X, Y, X, Y} vs {X, Y, 7}: none agrees
    assert m["karyotype"]["agreement_with_gt_boxes"] == 0.0
    # AP@0.5 per class with ground truth (boxes exact, so every IoU threshold alike):
    # 1: d1 TP first (d5 after it) -> 100; X: d6 TP then d8 FP -> 100; Y: d7 then d10 -> 100;
    # 2, 4, 21: no box of their class -> 0; 7: only d9, on X's chromosome -> 0. mAP = 300 / 7.
    assert m["per_class_AP50"]["1"] == pytest.approx(100) and m["per_class_AP50"]["7"] == 0.0
    assert m["per_class_AP50"]["5"] is None  # no ground truth
    assert m["mAP"] == pytest.approx(300 / 7) and m["AP"] == pytest.approx(300 / 7)
    assert m["mAP_max"] == m["mAP"]  # one class per box: instances == instances_top1
    # recorded settings and inputs
    assert m["settings"]["score_thresh"] == 0.5 and m["settings"]["nms_thresh"] == 0.7
    assert m["settings"]["assignment"]["enabled"] is False
    assert m["inputs"]["kind"] == "coco-results" and m["inputs"]["thresholds"]["source"] == "the default config"
    assert m["inputs"]["num_detections"] == len(HAND_RESULTS)
    assert (out_dir / "confusion_matrix.csv").is_file() and (out_dir / "confusion_matrix.png").is_file()
    # stdout: thresholds, the paper-style table, the counts, the per-class table
    assert "thresholds: score 0.5, NMS 0.7, IoU 0.5 (the default config)" in out
    assert "| results | " in out and "37.50" in out and "85.71" in out and "42.86" in out
    assert "TP 3, FP 5, FN 1" in out and "within the Denver group 2" in out
    assert "AP50_max(%)" in out
    # the assignment cannot run without class_probs: off, with a note
    assert "karyotype assignment off: 10 of 10 result(s) carry no 'class_probs'" in err
    assert "mAP_max = mAP by construction" in err


def test_hand_case_flags_and_json(tmp_path, capsys):
    gt, res = write_hand(tmp_path)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("TEST:\n  DEEPACC:\n    SCORE_THRESH: 0.25\n    NMS_THRESH: 0.7\n")
    rc, out, err = run(["--gt", gt, "--results", res, "--config-file", cfg, "--nms-thresh", "0.95", "--json"],
                       capsys)
    assert rc == 0, err
    flat = json.loads(out)  # stdout is only the JSON
    # score 0.25 keeps d5 too (on "1", IoU 360/440 = 0.82 with d1: kept at NMS 0.95, a duplicate -> FP);
    # NMS 0.95 keeps d9 (IoU 0.93 with d6; on X's chromosome, X already claimed by d6, class 7 -> FP)
    assert (flat["TP"], flat["FP"], flat["FN"], flat["num_dets"]) == (3, 7, 1, 10)
    assert flat["Acc"] == pytest.approx(30.0) and flat["AER"] == pytest.approx(100 * 8 / 7)
    assert flat["within_group_fraction"] == pytest.approx(2 / 3)
    assert "AP50-21" in flat and flat["AP50-5"] is None
    assert f"thresholds: score 0.25, NMS 0.95, IoU 0.5 ({cfg}, overridden by --nms-thresh)" in err
    assert "| results |" in err


# ---------------------------------------------------------------------------- equality: COCO results
def perturb(boxes, classes, seed):
    """A detector's output on one spread: misses, misnamings (within and across groups, the true class
    second most probable), low scores, NMS-removed and kept duplicates, a background box. Integer
    boxes (exact in every box format). Returns the prediction dict (contract format)."""
    rng = np.random.default_rng(seed)
    out_b, out_c, out_s, true = [], [], [], []
    for b, t in zip(np.asarray(boxes, np.float64), classes):
        r = rng.random()
        if r < 0.08:
            continue  # missed
        t = c = int(t)
        if r < 0.25:  # misnamed
            same = [CLASS_NAMES.index(n) for n in CLASS_NAMES if group_of(n) == group_of(CLASS_NAMES[c]) and
                    CLASS_NAMES.index(n) != c]
            c = int(rng.choice(same)) if rng.random() < 0.6 else int(rng.integers(24))
        s = float(rng.choice([0.3, 0.45, 0.5, 0.55, 0.65, 0.75, 0.85, 0.9, 0.95, 0.99], p=[.05, .05, .05, .05, .1,
                                                                                          .1, .15, .15, .15, .15]))
        out_b.append(b)
        out_c.append(c)
        out_s.append(s)
        true.append(t)
        if rng.random() < 0.08:  # near-identical box, lower score, other class: removed by NMS (IoU > 0.7)
            out_b.append(b + np.array([0, 0, 0, -1]))
            out_c.append(int(rng.integers(24)))
            out_s.append(round(s / 2 + 0.25, 2))
            true.append(t)
        if rng.random() < 0.05:  # shifted by half its width: IoU ~ 1/3, kept, a second box
            w = float(b[2] - b[0])
            out_b.append(b + np.array([w // 2, 0, w // 2, 0]))
            out_c.append(c)
            out_s.append(0.6)
            true.append(t)
    out_b.append(np.array([0.0, 0.0, 8.0, 8.0]))  # background, in the margin
    out_c.append(int(rng.integers(24)))
    out_s.append(0.7)
    true.append(out_c[-1])
    p = fake_prediction(np.asarray(out_b, np.float32), np.asarray(out_c, np.int64), np.asarray(out_s, np.float32))
    probs = p["instances_top1"]["class_probs"]
    for i, (c, t) in enumerate(zip(out_c, true)):
        if c != t:  # the true class is the runner-up: the karyotype assignment can bring it back
            probs[i, t] = np.float32(out_s[i] * 0.6)
    p["instances"]["class_probs"] = probs
    return p


def spread_dataset(tmp_path, karyotypes, write_images=False):
    """GT json of synthetic spreads; returns (json path, [(image path, boxes, classes, image)])."""
    folder = tmp_path / "spreads"
    folder.mkdir()
    dicts, spreads = [], []
    for i, kt in enumerate(karyotypes):
        img, boxes, classes = make_spread(kt, seed=30 + i)
        path = str(folder / f"spread_{i}.png")
        if write_images:
            cv2.imwrite(path, img)
        dicts.append({"file_name": path, "height": img.shape[0], "width": img.shape[1], "image_id": 7 + 3 * i,
                      "karyotype": kt,
                      "annotations": [{"bbox": [float(v) for v in b], "bbox_mode": 0, "category_id": int(c),
                                       "iscrowd": 0} for b, c in zip(boxes, classes)]})
        spreads.append((path, boxes, classes, img))
    gt = tmp_path / "gt.json"
    write_coco_json(dicts, str(gt), str(folder))
    return gt, spreads


HEADLINE = ("mAP", "mAP_max", "AP", "Acc", "AER", "TP", "FP", "FN", "num_dets", "num_gt", "num_images")


def _same(a, b):
    return (a is None and (b is None or (isinstance(b, float) and math.isnan(b)))) or a == pytest.approx(b)


@pytest.mark.parametrize("with_probs", [False, True])
def test_coco_results_equal_the_evaluator(tmp_path, capsys, with_probs):
    gt, spreads = spread_dataset(tmp_path, ["46,XY", "47,XX,+21", "45,X"])
    gt_dicts = load_coco_json(str(gt), check_images="none")
    preds, rows = [], []
    for d, (path, boxes, classes, _) in zip(gt_dicts, spreads):
        p = perturb(boxes, classes, seed=d["image_id"])
        p["image_id"] = d["image_id"]
        preds.append(p)
        b, c, s = (p["instances_top1"][k] for k in ("boxes", "classes", "scores"))
        for k in range(len(c)):
            x0, y0, x1, y1 = (float(v) for v in b[k])
            r = {"image_id": d["image_id"], "category_id": int(c[k]) + 1, "bbox": [x0, y0, x1 - x0, y1 - y0],
                 "score": float(s[k])}
            if with_probs:
                r["class_probs"] = [float(v) for v in p["instances_top1"]["class_probs"][k]]
            rows.append(r)
    # an image the detector found nothing on: all its chromosomes are FN (COCO: no results = no detections)
    gt_dicts = gt_dicts + [dict(gt_dicts[0], image_id=99, file_name=gt_dicts[0]["file_name"] + "-copy.png")]
    preds.append({"image_id": 99, "instances": fake_prediction(np.zeros((0, 4)), np.zeros(0, np.int64))["instances"],
                  "instances_top1": fake_prediction(np.zeros((0, 4)), np.zeros(0, np.int64))["instances_top1"]})
    data = json.loads(gt.read_text())
    img0 = dict(data["images"][0], id=99, file_name=data["images"][0]["file_name"] + "-copy.png")
    data["images"].append(img0)
    data["annotations"] += [dict(a, id=10000 + j, image_id=99) for j, a in enumerate(data["annotations"])
                            if a["image_id"] == data["images"][0]["id"]]
    gt.write_text(json.dumps(data))
    res = tmp_path / "coco_instances_results.json"
    res.write_text(json.dumps(rows))

    cost = 3.0 if with_probs else None  # the default config's assignment, when the results allow it
    ev = MetaphaseEvaluator(gt_dicts, output_dir=None, distributed=False, extra_copy_cost=cost)
    ev.process(preds)
    want = ev.evaluate()
    capsys.readouterr()
    rc, out, err = run(["--gt", gt, "--results", res, "--output", tmp_path / "eval"], capsys)
    assert rc == 0, err
    got = json.loads((tmp_path / "eval" / "metrics_deepacc.json").read_text())
    for k in HEADLINE:
        assert _same(got[k], want[k]), k
    assert want["FN"] > 40 and want["FP"] > 5 and 0 < want["confusion"]["denver"]["within_group"]
    assert got["mAP"] == got["mAP_max"]
    for k in ("per_class_AP50", "per_class_AP", "per_class_AP50_max"):
        assert all(_same(got[k][n], want[k][n]) for n in CLASS_NAMES), k
    assert got["confusion"]["matrix"] == want["confusion"]["matrix"]
    for k in ("unmatched_dets", "unmatched_gt"):
        assert got["confusion"][k] == want["confusion"][k]
    assert got["confusion"]["denver"]["within_group"] == want["confusion"]["denver"]["within_group"]
    assert got["count_error"] == want["count_error"]
    assert got["karyotype"] == pytest.approx(want["karyotype"])
    assert got["settings"]["assignment"]["enabled"] is with_probs
    if with_probs:
        assert want["assignment"]["relabelled"] > 0
        assert got["assignment"]["without"] == pytest.approx(want["assignment"]["without"])
        assert {k: v for k, v in got["assignment"].items() if k != "without"} == \
            {k: v for k, v in want["assignment"].items() if k != "without"}
        assert "karyotype assignment on (extra-copy cost 3)" in out
        # and the paper's protocol on request
        rc, out, err = run(["--gt", gt, "--results", res, "--assignment", "off", "--json"], capsys)
        assert rc == 0 and json.loads(out)["Acc"] == pytest.approx(want["assignment"]["without"]["Acc"])


# ------------------------------------------------------------------ equality: deepacc-predict folder
def _key(img):
    return hashlib.sha1(np.ascontiguousarray(img).tobytes()).hexdigest()


@pytest.mark.parametrize("assignment", ["on", "off"])
def test_predict_folder_equals_the_evaluator(tmp_path, capsys, assignment):
    gt, spreads = spread_dataset(tmp_path, ["46,XY", "47,XY,+21", "45,X"], write_images=True)
    gt_dicts = load_coco_json(str(gt), check_images="none")
    fake = {}
    for d, (path, boxes, classes, img) in zip(gt_dicts, spreads):
        fake[_key(img)] = fake[d["image_id"]] = perturb(boxes, classes, seed=d["image_id"])

    def factory(args):
        return lambda img: fake[_key(img)]

    pred_dir = tmp_path / "pred"
    assert P.main(["--input", str(tmp_path / "spreads"), "--output", str(pred_dir), "--no-progress",
                   "--assignment", assignment], predictor_factory=factory) == 0
    ev = MetaphaseEvaluator(gt_dicts, output_dir=None, distributed=False,
                            extra_copy_cost=3.0 if assignment == "on" else None)
    ev.process([dict(fake[d["image_id"]], image_id=d["image_id"]) for d in gt_dicts])
    want = ev.evaluate()
    capsys.readouterr()
    rc, out, err = run(["--gt", gt, "--predict-dir", pred_dir, "--output", tmp_path / "eval"], capsys)
    assert rc == 0, err
    got = json.loads((tmp_path / "eval" / "metrics_deepacc.json").read_text())
    for k in ("Acc", "AER", "TP", "FP", "FN", "num_dets", "num_gt", "num_images"):
        assert got[k] == pytest.approx(want[k]), k
    assert want["FP"] > 5 and want["FN"] > 5
    assert got["confusion"]["matrix"] == want["confusion"]["matrix"]
    for k in ("unmatched_dets", "unmatched_gt"):
        assert got["confusion"][k] == want["confusion"][k]
    assert got["confusion"]["denver"]["within_group"] == want["confusion"]["denver"]["within_group"]
    assert got["karyotype"] == pytest.approx(want["karyotype"])
    assert got["count_error"] == want["count_error"]
    assert got["mAP"] == got["mAP_max"]  # calls: one class per box
    assert got["settings"]["assignment"]["enabled"] is False  # scored as given, never re-assigned
    assert got["inputs"]["kind"] == "predict-dir" and got["inputs"]["images_without_output"] == []
    assert "not comparable to the training-time mAP" in err
    assert ("made with the karyotype assignment on (extra-copy cost 3)" in err) is (assignment == "on")
    if assignment == "on":
        assert want["assignment"]["relabelled"] > 0  # the assignment did change calls

    # predicted at another threshold: warned; a missing output: warned, left out
    rc, out, err = run(["--gt", gt, "--predict-dir", pred_dir, "--score-thresh", "0.6", "--json"], capsys)
    assert rc == 0
    assert "were made with --confidence-threshold 0.5 --nms-threshold 0.7, scored at score 0.6 NMS 0.7" in err
    if assignment == "off":  # a stricter score threshold than the prediction's is exact
        assert "gives the same calls (exact)" in err
        ev = MetaphaseEvaluator(gt_dicts, output_dir=None, distributed=False, score_thresh=0.6)
        ev.process([dict(fake[d["image_id"]], image_id=d["image_id"]) for d in gt_dicts])
        stricter = ev.evaluate()
        capsys.readouterr()
        flat = json.loads(out)
        assert [flat[k] for k in ("TP", "FP", "FN")] == [stricter[k] for k in ("TP", "FP", "FN")]
        assert flat["Acc"] == pytest.approx(stricter["Acc"]) and flat["TP"] < want["TP"]
    os.remove(pred_dir / "spread_1.json")
    rc, out, err = run(["--gt", gt, "--predict-dir", pred_dir, "--json"], capsys)
    assert rc == 0 and json.loads(out)["num_images"] == 2
    assert "1 of 3 ground-truth image(s) have no output in" in err and "spread_1.png" in err


def test_predict_folder_matched_by_file_name(tmp_path, capsys):
    """Outputs made on copies of the images elsewhere: matched by basename."""
    gt, spreads = spread_dataset(tmp_path, ["46,XX"])
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    path, boxes, classes, _ = spreads[0]
    rec = {"file_name": "/elsewhere/spread_0.png",
           "detections": [{"box": [float(v) for v in b], "class": CLASS_NAMES[c], "class_id": int(c), "score": 0.9}
                          for b, c in zip(boxes, classes)],
           "settings": {"confidence_threshold": 0.5, "nms_threshold": 0.7, "assignment": False}}
    (pred_dir / "spread_0.json").write_text(json.dumps(rec))
    (pred_dir / "karyotypes.csv").write_text("file\n")
    rc, out, err = run(["--gt", gt, "--predict-dir", pred_dir, "--output", pred_dir, "--json"], capsys)
    assert rc == 0, err
    flat = json.loads(out)
    assert (flat["Acc"], flat["AER"], flat["FN"]) == (100.0, 0.0, 0)
    assert "warning" not in err
    # the metrics written into the folder are not taken for an output on a rerun
    rc, out, err = run(["--gt", gt, "--predict-dir", pred_dir, "--json"], capsys)
    assert rc == 0, err


# ------------------------------------------------------------------------------------- bad input
def _results(tmp_path, rows, name="bad.json"):
    p = tmp_path / name
    p.write_text(rows if isinstance(rows, str) else json.dumps(rows))
    return p


GOOD = {"image_id": 1, "category_id": 24, "bbox": [0, 0, 10, 40], "score": 0.9}


@pytest.mark.parametrize("rows,message", [
    ("[{\"image_id\": 1,", "bad.json: not valid json ("),
    ({"annotations": []}, "bad.json: top level must be a list of detections"),
    ([dict(GOOD, image_id=5)], "bad.json: results[0]: image_id 5 is not an image of the ground truth"),
    ([GOOD, dict(GOOD, category_id=77)], "bad.json: results[1]: unknown category id 77 (the categories of"),
    ([dict(GOOD, bbox=[0, 0, 10])], "bad.json: results[0]: bbox has 3 numbers, expected 4 [x, y, w, h]"),
    # nan / inf / negative sizes are skipped and counted (tests/test_bad_input_data.py); wrong types are errors
    ([dict(GOOD, score="0.9")], "bad.json: results[0]: score '0.9' is not a number"),
    ([dict(GOOD, bbox=[0, 0, "10", 40])], "bad.json: results[0]: bbox [0, 0, '10', 40] has a non-numeric value"),
    ('[{"image_id": 1, "category_id": 24, "bbox": [0, 0, Infinity, 40]}]', "results[0]: missing 'score'"),
    ([dict(GOOD, class_probs=[0.5] * 24)], "results[0]: class_probs has 24 numbers, expected 25 (order 1..22, X, Y, "
                                           "background)"),
    ([{"image_id": 1, "bbox": [0, 0, 1, 1]}], "results[0]: missing 'category_id'"),
])
def test_bad_results_are_named(tmp_path, capsys, rows, message):
    gt, _ = write_hand(tmp_path)
    res = _results(tmp_path, rows)
    rc, out, err = run(["--gt", gt, "--results", res], capsys)
    assert rc == 2
    assert message in err, err
    assert str(res) in err


def test_all_problems_at_once_with_a_limit(tmp_path, capsys):
    gt, _ = write_hand(tmp_path)
    rows = [dict(GOOD, image_id=100 + j) for j in range(25)] + [dict(GOOD, category_id="9"), GOOD]
    res = _results(tmp_path, rows)
    rc, out, err = run(["--gt", gt, "--results", res], capsys)
    assert rc == 2
    assert f"deepacc-eval: 26 problem(s) in results {res}:" in err
    assert "results[0]: image_id 100 is not" in err and "results[19]: image_id 119" in err
    assert "results[20]" not in err and "... and 6 more" in err


def test_bad_ground_truth_and_usage(tmp_path, capsys):
    gt, res = write_hand(tmp_path)
    data = json.loads(gt.read_text())
    data["categories"][0]["name"] = "chromosome Z"
    bad_gt = tmp_path / "bad_gt.json"
    bad_gt.write_text(json.dumps(data))
    rc, _, err = run(["--gt", bad_gt, "--results", res], capsys)
    assert rc == 2 and f"deepacc-eval: ground truth: 2 problem(s) in dataset {bad_gt}:" in err
    assert f"{bad_gt}: unknown category name 'chromosome Z' (id 24)" in err
    rc, _, err = run(["--gt", tmp_path / "nope.json", "--results", res], capsys)
    assert rc == 2 and "nope.json: missing json file" in err
    # the assignment needs class_probs
    rc, _, err = run(["--gt", gt, "--results", res, "--assignment", "on"], capsys)
    assert rc == 2 and (f"{res}: --assignment on needs 'class_probs' (25 numbers, order 1..22, X, Y, background) in "
                        "every result; 10 of 10 result(s) have none") in err
    # thresholds out of range, a config file that does not exist
    rc, _, err = run(["--gt", gt, "--results", res, "--score-thresh", "1.5"], capsys)
    assert rc == 2 and "TEST.DEEPACC.SCORE_THRESH = 1.5: the call score threshold must be in [0, 1]" in err
    # a config's bad value and a bad flag are named together; a flag replaces the config's value
    bad_cfg = tmp_path / "bad.yaml"
    bad_cfg.write_text("TEST:\n  DEEPACC:\n    NMS_THRESH: 1.7\n    SCORE_THRESH: 2.0\n")
    rc, _, err = run(["--gt", gt, "--results", res, "--config-file", bad_cfg, "--iou-thresh", "0"], capsys)
    assert rc == 2 and f"{bad_cfg} with --iou-thresh: 3 invalid value(s)" in err
    assert "NMS_THRESH = 1.7" in err and "SCORE_THRESH = 2.0" in err and "IOU_THRESH = 0.0" in err
    rc, _, err = run(["--gt", gt, "--results", res, "--config-file", bad_cfg, "--nms-thresh", "0.7",
                      "--score-thresh", "0.5", "--json"], capsys)
    assert rc == 0, err
    assert f"({bad_cfg}, overridden by --score-thresh, --nms-thresh)" in err
    rc, _, err = run(["--gt", gt, "--results", res, "--config-file", tmp_path / "no.yaml"], capsys)
    assert rc == 2 and "no.yaml: no such file" in err
    rc, _, err = run(["--gt", gt], capsys)
    assert rc == 2 and "one of the arguments --results --predict-dir is required" in err
    rc, _, err = run(["--gt", gt, "--predict-dir", tmp_path, "--assignment", "on"], capsys)
    assert rc == 2 and "--assignment on does not apply to --predict-dir" in err


def _predict_json(folder, name, file_name, detections=None):
    rec = {"file_name": file_name, "detections": detections if detections is not None else [
        {"box": [0, 0, 10, 40], "class": "1", "class_id": 0, "score": 0.9}]}
    (folder / name).write_text(json.dumps(rec) if not isinstance(rec, str) else rec)


def test_bad_predict_dir_is_named(tmp_path, capsys):
    gt, _ = write_hand(tmp_path)
    pred = tmp_path / "pred"
    pred.mkdir()
    (pred / "report.html").write_text("<html>")
    rc, _, err = run(["--gt", gt, "--predict-dir", pred], capsys)
    assert rc == 2 and f"{pred}: no deepacc-predict output (<name>.json) in this folder" in err
    rc, _, err = run(["--gt", gt, "--predict-dir", tmp_path / "absent"], capsys)
    assert rc == 2 and "absent: no such folder" in err

    _predict_json(pred, "a.json", str(tmp_path / "img1.png"))  # fine (by path)
    _predict_json(pred, "b.json", "/other/img9.png")  # not in the GT
    (pred / "c.json").write_text("{not json")
    _predict_json(pred, "d.json", "/other/img2.png", [{"box": [0, 0, 10], "class": "Z", "score": float("nan")}])
    _predict_json(pred, "e.json", "/somewhere/img1.png")  # same image as a.json (by file name)
    (pred / "f.json").write_text(json.dumps([1, 2]))
    rc, _, err = run(["--gt", gt, "--predict-dir", pred], capsys)
    assert rc == 2
    assert f"deepacc-eval: 7 problem(s) in deepacc-predict outputs {pred}:" in err
    assert (f"{pred / 'b.json'}: file_name '/other/img9.png' is not an image of the ground truth {gt} "
            "(by path or by file name)") in err
    assert f"{pred / 'c.json'}: not valid json (" in err
    assert f"{pred / 'd.json'}: detections[0]: box has 3 numbers, expected 4 [x0, y0, x1, y1]" in err
    assert f"{pred / 'd.json'}: detections[0]: unknown class 'Z' (expected 1..22, X, Y)" in err
    assert f"{pred / 'd.json'}: detections[0]: score nan is not a finite number" in err
    assert f"{pred / 'e.json'}: same ground-truth image as {pred / 'a.json'} (image id 1," in err
    assert f"{pred / 'f.json'}: not a deepacc-predict output: top level must be an object" in err


def test_ambiguous_file_name(tmp_path, capsys):
    gt, _ = write_hand(tmp_path)
    data = json.loads(gt.read_text())
    data["images"][1]["file_name"] = "sub/img1.png"  # two images named img1.png
    gt.write_text(json.dumps(data))
    pred = tmp_path / "pred"
    pred.mkdir()
    _predict_json(pred, "x.json", "/other/img1.png")
    rc, _, err = run(["--gt", gt, "--predict-dir", pred], capsys)
    assert rc == 2
    assert (f"{pred / 'x.json'}: file_name '/other/img1.png' matches no ground-truth image by path, and 2 of {gt} "
            "by file name (image ids 1, 2): ambiguous") in err


def test_module_entry_point_exit_status(tmp_path):
    gt, _ = write_hand(tmp_path)
    res = _results(tmp_path, [dict(GOOD, image_id=3)])
    r = subprocess.run([sys.executable, "-m", "deepacc.tools.eval", "--gt", str(gt), "--results", str(res)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert "results[0]: image_id 3 is not an image of the ground truth" in r.stderr
    assert "Traceback" not in r.stderr


def test_readers_are_the_library_s(tmp_path, capsys):
    """deepacc-eval reads with deepacc.evaluation.readers (its names stay importable from the tool) and
    prints the evaluator's tables itself, once."""
    from deepacc.evaluation import readers

    for name in ("read_coco_results", "read_predict_dir", "EvalInputError", "format_problems",
                 "MAX_DETECTIONS_PER_IMAGE", "MAX_PREDICT_FILE_BYTES", "MAX_PROBLEM_LINES"):
        assert getattr(E, name) is getattr(readers, name), name
    gt, res = write_hand(tmp_path)
    rc, out, _ = run(["--gt", gt, "--results", res], capsys)
    assert rc == 0 and out.count("| Method ") == 1 and "DeepACC evaluation on 2 images:" not in out
