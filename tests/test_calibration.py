"""benchmarks/calibration.py: the numbers of its diagnostics on hand-made predictions (reliability and
ECE, the true class's probability, misses by score band, siamese centres), its hooks on the real
classifier, and the script end to end on a fake predictor (no trained model, no training)."""
import json
import os
import sys

import numpy as np
import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import calibration as cal  # noqa: E402

K = 24


def _probs(rows):
    """(N, K+1) probability rows from ``{class: p}`` dicts, the rest on the background column."""
    out = np.zeros((len(rows), K + 1))
    for i, r in enumerate(rows):
        for c, p in r.items():
            out[i, c] = p
        out[i, K] = 1.0 - sum(r.values())
    return out


def test_a_calibrated_toy_has_zero_ece_and_an_overconfident_one_its_gap():
    # bin [.2,.3): 4 detections at 0.25, 1 right; bin [.7,.8): 4 at 0.75, 3 right -> calibrated
    conf = [0.25] * 4 + [0.75] * 4
    correct = [1, 0, 0, 0, 1, 1, 1, 0]
    r = cal.reliability(conf, correct)
    assert r["ece"] == pytest.approx(0.0, abs=1e-12)
    assert r["count"][2] == 4 and r["count"][7] == 4 and sum(r["count"]) == 8
    assert r["accuracy"][2] == pytest.approx(0.25) and r["accuracy"][7] == pytest.approx(0.75)
    assert r["accuracy"][0] is None and r["mean_confidence"] == pytest.approx(0.5)
    # all at 0.9 and all wrong: ECE 0.9; half at 1.0 (last bin includes 1) right, half at 0.1 wrong: 0.05
    assert cal.reliability([0.9] * 5, [0] * 5)["ece"] == pytest.approx(0.9)
    r = cal.reliability([1.0, 1.0, 0.1, 0.1], [1, 1, 0, 0])
    assert r["count"][9] == 2 and r["count"][1] == 2 and r["ece"] == pytest.approx(0.05)


def test_bands_are_half_open_and_the_last_includes_one():
    assert cal.band_index(np.array([0.0, 0.099, 0.1, 0.3, 0.49, 0.5, 1.0])).tolist() == [0, 0, 1, 2, 2, 3, 3]


def _hand_made_image():
    # four chromosomes of classes 0..3, far apart
    gt_boxes = np.array([[0, 0, 10, 40], [100, 0, 110, 40], [200, 0, 210, 40], [300, 0, 310, 40]], float)
    gt_classes = np.array([0, 1, 2, 3])
    boxes = np.array([
        [0, 0, 10, 40],       # d0 on GT0, right class, 0.9: a TP call
        [100, 0, 110, 38],    # d1 on GT1, class 5 (wrong), 0.4
        [200, 0, 210, 40],    # d2 on GT2, right class, 0.2 (found, scored below .5)
        [200, 6, 210, 40],    # d3 on GT2 too (IoU .85 with GT2, .85 with d2: suppressed by NMS), 0.05
        [500, 0, 510, 40],    # d4 on nothing, class 4, 0.7: an FP call
    ], float)
    scores = np.array([0.9, 0.4, 0.2, 0.05, 0.7])
    classes = np.array([0, 5, 2, 2, 4])
    probs = _probs([{0: 0.9}, {5: 0.4, 1: 0.3}, {2: 0.2}, {2: 0.05}, {4: 0.7}])
    return {"boxes": boxes, "scores": scores, "classes": classes, "class_probs": probs}, gt_boxes, gt_classes


def test_hand_made_image_gives_the_expected_counts():
    top1, gb, gc = _hand_made_image()
    st = cal.ModelStats(K, 0.5, 0.7, 0.5)
    st.add_image(top1, gb, gc)
    s = st.summary()
    # best score over each chromosome: .9, .4, .2, 0 (no detection on GT3)
    assert s["gt_by_band"] == {"[0,.1)": 1, "[.1,.3)": 1, "[.3,.5)": 1, "[.5,1]": 1}
    assert s["missed_below_threshold"] == 3 and s["fn_protocol"] == 3  # the protocol agrees
    assert s["calls"] == 2 and s["calls_tp"] == 1
    # reliability: d3 suppressed by NMS (IoU with d2 > .7); d0, d2 right; d1 wrong class; d4 background
    assert s["detections"] == 4
    assert s["mean_confidence"] == pytest.approx((0.9 + 0.4 + 0.2 + 0.7) / 4)
    assert s["accuracy"] == pytest.approx(0.5)
    # ECE: bins .9 (1 right: |1-.9|), .7 (wrong: .7), .4 (wrong: .4), .2 (right: .8), each 1/4
    assert s["ece"] == pytest.approx((0.1 + 0.7 + 0.4 + 0.8) / 4)
    # the true class's probability in the best-IoU detection: GT0 .9, GT1 .3 (in d1), GT2 .2 (d2, IoU 1)
    assert s["true_prob"]["n"] == 3 and s["true_prob"]["q50"] == pytest.approx(0.3)
    assert s["true_prob"]["mean"] == pytest.approx((0.9 + 0.3 + 0.2) / 3)
    assert s["true_prob_above_half"] == pytest.approx(1 / 3)
    # sharpness of the detections' rows: largest foreground probability = the score here
    assert s["detection_maxprob"]["n"] == 5 and s["detection_maxprob"]["q50"] == pytest.approx(0.4)
    ent0 = -(0.9 * np.log(0.9) + 0.1 * np.log(0.1))
    assert max(cal.entropy(top1["class_probs"][:1])) == pytest.approx(ent0)


