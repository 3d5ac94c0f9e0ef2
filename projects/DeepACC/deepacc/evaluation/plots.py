"""Confusion-matrix files: CSV (class order of the evaluator) and PNG (Denver-group order).

Uses matplotlib's object-oriented API with the Agg canvas, so importing this never changes the
user's pyplot backend.
"""
from __future__ import annotations

import csv
import io
from typing import Optional, Sequence

import numpy as np

__all__ = ["save_confusion_csv", "save_confusion_png"]


def save_confusion_csv(matrix: np.ndarray, class_names: Sequence[str], path: str) -> None:
    """Rows = true class, columns = predicted class, first row/column = class names."""
    from ..fileio import atomic_write

    f = io.StringIO(newline="")
    w = csv.writer(f)
    w.writerow(["true\\pred"] + [str(n) for n in class_names])
    for name, row in zip(class_names, np.asarray(matrix).tolist()):
        w.writerow([str(name)] + [int(v) for v in row])
    atomic_write(path, f.getvalue().encode("utf-8"))


def save_confusion_png(
    matrix: np.ndarray,
    class_names: Sequence[str],
    path: str,
    groups: Optional[Sequence[str]] = None,
    title: str = "Confusion of matched chromosomes",
) -> None:
    """Heat map of the row-normalised confusion (counts written in the non-empty cells).

    With ``groups`` (Denver group letter per class), the classes are shown grouped
    (A 1-3 | B 4-5 | C 6-12, X | D 13-15 | E 16-18 | F 19-20 | G 21-22, Y) and the group
    boundaries are drawn.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    m = np.asarray(matrix, dtype=np.float64)
    k = len(class_names)
    order = list(range(k))
    if groups is not None:
        order = sorted(range(k), key=lambda i: (groups[i], i))
    m = m[np.ix_(order, order)]
    names = [str(class_names[i]) for i in order]
    rows = m.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = np.where(rows > 0, m / rows, 0.0)

    fig = Figure(figsize=(11, 10), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels(names, fontsize=9)
    ax.set_yticklabels(names, fontsize=9)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    for i in range(k):
        for j in range(k):
            if m[i, j] > 0:
                ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=6,
                        color="white" if norm[i, j] > 0.5 else "black")
    if groups is not None:
        g = [groups[i] for i in order]
        start = 0
        for i in range(1, k + 1):
            if i == k or g[i] != g[start]:
                if i < k:
                    ax.axhline(i - 0.5, color="red", linewidth=1.0)
                    ax.axvline(i - 0.5, color="red", linewidth=1.0)
                ax.text((start + i - 1) / 2.0, -1.0, g[start], ha="center", va="bottom",
                        fontsize=10, color="red", fontweight="bold")
                start = i
    ax.set_title(title + (" (Denver groups in red)" if groups is not None else ""), pad=22)
    fig.tight_layout()
    from ..fileio import save_figure

    save_figure(fig, path)  # creates the folder
