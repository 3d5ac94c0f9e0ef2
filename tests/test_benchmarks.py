"""The Table 1 benchmark's plumbing: rows differ only in their heads, the CPU protocol changes
everything but the heads, and the aggregation is the arithmetic it claims (no training here)."""
import json
import os
import statistics
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import reproduce_table1 as t1  # noqa: E402
from deepacc.config import get_cfg, head_options, load_config  # noqa: E402

#: what Table 1 says each row has: (decoupled streams, L_AAM, siamese, L_GIA)
EXPECTED_HEADS = {"a": (False, False, False, False), "b": (True, False, False, False),
                  "c": (True, True, False, False), "d": (True, False, True, False),
                  "e": (True, True, True, False), "f": (True, True, True, True)}


@pytest.mark.parametrize("row", list(t1.ROWS))
def test_cpu_protocol_keeps_the_rows_head_and_replaces_the_rest(row, tmp_path):
    cfg = t1.build_run_config(row, "synth_shift", "cpu", 3, str(tmp_path), max_iter=240)
    paper = load_config(os.path.join(REPO, "configs", t1.ROWS[row][1]), None, get_cfg())
    h = head_options(cfg)
    assert (h.decoupled, h.aam_enabled, h.siamese_enabled, h.gia_enabled) == EXPECTED_HEADS[row]
    assert t1.ROWS[row][2:] == EXPECTED_HEADS[row][1:]  # the table's check marks say the same
    ho, hp = h.as_dict(), head_options(paper).as_dict()
    # the protocol shrinks the FC width for CPU; every other head setting is the row's own
    assert ho.pop("fc_dim") == 256 and hp.pop("fc_dim") == 1024
    assert ho == hp
    assert cfg.MODEL.ROI_HEADS.NAME == paper.MODEL.ROI_HEADS.NAME
    assert cfg.MODEL.RESNETS.DEPTH == 18 and cfg.MODEL.WEIGHTS == "" and cfg.MODEL.RESNETS.NORM == "GN"
    assert cfg.SEED == 3 and cfg.OUTPUT_DIR == str(tmp_path)
    assert cfg.DATASETS.TRAIN == ("deepacc_synth_train",)
    assert cfg.DATASETS.TEST == ("deepacc_synth_test", "deepacc_synth_shift_test")
    # the paper's decay at epochs 16 and 22 of 24, kept in proportion
    assert cfg.SOLVER.EPOCHS == 0 and cfg.SOLVER.MAX_ITER == 240 and tuple(cfg.SOLVER.STEPS) == (160, 220)


def test_paper_protocol_is_the_committed_config(tmp_path):
    cfg = t1.build_run_config("f", "gband", "paper", 0, str(tmp_path))
    assert cfg.MODEL.RESNETS.DEPTH == 101 and cfg.SOLVER.EPOCHS == 24 and cfg.SOLVER.IMS_PER_BATCH == 1
    assert "ImageNetPretrained" in cfg.MODEL.WEIGHTS
    assert cfg.DATASETS.TRAIN == ("gband_cells_train",) and cfg.DATASETS.TEST == ("gband_cells_val",)


def _runs():
    cols = {"same": "ds_same", "shift": "ds_shift"}
    vals = {("a", 0): (10.0, 20.0), ("a", 1): (14.0, 22.0), ("f", 0): (13.0, 27.0), ("f", 1): (15.0, 25.0)}
    runs = [{"row": r, "seed": s, "s_per_iter": 1.0 + s,
             "metrics": {"ds_same": {"mAP": v[0], "mAP_max": v[0] - 1, "AER": 100 - v[0], "Acc": v[0] / 2, "AP": 1.0},
                         "ds_shift": {"mAP": v[1], "mAP_max": v[1] - 1, "AER": 100 - v[1], "Acc": v[1] / 2, "AP": 1.0}}}
            for (r, s), v in vals.items()]
    return runs, cols


