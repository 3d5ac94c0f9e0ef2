"""Karyotype-consistent class assignment: exact optimum on hand-made and brute-forced matrices, and
its use by the evaluator, the summary, the karyogram and deepacc-predict."""
import itertools
import json
import math

import cv2
import numpy as np
import pytest

from deepacc.config import get_cfg
from deepacc.evaluation import MetaphaseEvaluator
from deepacc.karyotype import CLASS_NAMES
from deepacc.karyotype.assignment import assign_calls, assign_classes, assignment_settings, free_copies
from deepacc.clinical.karyogram import render_karyogram
from deepacc.clinical.summary import select_calls, summarize
from deepacc.tools import predict as P

from test_karyotype import make_spread

K = len(CLASS_NAMES)
IDX = {n: i for i, n in enumerate(CLASS_NAMES)}


def _probs(rows):
    """(N, K+1) probabilities from ``[{class name: p}, ...]``; the rest spread over the other columns."""
    out = np.zeros((len(rows), K + 1))
    for i, r in enumerate(rows):
        rest = (1.0 - sum(r.values())) / (K + 1 - len(r))
        out[i] = rest
        for n, p in r.items():
            out[i, IDX[n]] = p
    return out


def _euploid(sex="XY", skip=()):
    """Confident rows for a normal cell (two of each autosome, the given sex chromosomes)."""
    names = [n for n in CLASS_NAMES[:22] for _ in range(2)] + list(sex)
    for n in skip:
        names.remove(n)
    return [{n: 0.95} for n in names]


def _objective(probs, labels, cost, names):
    free = free_copies(names)
    counts = np.bincount(labels, minlength=len(names))
    return float(np.log(probs[np.arange(len(labels)), labels]).sum() - cost * np.clip(counts - free, 0, None).sum())


def test_free_copies_and_names():
    free = free_copies()
    assert free.tolist() == [2] * 22 + [2, 1]
    with pytest.raises(ValueError, match="chromosome class names"):
        free_copies(["1", "cat"])


def test_pair_swap_is_fixed():
    # argmax: three 4s and one 5 -> the ambiguous call becomes the missing 5
    rows = _euploid(skip=("5",)) + [{"4": 0.5, "5": 0.4}]
    p = _probs(rows)
    argmax = p[:, :K].argmax(1)
    assert np.bincount(argmax, minlength=K)[IDX["4"]] == 3
    labels = assign_classes(p, 3.0)
    assert labels[-1] == IDX["5"] and (labels[:-1] == argmax[:-1]).all()
    assert np.bincount(labels, minlength=K)[[IDX["4"], IDX["5"]]].tolist() == [2, 2]
    # the extra copy costs less than log(0.5 / 0.4) = 0.22: argmax kept
    assert (assign_classes(p, 0.2) == argmax).all()
    assert (assign_classes(p, 0.0) == argmax).all()


def test_trisomy_with_strong_evidence_is_kept():
    # 47,XY,+21 where one 22 was missed: the third 21 could fill the free 22 slot, but its evidence
    # (p21 0.95 vs p22 0.01: log-ratio 4.55) outweighs an extra-copy cost of 3
    rows = _euploid(skip=("22",)) + [{"21": 0.95, "22": 0.01}]
    p = _probs(rows)
    labels = assign_classes(p, 3.0)
    assert np.bincount(labels, minlength=K)[IDX["21"]] == 3
    assert (labels == p[:, :K].argmax(1)).all()
    # the switch is exactly at the log-ratio: below it the trisomy stays, above (and with a hard prior) it goes
    assert np.bincount(assign_classes(p, 4.5), minlength=K)[IDX["21"]] == 3
    assert np.bincount(assign_classes(p, 4.6), minlength=K)[IDX["21"]] == 2
    assert np.bincount(assign_classes(p, math.inf), minlength=K)[IDX["21"]] == 2


def test_monosomy_and_45x_are_not_filled():
    for skip, sex in ((("7",), "XY"), ((), "X")):
        p = _probs(_euploid(sex, skip=skip))
        assert (assign_classes(p, math.inf) == p[:, :K].argmax(1)).all()


def test_xxy_and_pair_of_ys():
    # 47,XXY: the second X is free; a second Y (XYY) costs one extra copy
    p = _probs(_euploid("XXY"))
    assert (assign_classes(p, 3.0) == p[:, :K].argmax(1)).all()
    p = _probs(_euploid("XY") + [{"Y": 0.6, "21": 0.3}])
    # both are extra copies (21 already has 2): the Y's higher probability wins at equal penalty (47,XYY)
    assert assign_classes(p, 3.0)[-1] == IDX["Y"]
    p = _probs(_euploid("XY", skip=("21",)) + [{"Y": 0.6, "21": 0.3}])
    assert assign_classes(p, 3.0)[-1] == IDX["21"]


