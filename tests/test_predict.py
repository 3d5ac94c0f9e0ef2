"""deepacc-predict end to end with a fake predictor built from ground-truth boxes."""
import csv
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from deepacc.tools import predict as P
from test_karyotype import fake_prediction, make_spread

KARYOTYPES = ["46,XX", "46,XY", "47,XY,+21", "45,X"]


def _key(img):
    return hashlib.sha1(np.ascontiguousarray(img).tobytes()).hexdigest()


@pytest.fixture
def spreads(tmp_path):
    """A folder of four synthetic spreads with known karyotypes, and their ground truth by content."""
    folder = tmp_path / "in"
    folder.mkdir()
    truth = {}
    for i, kt in enumerate(KARYOTYPES):
        img, boxes, classes = make_spread(kt, seed=10 + i)
        cv2.imwrite(str(folder / f"spread_{i}.png"), img)
        truth[_key(img)] = (kt, boxes, classes)
    return folder, truth


def factory_for(truth, calls=None):
    def factory(args):
        if calls is not None:
            calls.append(1)

        def predictor(img):
            assert img.ndim == 2 and img.dtype == np.uint8
            _, boxes, classes = truth[_key(img)]
            return fake_prediction(boxes, classes)

        return predictor

    return factory


def _run(argv, factory):
    return P.main(argv + ["--no-progress"], predictor_factory=factory)


def test_folder_with_corrupt_file_reports_it_and_does_the_rest(spreads, tmp_path, capsys):
    pytest.importorskip("deepacc.data.images")
    folder, truth = spreads
    (folder / "broken.png").write_bytes(b"this is not a PNG file at all")
    good = cv2.imencode(".png", np.full((50, 50), 200, np.uint8))[1].tobytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    out = tmp_path / "out"
    rc = _run(["--input", str(folder), "--output", str(out), "--report"], factory_for(truth))
    err = capsys.readouterr().err
    assert rc == 1
    assert "broken.png" in err and "truncated.png" in err
    assert "4 processed, 0 already done, 2 failed of 6 input(s)" in err
    for i, kt in enumerate(KARYOTYPES):
        for suf in (".json", ".overlay.png", ".karyogram.png"):
            assert (out / f"spread_{i}{suf}").is_file()
        rec = json.loads((out / f"spread_{i}.json").read_text())
        assert rec["summary"]["karyotype"] == kt  # right string from ground-truth detections
        assert "cytogeneticist" in rec["review_note"]
        d = rec["detections"][0]
        assert set(d) >= {"box", "class", "score", "class_probs", "uncertain"}
        assert len(d["box"]) == 4 and len(d["class_probs"]) == 25 and "background" in d["class_probs"]
        assert cv2.imread(str(out / f"spread_{i}.karyogram.png")) is not None
    assert not (out / "broken.json").exists() and not (out / "truncated.json").exists()
    rows = list(csv.DictReader(open(out / "karyotypes.csv")))
    assert [r["karyotype"] for r in rows[:4]] == KARYOTYPES
    assert {os.path.basename(r["file"]) for r in rows if r["error"]} == {"broken.png", "truncated.png"}
    html = (out / "report.html").read_text()
    for kt in KARYOTYPES:
        assert kt in html
    assert "broken.png" in html and "truncated.png" in html
    assert "cytogeneticist" in html and "http://" not in html and "https://" not in html
    assert 'src="spread_0.karyogram.png"' in html
    assert not glob.glob(str(out / ".tmp-*"))  # deepacc.fileio.atomic_write's temporary files


def test_injected_reader_failure_is_isolated(spreads, tmp_path, capsys):
    folder, truth = spreads

    def reader(path):
        if path.endswith("spread_1.png"):
            raise OSError(f"{path}: cannot read")
        return cv2.imread(path, cv2.IMREAD_GRAYSCALE)

    out = tmp_path / "out"
    rc = P.main(["--input", str(folder), "--output", str(out), "--no-progress"],
                predictor_factory=factory_for(truth), reader=reader)
    assert rc == 1
    assert "spread_1.png" in capsys.readouterr().err
    assert sorted(p.name for p in out.glob("*.json")) == ["spread_0.json", "spread_2.json", "spread_3.json"]


