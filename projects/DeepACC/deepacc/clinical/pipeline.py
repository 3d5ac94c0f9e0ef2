"""The clinical pipeline of one metaphase spread, as ``deepacc-predict`` runs it, for use from Python.

image -> the model's prediction -> the calls (top-1 detections, ``instances_top1``, with score >=
the clinical threshold ``TEST.DEEPACC.SCORE_THRESH``, then class-agnostic NMS at
``TEST.DEEPACC.NMS_THRESH``) -> the karyotype assignment of the spread's calls (when on,
:mod:`deepacc.karyotype.assignment`) -> the numerical summary with its review flags, the oversized
calls (nuclei) and overlap clusters excluded from the count (:mod:`.summary`) -> the overlay
(:mod:`.overlay`) and the karyogram (:mod:`.karyogram`) -> the JSON record; and, for a folder of
records, ``karyotypes.csv`` and ``report.html`` (:mod:`.report`).

* :class:`PredictSettings`: the thresholds and the assignment of a run (recorded in every JSON);
* :func:`postprocess`: one image's prediction -> :class:`SpreadResult` (calls, summary, overlay,
  karyogram, JSON-ready detections), in memory;
* :func:`process_image`: one image file -> its ``<stem>.json``, ``<stem>.overlay.png`` and
  ``<stem>.karyogram.png`` in an output folder (an image already done is skipped);
* :func:`write_folder_summary`: ``karyotypes.csv`` (and ``report.html``) of an output folder, rebuilt
  from every record in it.

The command line, the folder loop, its messages and exit codes are :mod:`deepacc.tools.predict`'s.
The predictor is any callable ``predictor(gray uint8 HxW) -> prediction dict`` (contract format:
``instances_top1`` with ``boxes``, ``scores``, ``classes``, optionally ``class_probs``; optionally
``polarity`` and ``input_scale``), e.g. :func:`deepacc.engine.build_predictor`.
"""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from ..fileio import UnsafeOutputError
from ..settings import DEFAULT_CALLS

if TYPE_CHECKING:  # imported on use (OpenCV)
    from .summary import KaryotypeSummary

__all__ = [
    "Predictor",
    "PredictSettings",
    "SpreadResult",
    "OutputWriteError",
    "postprocess",
    "resolve_assignment",
    "process_image",
    "write_folder_summary",
]

Predictor = Callable[[np.ndarray], Mapping]


@dataclass
class PredictSettings:
    """The settings of a run, recorded in every JSON (``settings``; an image done with other settings is
    redone). The defaults are the default config's ``TEST.DEEPACC.*`` (:data:`deepacc.settings.DEFAULT_CALLS`);
    ``deepacc-predict`` fills them from its config and flags (``confidence_threshold``: the clinical
    call threshold, ``TEST.DEEPACC.SCORE_THRESH`` or ``--confidence-threshold``)."""

    confidence_threshold: float = DEFAULT_CALLS.score_thresh
    nms_threshold: float = DEFAULT_CALLS.nms_thresh
    review_score: float = DEFAULT_CALLS.review_score
    review_margin: float = DEFAULT_CALLS.review_margin
    engine: str = "auto"
    config_file: str = ""  # recorded with the outputs: which model made them
    opts: List[str] = field(default_factory=list)
    # karyotype assignment; None = the default config's TEST.DEEPACC.ASSIGNMENT value (DEFAULT_ASSIGNMENT)
    assignment: Optional[bool] = None
    extra_copy_cost: Optional[float] = None
    allow_untrained: bool = False
    weights_sha256: Optional[str] = None  # of MODEL.WEIGHTS: a rerun with other weights redoes every image
    # INPUT.POLARITY of the run (the config's, or --polarity); None = not resolved (the predictor's own)
    polarity: Optional[str] = None


