"""Every user mistake of issue 23 (item 4) is one named line on stderr and exit status 2, found before
a model is built: config files that cannot be read, dataset names, choices of SOLVER.WARMUP_METHOD and
MODEL.DEVICE, --eval-only without its weights, deepacc-predict's --output and MODEL.WEIGHTS. Each
command that reads the config is tried: train_net.py (tools/train.py), deepacc-predict, deepacc-eval,
deepacc-pretrain. ``--debug`` keeps the traceback."""
import os

import cv2
import numpy as np
import pytest

from deepacc.tools import eval as E
from deepacc.tools import predict as P
from deepacc.tools import pretrain as PT
from deepacc.tools import train as T

from tv_tiny import QUICK_CONFIG, TINY_OPTS

TOOLS = ("train_net.py", "deepacc-predict", "deepacc-eval", "deepacc-pretrain")


@pytest.fixture
def env(tmp_path, tiny_data_root, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", tiny_data_root)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.chdir(tmp_path)
    img = tmp_path / "in" / "s.png"
    img.parent.mkdir()
    cv2.imwrite(str(img), np.full((40, 60), 200, np.uint8))
    return tmp_path


def _no_model(args):
    raise AssertionError("the model was built although the command should have stopped before")


def run_tool(tool, capsys, config_file, opts=(), extra=(), tmp=None):
    """Run ``tool`` in-process; returns (exit status, stderr lines). ``opts``: trailing KEY VALUE pairs."""
    opts = list(opts)
    if tool == "train_net.py":
        with pytest.raises(SystemExit) as e:
            T.main(["--engine", "torchvision", "--config-file", config_file] + list(extra) + TINY_OPTS
                   + ["OUTPUT_DIR", str(tmp / "run")] + opts)
        code = e.value.code
    elif tool == "deepacc-predict":
        code = P.main(["--config-file", config_file, "--input", str(tmp / "in"), "--output", str(tmp / "out"),
                       "--no-progress"] + list(extra) + TINY_OPTS + opts, predictor_factory=_no_model)
    elif tool == "deepacc-eval":
        gt = os.path.join(os.environ["DETECTRON2_DATASETS"], "deepacc_synth_quick", "annotations", "val.json")
        code = E.main(["--gt", gt, "--predict-dir", str(tmp / "out"), "--config-file", config_file] + list(extra))
    else:
        code = PT.main(["--config-file", config_file] + list(extra) + ["--output", str(tmp / "pre")] + TINY_OPTS + opts)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err.strip().splitlines()


def _one_line(tool, lines):
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{tool}: "), lines
    return lines[0]


# ------------------------------------------------------------------------------- config files
@pytest.mark.parametrize("tool", TOOLS)
def test_yaml_syntax_error(tool, env, capsys):
    bad = env / "bad.yaml"
    bad.write_text("MODEL:\n  DEVICE: [cpu\n")
    code, lines = run_tool(tool, capsys, str(bad), tmp=env)
    line = _one_line(tool, lines)
    assert code == 2 and "bad.yaml: not valid YAML (line 3, column 1" in line and "expected ','" in line


@pytest.mark.parametrize("tool", TOOLS)
def test_folder_as_config_file(tool, env, capsys):
    (env / "cfgdir").mkdir()
    code, lines = run_tool(tool, capsys, str(env / "cfgdir"), tmp=env)
    assert code == 2 and "cfgdir: a folder, not a config file (give a .yaml file)" in _one_line(tool, lines)


@pytest.mark.parametrize("tool", TOOLS)
def test_base_loop(tool, env, capsys):
    (env / "a.yaml").write_text('_BASE_: "b.yaml"\n')
    (env / "b.yaml").write_text('_BASE_: "a.yaml"\nSOLVER:\n  BASE_LR: 0.01\n')
    code, lines = run_tool(tool, capsys, str(env / "a.yaml"), tmp=env)
    line = _one_line(tool, lines)
    assert code == 2 and "_BASE_ loop: a.yaml -> b.yaml -> a.yaml" in line


def test_missing_base_and_empty_config_named(env):
    from deepacc.config import ConfigFileError, load_config

    (env / "m.yaml").write_text('_BASE_: "gone.yaml"\n')
    with pytest.raises(ConfigFileError, match=r"m.yaml: _BASE_ 'gone.yaml' \(.*gone.yaml\): no such file"):
        load_config(str(env / "m.yaml"))
    (env / "empty.yaml").write_text("")
    with pytest.raises(ConfigFileError, match="got nothing"):
        load_config(str(env / "empty.yaml"))
    # a diamond (two bases sharing a base) is not a loop
    (env / "d.yaml").write_text("SOLVER:\n  BASE_LR: 0.01\n")
    (env / "l.yaml").write_text('_BASE_: "d.yaml"\n')
    (env / "r.yaml").write_text('_BASE_: "d.yaml"\n')
    (env / "top.yaml").write_text('_BASE_: ["l.yaml", "r.yaml"]\n')
    assert load_config(str(env / "top.yaml")).SOLVER.BASE_LR == 0.01


# ------------------------------------------------------------------------------------ datasets
def test_unknown_train_dataset(env, capsys):
    code, lines = run_tool("train_net.py", capsys, QUICK_CONFIG, ["DATASETS.TRAIN", '("deepacc_synth_quick_trian",)'],
                           tmp=env)
    line = _one_line("train_net.py", lines)
    assert code == 2 and "DATASETS.TRAIN: dataset 'deepacc_synth_quick_trian' is not registered" in line
    assert "did you mean 'deepacc_synth_quick_train'" in line and "registered datasets: " in line


def test_unknown_test_dataset(env, capsys):
    code, lines = run_tool("train_net.py", capsys, QUICK_CONFIG, ["DATASETS.TEST", '("nope_val",)'], tmp=env)
    line = _one_line("train_net.py", lines)
    assert code == 2 and "DATASETS.TEST: dataset 'nope_val' is not registered" in line
    assert "deepacc_synth_quick_val" in line  # the registered names are listed


def test_unknown_test_dataset_with_eval_only(env, capsys):
    code, lines = run_tool("train_net.py", capsys, QUICK_CONFIG, ["DATASETS.TEST", '("nope_val",)'],
                           extra=["--eval-only", "--allow-untrained"], tmp=env)
    assert code == 2 and "DATASETS.TEST: dataset 'nope_val' is not registered" in _one_line("train_net.py", lines)


def test_empty_train_datasets(env, capsys):
    code, lines = run_tool("train_net.py", capsys, QUICK_CONFIG, ["DATASETS.TRAIN", "()"], tmp=env)
    line = _one_line("train_net.py", lines)
    assert code == 2 and line.startswith("train_net.py: DATASETS.TRAIN is empty: training needs at least one")
    assert 'DATASETS.TRAIN \'("deepacc_synth_quick_train",)\'' in line


def test_pretrain_datasets(env, capsys):
    code, lines = run_tool("deepacc-pretrain", capsys, QUICK_CONFIG, ["DATASETS.TRAIN", "()"], tmp=env)
    assert code == 2 and "no training dataset: DATASETS.TRAIN of" in _one_line("deepacc-pretrain", lines)
    code, lines = run_tool("deepacc-pretrain", capsys, QUICK_CONFIG, extra=["--train", "nope_train"], tmp=env)
    assert code == 2 and "--train: dataset 'nope_train' is not registered" in _one_line("deepacc-pretrain", lines)


# ----------------------------------------------------------------------------- choice values
@pytest.mark.parametrize("tool", ("train_net.py", "deepacc-predict", "deepacc-pretrain"))
def test_unknown_warmup_method(tool, env, capsys):
    code, lines = run_tool(tool, capsys, QUICK_CONFIG, ["SOLVER.WARMUP_METHOD", "cosine"], tmp=env)
    line = _one_line(tool, lines)
    assert code == 2 and "SOLVER.WARMUP_METHOD = 'cosine': must be one of 'linear', 'constant'" in line


@pytest.mark.parametrize("tool", ("train_net.py", "deepacc-predict", "deepacc-pretrain"))
def test_unknown_device(tool, env, capsys):
    code, lines = run_tool(tool, capsys, QUICK_CONFIG, ["MODEL.DEVICE", "gpu"], tmp=env)
    line = _one_line(tool, lines)
    assert code == 2 and "MODEL.DEVICE = 'gpu': must be one of 'cpu', 'cuda' or 'cuda:<index>'" in line


def test_valid_devices_pass():
    from deepacc.config import get_cfg, validate_config

    cfg = get_cfg()
    for dev in ("cpu", "cuda", "cuda:0", "cuda:3"):
        cfg.MODEL.DEVICE = dev
        assert validate_config(cfg) == [], dev
    for dev in ("gpu", "cuda:", "cuda:x", "CPU", ""):
        cfg.MODEL.DEVICE = dev
        assert [p.split(" = ")[0] for p in validate_config(cfg)] == ["MODEL.DEVICE"], dev


# -------------------------------------------------------------------------------------- weights
def test_eval_only_missing_weights(env, capsys):
    code, lines = run_tool("train_net.py", capsys, QUICK_CONFIG, ["MODEL.WEIGHTS", str(env / "nope.pth")],
                           extra=["--eval-only"], tmp=env)
    line = _one_line("train_net.py", lines)
    assert code == 2 and "nope.pth: no such file (MODEL.WEIGHTS; --eval-only evaluates these weights)" in line
    # a folder given as weights
    code, lines = run_tool("train_net.py", capsys, QUICK_CONFIG, ["MODEL.WEIGHTS", str(env)], extra=["--eval-only"],
                           tmp=env)
    assert code == 2 and "a folder, not a weights file" in _one_line("train_net.py", lines)


def test_predict_missing_weights_before_the_model(env, capsys, monkeypatch):
    import deepacc.engine

    monkeypatch.setattr(deepacc.engine, "build_predictor", lambda *a, **k: _no_model(None))
    code = P.main(["--config-file", QUICK_CONFIG, "--input", str(env / "in"), "--output", str(env / "out"),
                   "--no-progress", "--engine", "torchvision"] + TINY_OPTS + ["MODEL.WEIGHTS", str(env / "w.pth")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and _one_line("deepacc-predict", lines).endswith("w.pth: no such file (MODEL.WEIGHTS)")


# ------------------------------------------------------------------------- deepacc-predict --output
def test_predict_output_is_a_file(env, capsys):
    (env / "afile").write_text("x")
    ran = []
    code = P.main(["--input", str(env / "in"), "--output", str(env / "afile"), "--no-progress"],
                  predictor_factory=lambda args: ran.append(1))
    line = _one_line("deepacc-predict", capsys.readouterr().err.strip().splitlines())
    assert code == 2 and not ran
    assert "--output '" in line and "afile' is not writable (it is a file, not a folder)" in line
    code = P.main(["--input", str(env / "in"), "--output", str(env / "afile" / "sub"), "--no-progress"],
                  predictor_factory=lambda args: ran.append(1))
    assert code == 2 and not ran and "is not writable" in capsys.readouterr().err


def _unwritable_folder():
    """A folder even root cannot write into (sysfs), or None."""
    for d in ("/sys", "/proc"):
        if os.path.isdir(d) and os.access(d, os.F_OK):
            try:
                fd = os.open(os.path.join(d, ".deepacc-probe"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except OSError:
                return d
            os.close(fd)
            os.unlink(os.path.join(d, ".deepacc-probe"))
    return None


def test_predict_output_not_writable(env, capsys):
    folder = _unwritable_folder()
    if folder is None and hasattr(os, "geteuid") and os.geteuid() != 0:
        folder = str(env / "ro")
        os.mkdir(folder, 0o555)
    if folder is None:
        pytest.skip("no folder this user cannot write into")
    ran = []
    code = P.main(["--input", str(env / "in"), "--output", folder, "--no-progress"],
                  predictor_factory=lambda args: ran.append(1))
    line = _one_line("deepacc-predict", capsys.readouterr().err.strip().splitlines())
    assert code == 2 and not ran  # found before the model runs on any image
    assert f"--output {folder!r} is not writable (" in line and "give another folder" in line


def test_eval_and_pretrain_output_is_a_file(env, capsys):
    (env / "afile").write_text("x")
    gt = os.path.join(os.environ["DETECTRON2_DATASETS"], "deepacc_synth_quick", "annotations", "val.json")
    code = E.main(["--gt", gt, "--predict-dir", str(env / "nothing"), "--output", str(env / "afile")])
    line = _one_line("deepacc-eval", capsys.readouterr().err.strip().splitlines())
    assert code == 2 and "--output '" in line and "afile' is not writable (it is a file, not a folder)" in line
    code = PT.main(["--config-file", QUICK_CONFIG, "--output", str(env / "afile")] + TINY_OPTS)
    line = _one_line("deepacc-pretrain", capsys.readouterr().err.strip().splitlines())
    assert code == 2 and "afile' is not writable (it is a file, not a folder)" in line


def test_train_output_dir_is_a_file(env, capsys):
    (env / "afile").write_text("x")
    with pytest.raises(SystemExit) as e:
        T.main(["--engine", "torchvision", "--config-file", QUICK_CONFIG] + TINY_OPTS
               + ["OUTPUT_DIR", str(env / "afile")])
    line = _one_line("train_net.py", capsys.readouterr().err.strip().splitlines())
    assert e.value.code == 2 and "OUTPUT_DIR '" in line and "is not writable (it is a file, not a folder)" in line


# ---------------------------------------------------------------------------------------- --debug
def test_debug_keeps_the_traceback(env):
    from deepacc.config import ConfigFileError

    (env / "cfgdir").mkdir()
    with pytest.raises(ConfigFileError):
        T.main(["--engine", "torchvision", "--debug", "--config-file", str(env / "cfgdir")])
    with pytest.raises(Exception) as e:
        T.main(["--engine", "torchvision", "--debug", "--config-file", QUICK_CONFIG] + TINY_OPTS
               + ["OUTPUT_DIR", str(env / "run"), "DATASETS.TRAIN", "()"])
    assert "DATASETS.TRAIN is empty" in str(e.value)


def test_errors_doc_lists_the_new_messages():
    doc = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "errors.md"),
               encoding="utf-8").read()
    for text in ("not valid YAML", "a folder, not a config file", "_BASE_ loop", "is not registered",
                 "DATASETS.TRAIN is empty", "SOLVER.WARMUP_METHOD", "MODEL.DEVICE",
                 "--eval-only evaluates these weights", "--output '<dir>' is not writable"):
        assert text in doc, text