def test_rerun_skips_done_images_and_overwrite_redoes_them(spreads, tmp_path, capsys):
    folder, truth = spreads
    out = tmp_path / "out"
    reader = lambda p: cv2.imread(p, cv2.IMREAD_GRAYSCALE)  # noqa: E731
    built = []
    assert P.main(["--input", str(folder), "--output", str(out), "--no-progress"],
                  predictor_factory=factory_for(truth, built), reader=reader) == 0
    assert len(built) == 1
    os.remove(out / "spread_2.karyogram.png")  # as if the run had been killed there
    mtime = os.path.getmtime(out / "spread_0.json")
    capsys.readouterr()
    assert P.main(["--input", str(folder), "--output", str(out), "--no-progress", "--report"],
                  predictor_factory=factory_for(truth, built), reader=reader) == 0
    assert "1 processed, 3 already done, 0 failed" in capsys.readouterr().err
    assert (out / "spread_2.karyogram.png").is_file()
    assert os.path.getmtime(out / "spread_0.json") == mtime
    assert all(kt in (out / "report.html").read_text() for kt in KARYOTYPES)  # skipped ones reported too
    # Everything present: the model is not even built.
    def no_model(args):
        raise AssertionError("model built although every output exists")
    assert P.main(["--input", str(folder), "--output", str(out), "--no-progress"],
                  predictor_factory=no_model, reader=reader) == 0
    assert P.main(["--input", str(folder), "--output", str(out), "--no-progress", "--overwrite"],
                  predictor_factory=factory_for(truth, built), reader=reader) == 0
    assert "4 processed, 0 already done" in capsys.readouterr().err
    # Other thresholds: the old outputs do not count as done.
    assert P.main(["--input", str(folder), "--output", str(out), "--no-progress", "--review-score", "0.95"],
                  predictor_factory=factory_for(truth, built), reader=reader) == 0
    assert "4 processed, 0 already done" in capsys.readouterr().err
    assert json.loads((out / "spread_0.json").read_text())["settings"]["review_score"] == 0.95
    # Other weights on the command line: redone too.
    assert P.main(["--input", str(folder), "--output", str(out), "--no-progress", "--review-score", "0.95",
                   "MODEL.WEIGHTS", "other.pth"], predictor_factory=factory_for(truth, built), reader=reader) == 0
    assert "4 processed, 0 already done" in capsys.readouterr().err
    assert json.loads((out / "spread_0.json").read_text())["settings"]["opts"] == ["MODEL.WEIGHTS", "other.pth"]


def test_interrupted_write_leaves_no_partial_file(spreads, tmp_path, monkeypatch):
    folder, truth = spreads
    out = tmp_path / "out"
    from deepacc.clinical import pipeline  # the PNG encoder of the per-image outputs

    reader = lambda p: cv2.imread(p, cv2.IMREAD_GRAYSCALE)  # noqa: E731
    real = pipeline._png_bytes
    n = {"calls": 0}

    def dying_png(rgb):  # dies while encoding the karyogram of the 2nd image
        n["calls"] += 1
        if n["calls"] == 4:
            raise KeyboardInterrupt
        return real(rgb)

    monkeypatch.setattr(pipeline, "_png_bytes", dying_png)
    assert P.main(["--input", str(folder), "--output", str(out), "--no-progress"],
                  predictor_factory=factory_for(truth), reader=reader) == 130
    names = sorted(p.name for p in out.iterdir())
    assert names == [".deepacc-predict.lock", "karyotypes.csv", "spread_0.json", "spread_0.karyogram.png",
                     "spread_0.overlay.png", "spread_1.overlay.png"]  # the lock: shared folders (clinical.outputs)
    monkeypatch.setattr(pipeline, "_png_bytes", real)
    assert P.main(["--input", str(folder), "--output", str(out), "--no-progress"],
                  predictor_factory=factory_for(truth), reader=reader) == 0
    assert len(list(out.glob("*.json"))) == 4


