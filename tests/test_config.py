"""Every YAML loads on the framework-free config; the paper's rows map to the right switches."""
import glob
import os

import pytest

from deepacc.config import get_cfg, head_options, load_config

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
ALL = sorted(glob.glob(os.path.join(CONFIGS, "**", "*.yaml"), recursive=True))


def test_configs_exist():
    names = {os.path.relpath(p, CONFIGS) for p in ALL}
    for required in ("Base-DeepACC-RCNN-FPN.yaml", "DeepACC_R101_FPN_2x.yaml", "faster_rcnn_R101_FPN_2x.yaml",
                     "faster_rcnn_sep_R101_FPN_2x.yaml", "quick/DeepACC_R18_synth_cpu.yaml"):
        assert required in names


@pytest.mark.parametrize("path", ALL, ids=lambda p: os.path.relpath(p, CONFIGS))
def test_every_config_loads(path):
    cfg = load_config(path)
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 24


def _row(path):
    o = head_options(load_config(os.path.join(CONFIGS, path)))
    return (o["decoupled"], o["aam_enabled"], o["siamese_enabled"], o["gia_enabled"])


def test_table1_rows_are_plain_configs():
    assert _row("faster_rcnn_R101_FPN_2x.yaml") == (False, False, False, False)       # (a)
    assert _row("faster_rcnn_sep_R101_FPN_2x.yaml") == (True, False, False, False)    # (b)
    assert _row("ablation/c_aam_R101_FPN_2x.yaml") == (True, True, False, False)      # (c)
    assert _row("ablation/d_siamese_R101_FPN_2x.yaml") == (True, False, True, False)  # (d)
    assert _row("ablation/e_aam_siamese_R101_FPN_2x.yaml") == (True, True, True, False)  # (e)
    assert _row("ablation/f_full_R101_FPN_2x.yaml") == (True, True, True, True)       # (f)
    assert _row("DeepACC_R101_FPN_2x.yaml") == (True, True, True, True)


def test_paper_hyperparameters_are_the_defaults():
    o = head_options(load_config(os.path.join(CONFIGS, "DeepACC_R101_FPN_2x.yaml")))
    assert (o["aam_scale"], o["aam_margin"]) == (64.0, 0.25)
    assert (o["aam_weight"], o["siamese_weight"], o["gia_weight"]) == (0.1, 1.0, 0.1)
    assert o["siamese_threshold"] == 0.5 and o["fc_dim"] == 1024 and o["num_fc"] == 2
    assert get_cfg().MODEL.DEEPACC.SIAMESE.THRESHOLD == 0.5


def test_unknown_key_is_rejected(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("MODEL:\n  DEEPACC:\n    MARGINN: 0.3\n")
    with pytest.raises(KeyError):
        load_config(str(bad))
