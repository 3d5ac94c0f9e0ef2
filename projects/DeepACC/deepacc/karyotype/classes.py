"""Karyotype facts shared by every part of DeepACC.

Foreground classes are contiguous indices ``0..K-1`` in the order 1..22, X, Y (``K = 24``);
background is index ``K`` (Detectron2's convention). Class -> Denver group is looked up by
**name**, never by position, so a dataset that orders its categories differently still gets
the right groups.

Denver groups (Lejeune et al. 1960; Schmid et al. 1963), as listed in the DeepACC paper §2.4:
A 1-3, B 4-5, C 6-12 + X, D 13-15, E 16-18, F 19-20, G 21-22 + Y.
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

#: The 24 chromosome classes, in the contiguous index order used everywhere in the core.
CLASS_NAMES: Tuple[str, ...] = tuple([str(i) for i in range(1, 23)] + ["X", "Y"])
NUM_CLASSES: int = len(CLASS_NAMES)
#: Background index in the core's ``K + 1`` logits.
BACKGROUND: int = NUM_CLASSES
#: A chromosome whose identity is not annotated (class-agnostic ground truth: a LabelMe polygon
#: labelled ``chr``, a BioImLab spread). Its core index is ``K + 1``, outside the logits: it says
#: "one of the ``K`` foreground classes, which one unknown". In COCO files its category is named
#: :data:`AGNOSTIC_NAME`; :func:`is_agnostic_name` accepts the usual spellings.
AGNOSTIC: int = NUM_CLASSES + 1
AGNOSTIC_NAME: str = "chromosome"
_AGNOSTIC_ALIASES = frozenset({"chromosome", "chromosomes", "chr", "chrom", "chromo", "object"})

#: Denver group of each class, keyed by class name.
DENVER_GROUPS: Dict[str, Tuple[str, ...]] = {
    "A": ("1", "2", "3"),
    "B": ("4", "5"),
    "C": ("6", "7", "8", "9", "10", "11", "12", "X"),
    "D": ("13", "14", "15"),
    "E": ("16", "17", "18"),
    "F": ("19", "20"),
    "G": ("21", "22", "Y"),
}
GROUP_OF: Dict[str, str] = {name: g for g, names in DENVER_GROUPS.items() for name in names}
SEX_CHROMOSOMES: Tuple[str, ...] = ("X", "Y")
#: Display colour (RGB) of each Denver group: the colour-blind-friendly Okabe-Ito palette, plus one.
#: Every drawing of the project (overlay, karyogram, dataset previews) uses it.
GROUP_COLORS: Dict[str, Tuple[int, int, int]] = {
    "A": (230, 159, 0),  # orange
    "B": (86, 180, 233),  # sky blue
    "C": (0, 158, 115),  # bluish green
    "D": (204, 121, 167),  # reddish purple
    "E": (0, 114, 178),  # blue
    "F": (213, 94, 0),  # vermillion
    "G": (140, 60, 200),  # violet
}
#: Acrocentric chromosomes (satellites on the short arm).
ACROCENTRIC: Tuple[str, ...] = ("13", "14", "15", "21", "22")

# Aliases accepted when reading a dataset's category names (lower-cased lookup).
_ALIASES: Dict[str, str] = {}
for _i, _n in enumerate(CLASS_NAMES, start=1):
    for _a in (_n, f"chr{_n}", f"chromosome{_n}", f"chromosome {_n}", f"clase{_i}", f"class{_i}"):
        _ALIASES[_a.lower()] = _n
_ALIASES["23"] = "X"
_ALIASES["24"] = "Y"


def canonical_name(name) -> str:
    """Return the canonical class name (``'1'``..``'22'``, ``'X'``, ``'Y'``) for ``name``.

    Accepts common aliases: ``chr7``, ``Chromosome 7``, ``23``/``24`` for X/Y, ``clase23``.
    Raises ``KeyError`` with the offending name for anything else.
    """
    key = str(name).strip().lower()
    if key.startswith("chr") and not key.startswith("chromosome"):
        key = "chr" + key[3:].lstrip("_ -")
    if key in _ALIASES:
        return _ALIASES[key]
    raise KeyError(
        f"unknown chromosome category {name!r}: expected one of 1..22, X, Y "
        f"(aliases such as 'chr7', '23'/'24' for X/Y are accepted)"
    )


def is_agnostic_name(name) -> bool:
    """Whether a label names a chromosome without its identity (``chr``, ``chromosome``, ...)."""
    return str(name).strip().lower() in _AGNOSTIC_ALIASES


def class_index(name) -> int:
    """Contiguous index ``0..K-1`` of a class name (aliases accepted)."""
    return CLASS_NAMES.index(canonical_name(name))


def group_of(name) -> str:
    """Denver group letter of a class name (aliases accepted)."""
    return GROUP_OF[canonical_name(name)]


def group_index_tensor(class_names: Sequence[str] = CLASS_NAMES):
    """Group id (0..6 for A..G) of each class in ``class_names``, looked up by name (a torch tensor)."""
    import torch

    letters = sorted(DENVER_GROUPS)
    return torch.tensor([letters.index(group_of(n)) for n in class_names], dtype=torch.long)


def adjacency_matrix(class_names: Sequence[str] = CLASS_NAMES):
    """Boolean ``(K, K)`` torch matrix of the forbidden group inner-adjacency set F of Eq. 3.

    ``F[i, j]`` is true when classes ``i != j`` belong to the same Denver group.
    """
    import torch

    g = group_index_tensor(class_names)
    same = g[:, None] == g[None, :]
    return same & ~torch.eye(len(class_names), dtype=torch.bool)

