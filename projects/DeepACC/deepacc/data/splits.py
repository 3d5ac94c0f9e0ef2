"""Helpers shared by the prepare scripts' case / slide splits."""
from __future__ import annotations

from typing import Dict, List, Sequence


def limit_per_split(by_split: Dict[str, List], limit: int, fractions: Sequence[float]) -> Dict[str, List]:
    """Keep about ``limit`` items in all, spread over train / val / test by ``fractions``
    (at least one each); ``limit <= 0`` keeps everything."""
    if limit <= 0:
        return by_split
    quota = {"val": max(1, int(round(limit * fractions[1]))), "test": max(1, int(round(limit * fractions[2])))}
    quota["train"] = max(1, limit - quota["val"] - quota["test"])
    return {s: v[: quota[s]] for s, v in by_split.items()}
