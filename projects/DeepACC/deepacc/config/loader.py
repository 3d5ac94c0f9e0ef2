"""Reading and writing configs: a config file and its ``_BASE_`` chain checked before they are merged
(one named line per mistake), YAML + ``KEY VALUE`` overrides into a config, and the config a run
writes next to its outputs.
"""
from __future__ import annotations

import os
from typing import List, Optional

from .defaults import get_cfg
from .validation import ConfigFileError


def _yaml_error_text(error: Exception) -> str:
    """``line L, column C: <problem>`` of a YAML parse error (PyYAML's marks count from 0)."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).strip().splitlines()[0]
    context = getattr(error, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{context + ': ' if context else ''}{problem}"


def check_config_file(config_file: str) -> None:
    """Read ``config_file`` and every file of its ``_BASE_`` chain (resolved as fvcore resolves them:
    relative to the file naming them) before the config is merged, so that a file a user must fix is
    one named line (:class:`ConfigFileError`): a folder, a YAML syntax error (with line and column),
    a top level that is not a ``KEY: value`` mapping, a ``_BASE_`` that is missing or not a path, and
    a ``_BASE_`` loop (``a.yaml`` -> ``b.yaml`` -> ``a.yaml``). A missing top-level file stays the
    ``FileNotFoundError`` (``<file>: No such file or directory``) the tools name already."""
    import yaml

    def visit(path: str, chain: List[str], named_by: Optional[str], written: str = "") -> None:
        real = os.path.realpath(path)
        if real in chain:
            loop = " -> ".join(os.path.basename(p) for p in chain[chain.index(real):] + [real])
            raise ConfigFileError(f"{named_by}: _BASE_ loop: {loop} (a config cannot be its own base; "
                                  f"remove one of these _BASE_ lines)")
        where = path
        if named_by and (os.path.isdir(path) or not os.path.exists(path)):  # the line to fix is in named_by
            where = f"{named_by}: _BASE_ {written!r}" + (f" ({path})" if written != path else "")
        if os.path.isdir(path):
            raise ConfigFileError(f"{where}: a folder, not a config file (give a .yaml file)")
        if not os.path.exists(path):
            if named_by is None:
                raise FileNotFoundError(2, "No such file or directory", path)
            raise ConfigFileError(f"{where}: no such file (a _BASE_ path is relative to the file naming it)")
        try:
            with open(path, "r", encoding="utf-8") as f:
                data = yaml.safe_load(f)
        except UnicodeDecodeError:
            raise ConfigFileError(f"{where}: not a text (YAML) file") from None
        except yaml.YAMLError as e:
            raise ConfigFileError(f"{where}: not valid YAML ({_yaml_error_text(e)})") from None
        except OSError as e:
            raise ConfigFileError(f"{where}: cannot read ({e.strerror or e})") from None
        if not isinstance(data, dict):
            got = "nothing (an empty file)" if data is None else f"a {type(data).__name__}"
            raise ConfigFileError(f"{where}: the top level must be a mapping of KEY: value lines, got {got}")
        bases = data.get("_BASE_")
        if bases is None:
            return
        for base in bases if isinstance(bases, list) else [bases]:
            if not isinstance(base, str) or not base:
                raise ConfigFileError(f"{path}: _BASE_ {base!r} is not a file path")
            if base.startswith(("https://", "http://")):
                continue
            b = os.path.expanduser(base) if base.startswith("~") else base
            if not b.startswith("/"):
                b = os.path.join(os.path.dirname(path), b)
            visit(b, chain + [real], path, base)

    visit(str(config_file), [], None)


def load_config(config_file: Optional[str], opts=None, base=None):
    """Read a YAML (with ``_BASE_``) and trailing ``KEY VALUE`` overrides into ``base`` or a new cfg.

    ``base`` may be Detectron2's config (with :func:`add_deepacc_config` applied): both engines read
    configs through this function. An iteration count given on the command line
    (``SOLVER.MAX_ITER``) wins over the YAML's ``SOLVER.EPOCHS``.
    """
    cfg = base if base is not None else get_cfg()
    if config_file:
        check_config_file(config_file)
        cfg.merge_from_file(config_file)
    opts = list(opts or [])
    if opts:
        cfg.merge_from_list(opts)
        if "SOLVER.MAX_ITER" in opts[0::2]:
            cfg.SOLVER.EPOCHS = 0
    return cfg


def dump_config(cfg, output_dir: str, precision=None) -> str:
    """Write ``output_dir/config.yaml`` (atomically) and return its path. With ``precision`` (a
    :class:`deepacc.precision.Precision`), a first comment line names the arithmetic the run uses
    (``# precision: float32 on cpu (SOLVER.AMP.PRECISION auto: ...)``), so a figure traces to it; the
    file still loads as the same config."""
    from ..fileio import atomic_write

    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, "config.yaml")
    head = f"# precision: {precision}\n" if precision is not None else ""
    atomic_write(path, (head + cfg.dump()).encode("utf-8"))
    return path

