"""Shared test settings: hypothesis profiles `ci` (default, quick) and `thorough`.

Select with `HYPOTHESIS_PROFILE=thorough pytest` (or `pytest --hypothesis-profile thorough`).
"""

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile(
    "thorough", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a shared 2-core machine two OpenMP
    threads that wait on each other make each op up to 100x slower; results are unaffected."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _private_cache_dir(tmp_path_factory, monkeypatch):
    """Every test gets its own patch-statistics cache (`LINEARCNN_CACHE_DIR`): nothing is written to
    the real ~/.cache, and no test reads statistics another test left behind."""
    monkeypatch.setenv("LINEARCNN_CACHE_DIR", str(tmp_path_factory.mktemp("linearcnn-cache")))
