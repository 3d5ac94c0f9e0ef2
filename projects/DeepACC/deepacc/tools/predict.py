"""``deepacc-predict``: karyotype suggestions for metaphase images, for human review.

Usage (Detectron2 ``demo.py`` style)::

    deepacc-predict --config-file configs/deepacc_R101_FPN.yaml \\
        --input spreads/ more/*.tif one.png --output out/ --report \\
        MODEL.WEIGHTS model_final.pth MODEL.DEVICE cpu

For every readable image it writes, into ``--output``:

* ``<name>.json``: the calls (box, class name, score, per-class probabilities, uncertain or not),
  the numerical summary (count, sex chromosomes, ISCN-style string, copies per class with mean
  confidence, review flags), the review note and the image's polarity (detected, inverted for the
  model or not: ``INPUT.POLARITY`` / ``--polarity``, :mod:`deepacc.data.polarity`);
* ``<name>.overlay.png``: the image with the calls boxed and coloured by Denver group;
* ``<name>.karyogram.png``: the karyogram in ISCN layout;

and, for the whole folder, ``karyotypes.csv`` (one line per image) and with ``--report`` the offline
``report.html``.

Each JSON records its input: ``file_name`` and ``input_sha256`` (SHA-256 of the file's bytes).
``<name>`` is the input's file name without extension, or ``<name>-<first 8 hex of the hash>`` when
the folder already holds another image's outputs under that name (logged; the same image again
replaces its own). Runs may share ``--output``: outputs are written under the folder's lock and
``karyotypes.csv`` / ``report.html`` are rebuilt from every record in the folder
(:mod:`deepacc.clinical.outputs`); image paths are never read back from a JSON.

Calls = top-1 detections (``instances_top1``) with score >= ``--confidence-threshold``, then
class-agnostic NMS at IoU ``--nms-threshold`` (0.7). With the karyotype assignment on
(``TEST.DEEPACC.ASSIGNMENT.ENABLED`` of the config, or ``--assignment on``), the calls' classes are
then chosen jointly per spread (:mod:`deepacc.karyotype.assignment`); every relabelled call keeps the
model's class and both probabilities in the JSON, and is flagged in the summary, the report and the
karyogram (orange frame, "was <class>").

What is done with one image (the calls, the assignment, the summary, the overlay, the karyogram, the
JSON) and the folder's ``karyotypes.csv`` / ``report.html`` is the library's
:mod:`deepacc.clinical.pipeline` (:func:`~deepacc.clinical.pipeline.postprocess`,
:func:`~deepacc.clinical.pipeline.process_image`, :func:`~deepacc.clinical.pipeline.write_folder_summary`;
their names are importable from here too); this module adds the command line, the folder loop, its
messages and exit codes.

Folders and glob patterns never contribute the tool's own outputs (``*.overlay.png``,
``*.karyogram.png``, and the hidden temporary files ``.tmp-<pid>-<name>``), so ``--output`` may be
the ``--input`` folder and a rerun does not take the overlays and karyograms of an earlier run for
spreads; such a file named explicitly is reported as an input error.

A file that cannot be read or processed is reported on stderr with the reason and skipped; all other
files are processed. Every output is written through a temporary file and ``os.replace``, so a killed
run leaves no half-written file; a rerun skips the images whose outputs are all present and were made
from the same file with the same thresholds (``--overwrite`` redoes them anyway).

Ctrl-C (``KeyboardInterrupt``) stops the run after writing ``karyotypes.csv`` for the images done so
far (the outputs of every finished image stay; ``report.html`` is not written) and ends with the one
line ``deepacc-predict: interrupted: N of M images done; rerun the same command to continue``; the
rerun skips the finished images.

Exit status: 0 when every input was processed (or skipped as already done), 1 when at least one
input failed, 2 on a usage or set-up error (no input found, model could not be built), 130 when
interrupted by Ctrl-C.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import os
import re
import sys
import traceback
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

# The pipeline of one image (calls, assignment, summary, overlay, karyogram, JSON) and the folder's
# karyotypes.csv / report.html: deepacc.clinical.pipeline. Its names stay importable from here.
from deepacc.clinical.pipeline import (OutputWriteError, Predictor, PredictSettings, postprocess,  # noqa: F401
                                       process_image, write_folder_summary)
from deepacc.config import call_thresholds
from deepacc.data.polarity import POLARITIES
from deepacc.engine import ENGINES
from deepacc.fileio import TEMP_PATTERN as _TEMP_FILE  # atomic_write's temporary files: .tmp-<pid>-<name>
from deepacc.fileio import UnsafeOutputError

__all__ = [
    "IMAGE_EXTENSIONS",
    "PredictSettings",
    "RunResult",
    "Interrupted",
    "get_parser",
    "expand_inputs",
    "is_own_output",
    "output_stems",
    "postprocess",
    "process_image",
    "run_predict",
    "setup_cfg",
    "model_config",
    "build_default_predictor",
    "main",
]

IMAGE_EXTENSIONS = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp", ".pgm", ".pnm")
from deepacc.clinical.outputs import OUTPUT_SUFFIXES  # noqa: E402  (json, overlay, karyogram)


@dataclass
class RunResult:
    records: List[dict] = field(default_factory=list)  # one per image processed or skipped
    failures: List[Tuple[str, str]] = field(default_factory=list)  # (file, reason)
    processed: int = 0
    skipped: int = 0
    report_path: Optional[str] = None
    total: int = 0  # images the run was given

    @property
    def done(self) -> int:
        """Images with all their outputs: processed now or already done."""
        return self.processed + self.skipped

    @property
    def ok(self) -> bool:
        return not self.failures


# --------------------------------------------------------------------------------------------- CLI
def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="deepacc-predict",
        description="Detect and classify the chromosomes of metaphase images; write detections JSON, an "
        "overlay, a karyogram and a numerical karyotype summary per image (suggestions for review by a "
        "cytogeneticist).",
        epilog="Exit status: 0 all inputs done, 1 some input failed (named on stderr), 2 usage/set-up error, "
        "130 interrupted by Ctrl-C (karyotypes.csv and the outputs of the images done are kept; rerun the same "
        "command to continue).",
    )
    p.add_argument("--config-file", metavar="FILE", default="", help="path to the config file")
    p.add_argument("--input", nargs="+", required=True,
                   help="image files, glob patterns (quote them) or folders (their image files, not recursive; "
                   "the tool's own *.overlay.png / *.karyogram.png outputs are never taken)")
    p.add_argument("--output", required=True, metavar="DIR",
                   help="folder for the outputs (created; may be the input folder)")
    p.add_argument("--confidence-threshold", type=float, default=None,
                   help="minimum score of a call (default: the config's TEST.DEEPACC.SCORE_THRESH, 0.5)")
    p.add_argument("--nms-threshold", type=float, default=None,
                   help="IoU of the class-agnostic NMS over the calls (default: the config's TEST.DEEPACC.NMS_THRESH, 0.7)")
    p.add_argument("--review-score", type=float, default=None,
                   help="calls scoring below this are flagged for review (default: the config's "
                   "TEST.DEEPACC.REVIEW_SCORE, 0.7)")
    p.add_argument("--review-margin", type=float, default=None,
                   help="calls whose two most probable classes differ by less than this are flagged (default: the "
                   "config's TEST.DEEPACC.REVIEW_MARGIN, 0.2)")
    p.add_argument("--assignment", choices=("on", "off"), default=None,
                   help="karyotype-consistent class assignment of each spread's calls (default: the config's "
                   "TEST.DEEPACC.ASSIGNMENT.ENABLED)")
    p.add_argument("--extra-copy-cost", type=float, default=None, metavar="COST",
                   help="assignment penalty per copy beyond 2 per autosome / X and 1 Y (default: the config's "
                   "TEST.DEEPACC.ASSIGNMENT.EXTRA_COPY_COST)")
    p.add_argument("--allow-untrained", action="store_true",
                   help="predict even without MODEL.WEIGHTS or with weights that do not fit the model (refused "
                   "otherwise); every output is then flagged as coming from an untrained model")
    p.add_argument("--polarity", choices=POLARITIES, default=None,
                   help="image polarity (default: the config's INPUT.POLARITY, auto): auto = recognise bright-on-dark "
                   "fluorescence images (Q-band, DAPI) and invert them for the model, dark_on_light = never invert, "
                   "bright_on_dark = always invert; the JSON records what was detected and done")
    p.add_argument("--engine", choices=ENGINES, default="auto",
                   help="model engine (default: auto = Detectron2 when importable, else torchvision)")
    p.add_argument("--report", action="store_true", help="also write the offline HTML report (report.html)")
    p.add_argument("--embed-images", action="store_true",
                   help="embed the images in report.html (base64) so it can be moved on its own")
    p.add_argument("--overwrite", action="store_true", help="redo images whose outputs already exist")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                   help="config options as KEY VALUE pairs at the end, e.g. MODEL.WEIGHTS model.pth MODEL.DEVICE cpu")
    return p


_OWN_OUTPUTS = "deepacc-predict outputs (*" + ", *".join(
    s for s in OUTPUT_SUFFIXES.values() if s.endswith(IMAGE_EXTENSIONS)) + ")"


def is_own_output(path: str) -> bool:
    """True for an image this tool writes (``<stem>.overlay.png``, ``<stem>.karyogram.png``) or a
    temporary file of :func:`deepacc.fileio.atomic_write` (``.tmp-<pid>-<name>``): never a spread."""
    name = os.path.basename(path)
    return bool(_TEMP_FILE.match(name)) or any(
        name.endswith(s) for s in OUTPUT_SUFFIXES.values() if s.endswith(IMAGE_EXTENSIONS))


def expand_inputs(inputs: Sequence[str]) -> Tuple[List[str], List[Tuple[str, str]]]:
    """Resolve files, globs and folders into a sorted, de-duplicated list of absolute paths.

    Folders contribute their files with an image extension (not recursive, hidden files ignored);
    explicit files are taken whatever their extension. The tool's own outputs (:func:`is_own_output`)
    are never taken, whichever folder they are in, so the output folder may be an input folder.
    Returns ``(paths, problems)`` where problems are ``(input, reason)`` for inputs that matched
    nothing (or only such outputs).
    """
    paths: List[str] = []
    problems: List[Tuple[str, str]] = []

    def add_dir(d: str) -> Tuple[int, int]:
        """Adds the folder's spreads; returns (spreads added, own outputs passed over)."""
        n = own = 0
        for name in sorted(os.listdir(d)):
            f = os.path.abspath(os.path.join(d, name))
            if name.startswith(".") or not os.path.isfile(f) or not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            if is_own_output(f):
                own += 1
                continue
            paths.append(f)
            n += 1
        return n, own

    for item in inputs:
        if os.path.isdir(item):
            n, own = add_dir(item)
            if n == 0 and own:
                problems.append((item, f"folder holds no image file other than {_OWN_OUTPUTS}"))
            elif n == 0:
                problems.append((item, "folder holds no image file (" + ", ".join(IMAGE_EXTENSIONS) + ")"))
        elif os.path.isfile(item):
            if _TEMP_FILE.match(os.path.basename(item)):
                problems.append((item, "a temporary file of deepacc-predict (.tmp-<pid>-<name>), not a spread"))
            elif is_own_output(item):
                problems.append((item, f"one of the {_OWN_OUTPUTS}, not a spread"))
            else:
                paths.append(os.path.abspath(item))
        elif glob.has_magic(item):
            hits = sorted(glob.glob(item))
            files = [os.path.abspath(h) for h in hits if os.path.isfile(h) and not is_own_output(h)]
            for h in hits:
                if os.path.isdir(h):
                    add_dir(h)
            if not files and not any(os.path.isdir(h) for h in hits):
                own = any(os.path.isfile(h) for h in hits)
                problems.append((item, f"pattern matched only {_OWN_OUTPUTS}" if own else "pattern matched no file"))
            paths.extend(files)
        else:
            problems.append((item, "no such file or folder"))
    seen = set()
    unique = [p for p in paths if not (p in seen or seen.add(p))]
    return unique, problems


