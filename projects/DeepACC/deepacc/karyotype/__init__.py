"""Karyotype facts, the lowest layer of the package: the 24 classes and their Denver groups, the
numerical ISCN karyotype (:mod:`.iscn`) and the per-spread class assignment under the copy-number
prior (:mod:`.assignment`). Everything else imports them from here; they import nothing of DeepACC.

The clinical outputs built on them (summary, karyogram, overlay, report) are :mod:`deepacc.clinical`.
"""
from .assignment import AssignmentSettings, assign_calls, assign_classes, assignment_settings  # noqa: F401
from .classes import (  # noqa: F401
    ACROCENTRIC,
    AGNOSTIC,
    AGNOSTIC_NAME,
    BACKGROUND,
    CLASS_NAMES,
    DENVER_GROUPS,
    GROUP_COLORS,
    GROUP_OF,
    NUM_CLASSES,
    SEX_CHROMOSOMES,
    adjacency_matrix,
    canonical_name,
    class_index,
    group_index_tensor,
    group_of,
    is_agnostic_name,
)
from .iscn import NO_CHROMOSOMES, format_karyotype, normalize_karyotype, numerical_karyotype, parse_karyotype  # noqa: F401
