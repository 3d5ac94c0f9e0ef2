import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def tiny_data_root(tmp_path_factory):
    """A data root holding a tiny ``deepacc_synth_quick`` dataset (see tests/tv_tiny.py)."""
    from tv_tiny import make_tiny_root

    return make_tiny_root(str(tmp_path_factory.mktemp("datasets")))


@pytest.fixture(autouse=True)
def _restore_logging():
    """Commands run in-process (train_net, deepacc-eval, ...) configure logging for their run: the root
    logger's level and handlers (one bound to the test's captured stderr, closed after the test) and
    the levels of the package's loggers. Put all of it back after each test, so that no test sees
    another's logging (e.g. the evaluator prints its table when no INFO handler is configured)."""
    import logging

    root = logging.getLogger()
    saved_root = (root.level, list(root.handlers), getattr(root, "_deepacc_handlers", None))
    names = [n for n in logging.root.manager.loggerDict if n.split(".")[0] in ("deepacc", "detectron2", "fvcore")]
    saved = {n: (logging.getLogger(n).level, list(logging.getLogger(n).handlers), logging.getLogger(n).propagate)
             for n in names}
    yield
    level, handlers, own = saved_root
    for h in root.handlers[:]:
        if h not in handlers:
            root.removeHandler(h)
    for h in handlers:
        if h not in root.handlers:
            root.addHandler(h)
    root.setLevel(level)
    if own is None:
        if hasattr(root, "_deepacc_handlers"):
            del root._deepacc_handlers
    else:
        root._deepacc_handlers = own
    for n in [n for n in logging.root.manager.loggerDict if n.split(".")[0] in ("deepacc", "detectron2", "fvcore")]:
        lg = logging.getLogger(n)
        lv, hs, prop = saved.get(n, (logging.NOTSET, [], True))
        for h in lg.handlers[:]:
            if h not in hs:
                lg.removeHandler(h)
        lg.setLevel(lv)
        lg.propagate = prop
