"""One safe way to write (deepacc.fileio): no write through a symbolic link, no predictable temp
file, metrics.json rows of an earlier run kept, and a scan that every write of the package, the
dataset scripts and the benchmarks goes through the helpers."""
import ast
import glob
import json
import logging
import os
import re
import subprocess
import sys

import pytest

from deepacc import fileio
from deepacc.fileio import (TEMP_PATTERN, LazyAppendFile, UnsafeOutputError, append_line, atomic_write,
                            open_append, remove_stale_temp_files, rotate_file, tidy_output_dir,
                            truncate_metrics_from)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rows(its, key="iteration"):
    return "".join(json.dumps({key: i, "loss": 1.0}) + "\n" for i in its)


def _its(path, key="iteration"):
    with open(path) as f:
        return [json.loads(x)[key] for x in f if x.strip()]


@pytest.fixture
def victim(tmp_path):
    """A file outside the output folder that a planted link points to."""
    v = tmp_path / "outside" / "victim.txt"
    v.parent.mkdir()
    v.write_text("precious\n")
    return v


def _unchanged(victim):
    assert victim.read_text() == "precious\n"
    assert sorted(os.listdir(victim.parent)) == ["victim.txt"]


# ------------------------------------------------------------------------------------- (a) temp names
def test_planted_links_at_every_predictable_temp_name_are_not_followed(tmp_path, victim):
    out = tmp_path / "out"
    out.mkdir()
    pid = os.getpid()
    names = ["a.json", "b.png", "metrics.json", "karyotypes.csv", "report.html"]
    for name in names:
        os.symlink(victim, out / f".tmp-{pid}-{name}")  # the temp name of the old atomic_write
        os.symlink(out / "nowhere" / "x", out / f".tmp-{pid}-dangling-{name}")  # a dangling one too
    for name in names:
        atomic_write(str(out / name), b"new " + name.encode())
    _unchanged(victim)
    assert not (out / "nowhere").exists()
    for name in names:
        assert not os.path.islink(out / name) and (out / name).read_bytes() == b"new " + name.encode()
        assert os.path.islink(out / f".tmp-{pid}-{name}")  # left alone
    # nothing else: the real temp files are gone
    left = sorted(n for n in os.listdir(out) if n.startswith(".tmp-"))
    assert len(left) == 2 * len(names)


def test_temp_name_is_unpredictable_exclusive_and_recognised(tmp_path, monkeypatch):
    seen = []
    real_open = os.open

    def spy(path, flags, mode=0o777, **kw):
        seen.append((os.path.basename(path), flags))
        return real_open(path, flags, mode, **kw)

    monkeypatch.setattr(os, "open", spy)
    atomic_write(str(tmp_path / "x.bin"), b"1")
    atomic_write(str(tmp_path / "x.bin"), b"2")
    monkeypatch.undo()
    temps = [(n, f) for n, f in seen if n.startswith(".tmp-")]
    assert len(temps) == 2 and temps[0][0] != temps[1][0]  # a new random name each time
    for name, flags in temps:
        m = TEMP_PATTERN.match(name)
        assert m and int(m.group(1)) == os.getpid() and name.endswith("-x.bin")
        assert flags & os.O_CREAT and flags & os.O_EXCL
        if hasattr(os, "O_NOFOLLOW"):
            assert flags & os.O_NOFOLLOW
    assert TEMP_PATTERN.match(".tmp-123-x.overlay.png")  # names of the older version still recognised


def test_a_taken_temp_name_draws_another(tmp_path, monkeypatch, victim):
    out = tmp_path / "out"
    out.mkdir()
    tokens = iter(["0" * 16, "0" * 16, "1" * 16])
    monkeypatch.setattr(fileio.secrets, "token_hex", lambda n: next(tokens))
    os.symlink(victim, out / f".tmp-{os.getpid()}-{'0' * 16}-f.txt")  # planted at the next name
    atomic_write(str(out / "f.txt"), b"ok")
    assert (out / "f.txt").read_bytes() == b"ok"
    _unchanged(victim)


