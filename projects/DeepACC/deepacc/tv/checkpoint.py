"""fvcore checkpointing with atomic writes: a kill mid-save never leaves a truncated checkpoint."""
from __future__ import annotations

import os
import tempfile

import torch
from fvcore.common.checkpoint import Checkpointer


def atomic_write_bytes(path: str, write_fn) -> None:
    """Write through ``write_fn(file)`` into a temp file beside ``path``, fsync, then rename."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class AtomicCheckpointer(Checkpointer):
    """``fvcore.common.checkpoint.Checkpointer`` whose ``save`` and ``last_checkpoint`` tag are atomic."""

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
        atomic_write_bytes(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        path = os.path.join(self.save_dir, "last_checkpoint")
        atomic_write_bytes(path, lambda f: f.write(last_filename_basename.encode()))