def test_summary_is_mean_and_sample_std_over_seeds():
    runs, cols = _runs()
    s = t1.summarize(runs, ["a", "f"], cols)
    assert s["a"]["same"]["mAP"]["mean"] == pytest.approx(12.0)
    assert s["a"]["same"]["mAP"]["std"] == pytest.approx(statistics.stdev([10.0, 14.0]))  # 2.828
    assert s["f"]["shift"]["AER"]["mean"] == pytest.approx(74.0)
    assert s["f"]["seeds"] == [0, 1] and s["a"]["s_per_iter"]["mean"] == pytest.approx(1.5)
    md = t1.table_markdown(s, ["a", "f"], cols)
    assert "| (a) Faster R-CNN |  |  |  | 12.00 ± 2.83 |" in md
    # differences to (a): mAP same +2.00, shifted +5.00; AER shifted -5.00
    diff = [line for line in md.splitlines() if line.startswith("| (f) DeepACC | +")][0]
    assert diff.split(" | ")[1:5] == ["+2.00", "+2.00", "-2.00", "+1.00"]
    assert diff.split(" | ")[5:9] == ["+5.00", "+5.00", "-5.00", "+2.50 |"]


def test_missing_runs_are_not_averaged_in():
    runs, cols = _runs()
    runs[1]["metrics"] = {}  # (a) seed 1 failed
    s = t1.summarize(runs, ["a"], cols)
    assert s["a"]["seeds"] == [0] and s["a"]["same"]["mAP"] == {"mean": 10.0, "std": 0.0, "n": 1}


def test_a_metric_defined_by_only_some_seeds_says_so():
    runs, cols = _runs()
    runs[0]["metrics"]["ds_same"]["Acc"] = None  # (a) seed 0 had no detection >= 0.5: Acc undefined
    s = t1.summarize(runs, ["a", "f"], cols)
    assert s["a"]["same"]["Acc"] == {"mean": 7.0, "std": 0.0, "n": 1}
    row = [line for line in t1.table_markdown(s, ["a", "f"], cols).splitlines() if line.startswith("| (a)")][0]
    assert "| 7.00 (1/2) |" in row and "| 12.00 ± 2.83 |" in row


def test_train_speed_is_read_from_the_trainers_metrics(tmp_path):
    lines = [{"iteration": 0, "time": 9.0}, {"iteration": 19, "time": 19.0}, {"iteration": 39, "time": 24.0},
             {"iteration": 59, "time": 26.0}, {"iteration": 59, "val/mAP": 3.0}]
    (tmp_path / "metrics.json").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    # per-iteration times 1.0, 1.2, 1.3 after the first record; the first span (start-up) is dropped
    assert t1.read_train_speed(str(tmp_path)) == pytest.approx(1.25)


def test_learning_curve_reads_evaluations_once_and_adds_pretraining_time(tmp_path):
    import learning_curve as lc

    run = tmp_path / "run"
    pre = tmp_path / "pre"
    run.mkdir()
    pre.mkdir()
    json.dump({"history": [{"elapsed_s": 60.0}, {"elapsed_s": 120.0}]}, open(pre / "pretrain_report.json", "w"))
    (run / "config.yaml").write_text(f"MODEL:\n  WEIGHTS: {pre / 'model_pretrained.pth'}\n")
    recs = [{"iteration": 0, "time": 1.0}, {"iteration": 19, "time": 38.0},
            {"iteration": 19, "val/mAP": 10.0, "val/Acc": 50.0},
            # killed after iteration 19, resumed: iteration 19's evaluation is written again
            {"iteration": 20, "time": 2.0}, {"iteration": 19, "val/mAP": 10.0, "val/Acc": 50.0},
            {"iteration": 39, "time": 40.0}, {"iteration": 39, "val/mAP": 20.0, "val/AER": 70.0}]
    (run / "metrics.json").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    out = lc.read_run(str(run))
    assert [e["iteration"] for e in out["evaluations"]] == [20, 40]
    assert out["pretrain_minutes"] == pytest.approx(2.0)
    assert out["evaluations"][0]["train_minutes"] == pytest.approx(39.0 / 60)
    assert out["evaluations"][1]["total_minutes"] == pytest.approx(2.0 + 81.0 / 60)
    assert out["evaluations"][1]["val/AER"] == 70.0
    assert lc.main([str(run), "--name", "t", "--results", str(tmp_path / "res")]) == 0
    md = open(tmp_path / "res" / "curve_t.md").read()
    assert "| 40 | 1.4 | 3.4 | 20.00 | 70.00 | - |" in md  # columns mAP, AER, Acc (none at 40)


