"""Karyotype facts (class names, Denver groups) and clinical outputs."""
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