def test_final_path_that_is_a_link_is_refused_with_the_named_error(tmp_path, victim):
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(victim, out / "report.html")
    with pytest.raises(UnsafeOutputError) as e:
        atomic_write(str(out / "report.html"), b"<html>")
    assert isinstance(e.value, OSError) and e.value.filename == str(out / "report.html")
    assert "is a symbolic link; refused" in str(e.value) and str(out / "report.html") in str(e.value)
    os.symlink(out / "missing", out / "dangling.json")  # a dangling link is refused too (it would create)
    with pytest.raises(UnsafeOutputError):
        atomic_write(str(out / "dangling.json"), b"{}")
    assert not (out / "missing").exists()
    _unchanged(victim)
    assert [n for n in os.listdir(out) if n.startswith(".tmp-")] == []


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    f = tmp_path / "a.bin"
    atomic_write(str(f), b"old")

    def boom(fh):
        fh.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(str(f), boom)
    assert f.read_bytes() == b"old" and os.listdir(tmp_path) == ["a.bin"]


def test_stale_temp_removal_never_touches_links_or_their_targets(tmp_path, victim):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale_new = tmp_path / f".tmp-{dead.pid}-{'ab' * 8}-model.pth"
    stale_new.write_bytes(b"x")
    link = tmp_path / f".tmp-{dead.pid}-{'cd' * 8}-metrics.json"
    os.symlink(victim, link)
    removed = remove_stale_temp_files(str(tmp_path))
    assert removed == [str(stale_new)]
    assert os.path.islink(link)
    _unchanged(victim)


def test_predict_with_planted_links_writes_nothing_outside(tmp_path, victim):
    """The probe: deepacc-predict --report into a folder with links planted at the temp names."""
    cv2 = pytest.importorskip("cv2")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from test_karyotype import make_spread
    from test_predict import _key, factory_for

    from deepacc.tools import predict as P

    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    out.mkdir()
    img, boxes, classes = make_spread("46,XX", seed=10)
    cv2.imwrite(str(inp / "s.png"), img)
    truth = {_key(img): ("46,XX", boxes, classes)}
    pid = os.getpid()
    outputs = ["s.json", "s.overlay.png", "s.karyogram.png", "karyotypes.csv", "report.html"]
    for name in outputs:
        os.symlink(victim, out / f".tmp-{pid}-{name}")
    rc = P.main(["--input", str(inp), "--output", str(out), "--no-progress", "--report"],
                predictor_factory=factory_for(truth))
    assert rc == 0
    _unchanged(victim)
    for name in outputs:
        assert (out / name).is_file() and not os.path.islink(out / name)
    # the final report path a link: refused, named, exit 2, the linked file untouched
    (out / "report.html").unlink()
    os.symlink(victim, out / "report.html")
    rc = P.main(["--input", str(inp), "--output", str(out), "--no-progress", "--report", "--overwrite"],
                predictor_factory=factory_for(truth))
    assert rc == 2
    _unchanged(victim)


# ---------------------------------------------------------------------------------- appends, metrics
def test_append_helpers_refuse_links_and_append(tmp_path, victim):
    m = tmp_path / "metrics.json"
    append_line(str(m), json.dumps({"iteration": 0}))
    append_line(str(m), json.dumps({"iteration": 1}) + "\n", durable=True)
    assert _its(m) == [0, 1]
    link = tmp_path / "linked.json"
    os.symlink(victim, link)
    with pytest.raises(UnsafeOutputError):
        append_line(str(link), "{}")
    with pytest.raises(UnsafeOutputError):
        open_append(str(link))
    lazy = LazyAppendFile(str(link))  # opens nothing until written
    with pytest.raises(UnsafeOutputError):
        lazy.write("{}\n")
    _unchanged(victim)


