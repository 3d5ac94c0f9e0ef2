"""Karyotype facts (class names, Denver groups) and clinical outputs.

The facts are imported eagerly (they are light); the clinical outputs (summary, karyogram,
overlay, report) load their modules, with OpenCV, on first use.
"""
from importlib import import_module

from .classes import (  # noqa: F401
    ACROCENTRIC,
    BACKGROUND,
    CLASS_NAMES,
    DENVER_GROUPS,
    GROUP_OF,
    NUM_CLASSES,
    SEX_CHROMOSOMES,
    adjacency_matrix,
    canonical_name,
    class_index,
    group_index_tensor,
    group_of,
)

_LAZY = {
    "select_calls": "summary", "summarize": "summary", "format_summary_text": "summary",
    "KaryotypeSummary": "summary", "REVIEW_NOTE": "summary",
    "render_karyogram": "karyogram", "extract_chromosome": "karyogram", "ISCN_ROWS": "karyogram",
    "draw_overlay": "overlay", "GROUP_COLORS": "overlay",
    "write_report": "report",
    "assign_classes": "assignment", "assign_calls": "assignment",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
