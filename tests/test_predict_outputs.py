"""deepacc-predict's outputs know their input (issue 23, item 3): the input's path and SHA-256 in every
JSON; another image with the same file name never replaces the first; runs sharing a folder list every
image of it; paths are never read back from a JSON (an edited ``outputs.overlay`` is not embedded)."""
import base64
import csv
import hashlib
import json
import os
import shutil
import threading
import time

import cv2
import pytest

from deepacc.clinical.outputs import LOCK_NAME, folder_lock, load_records
from deepacc.tools import predict as P
from test_karyotype import make_spread
from test_predict import KARYOTYPES, _key, factory_for


@pytest.fixture
def two_dirs(tmp_path):
    """``a/000001.png`` (46,XX) and ``b/000001.png`` (47,XY,+21): two images with one name; and their truth."""
    truth = {}
    for d, kt, seed in (("a", "46,XX", 1), ("b", "47,XY,+21", 2)):
        (tmp_path / d).mkdir()
        img, boxes, classes = make_spread(kt, seed=seed)
        cv2.imwrite(str(tmp_path / d / "000001.png"), img)
        truth[_key(cv2.imread(str(tmp_path / d / "000001.png"), 0))] = (kt, boxes, classes)
    return tmp_path, truth


def _main(argv, truth, capsys=None):
    rc = P.main(list(map(str, argv)) + ["--no-progress"], predictor_factory=factory_for(truth),
                reader=lambda p: cv2.imread(p, 0))
    err = capsys.readouterr().err if capsys is not None else ""
    return rc, err


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _rows(out):
    return list(csv.DictReader(open(out / "karyotypes.csv")))


def test_json_records_input_path_and_sha256(two_dirs):
    root, truth = two_dirs
    out = root / "out"
    assert _main(["--input", root / "a" / "000001.png", "--output", out], truth)[0] == 0
    rec = json.loads((out / "000001.json").read_text())
    assert rec["file_name"] == str(root / "a" / "000001.png")
    assert rec["input_sha256"] == _sha(root / "a" / "000001.png")


def test_same_stem_other_image_gets_its_own_outputs(two_dirs, capsys):
    """The probe: a/000001.png, then b/000001.png into one folder: two output sets, a line about it."""
    root, truth = two_dirs
    out = root / "out"
    assert _main(["--input", root / "a" / "000001.png", "--output", out, "--report"], truth)[0] == 0
    first = {n: (out / n).read_bytes() for n in ("000001.json", "000001.overlay.png", "000001.karyogram.png")}
    rc, err = _main(["--input", root / "b" / "000001.png", "--output", out, "--report"], truth, capsys)
    assert rc == 0
    h8 = _sha(root / "b" / "000001.png")[:8]
    assert f"this image's outputs are named 000001-{h8}.*" in err and str(root / "a" / "000001.png") in err
    for n, data in first.items():  # the first image's outputs are untouched
        assert (out / n).read_bytes() == data
    for suf in (".json", ".overlay.png", ".karyogram.png"):
        assert (out / f"000001-{h8}{suf}").is_file()
    rec = json.loads((out / f"000001-{h8}.json").read_text())
    assert rec["file_name"] == str(root / "b" / "000001.png") and rec["summary"]["karyotype"] == "47,XY,+21"
    assert rec["outputs"]["overlay"] == f"000001-{h8}.overlay.png"
    assert {(os.path.relpath(r["file"], root), r["karyotype"]) for r in _rows(out)} == {
        ("a/000001.png", "46,XX"), ("b/000001.png", "47,XY,+21")}
    page = (out / "report.html").read_text()
    assert "46,XX" in page and "47,XY,+21" in page and f'src="000001-{h8}.overlay.png"' in page
    # a rerun of both skips both (each finds its own outputs) and names nothing new
    rc, err = _main(["--input", root / "a" / "000001.png", root / "b" / "000001.png", "--output", out], truth, capsys)
    assert rc == 0 and "0 processed, 2 already done" in err
    assert len(list(out.glob("*.json"))) == 2


def test_same_stem_two_images_in_one_run(two_dirs, capsys):
    root, truth = two_dirs
    out = root / "out"
    rc, err = _main(["--input", root / "a" / "000001.png", root / "b" / "000001.png", "--output", out], truth, capsys)
    assert rc == 0 and "2 processed" in err
    h8 = _sha(root / "b" / "000001.png")[:8]
    assert sorted(p.name for p in out.glob("*.json")) == ["000001-" + h8 + ".json", "000001.json"]
    assert len(_rows(out)) == 2


