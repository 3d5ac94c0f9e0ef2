"""Numerical karyotype strings (ISCN style) from a list of chromosome classes.

This module is the single implementation of the numerical karyotype string in DeepACC; the
clinical summary, the evaluator and the tools import it from here. It depends on nothing but
the Python standard library.

Layout (ISCN 2020, numerical part only): ``<count>,<sex chromosomes>[,<gains/losses>]``

* ``count``: the number of chromosomes;
* ``sex chromosomes``: every X, then every Y (``XX``, ``XY``, ``X``, ``XXY``, ``XYY`` ...);
* gains and losses of autosomes in numeric order of the chromosome, ``+N`` for each copy above
  two and ``-N`` for each copy below two (``48,XY,+21,+21``; ``44,XX,-7,-7``).

Examples: ``46,XY``; ``47,XY,+21``; ``45,X``; ``47,XXY``; ``45,XX,-21``.

A set with no sex chromosome at all (only possible through missed detections) gets ``--`` as
its sex field (``44,--``; ISCN has no notation for it), the same rendering as
``deepacc.data.karyotypes.format_karyotype``.

An empty set (a spread on which no chromosome was called) has no numerical karyotype: it gets the
plain marker :data:`NO_CHROMOSOMES`, ``"no chromosomes called"``, instead of ``0,--`` followed by
the loss of every autosome twice. A set with only a few chromosomes still lists every missing
autosome (``3,X,-1,-1,-2,-2,...``): long, but a correct numerical description.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Iterable, List, Union

__all__ = ["numerical_karyotype", "normalize_karyotype", "KARYOTYPE_CLASS_NAMES", "NO_CHROMOSOMES"]

#: Class order of the integer indices accepted by :func:`numerical_karyotype` (same as
#: ``deepacc.karyotype.CLASS_NAMES``, repeated here so this module stays dependency-free).
KARYOTYPE_CLASS_NAMES = tuple([str(i) for i in range(1, 23)] + ["X", "Y"])
_NO_SEX = "--"
#: The karyotype string of an empty set of chromosomes (no chromosome called on a spread).
NO_CHROMOSOMES = "no chromosomes called"


def _name_of(c) -> str:
    """Canonical class name of an index (0..23) or of a name ('1'..'22', 'X', 'Y', 'chr7', ...)."""
    if isinstance(c, str):
        key = c.strip().upper()
        if key.startswith("CHR"):
            key = key[3:].lstrip("_ -")
        if key in KARYOTYPE_CLASS_NAMES:
            return key
        raise ValueError(f"unknown chromosome class name {c!r}: expected 1..22, X or Y")
    try:
        idx = int(c)
    except (TypeError, ValueError):
        raise ValueError(f"chromosome class {c!r} is neither an index 0..23 nor a class name") from None
    if idx != c or not 0 <= idx < len(KARYOTYPE_CLASS_NAMES):
        raise ValueError(f"chromosome class index {c!r} out of range: expected an integer 0..23 (1..22, X, Y)")
    return KARYOTYPE_CLASS_NAMES[idx]


def numerical_karyotype(classes: Iterable[Union[int, str]]) -> str:
    """ISCN-style numerical karyotype of a set of chromosomes.

    Args:
        classes: one entry per chromosome: a contiguous class index ``0..23`` (order 1..22, X, Y)
            or a class name (``'7'``, ``'X'``, ``'chr7'``). numpy integers are accepted.

    Returns:
        e.g. ``"46,XY"``, ``"47,XY,+21"``, ``"45,X"``, ``"47,XXY"``, ``"45,XX,-7"``; ``"<n>,--"``
        when no sex chromosome is present; :data:`NO_CHROMOSOMES` (``"no chromosomes called"``)
        when ``classes`` is empty.

    Raises:
        ValueError: for an index outside 0..23 or an unknown name.
    """
    names = [_name_of(c) for c in classes]
    if not names:
        return NO_CHROMOSOMES
    counts = Counter(names)
    sex = "X" * counts.get("X", 0) + "Y" * counts.get("Y", 0)
    parts: List[str] = [str(len(names)), sex or _NO_SEX]
    for n in range(1, 23):
        k = counts.get(str(n), 0)
        if k > 2:
            parts.extend([f"+{n}"] * (k - 2))
        elif k < 2:
            parts.extend([f"-{n}"] * (2 - k))
    return ",".join(parts)


_GAIN_LOSS = re.compile(r"^([+-])(\d{1,2})$")
_SEX = re.compile(r"^[XY]+$|^--$")


def normalize_karyotype(karyotype: str) -> str:
    """Numerical part of an ISCN string, in the layout of :func:`numerical_karyotype`.

    Keeps the chromosome count, the sex chromosomes and the whole-autosome gains and losses
    (``+N``/``-N``, re-ordered numerically); drops everything else (structural aberrations such
    as ``t(9;22)(q34;q11)``, mosaic separators are not supported). Spaces are ignored and the
    sex field is upper-cased, so ``" 47, xy, +21"`` becomes ``"47,XY,+21"``. The marker of an empty
    set, :data:`NO_CHROMOSOMES` (any case, surrounding blanks ignored), is returned as it is.

    Raises:
        ValueError: when the string does not start with a chromosome count and a sex field.
    """
    if " ".join(str(karyotype).split()).lower() == NO_CHROMOSOMES:
        return NO_CHROMOSOMES
    tokens = [t.strip() for t in str(karyotype).replace(" ", "").split(",") if t.strip()]
    if len(tokens) < 2 or not tokens[0].isdigit() or not _SEX.match(tokens[1].upper()):
        raise ValueError(
            f"karyotype {karyotype!r} is not an ISCN string of the form '<count>,<sex chromosomes>[,...]'"
        )
    sex = tokens[1].upper()
    if sex != _NO_SEX:
        sex = "".join(sorted(sex, key=lambda ch: (ch != "X", ch)))
    changes = []
    for t in tokens[2:]:
        m = _GAIN_LOSS.match(t)
        if m and 1 <= int(m.group(2)) <= 22:
            changes.append((int(m.group(2)), m.group(1)))
    # numeric order of the chromosome; within one chromosome the original order (stable sort)
    changes.sort(key=lambda x: x[0])
    return ",".join([tokens[0], sex] + [f"{s}{n}" for n, s in changes])