def test_metrics_link_is_refused_and_its_target_untouched(tmp_path, victim):
    """The probe: OUTPUT_DIR/metrics.json a link to another file; the start-up tidy-up refuses."""
    victim.write_text(_rows([19, 39]))
    before = victim.read_text()
    os.symlink(victim, tmp_path / "metrics.json")
    for resumed in (False, True):
        with pytest.raises(UnsafeOutputError, match="metrics file is a symbolic link; refused"):
            tidy_output_dir(str(tmp_path), 20, resumed=resumed)
    with pytest.raises(UnsafeOutputError):
        truncate_metrics_from(str(tmp_path / "metrics.json"), 0)
    with pytest.raises(UnsafeOutputError):
        rotate_file(str(tmp_path / "metrics.json"))
    assert victim.read_text() == before and os.path.islink(tmp_path / "metrics.json")


def test_train_net_refuses_a_metrics_link_before_starting(tmp_path, victim, capsys, monkeypatch):
    """train_net.py into an OUTPUT_DIR whose metrics.json is a link: exit 2 naming it, nothing launched."""
    from deepacc.tools import train as T
    from tv_tiny import QUICK_CONFIG, TINY_OPTS

    def no_launch(*a, **k):
        raise AssertionError("training must not start")

    monkeypatch.setattr(T, "launch", no_launch)
    out = tmp_path / "run"
    out.mkdir()
    os.symlink(victim, out / "metrics.json")
    with pytest.raises(SystemExit) as e:
        T.main(["--engine", "torchvision", "--config-file", QUICK_CONFIG] + TINY_OPTS + ["OUTPUT_DIR", str(out)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    assert f"{out / 'metrics.json'}: metrics file is a symbolic link; refused" in err
    _unchanged(victim)


def test_other_helpers_refuse_links(tmp_path, victim):
    np = pytest.importorskip("numpy")
    pytest.importorskip("cv2")
    from deepacc.fileio import LogFileHandler, copy_file, save_figure, write_image

    img = np.zeros((8, 8), np.uint8)
    write_image(str(tmp_path / "a.png"), img)
    import cv2

    assert cv2.imread(str(tmp_path / "a.png"), cv2.IMREAD_UNCHANGED).shape == (8, 8)
    with pytest.raises(OSError):
        write_image(str(tmp_path / "no_extension"), img)
    copy_file(str(tmp_path / "a.png"), str(tmp_path / "sub" / "b.png"))
    assert (tmp_path / "sub" / "b.png").read_bytes() == (tmp_path / "a.png").read_bytes()
    for name in ("l.png", "l.svg", "l.log"):
        os.symlink(victim, tmp_path / name)
    with pytest.raises(UnsafeOutputError):
        write_image(str(tmp_path / "l.png"), img)
    with pytest.raises(UnsafeOutputError):
        copy_file(str(tmp_path / "a.png"), str(tmp_path / "l.png"))
    with pytest.raises(UnsafeOutputError):
        LogFileHandler(str(tmp_path / "l.log"))
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    fig = Figure()
    fig.add_subplot().plot([0, 1])
    save_figure(fig, str(tmp_path / "f.svg"))
    assert (tmp_path / "f.svg").read_bytes().lstrip().startswith(b"<?xml")  # format from the extension
    with pytest.raises(UnsafeOutputError):
        save_figure(fig, str(tmp_path / "l.svg"))
    _unchanged(victim)


def test_tv_metrics_writer_refuses_a_link(tmp_path, victim):
    from deepacc.tv.metrics import MetricsWriter

    w = MetricsWriter(str(tmp_path))
    w.write(0, {"loss": 1.0})
    assert _its(tmp_path / "metrics.json") == [0]
    (tmp_path / "metrics.json").unlink()
    os.symlink(victim, tmp_path / "metrics.json")
    with pytest.raises(UnsafeOutputError):
        w.write(1, {"loss": 1.0})
    w.close()
    _unchanged(victim)


def test_fresh_run_rotates_and_resume_truncates(tmp_path, caplog):
    m = tmp_path / "metrics.json"
    m.write_text(_rows([19, 39, 59]))
    with caplog.at_level(logging.INFO, logger="deepacc.fileio"):
        tidy_output_dir(str(tmp_path), 0, resumed=False)
    assert not m.exists() and _its(tmp_path / "metrics.json.1") == [19, 39, 59]
    assert sum("metrics.json.1" in r.getMessage() for r in caplog.records) == 1
    # a second fresh run: .1 is kept, the new rows go to .2
    m.write_text(_rows([0, 19]))
    tidy_output_dir(str(tmp_path), 0)  # start_iter 0: a new run
    assert _its(tmp_path / "metrics.json.1") == [19, 39, 59] and _its(tmp_path / "metrics.json.2") == [0, 19]
    # a taken name that is a link is skipped, never replaced
    m.write_text(_rows([5]))
    os.symlink(tmp_path / "elsewhere", tmp_path / "metrics.json.3")
    tidy_output_dir(str(tmp_path), 0, resumed=False)
    assert _its(tmp_path / "metrics.json.4") == [5] and os.path.islink(tmp_path / "metrics.json.3")
    # --resume of this run (from iteration 40): rows >= 40 and cut lines dropped, the rest kept
    m.write_text(_rows([0, 19, 39, 59]) + '{"iteration": 6')
    tidy_output_dir(str(tmp_path), 40, resumed=True)
    assert _its(m) == [0, 19, 39]
    # an empty metrics.json of a fresh run is not worth a rotated file
    m.write_text("")
    tidy_output_dir(str(tmp_path), 0)
    assert not (tmp_path / "metrics.json.5").exists()


def test_writer_built_before_the_tidy_up_appends_to_the_new_file(tmp_path):
    """Detectron2's JSONWriter is built with the trainer's hooks, before resume_or_load tidies
    OUTPUT_DIR: with LazyAppendFile it opens metrics.json at its first write, after the tidy-up."""
    m = tmp_path / "metrics.json"
    m.write_text(_rows([0, 19, 39, 59]))
    handle = LazyAppendFile(str(m))  # what deepacc.d2.trainer gives the JSONWriter
    tidy_output_dir(str(tmp_path), 40, resumed=True)
    handle.write(json.dumps({"iteration": 40}) + "\n")
    handle.flush()
    os.fsync(handle.fileno())
    assert _its(m) == [0, 19, 39, 40]
    handle.close()
    # and after a rotation (a new run): the old rows stay in .1, the new run's in metrics.json
    handle = LazyAppendFile(str(m))
    tidy_output_dir(str(tmp_path), 0, resumed=False)
    handle.write(json.dumps({"iteration": 0}) + "\n")
    handle.close()
    assert _its(m) == [0] and _its(tmp_path / "metrics.json.1") == [0, 19, 39, 40]


def test_pretrain_metrics_use_epoch_rows(tmp_path):
    m = tmp_path / "metrics.json"
    m.write_text(_rows([1, 2, 3], key="epoch"))
    tidy_output_dir(str(tmp_path), 3, resumed=True, key="epoch")  # resuming at epoch index 2: rows epoch >= 3 go
    assert _its(m, "epoch") == [1, 2]


def test_d2_trainer_builds_a_lazy_json_writer():
    """The Detectron2 engine's metrics.json writer opens the file lazily (only with Detectron2)."""
    pytest.importorskip("detectron2")
    from deepacc.d2.trainer import MetricsJSONWriter

    w = MetricsJSONWriter(os.path.join(REPO, "does-not-exist", "metrics.json"))
    assert isinstance(w._file_handle, LazyAppendFile)
    w.close()


# ---------------------------------------------------------------------------------------- (d) scan
SCANNED = ["projects/DeepACC/deepacc", "datasets", "benchmarks"]

#: (file, text on the flagged line, why it may bypass deepacc.fileio). Keep it small.
ALLOWED = [
    ("projects/DeepACC/deepacc/fileio.py", "", "the helpers themselves"),
    ("benchmarks/bench_speed.py", '"/proc/self/clear_refs"', "a kernel control file, not an output"),
    ("projects/DeepACC/deepacc/data/catalog.py", "lock_fd", "the lock file of the quick set (O_NOFOLLOW, never "
                                                             "written)"),
    ("projects/DeepACC/deepacc/clinical/outputs.py", "os.open(path, os.O_RDWR | os.O_CREAT | _O_NOFOLLOW",
     "the lock file of a deepacc-predict folder (O_NOFOLLOW, never written)"),
    ("projects/DeepACC/deepacc/tools/checks.py", "os.open(probe,",
     "the writability probe (O_EXCL | O_NOFOLLOW, empty, deleted at once)"),
    ("projects/DeepACC/deepacc/data/catalog.py", "os.rename(tmp, target)",
     "moves a finished private folder into place (rename never follows a link at the target)"),
]

_WRITE_MODE = re.compile(r"^[rbtU]*[wax+][rwxabtU+]*(:.*)?$")
_MODE_LIKE = re.compile(r"^[rwxabtU+]{1,4}(:.*)?$")
_WRITE_FLAGS = {"O_WRONLY", "O_RDWR", "O_CREAT", "O_APPEND", "O_TRUNC"}
_OPENERS = {"open", "io.open", "builtins.open", "codecs.open", "gzip.open", "bz2.open", "lzma.open", "tarfile.open"}


def _dotted(node):
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    elif isinstance(node, ast.Call):
        parts.append(_dotted(node.func) + "()")
    else:
        parts.append("?")
    return ".".join(reversed(parts))


def _arg(call, pos, *names):
    for kw in call.keywords:
        if kw.arg in names:
            return kw.value
    return call.args[pos] if len(call.args) > pos else None


def _str(node):
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _writes(mode_node):
    """Mode argument of an open: None (absent: read) -> False; a constant -> by its letters; anything
    else cannot be checked -> True."""
    if mode_node is None:
        return False
    s = _str(mode_node)
    return True if s is None else bool(_WRITE_MODE.match(s))


class _Scanner(ast.NodeVisitor):
    def __init__(self, tree):
        self.found = []
        self.stack = []  # enclosing FunctionDef / Lambda nodes
        self.buffers, self.callback_defs, self.callback_lambdas = set(), set(), set()
        for node in ast.walk(tree):  # names bound to in-memory files, callbacks handed to atomic_write
            if isinstance(node, ast.Assign) and self._is_buffer(node.value):
                self.buffers |= {t.id for t in node.targets if isinstance(t, ast.Name)}
            elif isinstance(node, ast.withitem) and self._is_buffer(node.context_expr) \
                    and isinstance(node.optional_vars, ast.Name):
                self.buffers.add(node.optional_vars.id)
            elif isinstance(node, ast.Call) and _dotted(node.func).split(".")[-1].endswith("atomic_write"):
                data = _arg(node, 1, "data")
                if isinstance(data, ast.Lambda):
                    self.callback_lambdas.add(id(data))
                elif isinstance(data, ast.Name):
                    self.callback_defs.add(data.id)

    @staticmethod
    def _is_buffer(node):
        return isinstance(node, ast.Call) and _dotted(node.func).split(".")[-1] in ("BytesIO", "StringIO")

    def _file_object(self, node):
        """An in-memory file, or the file object atomic_write hands to its callback."""
        if node is None:
            return True
        if _dotted(node) in ("sys.stdout", "sys.stderr"):
            return True
        if not isinstance(node, ast.Name):
            return False
        if node.id in self.buffers:
            return True
        for fn in reversed(self.stack):
            params = {a.arg for a in fn.args.args + fn.args.posonlyargs + fn.args.kwonlyargs}
            if node.id in params:
                return (id(fn) in self.callback_lambdas if isinstance(fn, ast.Lambda)
                        else fn.name in self.callback_defs)
        return False

    def _flag(self, node, what):
        self.found.append((node.lineno, what))

    def _scope(self, node):
        self.stack.append(node)
        self.generic_visit(node)
        self.stack.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _scope

    def visit_Call(self, call):
        name = _dotted(call.func)
        last = name.split(".")[-1]
        if name in _OPENERS:
            if _writes(_arg(call, 1, "mode")):
                self._flag(call, f"{name}() with a write mode")
        elif name == "os.open":
            flags = _arg(call, 1, "flags")
            used = set()  # the names in the flags: os.O_X, _O_X constants, getattr(os, "O_X", 0)
            for n in ast.walk(flags) if flags is not None else ():
                if isinstance(n, (ast.Name, ast.Attribute)):
                    used.add((n.attr if isinstance(n, ast.Attribute) else n.id).lstrip("_"))
                elif _str(n) is not None:
                    used.add(_str(n))
            used -= {"os", "getattr"}
            if used & _WRITE_FLAGS or any(not u.startswith("O_") for u in used):  # unknown names: cannot tell
                self._flag(call, "os.open() for writing")
        elif last == "fdopen":
            if _writes(_arg(call, 1, "mode")):
                self._flag(call, "os.fdopen() with a write mode")
        elif last == "open" and isinstance(call.func, ast.Attribute):  # Path.open("w"), Image.open(fp)
            first = _str(call.args[0]) if call.args else None
            mode = _arg(call, 99, "mode")
            if (first is not None and _MODE_LIKE.match(first) and _WRITE_MODE.match(first)) or \
                    (mode is not None and _writes(mode)) or (len(call.args) > 1 and _str(call.args[1]) is not None
                                                             and _WRITE_MODE.match(_str(call.args[1]))):
                self._flag(call, f"{name}() with a write mode")
        elif last == "imwrite":
            self._flag(call, f"{name}() (encode with cv2.imencode, then atomic_write)")
        elif last == "savefig":
            if not self._file_object(_arg(call, 0, "fname")):
                self._flag(call, f"{name}() to a path (save into io.BytesIO, then atomic_write)")
        elif name in ("torch.save",):
            if not self._file_object(_arg(call, 1, "f")):
                self._flag(call, "torch.save() to a path (atomic_write(path, lambda f: torch.save(obj, f)))")
        elif name.split(".")[0] in ("np", "numpy") and last in ("save", "savez", "savez_compressed", "savetxt"):
            if not self._file_object(_arg(call, 0, "file", "fname")):
                self._flag(call, f"{name}() to a path")
        elif last == "save" and isinstance(call.func, ast.Attribute) and "checkpointer" not in name.lower():
            if not self._file_object(_arg(call, 0, "fp")):  # PIL Image.save(path) and the like
                self._flag(call, f"{name}() to a path")
        elif name.startswith("shutil.") and (last.startswith("copy") and last != "copyfileobj" or last == "move"):
            self._flag(call, f"{name}()")
        elif name in ("os.rename", "os.replace", "os.renames", "os.truncate"):
            self._flag(call, f"{name}()")
        elif last in ("write_text", "write_bytes", "tofile"):
            self._flag(call, f"{name}()")
        elif name in ("json.dump", "pickle.dump", "yaml.dump", "yaml.safe_dump"):
            stream = _arg(call, 1, "fp", "file", "stream")
            if not name.startswith("yaml") or stream is not None:
                if not self._file_object(stream):
                    self._flag(call, f"{name}() to a file (dumps, then atomic_write)")
        elif last in ("FileHandler", "RotatingFileHandler", "TimedRotatingFileHandler", "WatchedFileHandler"):
            self._flag(call, f"{name}() (opens its file following links; use fileio.open_append)")
        self.generic_visit(call)


def scan_source(source, filename="<string>"):
    """``[(line, what)]`` for each write in ``source`` that bypasses :mod:`deepacc.fileio`."""
    tree = ast.parse(source, filename)
    s = _Scanner(tree)
    s.visit(tree)
    return sorted(s.found)


def _scanned_files(root=REPO, tops=SCANNED):
    for top in tops:
        yield from sorted(glob.glob(os.path.join(root, top, "**", "*.py"), recursive=True))


def find_bypasses(root=REPO, tops=SCANNED, allowed=ALLOWED):
    """``(["file:line: what: code", ...], indices of the allow-list entries used)``."""
    bypasses, used = [], set()
    for path in _scanned_files(root, tops):
        rel = os.path.relpath(path, root).replace(os.sep, "/")
        with open(path, encoding="utf-8") as f:
            source = f.read()
        lines = source.splitlines()
        for ln, what in scan_source(source, rel):
            text = lines[ln - 1]
            hit = [i for i, (f_, needle, _) in enumerate(allowed) if f_ == rel and needle in text]
            if hit:
                used.update(hit)
            else:
                bypasses.append(f"{rel}:{ln}: {what}: {text.strip()}")
    return bypasses, used


def test_scanner_flags_planted_bypasses():
    planted = '''
import io, os, shutil, json, pickle, logging, cv2, torch, numpy as np
from pathlib import Path
from PIL import Image
with open(p, "w") as f: pass
open(p, mode="ab")
open(p, "r+")
open(p, m)
io.open(p, "wt")
os.open(p, os.O_WRONLY | os.O_CREAT)
open(p, "x")
os.open(p, flags)
os.open(p, os.O_RDWR | _O_NOFOLLOW)
os.fdopen(fd, "wb")
Path(p).open("w")
cv2.imwrite(p, img)
fig.savefig(p + ".png")
torch.save(obj, p)
np.save(p, a)
np.savez_compressed(os.path.join(d, "x.npz"), a=a)
Image.fromarray(a).save(p)
shutil.copy(a, b)
shutil.copy2(a, b)
shutil.move(a, b)
os.rename(a, b)
os.replace(a, b)
Path(p).write_text("x")
Path(p).write_bytes(b"x")
json.dump(obj, fh)
a.tofile(p)
logging.FileHandler(p)
def helper(path):
    torch.save(obj, path)
'''
    found = scan_source(planted)
    lines = [ln for ln, _ in found]
    expected = [ln for ln, text in enumerate(planted.splitlines(), 1)
                if text.strip() and not text.startswith(("import", "from", "def helper"))]
    assert lines == expected, "\n".join(f"{ln}: {planted.splitlines()[ln - 1]}" for ln in set(expected) - set(lines))


def test_scanner_accepts_the_helpers_and_reads():
    fine = '''
import io, os, json, cv2, torch, numpy as np
from deepacc.fileio import atomic_write, append_line
open(p)
open(p, "rb")
open(p, "r", encoding="utf-8")
os.open(p, os.O_RDONLY)
os.open(p, os.O_RDONLY | _O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
Image.open(p)
Image.open(p, "r")
cv2.imread(p)
atomic_write(p, lambda f: torch.save(obj, f), durable=True)
def _write(fh):
    np.savez_compressed(fh, a=a)
atomic_write(p, _write)
buf = io.BytesIO()
fig.savefig(buf, format="png")
np.save(buf, a)
with io.StringIO() as s:
    json.dump(obj, s)
json.dump(obj, sys.stdout)
atomic_write(p, json.dumps(obj).encode())
append_line(p, json.dumps(row))
self.checkpointer.save("model_final")
ok, enc = cv2.imencode(".png", img)
'''
    assert scan_source(fine) == []


def test_scan_names_file_and_line_of_a_planted_bypass(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "ok.py").write_text("from deepacc.fileio import atomic_write\natomic_write(p, b'x')\n")
    (pkg / "bad.py").write_text("import cv2\n\ncv2.imwrite(p, img)\nopen('/proc/self/clear_refs', 'w')\n")
    allowed = [("pkg/bad.py", "clear_refs", "test")]
    bypasses, used = find_bypasses(str(tmp_path), ["pkg"], allowed)
    assert bypasses == ["pkg/bad.py:3: cv2.imwrite() (encode with cv2.imencode, then atomic_write): cv2.imwrite(p, img)"]
    assert used == {0}


def test_every_write_goes_through_the_helpers():
    assert len(list(_scanned_files())) > 50
    bypasses, used = find_bypasses()
    assert not bypasses, "writes that bypass deepacc.fileio (use atomic_write / append_line):\n" + "\n".join(bypasses)
    stale = [ALLOWED[i] for i in range(len(ALLOWED)) if i not in used and ALLOWED[i][1]]
    assert not stale, f"allow-list entries that match nothing any more: {stale}"