def test_same_image_replaces_its_own_outputs(two_dirs, capsys):
    root, truth = two_dirs
    out = root / "out"
    img = root / "a" / "000001.png"
    assert _main(["--input", img, "--output", out], truth)[0] == 0
    # same image, other settings: redone under the same name (replaced), no second set
    rc, err = _main(["--input", img, "--output", out, "--review-score", "0.95"], truth, capsys)
    assert rc == 0 and "1 processed" in err and "NOTE" not in err
    assert sorted(p.name for p in out.glob("*.json")) == ["000001.json"]
    assert json.loads((out / "000001.json").read_text())["settings"]["review_score"] == 0.95
    # the same bytes under another path with the same name: the same image, replaced too
    (root / "c").mkdir()
    shutil.copy(img, root / "c" / "000001.png")
    rc, err = _main(["--input", root / "c" / "000001.png", "--output", out, "--review-score", "0.95"], truth, capsys)
    assert rc == 0 and "1 processed" in err and "NOTE" not in err
    assert sorted(p.name for p in out.glob("*.json")) == ["000001.json"]
    assert json.loads((out / "000001.json").read_text())["file_name"] == str(root / "c" / "000001.png")
    # the file replaced in place by another image (same path, other content): another image, so not
    # taken for done and not written over the first one's outputs either
    cv2.imwrite(str(img), cv2.imread(str(root / "b" / "000001.png"), 0))
    rc, err = _main(["--input", img, "--output", out, "--review-score", "0.95"], truth, capsys)
    h8 = _sha(img)[:8]
    assert rc == 0 and "1 processed" in err and f"named 000001-{h8}.*" in err
    rec = json.loads((out / f"000001-{h8}.json").read_text())
    assert rec["input_sha256"] == _sha(img) and rec["summary"]["karyotype"] == "47,XY,+21"
    assert json.loads((out / "000001.json").read_text())["summary"]["karyotype"] == "46,XX"


def test_two_runs_into_one_folder_list_every_image(tmp_path, capsys):
    """Sequential runs with different images: the aggregate files of the last run list all of them,
    and the images of a run of a third folder do not drop the earlier ones."""
    truth = {}
    for i, kt in enumerate(KARYOTYPES):
        d = tmp_path / ("first" if i < 2 else "second")
        d.mkdir(exist_ok=True)
        img, boxes, classes = make_spread(kt, seed=10 + i)
        cv2.imwrite(str(d / f"spread_{i}.png"), img)
        truth[_key(img)] = (kt, boxes, classes)
    out = tmp_path / "out"
    assert _main(["--input", tmp_path / "first", "--output", out, "--report"], truth)[0] == 0
    assert len(_rows(out)) == 2
    rc, err = _main(["--input", tmp_path / "second", "--output", out, "--report"], truth, capsys)
    assert rc == 0 and "2 processed, 0 already done, 0 failed of 2 input(s)" in err
    rows = _rows(out)
    assert [(os.path.basename(r["file"]), r["karyotype"]) for r in rows] == [
        (f"spread_{i}.png", kt) for i, kt in enumerate(KARYOTYPES)]
    page = (out / "report.html").read_text()
    assert all(kt in page for kt in KARYOTYPES) and "4 spread(s)" in page
    # a failure of this run is listed after the records of the folder
    (tmp_path / "third").mkdir()
    (tmp_path / "third" / "broken.png").write_bytes(b"not a png")
    rc, _ = _main(["--input", tmp_path / "third", "--output", out],
                  truth, capsys)
    rows = _rows(out)
    assert rc == 1 and len(rows) == 5 and os.path.basename(rows[-1]["file"]) == "broken.png" and rows[-1]["error"]


def test_aggregate_lists_records_of_the_folder_only(tmp_path, two_dirs):
    """load_records takes every deepacc-predict record of the folder, nothing else: not another json,
    not a hidden or temporary file, not a link."""
    root, truth = two_dirs
    out = root / "out"
    assert _main(["--input", root / "a", "--output", out], truth)[0] == 0
    (out / "notes.json").write_text(json.dumps({"images": []}))
    (out / "broken.json").write_text("{")
    shutil.copy(out / "000001.json", out / ".hidden.json")
    os.symlink(out / "000001.json", out / "link.json")
    recs = load_records(str(out))
    assert [r["file_name"] for r in recs] == [str(root / "a" / "000001.png")]
    assert recs[0]["outputs"] == {"json": "000001.json", "overlay": "000001.overlay.png",
                                  "karyogram": "000001.karyogram.png"}