def output_stems(paths: Sequence[str]) -> Dict[str, str]:
    """Output base name of each input: its file name without extension, made unique with a short
    hash of the full path when two inputs share a name."""
    base = {p: os.path.splitext(os.path.basename(p))[0] for p in paths}
    counts: Dict[str, int] = {}
    for b in base.values():
        counts[b] = counts.get(b, 0) + 1
    return {
        p: b if counts[b] == 1 else f"{b}-{hashlib.sha1(p.encode('utf-8')).hexdigest()[:8]}"
        for p, b in base.items()
    }


# ------------------------------------------------------------------------------------ the folder loop
def run_predict(
    paths: Sequence[str],
    predictor_factory: Callable[[], Predictor],
    output_dir: str,
    settings: PredictSettings = PredictSettings(),
    reader: Optional[Callable[[str], np.ndarray]] = None,
    overwrite: bool = False,
    report: bool = False,
    embed_images: bool = False,
    progress: bool = True,
    failures: Sequence[Tuple[str, str]] = (),
    log=None,
) -> RunResult:
    """Process ``paths`` into ``output_dir``; a failing file is recorded and skipped.

    ``predictor_factory()`` is called once, when the first image needs the model. ``failures`` are
    problems found before the run (e.g. inputs that matched nothing); they are reported with the
    rest. Writes ``karyotypes.csv`` and, with ``report=True``, ``report.html``, both rebuilt from
    every record in ``output_dir`` (this run's and earlier or concurrent runs'), under the folder's
    lock (:func:`write_folder_summary`); ``failures`` are this run's.

    Each image's outputs are named after its file name without extension; a name already holding
    another image's outputs gets ``-<first 8 hex of the SHA-256>`` (:func:`process_image`).

    On ``KeyboardInterrupt`` (Ctrl-C) ``karyotypes.csv`` is written for the images done so far (no
    report) and :class:`Interrupted` (a ``KeyboardInterrupt``) is raised with the partial result.
    A folder-wide file that cannot be written raises :class:`OutputWriteError`.
    """
    from tqdm import tqdm

    log = log or (lambda msg: tqdm.write(msg, file=sys.stderr))
    os.makedirs(output_dir, exist_ok=True)
    result = RunResult(failures=list(failures), total=len(paths))
    stems = {p: os.path.splitext(os.path.basename(p))[0] for p in paths}  # made unique by content if needed
    cache: Dict[str, Predictor] = {}

    def get_predictor() -> Predictor:
        if "p" not in cache:
            cache["p"] = predictor_factory()
        return cache["p"]

    bar = tqdm(paths, desc="deepacc-predict", unit="spread", disable=not progress, file=sys.stderr)
    try:
        for path in bar:
            try:
                rec, skipped = process_image(path, get_predictor, output_dir, stems[path], settings, reader,
                                             overwrite, log=log)
            except _SetupError:
                raise
            except Exception as exc:  # noqa: BLE001  (one bad file must not stop the batch)
                reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
                log(f"ERROR {path}: {reason} (skipped)")
                if os.environ.get("DEEPACC_DEBUG"):
                    log(traceback.format_exc())
                result.failures.append((path, reason))
                continue
            result.records.append(rec)
            if skipped:
                result.skipped += 1
            else:
                result.processed += 1
        bar.close()
        result.report_path = write_folder_summary(output_dir, result.failures, report, embed_images)
    except KeyboardInterrupt:
        bar.close()
        # What is done stays done (every output is written atomically): list it in the csv, then stop.
        write_folder_summary(output_dir, result.failures, report=False)
        raise Interrupted(result) from None
    return result