@pytest.mark.parametrize("seed", range(12))
def test_exact_optimum_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    names = ("1", "2", "Y")  # free copies 2, 2, 1
    n = int(rng.integers(1, 7))
    p = rng.dirichlet(np.ones(3) * 0.7, size=n)
    cost = float(rng.choice([0.0, 0.3, 1.0, 2.5, math.inf]))
    labels = assign_classes(p, cost, names)
    finite = 1e6 if math.isinf(cost) else cost
    best = max(_objective(p, np.asarray(c), finite, names) for c in itertools.product(range(3), repeat=n))
    assert _objective(p, labels, finite, names) == pytest.approx(best, abs=1e-9)


def test_validation():
    with pytest.raises(ValueError, match=">= 0"):
        assign_classes(np.ones((2, K)), -1.0)
    with pytest.raises(ValueError, match=">= 0"):
        assign_classes(np.ones((2, K)), float("nan"))
    with pytest.raises(ValueError, match="shape"):
        assign_classes(np.ones((2, 7)), 1.0)
    with pytest.raises(ValueError, match="NaN"):
        assign_classes(np.full((2, K), np.nan), 1.0)
    assert assign_classes(np.zeros((0, K + 1)), 3.0).shape == (0,)
    cfg = get_cfg()
    cfg.TEST.DEEPACC.ASSIGNMENT.EXTRA_COPY_COST = -2.0
    with pytest.raises(ValueError, match="EXTRA_COPY_COST"):
        assignment_settings(cfg)


def test_many_calls_stay_feasible():
    rng = np.random.default_rng(0)
    for n in (48, 80, 120):
        p = rng.dirichlet(np.ones(K + 1), size=n)
        assert assign_classes(p, math.inf).shape == (n,)
        assert assign_classes(p, 3.0).shape == (n,)


# -------------------------------------------------------------------------------- evaluator
def _pair_swap_case():
    """One 46,XY spread whose argmax calls two 4s where the truth is 4 and 5."""
    img, boxes, classes = make_spread("46,XY", seed=3)
    classes = np.asarray(classes)
    probs = np.full((len(classes), K + 1), 0.002)
    probs[np.arange(len(classes)), classes] = 0.95
    i5 = int(np.flatnonzero(classes == IDX["5"])[0])
    probs[i5] = 0.002
    probs[i5, IDX["4"]], probs[i5, IDX["5"]] = 0.5, 0.45
    pred_classes = probs[:, :K].argmax(1)
    scores = probs[np.arange(len(classes)), pred_classes]
    inst = {"boxes": np.asarray(boxes, np.float32), "scores": scores.astype(np.float32),
            "classes": pred_classes, "class_probs": probs}
    dicts = [{"image_id": 1, "file_name": "s.png", "height": img.shape[0], "width": img.shape[1],
              "annotations": [{"bbox": list(b), "bbox_mode": 0, "category_id": int(c)} for b, c in zip(boxes, classes)]}]
    return img, dicts, {"image_id": 1, "instances": inst, "instances_top1": inst}


def test_evaluator_with_assignment_fixes_the_swap_and_reports_it():
    _, dicts, pred = _pair_swap_case()
    off = MetaphaseEvaluator(dicts, distributed=False, save_plot=False)
    off.process([pred])
    r_off = off.evaluate()
    on = MetaphaseEvaluator(dicts, distributed=False, save_plot=False, extra_copy_cost=3.0)
    on.process([pred])
    r_on = on.evaluate()
    assert r_off["FP"] == 1 and r_on["FP"] == 0 and r_on["TP"] == r_off["TP"] + 1
    assert r_on["Acc"] == pytest.approx(100.0)
    assert r_on["mAP_max"] == r_off["mAP_max"]  # mAP / mAP_max score the model's detections
    a = r_on["assignment"]
    assert a["relabelled"] == 1 and a["karyotypes_fixed"] == 1 and a["karyotypes_broken"] == 0
    assert r_on["settings"]["assignment"] == {"enabled": True, "extra_copy_cost": 3.0}
    assert r_on["karyotype"]["agreement_with_gt_boxes"] == 100.0
    w = a["without"]  # the paper's protocol, from the same evaluator
    assert (w["Acc"], w["AER"], w["TP"], w["FP"], w["FN"]) == (r_off["Acc"], r_off["AER"], r_off["TP"], r_off["FP"],
                                                              r_off["FN"])
    from deepacc.evaluation import flatten_scalars

    flat = flatten_scalars(r_on)
    assert flat["Acc_without_assignment"] == r_off["Acc"] and "Acc_without_assignment" not in flatten_scalars(r_off)
    assert r_off["karyotype"]["agreement_with_gt_boxes"] == 0.0