def test_atomic_write_keeps_old_content_on_failure(tmp_path, monkeypatch):
    from deepacc.fileio import atomic_write

    f = tmp_path / "a.json"
    atomic_write(str(f), b"old")
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        atomic_write(str(f), b"new")
    assert f.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_expand_inputs_files_globs_folders(tmp_path):
    (tmp_path / "a").mkdir()
    for n in ("x.png", "y.TIF", "notes.txt", ".hidden.png", "x.overlay.png", "x.karyogram.png",
              ".tmp-123-x.overlay.png"):
        (tmp_path / "a" / n).write_bytes(b"")
    (tmp_path / "b.tiff").write_bytes(b"")
    (tmp_path / "a" / "out").mkdir()
    (tmp_path / "a" / "out" / "z.png").write_bytes(b"")
    paths, problems = P.expand_inputs(
        [str(tmp_path / "a"), str(tmp_path / "*.tiff"), str(tmp_path / "a" / "x.png"), str(tmp_path / "nope.png"),
         str(tmp_path / "*.jpg")])
    assert [os.path.relpath(p, tmp_path) for p in paths] == ["a/x.png", "a/y.TIF", "b.tiff"]
    assert [why for _, why in problems] == ["no such file or folder", "pattern matched no file"]
    # The tool's own outputs are never spreads: not in a folder, a glob or named explicitly.
    paths, problems = P.expand_inputs([str(tmp_path / "a" / "*.png"), str(tmp_path / "a" / ".*.png"),
                                       str(tmp_path / "a" / "x.karyogram.png"),
                                       str(tmp_path / "a" / ".tmp-123-x.overlay.png")])
    assert [os.path.relpath(p, tmp_path) for p in paths] == ["a/x.png", "a/.hidden.png"]  # not the temp file
    assert [why for _, why in problems] == [
        "one of the deepacc-predict outputs (*.overlay.png, *.karyogram.png), not a spread",
        "a temporary file of deepacc-predict (.tmp-<pid>-<name>), not a spread"]
    (tmp_path / "done").mkdir()
    for n in ("s.overlay.png", "s.karyogram.png", "s.json"):
        (tmp_path / "done" / n).write_bytes(b"")
    paths, problems = P.expand_inputs([str(tmp_path / "done"), str(tmp_path / "done" / "*.png")])
    assert paths == [] and [why for _, why in problems] == [
        "folder holds no image file other than deepacc-predict outputs (*.overlay.png, *.karyogram.png)",
        "pattern matched only deepacc-predict outputs (*.overlay.png, *.karyogram.png)"]
    stems = P.output_stems(["/d1/s.png", "/d2/s.tif", "/d1/t.png"])
    assert stems["/d1/t.png"] == "t" and len(set(stems.values())) == 3


def test_output_folder_equal_to_input_folder(spreads, capsys):
    folder, truth = spreads
    reader = lambda p: cv2.imread(p, cv2.IMREAD_GRAYSCALE)  # noqa: E731
    argv = ["--input", str(folder), "--output", str(folder), "--no-progress", "--report"]
    assert P.main(argv, predictor_factory=factory_for(truth), reader=reader) == 0
    assert "4 processed, 0 already done, 0 failed of 4 input(s)" in capsys.readouterr().err
    assert (folder / "spread_0.overlay.png").is_file() and (folder / "spread_3.karyogram.png").is_file()
    # The rerun takes neither the overlays nor the karyograms of the first run for spreads.
    assert P.main(argv, predictor_factory=factory_for(truth), reader=reader) == 0
    err = capsys.readouterr().err
    assert "0 processed, 4 already done, 0 failed of 4 input(s)" in err and "overlay.png" not in err
    rows = list(csv.DictReader(open(folder / "karyotypes.csv")))
    assert [os.path.basename(r["file"]) for r in rows] == [f"spread_{i}.png" for i in range(4)]
    # Another output folder, with the first run's outputs in the input folder: the same four spreads.
    assert P.main(["--input", str(folder), "--output", str(folder / "again"), "--no-progress"],
                  predictor_factory=factory_for(truth), reader=reader) == 0
    assert "4 processed, 0 already done, 0 failed of 4 input(s)" in capsys.readouterr().err


