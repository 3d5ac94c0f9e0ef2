"""One configuration for both engines.

The YAML files under ``configs/`` use Detectron2's key names. With Detectron2 installed they are read
by ``detectron2.config.get_cfg()`` + :func:`add_deepacc_config`; without it, :func:`get_cfg` builds a
framework-free :class:`fvcore.common.config.CfgNode` holding the same keys with Detectron2's default
values (the subset this project reads), plus the same :func:`add_deepacc_config`. ``_BASE_``
inheritance is fvcore's.

By concern (this package only re-exports them):

* :mod:`.defaults`: DeepACC's keys and defaults (the table of the paper's keys), :func:`get_cfg`,
  and the functions that read a config (:func:`head_options`, :func:`call_thresholds`,
  :func:`default_calls`, :func:`method_of`, :func:`resolve_epoch_schedule`) into the frozen settings
  of :mod:`deepacc.settings` (:class:`CallThresholds`, :class:`HeadOptions`, re-exported here), which
  is what ``modeling/``, ``evaluation/`` and ``clinical/`` take (they never import this package);
* :mod:`.d2_defaults`: the framework-free mirror of Detectron2's ``CfgNode`` and default values;
* :mod:`.validation`: the valid ranges and choices, :func:`validate_config` / :func:`check_config`,
  :class:`ConfigError`, and the one-line messages for key errors;
* :mod:`.loader`: :func:`load_config` (``_BASE_`` chain checked first, :func:`check_config_file`)
  and :func:`dump_config`.

Nothing here builds a config at import time: ``CALLS``, the default thresholds, is computed on first
use (:func:`default_calls`).
"""
from __future__ import annotations

from ..settings import CallThresholds, HeadOptions
from .d2_defaults import CfgNode
from .defaults import (
    add_deepacc_config,
    call_thresholds,
    default_calls,
    get_cfg,
    head_options,
    method_of,
    resolve_epoch_schedule,
)
from .loader import check_config_file, dump_config, load_config
from .validation import (
    _CHOICES,
    _RANGES,
    DEVICES,
    ConfigError,
    ConfigFileError,
    check_config,
    unknown_key_message,
    validate_config,
    validate_values,
)

__all__ = [
    "CALLS",
    "CallThresholds",
    "CfgNode",
    "ConfigError",
    "ConfigFileError",
    "DEVICES",
    "HeadOptions",
    "add_deepacc_config",
    "call_thresholds",
    "check_config",
    "check_config_file",
    "default_calls",
    "dump_config",
    "get_cfg",
    "head_options",
    "load_config",
    "method_of",
    "resolve_epoch_schedule",
    "unknown_key_message",
    "validate_config",
    "validate_values",
]


def __getattr__(name: str):
    # ``CALLS`` (the default thresholds) for the modules that import it by name: computed when first
    # asked for, not when this package is imported. New code calls default_calls().
    if name == "CALLS":
        return default_calls()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | {"CALLS"})
