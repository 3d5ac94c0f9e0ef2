"""The engine choice, and the library entry points that work on either engine.

DeepACC runs on Detectron2 (:mod:`deepacc.d2`) when it is importable and on its own torchvision engine
(:mod:`deepacc.tv`) everywhere. This module is the only place that picks one: the command lines
(:mod:`deepacc.tools`) parse their arguments and call :func:`choose_engine`, :func:`engine_config`,
:func:`launch` and :func:`build_predictor`. Each engine's modules load only when it is used.
"""
from __future__ import annotations

from typing import Callable, Dict

import numpy as np

__all__ = ["ENGINES", "EngineError", "detectron2_available", "choose_engine", "engine_config", "launch",
           "build_predictor", "Predictor"]

#: The engines, and ``auto``: Detectron2 when it is importable, else torchvision.
ENGINES = ("auto", "detectron2", "torchvision")

#: ``predictor(gray uint8 image) -> prediction dict`` (:func:`deepacc.modeling.prediction.to_prediction`).
Predictor = Callable[[np.ndarray], Dict]


class EngineError(RuntimeError):
    """The engine asked for cannot run here; ``str()`` says why and what to do."""


def detectron2_available() -> bool:
    """Whether Detectron2 (and its model registries) can be imported."""
    try:
        import detectron2  # noqa: F401
        from detectron2.modeling import ROI_HEADS_REGISTRY  # noqa: F401
    except Exception:  # noqa: BLE001  (a broken install counts as absent)
        return False
    return True


def choose_engine(requested: str = "auto") -> str:
    """``"detectron2"`` or ``"torchvision"`` for ``requested`` (one of :data:`ENGINES`)."""
    if requested not in ENGINES:
        raise EngineError(f"unknown engine {requested!r}: expected one of {', '.join(ENGINES)}")
    if requested == "auto":
        return "detectron2" if detectron2_available() else "torchvision"
    if requested == "detectron2" and not detectron2_available():
        raise EngineError("--engine detectron2: Detectron2 is not importable. Install it (see README, "
                          "'Detectron2 engine') or use --engine torchvision.")
    return requested


def engine_config(engine: str):
    """The default config of ``engine`` (a name :func:`choose_engine` returned): Detectron2's defaults
    plus DeepACC's keys, or the framework-free equivalent (:func:`deepacc.config.get_cfg`)."""
    if engine == "detectron2":
        from .d2.config import get_cfg
    else:
        from .config import get_cfg
    return get_cfg()


def launch(engine: str, args) -> None:
    """Run ``train_net.py``'s job (training, or ``--eval-only``) on ``engine``, in ``args.num_gpus``
    processes on each of ``args.num_machines`` machines (Detectron2's command-line arguments)."""
    if engine == "detectron2":
        from .d2.trainer import launch_main
    else:
        from .tv.trainer import launch_main
    launch_main(args)


def build_predictor(cfg, engine: str = "auto", allow_untrained: bool = False) -> Predictor:
    """A :data:`Predictor` on the chosen engine, with ``cfg.MODEL.WEIGHTS`` loaded.

    ``auto`` uses Detectron2 when it is importable (as ``train_net.py`` does, so a model is read by
    the engine that trained it), otherwise torchvision. Each engine refuses to run without trained
    weights unless ``allow_untrained``.
    """
    if choose_engine(engine) == "detectron2":
        from .d2.predictor import Detectron2Predictor as EnginePredictor
    else:
        from .tv.predictor import TorchvisionPredictor as EnginePredictor
    return EnginePredictor(cfg, allow_untrained=allow_untrained)
