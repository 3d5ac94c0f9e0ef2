"""Clinical outputs of the calls of one spread, built on the karyotype facts (:mod:`deepacc.karyotype`):
the numerical summary with review flags (:mod:`.summary`), the karyogram (:mod:`.karyogram`), the
overlay of the calls on the image (:mod:`.overlay`) and the HTML report (:mod:`.report`); the pipeline
that makes them from a model's prediction, as ``deepacc-predict`` does (:mod:`.pipeline`).

The names below load their modules, with OpenCV, on first use.
"""
from importlib import import_module

_LAZY = {
    "select_calls": "summary", "summarize": "summary", "format_summary_text": "summary",
    "KaryotypeSummary": "summary", "REVIEW_NOTE": "summary", "KARYOTYPE_NOT_DETERMINED": "summary",
    "overlap_clusters": "summary", "oversized_calls": "summary",
    "render_karyogram": "karyogram", "extract_chromosome": "karyogram", "ISCN_ROWS": "karyogram",
    "karyogram_title": "karyogram",
    "draw_overlay": "overlay",
    "write_report": "report",
    "PredictSettings": "pipeline", "SpreadResult": "pipeline", "postprocess": "pipeline", "process_image": "pipeline",
    "write_folder_summary": "pipeline",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