def _write_metrics(run, recs):
    run.mkdir()
    (run / "metrics.json").write_text("\n".join(json.dumps(r) for r in recs) + "\n")


def test_learning_curve_averages_loss_terms_over_windows_with_their_shares(tmp_path):
    import learning_curve as lc

    run = tmp_path / "run"
    _write_metrics(run, [
        {"iteration": 0, "time": 1.0, "loss_a": 1.0, "loss_b": 3.0, "total_loss": 4.0, "lr": 0.1},
        {"iteration": 1, "time": 1.0, "loss_a": 3.0, "loss_b": 1.0, "total_loss": 4.0, "lr": 0.1},
        {"iteration": 2, "time": 1.0, "loss_a": 100.0, "loss_b": 100.0, "total_loss": 200.0, "lr": 0.1},
        # killed after iteration 2, resumed from iteration 2: its later record wins
        {"iteration": 2, "time": 1.0, "loss_a": 1.0, "loss_b": 0.0, "total_loss": 1.0, "lr": 0.1},
        {"iteration": 3, "time": 1.0, "loss_a": 2.0, "loss_b": 1.0, "total_loss": 3.0, "lr": 0.1},
        {"iteration": 3, "val/mAP": 5.0},
        {"iteration": 4, "time": 1.0, "loss_a": 0.5, "loss_b": 0.5, "total_loss": 1.0, "lr": 0.1}])
    wins = lc.read_run(str(run), loss_window=2)["losses"]
    assert [(w["window"], w["records"]) for w in wins] == [("0-1", 2), ("2-3", 2), ("4-4", 1)]  # last one shorter
    assert wins[0]["mean"] == pytest.approx({"loss_a": 2.0, "loss_b": 2.0, "total_loss": 4.0})
    assert wins[0]["share_pct"] == pytest.approx({"loss_a": 50.0, "loss_b": 50.0})
    assert wins[1]["mean"] == pytest.approx({"loss_a": 1.5, "loss_b": 0.5, "total_loss": 2.0})
    assert wins[1]["share_pct"] == pytest.approx({"loss_a": 75.0, "loss_b": 25.0})
    # the default window (50 iterations) holds all five iterations, each counted once
    whole = lc.read_run(str(run))["losses"]
    assert [w["window"] for w in whole] == ["0-4"]
    assert whole[0]["mean"] == pytest.approx({"loss_a": 7.5 / 5, "loss_b": 5.5 / 5, "total_loss": 13.0 / 5})

    res = tmp_path / "res"
    assert lc.main([str(run), "--name", "t", "--results", str(res), "--loss-window", "2"]) == 0
    md = (res / "curve_t.md").read_text()
    assert "| window | records | loss_a | loss_a % | loss_b | loss_b % | total_loss |" in md
    assert "| 0-1 | 2 | 2.0000 | 50.0 | 2.0000 | 50.0 | 4.0000 |" in md
    assert "| 2-3 | 2 | 1.5000 | 75.0 | 0.5000 | 25.0 | 2.0000 |" in md
    assert "| 4-4 | 1 | 0.5000 | 50.0 | 0.5000 | 50.0 | 1.0000 |" in md
    assert "--loss-window 2`" in md
    saved = json.loads((res / "curve_t.json").read_text())
    assert saved["loss_window"] == 2
    assert saved["runs"][0]["losses"][1]["share_pct"] == pytest.approx({"loss_a": 75.0, "loss_b": 25.0})
    assert (res / "curve_t_losses.png").stat().st_size > 0
    with pytest.raises(SystemExit):
        lc.main([str(run), "--name", "t", "--results", str(res), "--loss-window", "0"])