class _SetupError(RuntimeError):
    """The model could not be built: stops the run (exit status 2)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`run_predict`; ``result`` holds what was done (exit status 130)."""

    def __init__(self, result: RunResult):
        super().__init__(f"interrupted: {result.done} of {result.total} images done")
        self.result = result


# ---------------------------------------------------------------------------------- model set-up
def setup_cfg(args):
    """Config from ``--config-file`` and trailing ``opts`` as the engine gets it (:func:`model_config`),
    for callers that have only the parsed arguments; :func:`main` reads the config once
    (:func:`_run_config`) and derives the engine's from it."""
    from deepacc.config import load_config

    return _engine_config(load_config(args.config_file or None, list(args.opts or [])), args)


def _engine_config(cfg, args):
    """:func:`model_config` of ``cfg`` with the call threshold and polarity the parsed arguments give
    (``--confidence-threshold``, else the config's ``TEST.DEEPACC.SCORE_THRESH``; ``--polarity``)."""
    conf = args.confidence_threshold
    return model_config(cfg, call_thresholds(cfg).score_thresh if conf is None else float(conf),
                        "TEST.DEEPACC.SCORE_THRESH" if conf is None else "--confidence-threshold",
                        getattr(args, "polarity", None))


def model_config(cfg, call_score: float, source: str, polarity: Optional[str] = None):
    """The engine's (frozen) copy of the run's config: ``MODEL.ROI_HEADS.SCORE_THRESH_TEST`` lowered to
    the call threshold ``call_score`` when it is higher (one line on stderr names ``source`` and says so:
    the model must keep every detection that may become a call); ``INPUT.POLARITY`` set to ``polarity``
    (``--polarity``) when given; ``MODEL.DEVICE`` falls back to cpu when CUDA is not available. ``cfg``
    itself is left as it is."""
    cfg = cfg.clone()
    cfg.defrost()
    if polarity:
        cfg.INPUT.POLARITY = polarity
    if "ROI_HEADS" in cfg.MODEL and "SCORE_THRESH_TEST" in cfg.MODEL.ROI_HEADS:
        was = cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST
        cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = min(was, float(call_score))
        if cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST != was:
            print(f"deepacc-predict: MODEL.ROI_HEADS.SCORE_THRESH_TEST lowered from {was:g} to {float(call_score):g}, "
                  f"the call threshold ({source}): the model must keep every detection that may become a call",
                  file=sys.stderr)
    dev = str(cfg.MODEL.get("DEVICE", "cpu"))
    if dev.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print(f"deepacc-predict: MODEL.DEVICE={dev} but CUDA is not available: using cpu", file=sys.stderr)
            cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    return cfg