def test_ctrl_c_keeps_what_is_done_and_exits_130(spreads, tmp_path, capsys):
    folder, truth = spreads
    out = tmp_path / "out"
    reader = lambda p: cv2.imread(p, cv2.IMREAD_GRAYSCALE)  # noqa: E731
    seen = []

    def factory(args):
        inner = factory_for(truth)(args)

        def predictor(img):
            seen.append(1)
            if len(seen) == 2:  # Ctrl-C while the model looks at the 2nd image
                raise KeyboardInterrupt
            return inner(img)

        return predictor

    argv = ["--input", str(folder), "--output", str(out), "--no-progress", "--report"]
    assert P.main(argv, predictor_factory=factory, reader=reader) == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "deepacc-predict: interrupted: 1 of 4 images done; rerun the same command to continue"]
    assert "Traceback" not in err
    rows = list(csv.DictReader(open(out / "karyotypes.csv")))
    assert [(os.path.basename(r["file"]), r["karyotype"]) for r in rows] == [("spread_0.png", KARYOTYPES[0])]
    assert not (out / "report.html").exists()
    assert sorted(p.name for p in out.glob("*.json")) == ["spread_0.json"]
    assert not glob.glob(str(out / ".tmp-*"))
    # The same command again finishes the job.
    assert P.main(argv, predictor_factory=factory_for(truth), reader=reader) == 0
    assert "3 processed, 1 already done, 0 failed of 4 input(s)" in capsys.readouterr().err
    assert len(list(csv.DictReader(open(out / "karyotypes.csv")))) == 4


def test_report_links_of_names_with_url_characters(spreads, tmp_path):
    import html as html_mod
    import re
    from urllib.parse import unquote

    folder, truth = spreads
    odd = tmp_path / "odd"
    odd.mkdir()
    names = ["case#7.png", "50% done?.png", "a&b <c>.png"]
    for i, n in enumerate(names):
        shutil.copy(folder / f"spread_{i}.png", odd / n)
    out = tmp_path / "out"
    assert P.main(["--input", str(odd), "--output", str(out), "--no-progress", "--report"],
                  predictor_factory=factory_for(truth), reader=lambda p: cv2.imread(p, 0)) == 0
    page = (out / "report.html").read_text(encoding="utf-8")
    links = re.findall(r'(?:href|src)="([^"]*)"', page)
    files = [ln for ln in links if not ln.startswith("#")]
    assert len(files) == 2 * 2 * len(names)  # overlay and karyogram, each as <a href> and <img src>
    for ln in files:
        url = html_mod.unescape(ln)
        assert "#" not in url and "?" not in url and " " not in url and "%25" not in unquote(url), url
        assert (out / unquote(url)).is_file(), url
    targets = {unquote(html_mod.unescape(ln)) for ln in files}
    assert {"case#7.overlay.png", "50% done?.karyogram.png", "a&b <c>.overlay.png"} <= targets


def test_usage_and_setup_errors_exit_2(spreads, tmp_path, capsys):
    folder, truth = spreads
    assert P.main(["--input", str(tmp_path / "missing"), "--output", str(tmp_path / "o"), "--no-progress"],
                  predictor_factory=factory_for(truth)) == 2

    def broken(args):
        raise FileNotFoundError("model_final.pth")

    rc = P.main(["--input", str(folder), "--output", str(tmp_path / "o"), "--no-progress"],
                predictor_factory=broken, reader=lambda p: cv2.imread(p, 0))
    assert rc == 2
    assert "could not build the model" in capsys.readouterr().err


def test_opts_reach_the_factory(spreads, tmp_path):
    folder, truth = spreads
    seen = {}

    def factory(args):
        seen.update(vars(args))
        return factory_for(truth)(args)

    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text("MODEL:\n  DEVICE: cpu\n")
    P.main(["--config-file", str(cfg_file), "--input", str(folder / "spread_0.png"), "--output", str(tmp_path / "o"),
            "--engine", "torchvision", "--confidence-threshold", "0.3", "--no-progress",
            "MODEL.WEIGHTS", "w.pth", "MODEL.DEVICE", "cpu"], predictor_factory=factory,
           reader=lambda p: cv2.imread(p, 0))
    assert seen["opts"] == ["MODEL.WEIGHTS", "w.pth", "MODEL.DEVICE", "cpu"]
    assert seen["engine"] == "torchvision" and seen["confidence_threshold"] == 0.3
    assert seen["config_file"] == str(cfg_file)
    # A config file that does not exist: one line, exit 2, before any model is built.
    seen.clear()
    assert P.main(["--config-file", str(tmp_path / "nope.yaml"), "--input", str(folder / "spread_0.png"),
                   "--output", str(tmp_path / "o3"), "--no-progress"], predictor_factory=factory) == 2
    assert not seen
    # Options right after --input (argparse would read them as inputs) still reach the config.
    seen.clear()
    rc = P.main(["--output", str(tmp_path / "o2"), "--no-progress", "--input", str(folder / "spread_0.png"),
                 "MODEL.WEIGHTS", "w.pth"], predictor_factory=factory, reader=lambda p: cv2.imread(p, 0))
    assert rc == 0 and seen["opts"] == ["MODEL.WEIGHTS", "w.pth"] and seen["input"] == [str(folder / "spread_0.png")]


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="needs a headless Chromium")
def test_report_renders_in_headless_chromium(spreads, tmp_path):
    folder, truth = spreads
    out = tmp_path / "out"
    P.main(["--input", str(folder), "--output", str(out), "--no-progress", "--report"],
           predictor_factory=factory_for(truth), reader=lambda p: cv2.imread(p, 0))
    shot = tmp_path / "shot.png"
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1400,2000",
           (out / "report.html").as_uri()]
    subprocess.run(cmd, check=True, timeout=120, capture_output=True)
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (2000, 1400)
    assert (img < 128).mean() > 0.005  # something was drawn (text, images)