def test_learning_curve_shows_class_agnostic_metrics_and_leaves_other_runs_alone(tmp_path):
    import learning_curve as lc

    run = tmp_path / "run"
    agn = {"bio/agnostic/all/AP50": 61.5, "bio/agnostic/all/recall": 75.25,
           "bio/agnostic/all/count_error_median_abs": 4.5, "bio/agnostic/all/FP": 110.0,
           "bio/agnostic/agnostic_images/AP50": 1.0, "bio/num_images": 18.0,
           "g/mAP": 14.5, "g/agnostic/all/AP50": 78.0, "g/agnostic/class_images/AP50": 2.0}
    _write_metrics(run, [
        {"iteration": 9, "time": 30.0},
        {"iteration": 9, **{k: 0.0 for k in agn}},
        {"iteration": 9, **agn},  # written again after a resume: the later one wins
        {"iteration": 19, "time": 30.0},
        {"iteration": 19, "bio/agnostic/all/AP50": 70.0, "bio/agnostic/all/recall": 80.0}])
    ev = lc.read_run(str(run))["evaluations"]
    assert set(ev[0]) == {"iteration", "train_minutes", "total_minutes", "bio/agnostic/all/AP50",
                          "bio/agnostic/all/recall", "bio/agnostic/all/count_error_median_abs", "g/mAP",
                          "g/agnostic/all/AP50"}
    res = tmp_path / "res"
    assert lc.main([str(run), "--name", "a", "--results", str(res)]) == 0
    md = (res / "curve_a.md").read_text()
    bio = md[md.index("\nbio:\n"):md.index("\ng:\n")]
    assert "| iteration | train min | total min | agnostic AP50 | agnostic recall | count error (median abs) |" in bio
    assert "| 10 | 0.5 | 0.5 | 61.50 | 75.25 | 4.50 |" in bio
    assert "| 20 | 1.0 | 1.0 | 70.00 | 80.00 | - |" in bio
    g = md[md.index("\ng:\n"):]
    assert "| iteration | train min | total min | mAP | agnostic AP50 |" in g
    assert "| 10 | 0.5 | 0.5 | 14.50 | 78.00 |" in g
    assert "Loss terms" not in md and not (res / "curve_a_losses.png").exists()  # no loss terms logged

    plain = tmp_path / "plain"  # a run without class-agnostic metrics: the table as before
    _write_metrics(plain, [{"iteration": 9, "time": 30.0}, {"iteration": 9, "v/mAP": 1.0, "v/Acc": 2.0,
                                                            "v/num_images": 3.0}])
    assert lc.main([str(plain), "--name", "p", "--results", str(res)]) == 0
    md = (res / "curve_p.md").read_text()
    assert ("v:\n\n| iteration | train min | total min | mAP | Acc |\n|---|---|---|---|---|\n"
            "| 10 | 0.5 | 0.5 | 1.00 | 2.00 |\n") in md


def test_model_argument_names_a_malformed_spec():
    import argparse

    from trained_models import TrainedModel, parse_model

    assert parse_model("f=configs/a.yaml:output/f/model_final.pth") == TrainedModel(
        "f", "configs/a.yaml", "output/f/model_final.pth")
    for bad in ("configs/a.yaml:model.pth", "f=model.pth", "f=configs/a.yaml:"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected NAME=CONFIG:WEIGHTS"):
            parse_model(bad)
