"""train_net.py on user mistakes: one named line on stderr and exit status 2, never a traceback
(``--debug`` shows it); a broken training set is refused before the first iteration."""
import json
import os
import shutil

import pytest

from deepacc.tools import train as T

from tv_tiny import QUICK_CONFIG, TINY_OPTS


@pytest.fixture
def data_root(tiny_data_root, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", tiny_data_root)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return tiny_data_root


def _run(capsys, *argv):
    flags = [a for a in argv if a.startswith("--")]
    opts = [a for a in argv if not a.startswith("--")]
    with pytest.raises(SystemExit) as e:
        T.main(["--engine", "torchvision", "--config-file", QUICK_CONFIG] + flags + TINY_OPTS + opts)
    err = capsys.readouterr().err
    return e.value.code, err


@pytest.mark.parametrize("opts,expected", [
    (["MODEL.DEEPACC.SIAMESE.THRESHOLDD", "0.3"],
     ["unknown config key 'MODEL.DEEPACC.SIAMESE.THRESHOLDD' (did you mean 'MODEL.DEEPACC.SIAMESE.THRESHOLD'?)"]),
    (["MODEL.DEEPACC.SIAMESE.THRESHOLD", "2.0"], ["MODEL.DEEPACC.SIAMESE.THRESHOLD = 2.0", "must be in [0, 1]"]),
    (["MODEL.DEEPACC.SIAMESE.THRESHOLD", "-0.5"], ["MODEL.DEEPACC.SIAMESE.THRESHOLD = -0.5"]),
    (["SOLVER.BASE_LR", "-1"], ["config key SOLVER.BASE_LR: expected a float like", "got -1 (int)"]),
    (["SOLVER.BASE_LR", "-0.02", "SOLVER.CHECKPOINT_PERIOD", "0"],
     ["2 invalid value(s)", "SOLVER.BASE_LR = -0.02", "SOLVER.CHECKPOINT_PERIOD = 0"]),
])
def test_config_mistakes(capsys, tmp_path, opts, expected):
    code, err = _run(capsys, *opts, "OUTPUT_DIR", str(tmp_path / "out"))
    assert code == 2
    assert "Traceback" not in err and err.startswith("train_net.py: ")
    for text in expected:
        assert text in err


def test_odd_options(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        T.main(["--engine", "torchvision", "--config-file", QUICK_CONFIG, "OUTPUT_DIR", str(tmp_path), "--eval-only"])
    assert e.value.code == 2 and "KEY VALUE pairs" in capsys.readouterr().err


def test_missing_config_and_unwritable_output_dir(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        T.main(["--engine", "torchvision", "--config-file", str(tmp_path / "nope.yaml")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "nope.yaml" in err
    assert err.strip().endswith("nope.yaml: No such file or directory") and "[Errno" not in err
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, err = _run(capsys, "OUTPUT_DIR", str(blocker / "run"))
    assert code == 2 and "is not writable" in err and "Traceback" not in err


def test_unavailable_engine_is_one_line(capsys, monkeypatch):
    import deepacc.engine

    monkeypatch.setattr(deepacc.engine, "detectron2_available", lambda: False)
    with pytest.raises(SystemExit) as e:
        T.main(["--engine", "detectron2", "--config-file", QUICK_CONFIG])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("train_net.py: --engine detectron2: Detectron2 is not importable")


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(Exception) as e:
        T.main(["--engine", "torchvision", "--debug", "--config-file", QUICK_CONFIG, "SOLVER.BASE_LR", "-1.0",
                "OUTPUT_DIR", str(tmp_path)])
    assert type(e.value).__name__ == "ConfigError"


def test_bad_weights_and_last_checkpoint(capsys, tmp_path, data_root):
    text = tmp_path / "weights.pth"
    text.write_text("not weights\n")
    code, err = _run(capsys, "--eval-only", "MODEL.WEIGHTS", str(text), "OUTPUT_DIR", str(tmp_path / "ev"))
    assert code == 2 and "weights.pth: not a PyTorch checkpoint" in err and "Traceback" not in err
    code, err = _run(capsys, "--eval-only", "OUTPUT_DIR", str(tmp_path / "ev2"))
    assert code == 2 and "MODEL.WEIGHTS is empty" in err and "--allow-untrained" in err
    out = tmp_path / "run"
    out.mkdir()
    (out / "last_checkpoint").write_text("")
    code, err = _run(capsys, "--resume", "SOLVER.MAX_ITER", "1", "OUTPUT_DIR", str(out))
    assert code == 2 and "last_checkpoint: empty or corrupt" in err
    (out / "last_checkpoint").write_text("../../etc/model.pth")
    code, err = _run(capsys, "--resume", "SOLVER.MAX_ITER", "1", "OUTPUT_DIR", str(out))
    assert code == 2 and "not a file of" in err


@pytest.mark.slow
def test_broken_training_image_refused_then_skipped(capsys, tmp_path, tiny_data_root, monkeypatch):
    root = tmp_path / "datasets"
    shutil.copytree(tiny_data_root, root)
    monkeypatch.setenv("DETECTRON2_DATASETS", str(root))
    ann = json.load(open(root / "deepacc_synth_quick" / "annotations" / "train.json"))
    victim = os.path.join(root / "deepacc_synth_quick", ann["images"][2]["file_name"])
    data = open(victim, "rb").read()
    with open(victim, "wb") as f:  # a truncated image: its header still reads fine
        f.write(data[: len(data) // 3])
    out = str(tmp_path / "run")
    code, err = _run(capsys, "SOLVER.MAX_ITER", "1", "DATASETS.TEST", "()", "OUTPUT_DIR", out)
    assert code == 2 and "problem(s) in dataset deepacc_synth_quick_train" in err
    assert os.path.basename(victim) in err and "Traceback" not in err
    assert not os.path.exists(os.path.join(out, "model_final.pth"))
    # with the switch, the run leaves the image out and trains
    T.main(["--engine", "torchvision", "--config-file", QUICK_CONFIG] + TINY_OPTS + [
        "SOLVER.MAX_ITER", "1", "DATASETS.TEST", "()", "DATASETS.SKIP_INVALID", "True", "OUTPUT_DIR", out])
    assert os.path.exists(os.path.join(out, "model_final.pth"))
    log = open(os.path.join(out, "log.txt")).read()
    assert "DATASETS.SKIP_INVALID: 1 image(s) of deepacc_synth_quick_train left out" in log
