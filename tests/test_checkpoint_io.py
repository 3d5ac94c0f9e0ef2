"""Safe checkpoint reading: no pickled code ever runs, the last_checkpoint tag stays in its folder, and a
model without (fitting) trained weights is refused for prediction and evaluation."""
import os
import pickle

import numpy as np
import pytest
import torch

from deepacc.checkpoint_io import (CheckpointError, UntrainedModelError, check_loaded_weights, file_sha256,
                                   load_checkpoint_file, read_pickled_weights, resolve_last_checkpoint)
from deepacc.config import load_config
from deepacc.tv.checkpoint import AtomicCheckpointer
from deepacc.tv.model import build_model

from tv_tiny import QUICK_CONFIG, TINY_OPTS


class _Payload:
    """Unpickling this runs ``open(marker, 'w')``: the attack a crafted checkpoint carries."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("force_unsafe_env", [False, True])
def test_crafted_pth_payload_never_runs(tmp_path, monkeypatch, force_unsafe_env):
    if force_unsafe_env:  # the variable that makes plain torch.load unpickle everything
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "pwned"
    path = tmp_path / "model_final.pth"
    torch.save({"model": {"w": torch.zeros(2)}, "extra": _Payload(marker)}, str(path))
    with pytest.raises(CheckpointError, match="refused: it holds pickled objects other than weights") as e:
        load_checkpoint_file(str(path))
    assert str(path) in str(e.value)
    assert not marker.exists()
    # through the engine's checkpointer too
    model = torch.nn.Linear(2, 2)
    with pytest.raises(CheckpointError):
        AtomicCheckpointer(model).load(str(path), checkpointables=[])
    assert not marker.exists()


def test_pkl_weights_arrays_only(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "R-101.pkl"
    with open(bad, "wb") as f:
        pickle.dump({"blobs": {"conv1_w": _Payload(marker)}}, f)
    with pytest.raises(CheckpointError, match="not an array type"):
        load_checkpoint_file(str(bad))
    assert not marker.exists()
    good = tmp_path / "zoo.pkl"
    with open(good, "wb") as f:
        pickle.dump({"model": {"a": np.arange(6, dtype=np.float32).reshape(2, 3)}, "__author__": "me"}, f)
    data = load_checkpoint_file(str(good))
    assert data["__author__"] == "me" and data["model"]["a"].shape == (2, 3)
    (tmp_path / "cut.pkl").write_bytes(good.read_bytes()[:20])
    with pytest.raises(CheckpointError, match="not a readable .pkl"):
        read_pickled_weights(str(tmp_path / "cut.pkl"))


def test_not_a_checkpoint_is_named(tmp_path):
    text = tmp_path / "weights.pth"
    text.write_text("this is a text file, not weights\n")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_checkpoint_file(str(text))
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_checkpoint_file(str(empty))
    real = tmp_path / "real.pth"
    torch.save({"model": {"w": torch.ones(64, 64)}}, str(real))
    cut = tmp_path / "cut.pth"
    cut.write_bytes(real.read_bytes()[: os.path.getsize(real) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint_file(str(cut))
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint_file(str(tmp_path / "nope.pth"))
    torch.save([1, 2], str(tmp_path / "list.pth"))
    with pytest.raises(CheckpointError, match="expected a dict"):
        load_checkpoint_file(str(tmp_path / "list.pth"))


@pytest.mark.parametrize("content,match", [
    ("", "empty or corrupt"),
    ("\n\n", "empty or corrupt"),
    ("../elsewhere/model.pth", "not a file of"),
    ("/etc/passwd", "not a file of"),
    ("model_0000999.pth", "does not exist"),
    ("\udcff", None),
])
def test_last_checkpoint_tag_confined_to_its_folder(tmp_path, content, match):
    tag = tmp_path / "last_checkpoint"
    if content == "\udcff":
        tag.write_bytes(b"\xff\xfe\x00")
        match = "unreadable|empty or corrupt"
    else:
        tag.write_text(content)
    with pytest.raises(CheckpointError, match=match) as e:
        resolve_last_checkpoint(str(tmp_path))
    assert "delete" in str(e.value)
    with pytest.raises(CheckpointError):  # the engine's resume goes through it
        AtomicCheckpointer(torch.nn.Linear(2, 2), str(tmp_path)).resume_or_load("", resume=True)


def test_last_checkpoint_good_and_absent(tmp_path):
    assert resolve_last_checkpoint(str(tmp_path)) == ""
    ck = AtomicCheckpointer(torch.nn.Linear(2, 2), str(tmp_path))
    ck.save("model_0000001")
    assert resolve_last_checkpoint(str(tmp_path)) == str(tmp_path / "model_0000001.pth")
    assert ck.get_checkpoint_file() == str(tmp_path / "model_0000001.pth")


def _tiny_cfg(*opts):
    return load_config(QUICK_CONFIG, TINY_OPTS + list(opts))


def test_predictor_refuses_random_and_mismatched_weights(tmp_path):
    from deepacc.tv.predictor import TorchvisionPredictor

    cfg = _tiny_cfg()
    with pytest.raises(UntrainedModelError, match="MODEL.WEIGHTS is empty.*--allow-untrained"):
        TorchvisionPredictor(cfg)
    p = TorchvisionPredictor(cfg, allow_untrained=True)
    assert p.weights_info["status"] == "untrained"
    # weights of another box-head width
    other = build_model(_tiny_cfg("MODEL.ROI_BOX_HEAD.FC_DIM", "32"))
    path = tmp_path / "other.pth"
    AtomicCheckpointer(other, str(tmp_path)).save("other")
    with pytest.raises(UntrainedModelError, match="does not fit the model.*another shape") as e:
        TorchvisionPredictor(_tiny_cfg("MODEL.WEIGHTS", str(path)))
    assert str(path) in str(e.value)
    # the right weights: accepted, fingerprinted
    same = build_model(cfg)
    AtomicCheckpointer(same, str(tmp_path)).save("same")
    ok = TorchvisionPredictor(_tiny_cfg("MODEL.WEIGHTS", str(tmp_path / "same.pth")))
    assert ok.weights_info == {"weights": str(tmp_path / "same.pth"), "sha256": file_sha256(str(tmp_path / "same.pth")),
                               "status": "trained", "problem": None}
    for a, b in zip(ok.model.state_dict().values(), same.state_dict().values()):
        assert torch.equal(a, b)
    # a trunk-only file (e.g. a pretrained backbone) misses the heads: refused for prediction
    trunk = {k: v for k, v in same.state_dict().items() if k.startswith("backbone.body.")}
    torch.save({"model": trunk}, str(tmp_path / "trunk.pth"))
    with pytest.raises(UntrainedModelError, match="missing"):
        TorchvisionPredictor(_tiny_cfg("MODEL.WEIGHTS", str(tmp_path / "trunk.pth")))


def test_check_loaded_weights_allow_records_the_problem():
    from collections import namedtuple

    Inc = namedtuple("Inc", "missing_keys unexpected_keys incorrect_shapes")
    info = check_loaded_weights("", None, allow=True)
    assert info["status"] == "untrained" and "random weights" in info["problem"]
    with pytest.raises(UntrainedModelError):
        check_loaded_weights("w.pth", Inc(["head.w"], [], []))
    info = check_loaded_weights("w.pth", Inc(["x.num_batches_tracked"], ["extra"], []))
    assert info["status"] == "trained"  # counters and unused extras do not make a model untrained


def test_stale_temp_files_and_metrics_rows(tmp_path):
    import json
    import subprocess
    import sys

    from deepacc.fileio import LazyAppendFile, remove_stale_temp_files, truncate_metrics_from

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f".tmp-{dead.pid}-model_0000009.pth").write_bytes(b"x" * 100)
    mine = tmp_path / f".tmp-{os.getpid()}-model_0000010.pth"  # a write in progress: kept
    mine.write_bytes(b"y")
    (tmp_path / "model_0000005.pth").write_bytes(b"z")
    (tmp_path / ".tmp-notapid-x").write_bytes(b"z")
    removed = remove_stale_temp_files(str(tmp_path))
    assert [os.path.basename(p) for p in removed] == [f".tmp-{dead.pid}-model_0000009.pth"]
    assert mine.exists() and (tmp_path / "model_0000005.pth").exists() and (tmp_path / ".tmp-notapid-x").exists()

    m = tmp_path / "metrics.json"
    rows = [{"iteration": i, "loss": i} for i in (0, 19, 39, 59)]
    m.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"iteration": 6')
    appender = LazyAppendFile(str(m))  # a writer built before (Detectron2's JSONWriter): opens at its first write
    assert truncate_metrics_from(str(m), 40) == 2  # row 59 and the cut line; the file is replaced atomically
    appender.write(json.dumps({"iteration": 40}) + "\n")
    appender.close()
    assert [json.loads(x)["iteration"] for x in m.read_text().splitlines()] == [0, 19, 39, 40]
    assert truncate_metrics_from(str(tmp_path / "none.json"), 0) == 0