def test_evaluator_counts_abnormality_made_normal():
    # truth 47,XY,+21 with the third 21 only weakly preferred over 22 (where a copy is missing in the calls
    # because the detector "missed" a 22): the assignment turns the trisomy into a wrong 46,XY
    img, boxes, classes = make_spread("47,XY,+21", seed=5)
    classes = np.asarray(classes)
    keep = np.ones(len(classes), bool)
    keep[np.flatnonzero(classes == IDX["22"])[0]] = False
    probs = np.full((len(classes), K + 1), 0.002)
    probs[np.arange(len(classes)), classes] = 0.95
    i21 = int(np.flatnonzero(classes == IDX["21"])[-1])
    probs[i21] = 0.002
    probs[i21, IDX["21"]], probs[i21, IDX["22"]] = 0.6, 0.35
    probs, b = probs[keep], np.asarray(boxes, np.float32)[keep]
    pc = probs[:, :K].argmax(1)
    inst = {"boxes": b, "scores": probs[np.arange(len(pc)), pc].astype(np.float32), "classes": pc,
            "class_probs": probs}
    dicts = [{"image_id": 1, "file_name": "s.png", "height": img.shape[0], "width": img.shape[1],
              "annotations": [{"bbox": list(x), "bbox_mode": 0, "category_id": int(c)}
                              for x, c in zip(boxes, classes)]}]
    ev = MetaphaseEvaluator(dicts, distributed=False, save_plot=False, extra_copy_cost=3.0)
    ev.process([{"image_id": 1, "instances": inst, "instances_top1": inst}])
    a = ev.evaluate()["assignment"]
    # abnormalities of the truth: 21 (3 copies) and 22 is at 2 in the truth -> one unit; called before: yes
    assert a["abnormalities"] == 1 and a["abnormalities_called_before"] == 1
    assert a["abnormalities_called_after"] == 0 and a["abnormalities_made_normal"] == 1


def test_evaluator_needs_class_probs_for_the_assignment():
    _, dicts, pred = _pair_swap_case()
    inst = {k: v for k, v in pred["instances_top1"].items() if k != "class_probs"}
    ev = MetaphaseEvaluator(dicts, distributed=False, save_plot=False, extra_copy_cost=3.0)
    with pytest.raises(ValueError, match="class_probs"):
        ev.process([{"image_id": 1, "instances": inst, "instances_top1": inst}])
    with pytest.raises(ValueError, match=">= 0"):
        MetaphaseEvaluator(dicts, extra_copy_cost=-1)


# ------------------------------------------------------------------- summary, karyogram, predict
def test_summary_and_karyogram_flag_the_relabelled_call():
    img, _, pred = _pair_swap_case()
    calls = assign_calls(select_calls(pred["instances_top1"]), 3.0)
    assert calls["relabelled"].sum() == 1
    i = int(np.flatnonzero(calls["relabelled"])[0])
    assert CLASS_NAMES[calls["model_classes"][i]] == "4" and CLASS_NAMES[calls["classes"][i]] == "5"
    assert calls["model_class_prob"][i] == pytest.approx(0.5) and calls["assigned_class_prob"][i] == pytest.approx(0.45)
    s = summarize(calls, assignment={"enabled": True, "extra_copy_cost": 3.0})
    assert s.karyotype == "46,XY" and s.relabelled == [i]
    flags = [f for f in s.flags if f.kind == "relabelled"]
    assert len(flags) == 1 and "most probable class was 4" in flags[0].message and flags[0].detection == i
    assert s.to_dict()["assignment"]["enabled"] is True
    plain = summarize(select_calls(pred["instances_top1"]))
    assert plain.karyotype == "46,XY,+4,-5" and not plain.relabelled
    k_on = render_karyogram(img, calls, s)
    k_off = render_karyogram(img, select_calls(pred["instances_top1"]), plain)
    orange = np.all(k_on == (235, 130, 0), axis=2).sum()
    assert orange > 20 and np.all(k_off == (235, 130, 0), axis=2).sum() == 0


