"""Shared test settings: hypothesis profiles `ci` (default, quick) and `thorough`.

Select with `HYPOTHESIS_PROFILE=thorough pytest` (or `pytest --hypothesis-profile thorough`).
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile(
    "thorough", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
