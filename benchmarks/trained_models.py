"""The ``--model NAME=CONFIG:WEIGHTS`` argument of the benchmarks that score trained models."""
from __future__ import annotations

import argparse
import os
from typing import NamedTuple, Optional, Sequence


class TrainedModel(NamedTuple):
    name: str
    config: str
    weights: str


def parse_model(spec: str) -> TrainedModel:
    """``a=configs/x.yaml:output/x/model_final.pth`` -> ``TrainedModel("a", "configs/x.yaml", ...)``."""
    name, _, rest = spec.partition("=")
    config, _, weights = rest.rpartition(":")
    if not (name and config and weights):
        raise argparse.ArgumentTypeError(f"{spec!r}: expected NAME=CONFIG:WEIGHTS, e.g. "
                                         "f=configs/gband/DeepACC_R18_gband_cpu.yaml:output/gband/DeepACC_R18/model_final.pth")
    return TrainedModel(name, config, weights)


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    """``--model NAME=CONFIG:WEIGHTS`` (repeatable, required): a list of :class:`TrainedModel`."""
    parser.add_argument("--model", action="append", required=True, type=parse_model, metavar="NAME=CONFIG:WEIGHTS",
                        help="a trained model (repeat): row name, its config file and checkpoint")


def missing_model_file(models: Sequence[TrainedModel]) -> Optional[str]:
    """The first ``--model`` whose config or weights file does not exist, as a message (``None`` if
    all exist), so a benchmark names it before any model runs."""
    for m in models:
        for path, what in ((m.config, "config"), (m.weights, "weights")):
            if not os.path.isfile(path):
                return f"--model {m.name}: {what} {path}: no such file"
    return None