class SpreadResult(NamedTuple):
    """What :func:`postprocess` makes of one image's prediction (a tuple: ``calls, summary, overlay,
    karyogram, detections = postprocess(...)`` works)."""

    calls: Dict[str, np.ndarray]  # the calls (select_calls; after the assignment when it is on)
    summary: KaryotypeSummary  # the numerical summary with its review flags
    overlay: np.ndarray  # RGB: the image with the calls boxed
    karyogram: np.ndarray  # RGB: the karyogram in ISCN layout
    detections: List[dict]  # the JSON-ready calls


# --------------------------------------------------------------------------------------- one image
def _atomic_write(path: str, data: bytes) -> None:
    from ..fileio import atomic_write

    atomic_write(path, data)


def _png_bytes(rgb: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def _round(x, nd=4):
    return [round(float(v), nd) for v in np.asarray(x).reshape(-1)]


def postprocess(image: np.ndarray, prediction: Mapping, settings: PredictSettings = PredictSettings(),
                model_image: Optional[np.ndarray] = None) -> SpreadResult:
    """Calls, summary, overlay and karyogram of one image from the model's prediction.

    Returns :class:`SpreadResult` ``(calls, summary, overlay_rgb, karyogram_rgb, detections)`` where
    ``detections`` is the JSON-ready list of calls. The overlay is drawn on ``image``; what assumes
    dark chromosomes on a light background (the karyogram's cut-outs, the summary's look at the
    pixels) uses ``model_image``, the image the model saw after ``INPUT.POLARITY`` (default ``image``).
    """
    from ..karyotype.classes import CLASS_NAMES
    from .karyogram import render_karyogram
    from .overlay import draw_overlay
    from .summary import select_calls, summarize

    if "instances_top1" not in prediction:
        raise KeyError("the prediction has no 'instances_top1' (top-1 detections)")
    view = image if model_image is None else model_image
    calls = select_calls(prediction["instances_top1"], settings.confidence_threshold, settings.nms_threshold)
    assignment = resolve_assignment(settings)
    nuclei = None
    if assignment.enabled:
        from ..karyotype.assignment import assign_calls
        from .summary import oversized_calls

        # nuclei first: a call the summary will not count as a chromosome takes no copy in the
        # assignment (found once here, handed to the summary)
        boxes = calls.get("boxes")
        if boxes is not None and len(boxes):
            nuclei = oversized_calls(boxes, view)
        calls = assign_calls(calls, assignment.extra_copy_cost, exclude=None if nuclei is None else nuclei[0])
    summary = summarize(calls, review_score=settings.review_score, review_margin=settings.review_margin,
                        score_threshold=settings.confidence_threshold, assignment=assignment.as_dict(), image=view,
                        oversized=nuclei)
    overlay = draw_overlay(image, calls, uncertain=summary.uncertain,
                           excluded=[x["detection"] for x in summary.excluded],
                           clusters=[c["box"] for c in summary.clusters])
    karyogram = render_karyogram(view, calls, summary)
    unc = set(summary.uncertain)
    prob_names = list(CLASS_NAMES) + ["background"]
    detections = []
    for i in range(len(calls["scores"])):
        d = {
            "box": _round(calls["boxes"][i], 2),
            "class": CLASS_NAMES[int(calls["classes"][i])],
            "class_id": int(calls["classes"][i]),
            "score": round(float(calls["scores"][i]), 4),
            "uncertain": i in unc,
        }
        if "class_probs" in calls:
            p = _round(calls["class_probs"][i])
            d["class_probs"] = dict(zip(prob_names[: len(p)], p))
        if "relabelled" in calls:
            d["relabelled"] = bool(calls["relabelled"][i])
            d["model_class"] = CLASS_NAMES[int(calls["model_classes"][i])]
            d["model_class_prob"] = round(float(calls["model_class_prob"][i]), 4)
            d["class_prob"] = round(float(calls["assigned_class_prob"][i]), 4)
        detections.append(d)
    return SpreadResult(calls, summary, overlay, karyogram, detections)


def resolve_assignment(settings: PredictSettings):
    """The assignment settings of a run: the fields of ``settings``, the default config's values
    (:data:`deepacc.settings.DEFAULT_ASSIGNMENT`) for those left ``None``."""
    from ..karyotype.assignment import overridden
    from ..settings import DEFAULT_ASSIGNMENT

    return overridden(DEFAULT_ASSIGNMENT, settings.assignment, settings.extra_copy_cost)


def _outputs(output_dir: str, stem: str) -> Dict[str, str]:
    from .outputs import output_paths

    return output_paths(output_dir, stem)


def _load_done(output_dir: str, stem: str, path: str, settings: PredictSettings,
               sha: Optional[str] = None) -> Optional[dict]:
    """The record of an image already done from the same file (path and, when given, content hash
    ``sha``) with the same settings, else None."""
    from .outputs import read_record

    outs = _outputs(output_dir, stem)
    if not all(os.path.isfile(p) for p in outs.values()):
        return None
    rec, _ = read_record(output_dir, stem)
    if rec is None:
        return None
    if rec.get("file_name") != path or rec.get("settings") != asdict(settings):
        return None  # another input with the same name, or other thresholds: redo
    if sha is not None and rec.get("input_sha256") != sha:
        return None  # the file changed since (or a record without the hash): redo
    return rec


def process_image(
    path: str,
    get_predictor: Callable[[], Predictor],
    output_dir: str,
    stem: str,
    settings: PredictSettings = PredictSettings(),
    reader: Optional[Callable[[str], np.ndarray]] = None,
    overwrite: bool = False,
    log: Optional[Callable[[str], None]] = None,
) -> Tuple[dict, bool]:
    """Process one image; returns ``(record, skipped)``. Raises on any problem with this image.

    ``get_predictor()`` returns the predictor (built on first call, so a rerun that skips every
    image never loads the model). ``reader`` defaults to :func:`deepacc.data.images.read_image`.

    ``stem`` is the outputs' base name; when ``output_dir`` holds the outputs of another image (other
    content) under it, this image's are named ``<stem>-<first 8 hex of its SHA-256>`` and ``log`` says
    so (:func:`deepacc.clinical.outputs.resolve_stem`). The outputs are written under the folder's
    lock, so runs sharing the folder never take one name for two images.
    """
    from .outputs import folder_lock, input_sha256, resolve_stem

    base = stem
    if reader is None:
        from ..data.images import read_image as reader
    try:
        sha = input_sha256(path)
    except OSError:
        reader(path)  # names the problem (missing, unreadable file) as for any image it cannot read
        raise
    stem, _ = resolve_stem(output_dir, base, path, sha)
    if not overwrite:
        rec = _load_done(output_dir, stem, path, settings, sha)
        if rec is not None:
            return rec, True
    image = np.asarray(reader(path))
    if image.ndim == 3 and image.shape[2] in (3, 4):
        import cv2

        image = cv2.cvtColor(image[:, :, :3], cv2.COLOR_RGB2GRAY)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"{path}: expected an 8-bit grayscale image, got shape {image.shape} {image.dtype}")
    predictor = get_predictor()
    prediction = predictor(image)
    # INPUT.POLARITY is applied by the predictor; it reports what it detected and did (None: a predictor
    # that does not say). The overlay is drawn on the image as given; the karyogram and the summary
    # (which assume dark chromosomes on a light background) use the image the model saw.
    polarity = prediction.get("polarity")
    view = image
    if isinstance(polarity, Mapping) and polarity.get("inverted"):
        from ..data.polarity import invert_gray

        view = invert_gray(image)
    calls, summary, overlay, karyogram, detections = postprocess(image, prediction, settings, model_image=view)
    model = getattr(predictor, "weights_info", None)  # weights file, SHA-256, trained or not
    if model and model.get("status") != "trained":
        from .summary import ReviewFlag

        summary.flags.insert(0, ReviewFlag("untrained_model", f"NOT FROM A TRAINED MODEL: {model['problem']}"))
    with folder_lock(output_dir):  # the name is chosen again and the files written while no other run writes
        stem, other = resolve_stem(output_dir, base, path, sha)
        if other is not None and log is not None:
            log(f"NOTE {path}: {base}.json in {output_dir} holds the outputs of another image "
                f"({other.get('file_name') or 'a file that is not a deepacc-predict record'}); this image's outputs "
                f"are named {stem}.*")
        return _write_outputs(output_dir, stem, path, sha, image, summary, detections, prediction, settings,
                              model, polarity, overlay, karyogram), False