def test_class_agnostic_ground_truth_counts_in_the_bands_only():
    top1, gb, _ = _hand_made_image()
    st = cal.ModelStats(K)
    st.add_image(top1, gb, np.full(4, K + 1))
    s = st.summary()
    assert s["gt_by_band"] == {"[0,.1)": 1, "[.1,.3)": 1, "[.3,.5)": 1, "[.5,1]": 1}
    assert s["fn_protocol"] == 3 and s["class_images"] == 0 and s["detections"] == 0
    assert s["true_prob"]["n"] == 0 and s["true_prob"]["q50"] is None


def test_siamese_centres_are_sorted_into_right_other_class_no_chromosome_and_absent():
    _, gb, gc = _hand_made_image()
    top_score = np.zeros(K)
    boxes = np.tile(np.array([[900.0, 900, 910, 940]]), (K, 1))
    top_score[0], boxes[0] = 0.99, gb[0]        # class 0 at its own chromosome: right
    top_score[1], boxes[1] = 0.8, gb[2]         # class 1 at the class-2 chromosome: other class
    top_score[2] = 0.7                          # class 2 at nothing: no chromosome
    top_score[3], boxes[3] = 0.5, gb[3]         # not above delta = .5: global centre, not counted
    top_score[10], boxes[10] = 0.6, gb[1]       # class 10, not in the image: other class and absent
    st = cal.ModelStats(K)
    st.add_centres(top_score, boxes, 0.5, gb, gc)
    c = st.summary()["siamese_centres"]
    assert (c["local"], c["right"], c["other_class"], c["no_chromosome"], c["absent_class"]) == (4, 1, 2, 1, 1)
    assert c["mean_fraction_local"] == pytest.approx(4 / K) and c["classes_checked"] == K


def test_margin_vs_final_sharpness_uses_the_candidates():
    st = cal.ModelStats(K)
    final = _probs([{0: 0.6}, {1: 0.3}, {2: 0.01}])
    margin = _probs([{0: 1.0}, {1: 0.5, 2: 0.5}, {3: 1.0}])
    st.add_branches(margin, final, 0.05)  # the third proposal is no candidate
    b = st.summary()["branches"]
    assert b["final_maxprob"]["n"] == 2 and b["final_maxprob"]["mean"] == pytest.approx(0.45)
    assert b["margin_maxprob"]["mean"] == pytest.approx(0.75)
    assert b["margin_entropy"]["mean"] == pytest.approx(np.log(2) / 2)


class _FakeRoIHeads(torch.nn.Module):
    """What the probe expects of the torchvision engine: roi_heads(features, proposals, image_sizes)
    calling the head's classifier on one feature row per proposal."""

    def __init__(self, classifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, features, proposals, image_sizes):
        return self.classifier(features, [len(p) for p in proposals])


def test_probe_reads_the_classifiers_centres_and_scales_their_boxes():
    from deepacc.modeling import DeepACCClassifier

    torch.manual_seed(0)
    clf = DeepACCClassifier(8, K, aam_enabled=True, siamese_enabled=True, gia_enabled=False).eval()
    model = torch.nn.Module()
    model.roi_heads = _FakeRoIHeads(clf)
    model.head = torch.nn.Module()
    model.head.classifier = clf

    class P:
        pass

    p = P()
    p.model = model
    probe = cal.BranchProbe(p)
    assert probe.available and probe.siamese and probe.threshold == 0.5
    feats = torch.rand(5, 8)
    proposals = [torch.arange(20, dtype=torch.float32).view(5, 4)]
    with torch.no_grad():
        model.roi_heads(feats, proposals, [(100, 200)])
    out = probe.last
    assert out["final_probs"].shape == (5, K + 1) and out["margin_probs"].shape == (5, K + 1)
    assert out["top_score"].shape == (1, K)
    np.testing.assert_allclose(out["top_score"][0], out["margin_probs"][:, :K].max(axis=0), rtol=1e-6)
    boxes = probe.centre_boxes((300, 400))  # the model saw 100 x 200: x2 in x, x3 in y
    j = int(out["top_index"][0, 7])
    np.testing.assert_allclose(boxes[7], proposals[0][j].numpy() * [2, 3, 2, 3])
    probe.close()
    probe.last = {}
    with torch.no_grad():
        model.roi_heads(feats, proposals, [(100, 200)])
    assert probe.last == {}  # hooks removed