def test_predict_records_the_assignment(tmp_path, capsys):
    img, _, pred = _pair_swap_case()
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "s.png"), img)

    def factory(args):
        return lambda image: pred

    out_on, out_off = tmp_path / "on", tmp_path / "off"
    assert P.main(["--input", str(folder), "--output", str(out_on), "--no-progress", "--assignment", "on",
                   "--extra-copy-cost", "3"], predictor_factory=factory) == 0
    assert P.main(["--input", str(folder), "--output", str(out_off), "--no-progress", "TEST.DEEPACC.ASSIGNMENT.ENABLED",
                   "False"], predictor_factory=factory) == 0
    on = json.loads((out_on / "s.json").read_text())
    off = json.loads((out_off / "s.json").read_text())
    assert on["summary"]["karyotype"] == "46,XY" and off["summary"]["karyotype"] == "46,XY,+4,-5"
    assert on["settings"]["assignment"] is True and on["settings"]["extra_copy_cost"] == 3.0
    assert off["settings"]["assignment"] is False
    rel = [d for d in on["detections"] if d["relabelled"]]
    assert len(rel) == 1 and rel[0]["class"] == "5" and rel[0]["model_class"] == "4"
    assert rel[0]["model_class_prob"] == 0.5 and rel[0]["class_prob"] == 0.45
    assert all("relabelled" not in d for d in off["detections"])
    # the run's config decides when no flag is given; the flag overrides it
    assert P.main(["--input", str(folder), "--output", str(tmp_path / "cfg"), "--no-progress",
                   "TEST.DEEPACC.ASSIGNMENT.ENABLED", "True", "TEST.DEEPACC.ASSIGNMENT.EXTRA_COPY_COST", "0.01"],
                  predictor_factory=factory) == 0
    cfg_run = json.loads((tmp_path / "cfg" / "s.json").read_text())
    assert cfg_run["settings"]["extra_copy_cost"] == 0.01 and cfg_run["summary"]["karyotype"] == "46,XY,+4,-5"
    assert P.main(["--input", str(folder), "--output", str(tmp_path / "bad"), "--no-progress",
                   "--extra-copy-cost", "-1"], predictor_factory=factory) == 2
    assert "EXTRA_COPY_COST must be >= 0" in capsys.readouterr().err


def test_evaluator_assignment_with_an_image_without_calls():
    _, dicts, pred = _pair_swap_case()
    empty = {"boxes": np.zeros((0, 4), np.float32), "scores": np.zeros(0, np.float32),
             "classes": np.zeros(0, np.int64), "class_probs": np.zeros((0, K + 1))}
    ev = MetaphaseEvaluator(dicts, distributed=False, save_plot=False, extra_copy_cost=3.0)
    ev.process([{"image_id": 1, "instances": empty, "instances_top1": empty}])
    r = ev.evaluate()
    assert r["num_dets"] == 0 and r["FN"] == len(dicts[0]["annotations"]) and r["assignment"]["relabelled"] == 0


def test_a_nucleus_takes_no_copy_in_the_assignment():
    """deepacc-predict's pipeline finds the oversized round calls (nuclei) first: the summary does not
    count them, so the assignment must not give them a copy either (a nucleus called '5' would
    otherwise keep the ambiguous 4/5 chromosome a 4)."""
    from deepacc.clinical.pipeline import PredictSettings, postprocess

    img, _, pred = _pair_swap_case()
    img = img.copy()
    h, w = img.shape[:2]
    free = np.ones((h, w), bool)
    for b in pred["instances_top1"]["boxes"]:
        free[max(int(b[1]) - 2, 0):int(b[3]) + 2, max(int(b[0]) - 2, 0):int(b[2]) + 2] = False
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in pred["instances_top1"]["boxes"]]
    r = int(np.ceil(np.sqrt(6 * np.median(areas)) / 2))  # a round call 6x the median box area
    spot = next((y, x) for y in range(r, h - r, 5) for x in range(r, w - r, 5) if free[y - r:y + r, x - r:x + r].all())
    cy, cx = spot
    cv2.circle(img, (cx, cy), r - 2, 60, -1)
    inst = {k: np.asarray(v) for k, v in pred["instances_top1"].items()}
    nuc = np.full((1, K + 1), 0.004)
    nuc[0, IDX["5"]] = 0.9
    inst = {"boxes": np.concatenate([inst["boxes"], [[cx - r, cy - r, cx + r, cy + r]]]).astype(np.float32),
            "scores": np.concatenate([inst["scores"], [0.9]]).astype(np.float32),
            "classes": np.concatenate([inst["classes"], [IDX["5"]]]),
            "class_probs": np.concatenate([inst["class_probs"], nuc])}
    n = len(inst["scores"])
    # the assignment alone, with and without the mask
    plain = assign_calls(inst, 3.0)
    assert not plain["relabelled"].any()  # the nucleus holds the second 5: the ambiguous call stays a 4
    mask = np.zeros(n, bool)
    mask[-1] = True
    masked = assign_calls(inst, 3.0, exclude=mask)
    assert masked["relabelled"].sum() == 1 and CLASS_NAMES[masked["classes"][-1]] == "5"
    # the pipeline finds the nucleus itself and gives the karyotype the summary counts
    res = postprocess(img, {"instances_top1": inst},
                      PredictSettings(assignment=True, extra_copy_cost=3.0))
    assert len(res.summary.excluded) == 1 and res.summary.excluded[0]["box"] == [cx - r, cy - r, cx + r, cy + r]
    assert res.summary.karyotype == "46,XY" and sum(d.get("relabelled", False) for d in res.detections) == 1