def _write_outputs(output_dir, stem, path, sha, image, summary, detections, prediction, settings, model, polarity,
                   overlay, karyogram) -> dict:
    """Write one image's overlay, karyogram and JSON record (in that order); returns the record."""
    outs = _outputs(output_dir, stem)
    rec = {
        "file_name": path,
        "input_sha256": sha,  # of the input file's bytes: which image these outputs were made from
        "name": os.path.basename(path),
        "height": int(image.shape[0]),
        "width": int(image.shape[1]),
        "review_note": summary.review_note,
        "summary": summary.to_dict(),
        "detections": detections,
        "num_raw_top1_detections": int(len(prediction["instances_top1"]["scores"])),
        "settings": asdict(settings),
        "model": model,
        "input_scale": prediction.get("input_scale"),  # the resize factor and what chose it
        "polarity": dict(polarity) if isinstance(polarity, Mapping) else None,  # detected, inverted or not
        "outputs": {k: os.path.basename(v) for k, v in outs.items()},
    }
    # Images first, JSON last: a complete JSON marks a finished image.
    _atomic_write(outs["overlay"], _png_bytes(overlay))
    _atomic_write(outs["karyogram"], _png_bytes(karyogram))
    _atomic_write(outs["json"], json.dumps(rec, indent=1).encode("utf-8"))
    return rec


