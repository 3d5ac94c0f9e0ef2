import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def tiny_data_root(tmp_path_factory):
    """A data root holding a tiny ``deepacc_synth_quick`` dataset (see tests/tv_tiny.py)."""
    from tv_tiny import make_tiny_root

    return make_tiny_root(str(tmp_path_factory.mktemp("datasets")))