def build_default_predictor(args, cfg=None) -> Predictor:
    """The engine's predictor (imports the engine only now) for ``cfg``, the engine's config
    (:func:`model_config`), or, without it, for the config the parsed arguments name (:func:`setup_cfg`)."""
    from deepacc.engine import build_predictor

    return build_predictor(setup_cfg(args) if cfg is None else cfg, engine=args.engine,
                           allow_untrained=bool(getattr(args, "allow_untrained", False)))


_CFG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")


def _split_trailing_opts(args) -> None:
    """``--input a.png MODEL.WEIGHTS w.pth``: argparse puts the options into ``--input``; move the
    first config key (``MODEL.WEIGHTS``, not an existing path) and what follows into ``opts``."""
    for k, item in enumerate(args.input):
        if _CFG_KEY.match(item) and not os.path.exists(item):
            args.opts = list(args.input[k:]) + list(args.opts or [])
            args.input = args.input[:k]
            return


def _run_config(args):
    """The run's config (``--config-file`` + trailing options), validated, with ``TEST.DEEPACC.ASSIGNMENT``
    overridden by ``--assignment`` / ``--extra-copy-cost``; returns ``(cfg, assignment settings)``."""
    from deepacc.config import check_config, load_config
    from deepacc.karyotype.assignment import assignment_settings

    cfg = load_config(args.config_file or None, list(args.opts or []))
    check_config(cfg, args.config_file or "config")
    on = None if args.assignment is None else args.assignment == "on"
    return cfg, assignment_settings(cfg, on, args.extra_copy_cost)