# ------------------------------------------------------------------------------------- the folder
def _write_csv(path: str, records: Sequence[dict], failures: Sequence[Tuple[str, str]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["file", "karyotype", "count", "sex_chromosomes", "needs_review", "flags", "error"])
    for r in records:
        s = r["summary"]
        w.writerow([r["file_name"], s["karyotype"], s["count"], s["sex_chromosomes"], int(bool(s["needs_review"])),
                    " | ".join(f["message"] for f in s["flags"]), ""])
    for f, why in failures:
        w.writerow([f, "", "", "", "", "", why])
    _atomic_write(path, buf.getvalue().encode("utf-8"))


class OutputWriteError(OSError):
    """A folder-wide output (``karyotypes.csv``, ``report.html``, the folder's lock) cannot be
    written, e.g. it is a symbolic link (refused): stops the run (exit status 2)."""

    def __str__(self) -> str:
        return str(self.args[0])


def write_folder_summary(output_dir: str, failures: Sequence[Tuple[str, str]] = (), report: bool = False,
                         embed_images: bool = False) -> Optional[str]:
    """Rebuild ``karyotypes.csv`` (and with ``report``, ``report.html``) from every record in
    ``output_dir`` (:func:`deepacc.clinical.outputs.load_records`, sorted by file name), plus the
    rows of ``failures``, under the folder's lock: runs sharing the folder each write a complete
    list, and the last to finish lists every image. Returns the report's path (``None`` without)."""
    from .outputs import folder_lock, load_records

    try:
        with folder_lock(output_dir):
            records = load_records(output_dir)
            _write_csv(os.path.join(output_dir, "karyotypes.csv"), records, failures)
            if not report:
                return None
            from .report import write_report

            return write_report(records, output_dir, failures=failures, embed_images=embed_images)
    except UnsafeOutputError:  # a link at karyotypes.csv / report.html: named by deepacc.fileio
        raise
    except OSError as e:
        raise OutputWriteError(f"cannot write the outputs of the folder {output_dir}: {e}") from e
