"""fvcore checkpointing with atomic writes (a kill mid-save never leaves a truncated checkpoint) and
safe reads (:func:`deepacc.checkpoint_io.load_checkpoint_file`: no pickled code is ever run; the
``last_checkpoint`` tag only names files of its own folder)."""
from __future__ import annotations

from fvcore.common.checkpoint import Checkpointer

from ..checkpoint_io import CheckpointerMixin, load_checkpoint_file


class AtomicCheckpointer(CheckpointerMixin, Checkpointer):
    """``fvcore.common.checkpoint.Checkpointer`` with the project's atomic saves, safe reads and confined
    ``last_checkpoint`` tag (:class:`~deepacc.checkpoint_io.CheckpointerMixin`)."""

    def _load_file(self, f: str):
        loaded = load_checkpoint_file(f)
        return loaded if "model" in loaded else {"model": loaded}
