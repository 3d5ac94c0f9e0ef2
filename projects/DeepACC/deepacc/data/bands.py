"""Ideogram facts shipped with the package: hg38 cytogenetic bands of chromosomes 1..22, X, Y.

The table ``deepacc/resources/cytobands_hg38.tsv`` is derived from the UCSC Genome Browser hg38
cytoBand table by ``datasets/make_band_table.py``.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np

from ..karyotype import CLASS_NAMES

__all__ = ["Ideogram", "load_ideograms", "BAND_TABLE", "STAIN_DARKNESS"]

BAND_TABLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "resources", "cytobands_hg38.tsv")

#: Relative G-band darkness (0 = pale, 1 = darkest) of each stain class.
STAIN_DARKNESS: Dict[str, float] = {
    "gneg": 0.0, "gpos25": 0.3, "gpos50": 0.55, "gpos75": 0.8, "gpos100": 1.0,
    "acen": 0.45, "gvar": 0.85, "stalk": 0.1,
}


@dataclass(frozen=True)
class Ideogram:
    """Band layout of one chromosome (fractions of its length, p-arm first)."""

    name: str
    length_bp: int
    starts: np.ndarray  # (B,) float
    ends: np.ndarray  # (B,) float
    stains: Tuple[str, ...]
    darkness: np.ndarray  # (B,) float, STAIN_DARKNESS of each band
    centromere: float  # fraction: boundary between the two acen bands (p/q)
    stalks: Tuple[Tuple[float, float], ...]  # stalk (satellite) regions, fractions

    def darkness_at(self, frac: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(self.ends, np.clip(frac, 0.0, 1.0), side="right")
        return self.darkness[np.minimum(idx, len(self.ends) - 1)]


@functools.lru_cache(maxsize=None)
def load_ideograms(path: str = BAND_TABLE) -> Dict[str, Ideogram]:
    """Read the shipped band table into one :class:`Ideogram` per class name."""
    rows: Dict[str, list] = {n: [] for n in CLASS_NAMES}
    lengths: Dict[str, int] = {}
    with open(path, "r", encoding="utf-8") as f:
        for line in f:
            if line.startswith("#") or line.startswith("chrom\t") or not line.strip():
                continue
            chrom, length, band, s, e, stain = line.rstrip("\n").split("\t")
            if stain not in STAIN_DARKNESS:
                raise ValueError(f"{path}: unknown stain {stain!r} for {chrom} {band}")
            rows[chrom].append((float(s), float(e), band, stain))
            lengths[chrom] = int(length)
    out = {}
    for name in CLASS_NAMES:
        r = sorted(rows[name])
        if not r:
            raise ValueError(f"{path}: no bands for chromosome {name}")
        stains = tuple(x[3] for x in r)
        acen = [x for x in r if x[3] == "acen"]
        cen = acen[0][1] if acen else 0.5  # end of the p-arm acen band
        out[name] = Ideogram(
            name=name, length_bp=lengths[name],
            starts=np.array([x[0] for x in r]), ends=np.array([x[1] for x in r]),
            stains=stains, darkness=np.array([STAIN_DARKNESS[s] for s in stains]),
            centromere=float(cen), stalks=tuple((x[0], x[1]) for x in r if x[3] == "stalk"),
        )
    return out
