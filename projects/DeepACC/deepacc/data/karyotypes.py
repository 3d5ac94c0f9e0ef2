"""Numerical karyotype strings (ISCN subset) <-> per-class chromosome counts.

Supported: ``"46,XX"``, ``"46,XY"``, ``"47,XY,+21"``, ``"45,X"``, ``"47,XXY"``, ``"45,XY,-21"``,
``"48,XY,+13,+21"``. Structural rearrangements (``t(9;22)``, ``der(5)``, ...) are kept verbatim in
strings read from datasets but are not understood by :func:`parse_karyotype`.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Dict, Mapping

from ..karyotype import CLASS_NAMES, canonical_name

__all__ = ["parse_karyotype", "format_karyotype", "normalize_iscn"]


def normalize_iscn(text: str) -> str:
    """Remove blanks: ``"45, XY, -2"`` -> ``"45,XY,-2"``."""
    return re.sub(r"\s+", "", str(text))


def parse_karyotype(text: str) -> Dict[str, int]:
    """Per-class copy numbers of a numerical karyotype string.

    Returns a dict over all 24 class names (absent classes have 0). Raises ``ValueError`` when the
    string is malformed or when the stated chromosome count disagrees with the gains/losses.
    """
    s = normalize_iscn(text)
    parts = s.split(",")
    if len(parts) < 2 or not parts[0].isdigit():
        raise ValueError(f"karyotype {text!r}: expected '<count>,<sex chromosomes>[,+N|-N...]' such as '47,XY,+21'")
    total = int(parts[0])
    sex = parts[1].upper()
    if not sex or any(c not in "XY" for c in sex):
        raise ValueError(f"karyotype {text!r}: sex chromosomes {parts[1]!r} must be letters X/Y (e.g. XX, XY, X, XXY)")
    counts: Counter = Counter({n: 2 for n in CLASS_NAMES[:22]})
    for c in sex:
        counts[c] += 1
    for tok in parts[2:]:
        m = re.fullmatch(r"([+-])(\w+)", tok)
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


def format_karyotype(counts: Mapping[str, int]) -> str:
    """ISCN-style string from per-class counts (inverse of :func:`parse_karyotype`).

    Delegates to :func:`deepacc.evaluation.karyotype_string.numerical_karyotype`, the project's
    single implementation of the string layout.
    """
    from ..evaluation.karyotype_string import numerical_karyotype

    names = []
    for k, v in counts.items():
        if int(v) < 0:
            raise ValueError(f"negative count {v} for chromosome {k!r}")
        names.extend([canonical_name(k)] * int(v))
    return numerical_karyotype(names)