def _interrupted(done: int, total: int) -> int:
    """Ctrl-C: one line instead of a traceback; exit status 130 (128 + SIGINT, as shells report it)."""
    print(f"deepacc-predict: interrupted: {done} of {total} images done; rerun the same command to continue",
          file=sys.stderr)
    return 130


def main(argv: Optional[Sequence[str]] = None,
         predictor_factory: Optional[Callable[[argparse.Namespace], Predictor]] = None,
         reader: Optional[Callable[[str], np.ndarray]] = None) -> int:
    """Entry point of ``deepacc-predict``; returns the exit status.

    ``predictor_factory(args) -> predictor`` builds the model (default: the configured engine);
    ``reader(path) -> image`` reads one image (default :func:`deepacc.data.images.read_image`).
    """
    args = get_parser().parse_args(argv)
    if args.opts and args.opts[0] == "--":
        args.opts = args.opts[1:]
    _split_trailing_opts(args)
    if len(args.opts) % 2:
        print(f"deepacc-predict: config options must be KEY VALUE pairs, got {args.opts}", file=sys.stderr)
        return 2
    if not args.input:
        print("deepacc-predict: --input needs at least one file, pattern or folder", file=sys.stderr)
        return 2
    paths, problems = expand_inputs(args.input)
    for item, why in problems:
        print(f"ERROR {item}: {why}", file=sys.stderr)
    if not paths:
        print("deepacc-predict: no input image found", file=sys.stderr)
        return 2
    try:
        cfg, assignment = _run_config(args)
        weights = str(cfg.MODEL.WEIGHTS)
        # Before any image is looked at: the output folder takes files (and its lock), and the engine's
        # predictor will find its weights (an injected predictor_factory brings its own model).
        from deepacc.clinical.outputs import folder_lock
        from deepacc.tools.checks import check_weights_file, check_writable_dir

        check_writable_dir(args.output, "--output", "--output ./predictions")
        with folder_lock(args.output):
            pass
        if predictor_factory is None:
            check_weights_file(weights, bool(args.allow_untrained))
        sha = None
        if weights and os.path.isfile(weights):
            from deepacc.checkpoint_io import file_sha256

            sha = file_sha256(weights)
    except KeyboardInterrupt:
        return _interrupted(0, len(paths))
    except Exception as exc:  # noqa: BLE001  (a config the user gave: one line, exit 2)
        from deepacc.config import get_cfg, unknown_key_message

        print(f"deepacc-predict: {unknown_key_message(exc, get_cfg()) or exc}", file=sys.stderr)
        return 2
    t = call_thresholds(cfg)  # the config's values; the flags override them
    pick = lambda flag, value: value if flag is None else float(flag)  # noqa: E731
    settings = PredictSettings(pick(args.confidence_threshold, t.score_thresh), pick(args.nms_threshold, t.nms_thresh),
                               pick(args.review_score, t.review_score), pick(args.review_margin, t.review_margin),
                               args.engine, args.config_file, [str(o) for o in args.opts],
                               assignment.enabled, assignment.extra_copy_cost, bool(args.allow_untrained), sha,
                               args.polarity or str(cfg.INPUT.get("POLARITY", "auto")))
    # the engine's copy of the one config read above, derived when the model is first needed
    factory = predictor_factory or (lambda a: build_default_predictor(a, _engine_config(cfg, a)))

    def make():
        from deepacc.checkpoint_io import CheckpointError, UntrainedModelError
        from deepacc.engine import EngineError

        try:
            return factory(args)
        except (CheckpointError, UntrainedModelError, EngineError, FileNotFoundError) as exc:  # named by their message
            raise _SetupError(f"could not build the model: {exc}") from exc
        except Exception as exc:  # noqa: BLE001
            raise _SetupError(f"could not build the model: {type(exc).__name__}: {exc}") from exc

    try:
        result = run_predict(paths, make, args.output, settings, reader=reader, overwrite=args.overwrite,
                             report=args.report, embed_images=args.embed_images,
                             progress=not args.no_progress, failures=problems)
    except (_SetupError, OutputWriteError) as exc:  # OutputWriteError: karyotypes.csv / report.html / the lock
        print(f"deepacc-predict: {exc}", file=sys.stderr)
        return 2
    except UnsafeOutputError as exc:  # karyotypes.csv / report.html a symbolic link: refused, nothing written through it
        print(f"deepacc-predict: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        return _interrupted(exc.result.done if isinstance(exc, Interrupted) else 0, len(paths))
    n_in = len(paths) + len(problems)
    print(f"deepacc-predict: {result.processed} processed, {result.skipped} already done, "
          f"{len(result.failures)} failed of {n_in} input(s); outputs in {os.path.abspath(args.output)}",
          file=sys.stderr)
    if result.report_path:
        print(f"deepacc-predict: report {result.report_path}", file=sys.stderr)
    for f, why in result.failures:
        print(f"  failed: {f}: {why}", file=sys.stderr)
    return 1 if result.failures else 0


if __name__ == "__main__":
    sys.exit(main())
