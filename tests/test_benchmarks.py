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


def test_model_argument_names_a_malformed_spec():
    import argparse

    from trained_models import TrainedModel, parse_model

    assert parse_model("f=configs/a.yaml:output/f/model_final.pth") == TrainedModel(
        "f", "configs/a.yaml", "output/f/model_final.pth")
    for bad in ("configs/a.yaml:model.pth", "f=model.pth", "f=configs/a.yaml:"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected NAME=CONFIG:WEIGHTS"):
            parse_model(bad)
