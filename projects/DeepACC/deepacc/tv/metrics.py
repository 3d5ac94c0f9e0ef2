"""Training metrics of the torchvision engine: ``metrics.json`` and TensorBoard."""
from __future__ import annotations

import json
import os
from typing import Dict

from ..fileio import append_line


class MetricsWriter:
    """JSON lines in ``OUTPUT_DIR/metrics.json`` (Detectron2's format), plus TensorBoard when installed."""

    def __init__(self, output_dir: str):
        self.path = os.path.join(output_dir, "metrics.json")
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(output_dir)
        except Exception:  # tensorboard is optional
            self.tb = None

    def write(self, iteration: int, scalars: Dict[str, float]) -> None:
        # one O_APPEND write per row, never through a link (deepacc.fileio.UnsafeOutputError)
        append_line(self.path, json.dumps({"iteration": iteration, **scalars}, sort_keys=True))
        if self.tb is not None:
            for k, v in scalars.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, iteration)

    def close(self):
        if self.tb is not None:
            self.tb.close()


def flatten_results(results: Dict[str, Dict]) -> Dict[str, float]:
    """``{dataset: {metric: value}}`` -> ``{"dataset/metric": value}`` (numbers only)."""
    flat = {}
    for ds, res in results.items():
        for k, v in res.items():
            if isinstance(v, (int, float)):
                flat[f"{ds}/{k}"] = float(v)
    return flat