def test_entry_point_help():
    exe = shutil.which("deepacc-predict")
    cmd = [exe, "--help"] if exe else [sys.executable, "-m", "deepacc.tools.predict", "--help"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--confidence-threshold" in r.stdout and "Exit status" in r.stdout


class _Parsed(Exception):
    pass


def _parser_of(main, monkeypatch):
    """The ArgumentParser that ``main`` builds (caught at its parse_args, before anything runs)."""
    import argparse

    seen = []

    def catch(self, *a, **k):
        seen.append(self)
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", catch)
    with pytest.raises(_Parsed):
        main([])
    return seen[0]


@pytest.mark.parametrize("tool", ["prepare_gband_cells", "prepare_mfish", "prepare_synthetic", "prepare_voc",
                                  "deepacc-train", "deepacc-predict"])
def test_every_option_has_a_help_string(tool, monkeypatch):
    import argparse

    if tool == "deepacc-train":
        from deepacc.tools.train import default_argument_parser as make
        parser = make()
    elif tool == "deepacc-predict":
        parser = P.get_parser()
    else:
        from test_data_helpers import load_script

        parser = _parser_of(load_script(tool).main, monkeypatch)
    assert parser.description
    missing = [a.option_strings or a.dest for a in parser._actions
               if not isinstance(a, argparse._HelpAction) and not (a.help or "").strip()]
    assert not missing, f"{tool}: options without a help string: {missing}"
    monkeypatch.undo()
    parser.format_help()  # the help strings format (no stray %)


def test_setup_cfg_threshold_and_device(tmp_path, capsys):
    pytest.importorskip("deepacc.config")
    import argparse

    import torch

    yaml = tmp_path / "c.yaml"
    yaml.write_text("MODEL:\n  ROI_HEADS:\n    SCORE_THRESH_TEST: 0.6\n")
    args = argparse.Namespace(config_file=str(yaml), opts=["MODEL.DEVICE", "cuda", "MODEL.WEIGHTS", "w.pth"],
                              confidence_threshold=0.3)
    cfg = P.setup_cfg(args)
    assert cfg.MODEL.WEIGHTS == "w.pth"
    assert cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST == pytest.approx(0.3)  # lowered to the threshold
    if not torch.cuda.is_available():
        assert cfg.MODEL.DEVICE == "cpu" and "CUDA is not available" in capsys.readouterr().err


def test_setup_cfg_says_when_it_lowers_the_model_threshold(tmp_path, capsys):
    """The model's SCORE_THRESH_TEST is lowered to the call threshold when higher (outputs unchanged),
    with one line on stderr saying from what to what and why; nothing when it is left as it is."""
    pytest.importorskip("deepacc.config")
    import argparse

    yaml = tmp_path / "c.yaml"
    yaml.write_text("MODEL:\n  ROI_HEADS:\n    SCORE_THRESH_TEST: 0.6\n")

    def setup(config_file, conf):
        args = argparse.Namespace(config_file=config_file, opts=["MODEL.DEVICE", "cpu"], confidence_threshold=conf)
        cfg = P.setup_cfg(args)
        return cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST, capsys.readouterr().err

    thresh, err = setup(str(yaml), None)  # TEST.DEEPACC.SCORE_THRESH 0.5 < 0.6
    assert thresh == pytest.approx(0.5)
    assert err.splitlines() == ["deepacc-predict: MODEL.ROI_HEADS.SCORE_THRESH_TEST lowered from 0.6 to 0.5, the call "
                                "threshold (TEST.DEEPACC.SCORE_THRESH): the model must keep every detection that "
                                "may become a call"]
    thresh, err = setup(str(yaml), 0.25)
    assert thresh == pytest.approx(0.25) and "lowered from 0.6 to 0.25" in err and "(--confidence-threshold)" in err
    for conf in (0.7, 0.6):  # higher or equal: left as it is, nothing said
        thresh, err = setup(str(yaml), conf)
        assert thresh == pytest.approx(0.6) and err == ""
    thresh, err = setup("", None)  # the default config: 0.05 below the call threshold
    assert thresh == pytest.approx(0.05) and err == ""


def test_image_without_any_call(tmp_path):
    img = np.full((120, 160), 230, np.uint8)
    empty = {"boxes": np.zeros((0, 4), np.float32), "scores": np.zeros(0, np.float32),
             "classes": np.zeros(0, np.int64), "class_probs": np.zeros((0, 25), np.float32)}
    calls, summary, overlay, karyogram, detections = P.postprocess(img, {"instances": empty, "instances_top1": empty})
    assert detections == [] and summary.count == 0 and summary.needs_review
    assert summary.karyotype == "no chromosomes called"  # not 0,--,-1,-1,-2,-2,...
    assert overlay.shape[1] == 160 and karyogram.ndim == 3
    # Only low-scoring detections: none passes the threshold.
    low = fake_prediction(np.array([[10, 10, 30, 60]], np.float32), np.array([3]), scores=[0.2])
    assert P.postprocess(img, low)[1].count == 0


def test_predictor_returning_torch_tensors(spreads, tmp_path):
    import torch

    folder, truth = spreads

    def factory(args):
        inner = factory_for(truth)(args)
        return lambda img: {k: {kk: torch.as_tensor(np.asarray(vv)) for kk, vv in v.items()}
                            for k, v in inner(img).items()}

    out = tmp_path / "out"
    assert P.main(["--input", str(folder / "spread_2.png"), "--output", str(out), "--no-progress"],
                  predictor_factory=factory, reader=lambda p: cv2.imread(p, 0)) == 0
    assert json.loads((out / "spread_2.json").read_text())["summary"]["karyotype"] == "47,XY,+21"


def test_real_model_untrained_refused_allowed_flagged_and_weights_recorded(spreads, tmp_path, capsys):
    """The torchvision engine's predictor: no weights -> refused (exit 2) unless --allow-untrained, which
    flags every output; trained weights -> path and SHA-256 in every record."""
    import torch

    from deepacc.checkpoint_io import file_sha256
    from deepacc.config import load_config
    from deepacc.tv.checkpoint import AtomicCheckpointer
    from deepacc.tv.model import build_model
    from tv_tiny import QUICK_CONFIG, TINY_OPTS

    folder, _ = spreads
    one = str(folder / "spread_0.png")
    base = ["--config-file", QUICK_CONFIG, "--input", one, "--no-progress", "--engine", "torchvision"]
    rc = P.main(base + ["--output", str(tmp_path / "a")] + TINY_OPTS)
    err = capsys.readouterr().err
    assert rc == 2 and "MODEL.WEIGHTS is empty" in err and "--allow-untrained" in err and "Traceback" not in err
    rc = P.main(base + ["--output", str(tmp_path / "b"), "--allow-untrained"] + TINY_OPTS)
    assert rc == 0
    rec = json.loads((tmp_path / "b" / "spread_0.json").read_text())
    assert rec["model"]["status"] == "untrained" and rec["summary"]["needs_review"]
    assert rec["summary"]["flags"][0]["kind"] == "untrained_model"
    assert "NOT FROM A TRAINED MODEL" in (tmp_path / "b" / "karyotypes.csv").read_text()
    torch.manual_seed(0)
    model = build_model(load_config(QUICK_CONFIG, TINY_OPTS))
    AtomicCheckpointer(model, str(tmp_path)).save("w")
    weights = str(tmp_path / "w.pth")
    opts = [o if o != "" else weights for o in TINY_OPTS]  # MODEL.WEIGHTS "" -> the checkpoint
    assert P.main(base + ["--output", str(tmp_path / "c")] + opts) == 0
    rec = json.loads((tmp_path / "c" / "spread_0.json").read_text())
    assert rec["model"] == {"weights": weights, "sha256": file_sha256(weights), "status": "trained", "problem": None}
    assert rec["settings"]["weights_sha256"] == file_sha256(weights)
    assert all(f["kind"] != "untrained_model" for f in rec["summary"]["flags"])
    capsys.readouterr()
    # config mistakes: one line, exit 2
    assert P.main(base + ["--output", str(tmp_path / "d"), "MODEL.DEEPACC.SIAMESE.THRESHOLD", "2.0"]) == 2
    assert "MODEL.DEEPACC.SIAMESE.THRESHOLD = 2.0" in capsys.readouterr().err
    assert P.main(base + ["--output", str(tmp_path / "d"), "TEST.DEEPACC.SCORE_THRESHH", "0.5"]) == 2
    assert "did you mean 'TEST.DEEPACC.SCORE_THRESH'" in capsys.readouterr().err


def test_thresholds_come_from_the_config_and_flags_override_them(spreads, tmp_path):
    """deepacc-predict reads TEST.DEEPACC.* of the run's config; a flag overrides one value; the JSON
    records the values used."""
    folder, truth = spreads
    one = str(folder / "spread_0.png")
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text("TEST:\n  DEEPACC:\n    SCORE_THRESH: 0.35\n    NMS_THRESH: 0.6\n    REVIEW_SCORE: 0.8\n"
                        "    REVIEW_MARGIN: 0.1\n")
    assert P.main(["--config-file", str(cfg_file), "--input", one, "--output", str(tmp_path / "a"),
                   "--no-progress"], predictor_factory=factory_for(truth)) == 0
    s = json.loads((tmp_path / "a" / "spread_0.json").read_text())["settings"]
    assert (s["confidence_threshold"], s["nms_threshold"], s["review_score"], s["review_margin"]) == (0.35, 0.6, 0.8, 0.1)
    assert P.main(["--config-file", str(cfg_file), "--input", one, "--output", str(tmp_path / "b"), "--no-progress",
                   "--confidence-threshold", "0.9"], predictor_factory=factory_for(truth)) == 0
    s = json.loads((tmp_path / "b" / "spread_0.json").read_text())["settings"]
    assert (s["confidence_threshold"], s["nms_threshold"]) == (0.9, 0.6)
    # no config: the project's defaults, the paper's values
    assert P.main(["--input", one, "--output", str(tmp_path / "c"), "--no-progress"],
                  predictor_factory=factory_for(truth)) == 0
    s = json.loads((tmp_path / "c" / "spread_0.json").read_text())["settings"]
    assert (s["confidence_threshold"], s["nms_threshold"], s["review_score"], s["review_margin"]) == (0.5, 0.7, 0.7, 0.2)


def test_the_pipeline_is_the_library_s(tmp_path):
    """deepacc-predict runs deepacc.clinical.pipeline (its names stay importable from the tool); one image
    in memory gives a named SpreadResult, one image file its three outputs."""
    from deepacc.clinical import pipeline

    for name in ("PredictSettings", "postprocess", "process_image", "write_folder_summary", "OutputWriteError"):
        assert getattr(P, name) is getattr(pipeline, name), name
    img, boxes, classes = make_spread("47,XY,+21", seed=12)  # the spreads fixture's third
    res = pipeline.postprocess(img, fake_prediction(boxes, classes), pipeline.PredictSettings(assignment=False))
    assert isinstance(res, pipeline.SpreadResult) and res.summary.karyotype == "47,XY,+21"
    assert len(res.detections) == len(res.calls["scores"]) == len(classes) and res.overlay.shape[2] == 3
    cv2.imwrite(str(tmp_path / "s.png"), img)
    rec, skipped = pipeline.process_image(str(tmp_path / "s.png"), lambda: lambda g: fake_prediction(boxes, classes),
                                          str(tmp_path / "out"), "s", pipeline.PredictSettings(assignment=False))
    assert not skipped and rec["summary"]["karyotype"] == "47,XY,+21" and rec["detections"] == res.detections
    assert sorted(os.listdir(tmp_path / "out")) == [".deepacc-predict.lock", "s.json", "s.karyogram.png",
                                                    "s.overlay.png"]
    pipeline.write_folder_summary(str(tmp_path / "out"))
    assert "47,XY,+21" in (tmp_path / "out" / "karyotypes.csv").read_text()