def test_script_end_to_end_on_a_fake_predictor(tmp_path, monkeypatch):
    import deepacc.data.images
    import deepacc.engine
    from deepacc.data.catalog import register, unregister

    top1, gb, gc = _hand_made_image()
    dicts = [{"file_name": f"img{i}.png", "image_id": i, "height": 600, "width": 600,
              "annotations": [{"bbox": b.tolist(), "bbox_mode": 0, "category_id": int(c), "iscrowd": 0}
                              for b, c in zip(gb, gc)]} for i in range(2)]
    register("calib_test_ds", lambda: dicts)
    monkeypatch.setattr(deepacc.data.images, "read_image", lambda path: np.zeros((600, 600), np.uint8))
    monkeypatch.setattr(deepacc.engine, "build_predictor",
                        lambda cfg, *a, **k: (lambda gray: {"instances_top1": top1, "instances": top1}))
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"x")
    cfg = os.path.join(REPO, "configs", "real", "faster_rcnn_R18_real_cpu.yaml")
    out = str(tmp_path / "res" / "cal")
    try:
        rc = cal.main(["--model", f"a={cfg}:{weights}", "--model", f"b={cfg}:{weights}",
                       "--dataset", "calib_test_ds", "--out", out, "--no-progress"])
    finally:
        unregister("calib_test_ds")
    assert rc == 0
    rec = json.load(open(out + ".json"))
    assert [m["model"] for m in rec["models"]] == ["a", "b"] and rec["images"] == 2
    m = rec["models"][0]
    assert m["gt_by_band"] == {"[0,.1)": 2, "[.1,.3)": 2, "[.3,.5)": 2, "[.5,1]": 2}
    assert m["fn_protocol"] == 6 and m["calls"] == 4 and m["calls_tp"] == 2 and m["num_gt"] == 8
    assert m["ece"] == pytest.approx(0.5) and m["head"]["probe"] is False
    md = open(out + ".md").read()
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in md.splitlines()
            if line.startswith("| a ")]
    assert ["a", "8", "2", "2", "2", "2", "6", "6"] in rows  # GT, the four bands, below .5, FN
    assert ["a", "2", "8", "0.550", "0.500", "0.500", "8", "4", "2"] in rows  # calibration row
    for suffix in ("_reliability.png", "_trueprob.png"):
        assert open(out + suffix, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_bad_arguments_exit_2_with_a_named_error(tmp_path, capsys):
    cfg = os.path.join(REPO, "configs", "real", "faster_rcnn_R18_real_cpu.yaml")
    with pytest.raises(SystemExit) as e:
        cal.main(["--model", f"a={cfg}:x.pth", "--dataset", "gband_cells_val", "--limit", "0"])
    assert e.value.code == 2 and "--limit must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cal.main(["--model", "a.yaml", "--dataset", "gband_cells_val"])
    assert e.value.code == 2 and "expected NAME=CONFIG:WEIGHTS" in capsys.readouterr().err
    assert cal.main(["--model", f"a={cfg}:x.pth", "--dataset", "no_such_ds"]) == 2
    assert "dataset 'no_such_ds' is not registered" in capsys.readouterr().err
    assert cal.main(["--model", f"a={cfg}:{tmp_path / 'none.pth'}", "--dataset", "gband_cells_val"]) == 2
    err = capsys.readouterr().err
    assert "--model a: weights" in err and "no such file" in err
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    from deepacc.data.catalog import register, unregister

    register("calib_bad_ds", lambda: [{"file_name": "x.png", "image_id": 0, "annotations": []}])
    try:  # the model is built (R18, random) and its checkpoint refused before any image is read
        assert cal.main(["--model", f"a={cfg}:{bad}", "--dataset", "calib_bad_ds", "--no-progress"]) == 2
    finally:
        unregister("calib_bad_ds")
    err = capsys.readouterr().err
    assert err.startswith("calibration: --model a: ") and "bad.pth" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as e:
        cal.main(["--model", f"a={cfg}:x.pth", "--model", f"a={cfg}:y.pth", "--dataset", "gband_cells_val"])
    assert e.value.code == 2 and "must differ" in capsys.readouterr().err
