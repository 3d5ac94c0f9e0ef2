"""Karyotype-consistent class assignment of one spread's calls (ours, beyond the paper).

The paper uses the pairing of chromosomes only softly (the siamese branch swaps in a local class
centre); at inference every call takes its own argmax. Here the labels of all calls of a spread are
chosen **jointly**, from the per-call class probabilities the model already outputs, under a
copy-number prior:

* every class has free copies: **2** for each autosome and for X, **1** for Y;
* each copy beyond them costs ``extra_copy_cost`` (a log-probability penalty, the same for every
  class), so a trisomy, 47,XXY or 47,XYY stays possible when the evidence outweighs the cost;
* a missing copy costs nothing: losses (45,X; 45,XY,-7) and chromosomes the detector did not find
  never force a relabelling.

The labels maximise ``sum_i log p_i(label_i) - extra_copy_cost * #extra copies``: an exact
min-cost assignment of calls to *class slots* (columns: the free copies of each class at cost 0,
then extra copies at ``extra_copy_cost``), solved with the Hungarian algorithm
(:func:`scipy.optimize.linear_sum_assignment`). With ``extra_copy_cost = 0`` it is the argmax; as it
grows, two calls with the same label and a class with a free copy next in their probability
vectors are resolved toward the pair (e.g. two 4s and no 5 -> one 4 and one 5 when the second
call's probability of 5 is not much lower than that of 4).

Input is the top-1 call set after the clinical filter (``select_calls``); the calls keep their
boxes and detection scores; only the class changes. :func:`assign_calls` returns the original
class and both probabilities so a relabelled call stays visible for review.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from ..settings import AssignmentSettings  # defined with the other frozen settings; importable from here
from .classes import CLASS_NAMES, canonical_name

__all__ = ["free_copies", "assign_classes", "assign_calls", "AssignmentSettings", "assignment_settings", "overridden"]

#: Probabilities are floored here before the logarithm (a class the model rules out costs ~27.6).
PROB_FLOOR = 1e-12


def free_copies(class_names: Sequence[str] = CLASS_NAMES) -> np.ndarray:
    """Copies of each class that cost nothing: 2 per autosome and for X, 1 for Y."""
    out = []
    for n in class_names:
        try:
            c = canonical_name(n)
        except KeyError:
            raise ValueError(f"karyotype assignment needs chromosome class names (1..22, X, Y); got {n!r}") from None
        out.append(1 if c == "Y" else 2)
    return np.asarray(out, dtype=np.int64)


def assign_classes(class_probs, extra_copy_cost: float, class_names: Sequence[str] = CLASS_NAMES) -> np.ndarray:
    """Jointly optimal class (0..K-1) of each call of one spread.

    Args:
        class_probs: ``(N, K)`` or ``(N, K+1)`` probabilities (a last background column is dropped;
            rows need not sum to 1: only ratios within a row matter).
        extra_copy_cost: penalty per copy beyond the free ones (``>= 0``; ``inf`` forbids extra
            copies as long as the free slots suffice for all calls).
        class_names: names of the K columns (for the free-copy counts).
    Returns:
        ``(N,)`` int64 labels maximising ``sum log p - extra_copy_cost * #extra copies``.
    """
    from scipy.optimize import linear_sum_assignment

    free = free_copies(class_names)
    k = len(free)
    p = np.asarray(class_probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] not in (k, k + 1):
        raise ValueError(f"class_probs must be (N, {k}) or (N, {k + 1}); got shape {p.shape}")
    p = p[:, :k]
    n = p.shape[0]
    if n == 0:
        return np.zeros((0,), dtype=np.int64)
    cost = float(extra_copy_cost)
    if not cost >= 0:  # also rejects NaN
        raise ValueError(f"extra_copy_cost must be >= 0 (got {extra_copy_cost})")
    if not np.isfinite(p).all():
        raise ValueError("class_probs contain NaN or infinite values")
    nll = -np.log(np.clip(p, PROB_FLOOR, None))
    if cost == 0.0:
        return nll.argmin(axis=1).astype(np.int64)
    # columns: the free slots of every class, then extra slots; a class never needs more extra slots
    # than there are calls beyond its free copies, and all extra slots of a class cost the same.
    n_extra = max(0, n - 1) if np.isfinite(cost) else 0
    slots = np.concatenate([np.repeat(np.arange(k), free), np.repeat(np.arange(k), n_extra)])
    penalty = np.concatenate([np.zeros(int(free.sum())), np.full(k * n_extra, cost if np.isfinite(cost) else 0.0)])
    if len(slots) < n:  # inf cost and more calls than free slots: allow extras at a huge cost
        extra = int(np.ceil((n - len(slots)) / k))
        slots = np.concatenate([slots, np.repeat(np.arange(k), extra)])
        penalty = np.concatenate([penalty, np.full(k * extra, 1e6)])
    matrix = nll[:, slots] + penalty[None, :]
    rows, cols = linear_sum_assignment(matrix)
    labels = np.empty(n, dtype=np.int64)
    labels[rows] = slots[cols]
    return labels


def assign_calls(calls: Mapping[str, object], extra_copy_cost: float,
                 class_names: Sequence[str] = CLASS_NAMES, exclude=None) -> Dict[str, np.ndarray]:
    """The calls of one spread (``select_calls`` output, with ``class_probs``) with assigned classes.

    Returns a copy of ``calls`` whose ``classes`` are the assigned ones, plus ``model_classes`` (the
    model's argmax), ``model_class_prob`` and ``assigned_class_prob`` (each call's probability of
    either class) and ``relabelled`` (bool). Boxes and detection scores are unchanged.

    ``exclude``: an optional boolean (N,) mask of calls that are not chromosomes of this spread
    (e.g. interphase nuclei, :func:`deepacc.clinical.summary.oversized_calls`): they keep the model's
    class and take no place in the assignment, so they cannot push a chromosome to another class.
    """
    if "class_probs" not in calls or calls["class_probs"] is None:
        raise ValueError("karyotype assignment needs the calls' class_probs (N, K+1)")
    probs = np.asarray(_np(calls["class_probs"]), dtype=np.float64)
    model = np.asarray(_np(calls["classes"])).astype(np.int64).reshape(-1)
    probs = probs.reshape(len(model), -1) if len(model) else np.zeros((0, len(class_names) + 1))
    if exclude is not None and np.asarray(exclude, bool).any():
        keep = ~np.asarray(exclude, bool).reshape(-1)
        labels = model.copy()
        labels[keep] = assign_classes(probs[keep], extra_copy_cost, class_names)
    else:
        labels = assign_classes(probs, extra_copy_cost, class_names)
    out = {key: _np(v) for key, v in calls.items()}
    rows = np.arange(len(model))
    out["model_classes"] = model
    out["classes"] = labels
    out["model_class_prob"] = probs[rows, model] if len(model) else np.zeros(0)
    out["assigned_class_prob"] = probs[rows, labels] if len(model) else np.zeros(0)
    out["relabelled"] = labels != model
    return out


def _np(x):
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x) if not isinstance(x, np.ndarray) else x


def assignment_settings(cfg, enabled: Optional[bool] = None, extra_copy_cost: Optional[float] = None
                        ) -> AssignmentSettings:
    """The assignment settings of a config (``TEST.DEEPACC.ASSIGNMENT``), optionally overridden
    (:class:`deepacc.settings.AssignmentSettings`, frozen)."""
    node = cfg.TEST.DEEPACC.ASSIGNMENT
    on = bool(node.ENABLED) if enabled is None else bool(enabled)
    cost = float(node.EXTRA_COPY_COST) if extra_copy_cost is None else float(extra_copy_cost)
    return _checked(on, cost)


def overridden(base: AssignmentSettings, enabled: Optional[bool] = None, extra_copy_cost: Optional[float] = None
               ) -> AssignmentSettings:
    """``base`` (e.g. :data:`deepacc.settings.DEFAULT_ASSIGNMENT`) with ``enabled`` /
    ``extra_copy_cost`` replaced where given, checked as :func:`assignment_settings` checks them."""
    on = bool(base.enabled) if enabled is None else bool(enabled)
    cost = float(base.extra_copy_cost) if extra_copy_cost is None else float(extra_copy_cost)
    return _checked(on, cost)


def _checked(on: bool, cost: float) -> AssignmentSettings:
    if not cost >= 0:
        raise ValueError(f"TEST.DEEPACC.ASSIGNMENT.EXTRA_COPY_COST must be >= 0 (got {cost})")
    return AssignmentSettings(on, cost)