def test_concurrent_run_waits_for_the_lock_and_merges(tmp_path, two_dirs):
    """A run whose folder is locked by another writes nothing until the lock is free, then lists the
    images of both runs."""
    root, truth = two_dirs
    out = root / "out"
    assert _main(["--input", root / "a", "--output", out], truth)[0] == 0
    result = {}
    with folder_lock(str(out)):
        t = threading.Thread(target=lambda: result.setdefault("rc", _main(["--input", root / "b", "--output", out],
                                                                          truth)[0]))
        t.start()
        time.sleep(1.0)
        assert t.is_alive() and len(list(out.glob("*.json"))) == 1  # waiting for the lock
    t.join(60)
    assert result["rc"] == 0
    assert {os.path.relpath(r["file"], root) for r in _rows(out)} == {"a/000001.png", "b/000001.png"}
    assert (out / LOCK_NAME).is_file() and not os.path.islink(out / LOCK_NAME)


def test_lock_file_link_is_refused(tmp_path, two_dirs, capsys):
    root, truth = two_dirs
    out = root / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    os.symlink(victim, out / LOCK_NAME)
    rc, err = _main(["--input", root / "a", "--output", out], truth, capsys)
    assert rc == 2 and "the lock file of the output folder is a symbolic link" in err and "Traceback" not in err
    assert victim.read_text() == "keep" and not list(out.glob("*.json"))


def test_edited_overlay_path_is_not_embedded(two_dirs):
    """The probe: outputs.overlay of a JSON edited to point at any file; --report --embed-images
    embeds the image's own overlay, never that file."""
    root, truth = two_dirs
    out = root / "out"
    secret = root / "secret.txt"
    secret.write_bytes(b"TOP SECRET CONTENT, not an image")
    assert _main(["--input", root / "a", "--output", out], truth)[0] == 0
    rec = json.loads((out / "000001.json").read_text())
    for target in (str(secret), "../secret.txt", "secret.txt"):
        rec["outputs"]["overlay"] = target
        rec["outputs"]["karyogram"] = target
        (out / "000001.json").write_text(json.dumps(rec))
        shutil.copy(secret, out / "secret.txt")
        assert _main(["--input", root / "a", "--output", out, "--report", "--embed-images"], truth)[0] == 0
        page = (out / "report.html").read_text()
        assert base64.b64encode(secret.read_bytes()).decode()[:20] not in page, target
        own = base64.b64encode((out / "000001.overlay.png").read_bytes()).decode()
        assert own in page  # the image's own overlay, found from the JSON's name
        assert "image missing" not in page


def test_report_embeds_only_its_own_images(tmp_path):
    """build_report_html called with records that name other files: nothing outside the folder, no
    link, nothing but *.overlay.png / *.karyogram.png is shown or embedded."""
    from deepacc.clinical.report import build_report_html
    from deepacc.clinical.summary import select_calls, summarize
    from test_karyotype import fake_prediction

    _, boxes, classes = make_spread("46,XX", seed=3)
    s = summarize(select_calls(fake_prediction(boxes, classes)["instances_top1"])).to_dict()
    (tmp_path / "out").mkdir()
    out = tmp_path / "out"
    secret = tmp_path / "x.overlay.png"
    secret.write_bytes(b"SECRET-BYTES-OUTSIDE")
    (out / "notes.txt").write_bytes(b"SECRET-BYTES-NOTES")
    os.symlink(secret, out / "l.overlay.png")
    recs = [{"file_name": "/x/a.png", "name": "a.png", "summary": s,
             "outputs": {"overlay": o, "karyogram": k}}
            for o, k in ((str(secret), "../x.overlay.png"), ("notes.txt", "l.overlay.png"),
                         ("l.overlay.png", "sub/../notes.txt"))]
    for embed in (False, True):
        page = build_report_html(recs, str(out), embed_images=embed)
        assert "SECRET" not in page and base64.b64encode(b"SECRET-BYTES").decode()[:12] not in page
        assert page.count("image missing") == 6
