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
    return (o.decoupled, o.aam_enabled, o.siamese_enabled, o.gia_enabled)


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
    assert (o.aam_scale, o.aam_margin) == (64.0, 0.25)
    assert (o.aam_weight, o.siamese_weight, o.gia_weight) == (0.1, 1.0, 0.1)
    assert o.siamese_threshold == 0.5 and o.fc_dim == 1024 and o.num_fc == 2
    assert get_cfg().MODEL.DEEPACC.SIAMESE.THRESHOLD == 0.5


def test_unknown_key_is_rejected(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("MODEL:\n  DEEPACC:\n    MARGINN: 0.3\n")
    with pytest.raises(KeyError):
        load_config(str(bad))


def test_validate_config_lists_every_invalid_value():
    from deepacc.config import ConfigError, check_config, get_cfg, validate_config

    cfg = get_cfg()
    assert validate_config(cfg) == []
    cfg.MODEL.DEEPACC.SIAMESE.THRESHOLD = 2.0
    cfg.TEST.DEEPACC.SCORE_THRESH = -0.5
    cfg.SOLVER.BASE_LR = -0.02
    cfg.SOLVER.CHECKPOINT_PERIOD = 0
    cfg.MODEL.DEEPACC.AAM.MARGIN = 2.0
    cfg.INPUT.NORMALIZATION = "perimage"
    cfg.SOLVER.IMS_PER_BATCH = 1.5
    cfg.TEST.DEEPACC.ASSIGNMENT.EXTRA_COPY_COST = float("nan")
    problems = validate_config(cfg)
    keys = [p.split(" = ")[0] for p in problems]
    assert keys == ["MODEL.DEEPACC.SIAMESE.THRESHOLD", "MODEL.DEEPACC.AAM.MARGIN", "TEST.DEEPACC.SCORE_THRESH",
                    "TEST.DEEPACC.ASSIGNMENT.EXTRA_COPY_COST", "SOLVER.BASE_LR", "SOLVER.IMS_PER_BATCH",
                    "SOLVER.CHECKPOINT_PERIOD", "INPUT.NORMALIZATION"]
    assert "delta must be in [0, 1]" in problems[0] and "must be > 0" in problems[4]
    assert "whole number" in problems[5] and "'per_image', 'none'" in problems[-1]
    with pytest.raises(ConfigError) as e:
        check_config(cfg, "my.yaml")
    assert str(e.value).startswith("my.yaml: 8 invalid value(s):") and len(e.value.problems) == 8


def test_validate_values_words_a_flag_as_the_config_key():
    """Flags that override a setting read from a config are checked by the same table, same words."""
    from deepacc.config import get_cfg, validate_config, validate_values

    assert validate_values({"TEST.DEEPACC.SCORE_THRESH": 0.3, "TEST.DEEPACC.IOU_THRESH": 1.0}) == []
    bad = {"TEST.DEEPACC.SCORE_THRESH": 1.5, "TEST.DEEPACC.IOU_THRESH": 0.0,
           "TEST.DEEPACC.ASSIGNMENT.EXTRA_COPY_COST": float("inf")}
    problems = validate_values(bad)
    assert [p.split(" = ")[0] for p in problems] == list(bad)
    cfg = get_cfg()
    cfg.TEST.DEEPACC.SCORE_THRESH = 1.5
    assert validate_values({"TEST.DEEPACC.SCORE_THRESH": 1.5}) == validate_config(cfg)
    assert "(0, 1]" in problems[1] and ">= 0" in problems[2]


def test_every_shipped_config_is_valid():
    from deepacc.config import load_config, validate_config

    files = sorted(glob.glob(os.path.join(CONFIGS, "**", "*.yaml"), recursive=True))
    assert len(files) > 10
    for f in files:
        assert validate_config(load_config(f)) == [], f


def test_unknown_key_is_named_with_the_closest_key(tmp_path):
    from deepacc.config import get_cfg, load_config, unknown_key_message

    for opts in (["MODEL.DEEPACC.SIAMESE.THRESHOLDD", "0.3"], ["MODEL.DEEPAC.SIAMESE.THRESHOLD", "0.3"]):
        with pytest.raises((KeyError, AssertionError)) as e:
            load_config(None, opts)
        assert unknown_key_message(e.value, get_cfg()) == (
            f"unknown config key {opts[0]!r} (did you mean 'MODEL.DEEPACC.SIAMESE.THRESHOLD'?)")
    y = tmp_path / "typo.yaml"
    y.write_text("SOLVER:\n  BASE_LRR: 0.1\n")
    with pytest.raises(KeyError) as e:
        load_config(str(y))
    assert unknown_key_message(e.value, get_cfg()) == "unknown config key 'SOLVER.BASE_LRR' (did you mean 'SOLVER.BASE_LR'?)"
    assert unknown_key_message(ValueError("other"), get_cfg()) is None


def test_importing_the_config_builds_no_config():
    """``import deepacc.config`` builds no config: ``CALLS`` (the default thresholds) is read from the
    default config when first asked for; every name of the former one-file module is still there."""
    import subprocess
    import sys

    code = (
        "import deepacc.config as c\n"
        "assert c.default_calls.cache_info().currsize == 0, 'a config was built at import'\n"
        "from deepacc.config import (CALLS, DEVICES, _CHOICES, _RANGES, CallThresholds, CfgNode, ConfigError,\n"
        "    ConfigFileError, add_deepacc_config, call_thresholds, check_config, check_config_file, default_calls,\n"
        "    dump_config, get_cfg, head_options, load_config, resolve_epoch_schedule, unknown_key_message,\n"
        "    validate_config)\n"
        "assert CALLS is default_calls() and CALLS == call_thresholds(get_cfg())\n"
        "assert 'CALLS' in dir(c) and isinstance(get_cfg(), CfgNode)\n"
        "print(tuple(CALLS))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(0.5, 0.7, 0.5, 0.7, 0.2)"


# ------------------------------------------------------------------ the frozen settings of deepacc.settings


def test_default_settings_are_the_default_config():
    """The defaults that ``modeling/``, ``evaluation/`` and ``clinical/`` use without a config are the
    default config's values: the two can never drift apart."""
    import deepacc.config as c
    from deepacc import settings
    from deepacc.karyotype.assignment import AssignmentSettings, assignment_settings

    assert settings.DEFAULT_CALLS == c.call_thresholds(get_cfg()) == c.default_calls()
    assert type(c.call_thresholds(get_cfg())) is settings.CallThresholds is c.CallThresholds
    assert settings.DEFAULT_ASSIGNMENT == assignment_settings(get_cfg())
    assert AssignmentSettings is settings.AssignmentSettings


def test_head_options_is_a_frozen_settings_object():
    import dataclasses

    from deepacc.settings import HeadOptions

    o = head_options(get_cfg())
    assert isinstance(o, HeadOptions) and list(o.as_dict()) == [f.name for f in dataclasses.fields(HeadOptions)]
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.siamese_threshold = 0.3
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.DEEPACC.SIAMESE.THRESHOLD", "0.3", "MODEL.ROI_HEADS.NAME", "StandardROIHeads"])
    o = head_options(cfg)
    assert o.siamese_threshold == 0.3  # delta read once here, carried to the classifier by the head
    assert (o.decoupled, o.aam_enabled, o.siamese_enabled, o.gia_enabled) == (False, False, False, False)


def test_importing_the_core_metrics_and_clinical_outputs_builds_no_config():
    """``modeling``, ``evaluation`` and ``clinical`` take settings objects: importing them does not
    import ``deepacc.config`` at all (their defaults are ``deepacc.settings``')."""
    import subprocess
    import sys

    code = ("import sys\n"
            "import deepacc.modeling, deepacc.evaluation, deepacc.evaluation.matching, deepacc.clinical.pipeline\n"
            "import deepacc.clinical.summary, deepacc.clinical.karyogram\n"
            "from deepacc.clinical.pipeline import PredictSettings, resolve_assignment\n"
            "assert resolve_assignment(PredictSettings()).as_dict() == {'enabled': True, 'extra_copy_cost': 3.0}\n"
            "assert 'deepacc.config' not in sys.modules, 'deepacc.config imported'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("parts,label", [
    (("StandardROIHeads", True, True, True, True), "Faster R-CNN"),  # Detectron2's head, whatever DEEPACC says
    (("DeepACCROIHeads", False, False, False, False), "Faster R-CNN"),
    (("DeepACCROIHeads", True, False, False, False), "Faster R-CNN (sep)"),
    (("DeepACCROIHeads", True, True, False, False), "DeepACC (AAM)"),
    (("DeepACCROIHeads", True, False, True, False), "DeepACC (siamese)"),
    (("DeepACCROIHeads", True, True, True, False), "DeepACC (AAM+siamese)"),
    (("DeepACCROIHeads", True, True, True, True), "DeepACC"),
    (("DeepACCROIHeads", True, False, True, True), "DeepACC (siamese+GIA)"),
    (("DeepACCROIHeads", False, True, True, True), "DeepACC (AAM+siamese+GIA, shared FC)"),
    (("DeepACCROIHeads", False, True, False, False), "DeepACC (AAM, shared FC)"),
])
def test_method_label(parts, label):
    from deepacc.settings import method_label

    assert method_label(*parts) == label


def test_method_of_every_config():
    """The paper's rows (a)-(f) are named as ``benchmarks/reproduce_table1.py`` names them (with the
    parts of the partial DeepACC rows spelt out); every Faster R-CNN config is "Faster R-CNN"."""
    from deepacc.config import method_of

    rows = {"faster_rcnn_R101_FPN_2x.yaml": "Faster R-CNN", "faster_rcnn_sep_R101_FPN_2x.yaml": "Faster R-CNN (sep)",
            "ablation/c_aam_R101_FPN_2x.yaml": "DeepACC (AAM)", "ablation/d_siamese_R101_FPN_2x.yaml": "DeepACC (siamese)",
            "ablation/e_aam_siamese_R101_FPN_2x.yaml": "DeepACC (AAM+siamese)",
            "ablation/f_full_R101_FPN_2x.yaml": "DeepACC"}
    for path in ALL:
        rel = os.path.relpath(path, CONFIGS).replace(os.sep, "/")
        base = os.path.basename(rel)
        want = rows.get(rel, "Faster R-CNN" if base.startswith("faster_rcnn") else "DeepACC")
        assert method_of(load_config(path)) == want, rel
    assert method_of(get_cfg()) == "DeepACC"
