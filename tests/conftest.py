"""Test-wide settings."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# No per-example deadline: PyPy's JIT warm-up and a loaded CI machine make
# timings noisy. CI runs more examples.
settings.register_profile("dev", deadline=None, max_examples=100)
settings.register_profile(
    "ci", deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
