"""fvcore checkpointing with atomic writes (a kill mid-save never leaves a truncated checkpoint) and
safe reads (:func:`deepacc.checkpoint_io.load_checkpoint_file`: no pickled code is ever run; the
``last_checkpoint`` tag only names files of its own folder)."""
from __future__ import annotations

import os

import torch
from fvcore.common.checkpoint import Checkpointer

from ..checkpoint_io import load_checkpoint_file, resolve_last_checkpoint
from ..fileio import atomic_write


class AtomicCheckpointer(Checkpointer):
    """``fvcore.common.checkpoint.Checkpointer`` whose ``save`` and ``last_checkpoint`` tag are atomic, whose
    reads refuse pickled code, and whose ``last_checkpoint`` never points outside ``save_dir``."""

    def _load_file(self, f: str):
        loaded = load_checkpoint_file(f)
        return loaded if "model" in loaded else {"model": loaded}

    def get_checkpoint_file(self) -> str:
        return resolve_last_checkpoint(self.save_dir)

    def _load_model(self, checkpoint):
        # kept so that callers can refuse a model the weights do not fit (checkpoint_io.check_loaded_weights)
        self.incompatible = super()._load_model(checkpoint)
        return self.incompatible

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", save_file)
        atomic_write(save_file, lambda f: torch.save(data, f), durable=True)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        path = os.path.join(self.save_dir, "last_checkpoint")
        atomic_write(path, last_filename_basename.encode(), durable=True)
