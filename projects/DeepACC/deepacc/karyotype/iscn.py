"""Numerical karyotypes (ISCN 2020, numerical part): the one place that reads and writes them.

Layout: ``<count>,<sex chromosomes>[,<gains/losses>]``

* ``count``: the number of chromosomes;
* ``sex chromosomes``: every X, then every Y (``XX``, ``XY``, ``X``, ``XXY``, ``XYY`` ...);
* gains and losses of autosomes in numeric order of the chromosome, ``+N`` for each copy above
  two and ``-N`` for each copy below two (``48,XY,+21,+21``; ``44,XX,-7,-7``).

Examples: ``46,XY``; ``47,XY,+21``; ``45,X``; ``47,XXY``; ``45,XX,-21``.

A set with no sex chromosome at all (only possible through missed detections) gets ``--`` as its
sex field (``44,--``; ISCN has no notation for it). An empty set (a spread on which no chromosome
was called) has no numerical karyotype: it gets the marker :data:`NO_CHROMOSOMES` instead of ``0,--``
followed by the loss of every autosome twice. A set with only a few chromosomes still lists every
missing autosome (``3,X,-1,-1,-2,-2,...``): long, but a correct numerical description.

Two readers share one tokenizer: :func:`parse_karyotype` (strict: per-class copy numbers, for
datasets and the synthetic generator) and :func:`normalize_karyotype` (lenient: keeps the numerical
part of any ISCN string, for comparing karyotypes). One writer, :func:`numerical_karyotype`.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Dict, Iterable, List, Mapping, Tuple, Union

from .classes import CLASS_NAMES, canonical_name

__all__ = ["NO_CHROMOSOMES", "numerical_karyotype", "format_karyotype", "parse_karyotype", "normalize_karyotype"]

#: The karyotype string of an empty set of chromosomes (no chromosome called on a spread).
NO_CHROMOSOMES = "no chromosomes called"
_NO_SEX = "--"
_AUTOSOMES = CLASS_NAMES[:22]
_CHANGE = re.compile(r"^([+-])(\w+)$")
_SEX = re.compile(r"^[XY]+$|^--$")


def _name_of(c) -> str:
    """Class name of a contiguous index (0..23, order 1..22, X, Y) or of a name (aliases accepted)."""
    if isinstance(c, str):
        try:
            return canonical_name(c)
        except KeyError as e:
            raise ValueError(e.args[0]) from None
    try:
        idx = int(c)
    except (TypeError, ValueError):
        raise ValueError(f"chromosome class {c!r} is neither an index 0..23 nor a class name") from None
    if idx != c or not 0 <= idx < len(CLASS_NAMES):
        raise ValueError(f"chromosome class index {c!r} out of range: expected an integer 0..23 (1..22, X, Y)")
    return CLASS_NAMES[idx]


def numerical_karyotype(classes: Iterable[Union[int, str]]) -> str:
    """ISCN-style numerical karyotype of a set of chromosomes.

    Args:
        classes: one entry per chromosome: a contiguous class index ``0..23`` (order 1..22, X, Y)
            or a class name (``'7'``, ``'X'``, ``'chr7'``). numpy integers are accepted.

    Returns:
        e.g. ``"46,XY"``, ``"47,XY,+21"``, ``"45,X"``; ``"<n>,--"`` when no sex chromosome is present;
        :data:`NO_CHROMOSOMES` when ``classes`` is empty.

    Raises:
        ValueError: for an index outside 0..23 or an unknown name.
    """
    names = [_name_of(c) for c in classes]
    if not names:
        return NO_CHROMOSOMES
    counts = Counter(names)
    parts: List[str] = [str(len(names)), "X" * counts["X"] + "Y" * counts["Y"] or _NO_SEX]
    for n in _AUTOSOMES:
        k = counts[n]
        parts.extend([f"+{n}"] * (k - 2) if k > 2 else [f"-{n}"] * (2 - k))
    return ",".join(parts)


def format_karyotype(counts: Mapping[str, int]) -> str:
    """:func:`numerical_karyotype` of per-class copy numbers (the inverse of :func:`parse_karyotype`)."""
    names: List[str] = []
    for k, v in counts.items():
        if int(v) < 0:
            raise ValueError(f"negative count {v} for chromosome {k!r}")
        names.extend([_name_of(str(k))] * int(v))
    return numerical_karyotype(names)


def _tokens(text: str) -> Tuple[int, str, List[str]]:
    """``(count, sex field, remaining tokens)`` of an ISCN string; blanks ignored, sex upper-cased."""
    tokens = [t for t in re.sub(r"\s+", "", str(text)).split(",") if t]
    if len(tokens) < 2 or not tokens[0].isdigit() or not _SEX.match(tokens[1].upper()):
        raise ValueError(f"karyotype {text!r} is not an ISCN string of the form '<count>,<sex chromosomes>[,...]' "
                         "such as '47,XY,+21'")
    return int(tokens[0]), tokens[1].upper(), tokens[2:]


def parse_karyotype(text: str) -> Dict[str, int]:
    """Per-class copy numbers of a numerical karyotype string (all 24 class names; absent ones 0).

    Raises ``ValueError`` for a malformed string, a token other than a whole-chromosome gain or
    loss (``+N``/``-N``), a negative copy number, or a count that disagrees with the changes.
    """
    total, sex, changes = _tokens(text)
    if sex == _NO_SEX:
        raise ValueError(f"karyotype {text!r}: sex chromosomes must be letters X/Y (e.g. XX, XY, X, XXY)")
    counts: Counter = Counter({n: 2 for n in _AUTOSOMES})
    counts.update(sex)
    for tok in changes:
        m = _CHANGE.match(tok)
        if not m:
            raise ValueError(f"karyotype {text!r}: cannot parse {tok!r} (only numerical changes +N / -N are supported)")
        try:
            name = canonical_name(m.group(2))
        except KeyError:
            raise ValueError(f"karyotype {text!r}: unknown chromosome {m.group(2)!r}") from None
        counts[name] += 1 if m.group(1) == "+" else -1
        if counts[name] < 0:
            raise ValueError(f"karyotype {text!r}: negative copy number for chromosome {name}")
    n = sum(counts.values())
    if n != total:
        raise ValueError(f"karyotype {text!r}: states {total} chromosomes but describes {n}")
    return {name: int(counts[name]) for name in CLASS_NAMES}


def normalize_karyotype(karyotype: str) -> str:
    """Numerical part of an ISCN string, in the layout of :func:`numerical_karyotype`.

    Keeps the chromosome count, the sex chromosomes and the whole-autosome gains and losses
    (``+N``/``-N``, re-ordered numerically); drops everything else (structural aberrations such as
    ``t(9;22)(q34;q11)``; mosaic separators are not supported). Blanks are ignored and the sex field
    is upper-cased, so ``" 47, xy, +21"`` becomes ``"47,XY,+21"``. :data:`NO_CHROMOSOMES` (any case,
    surrounding blanks ignored) is returned as it is.

    Raises:
        ValueError: when the string does not start with a chromosome count and a sex field.
    """
    if " ".join(str(karyotype).split()).lower() == NO_CHROMOSOMES:
        return NO_CHROMOSOMES
    total, sex, tokens = _tokens(karyotype)
    if sex != _NO_SEX:
        sex = "".join(sorted(sex, key=lambda ch: (ch != "X", ch)))
    changes = []
    for t in tokens:
        m = _CHANGE.match(t)
        if m and m.group(2).isdigit() and len(m.group(2)) <= 2 and 1 <= int(m.group(2)) <= 22:
            changes.append((int(m.group(2)), m.group(1)))
    changes.sort(key=lambda x: x[0])  # numeric order; within one chromosome the original order (stable)
    return ",".join([str(total), sex] + [f"{s}{n}" for n, s in changes])
