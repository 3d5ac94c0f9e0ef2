"""The Detectron2 engine is optional: without Detectron2, ``import deepacc.d2`` fails with a clear
message and the framework-free package still imports. Runs with or without Detectron2 installed."""
import importlib
import sys

import pytest


def test_import_without_detectron2_names_the_problem_and_the_way_out(monkeypatch):
    # Simulate a machine without Detectron2 (a None entry makes `import detectron2` raise ImportError).
    for mod in [m for m in sys.modules if m == "detectron2" or m.startswith("detectron2.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "detectron2", None)
    for mod in [m for m in sys.modules if m == "deepacc.d2" or m.startswith("deepacc.d2.")]:
        monkeypatch.delitem(sys.modules, mod)
    with pytest.raises(ImportError) as info:
        importlib.import_module("deepacc.d2")
    msg = str(info.value)
    assert "Detectron2" in msg and "docs/detectron2.md" in msg and "--engine torchvision" in msg
    # the core does not need Detectron2
    import deepacc.config
    import deepacc.modeling

    assert deepacc.modeling.DeepACCHead is not None and deepacc.config.get_cfg() is not None
