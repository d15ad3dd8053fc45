"""Bad input at scale: fuzzed decoders and validators, schemathesis against the API, a flood.

Hypothesis profiles (registered here, chosen per test through `fuzz_settings`):
- `ci` (the default, what `make test` runs): derandomized, so a run is reproducible, and
  sized to a few thousand cases in total within a couple of minutes on two cores;
- `deep`: random, twenty times the cases, for a long hunt: `POUW_FUZZ=deep pytest tests/fuzz`
  or `pytest tests/fuzz --fuzz-deep` (the flag works when tests/fuzz is on the command line,
  where pytest loads this directory's conftest before parsing options).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

DEEP_FACTOR = 20

settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "deep",
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def profile_name() -> str:
    return "deep" if os.environ.get("POUW_FUZZ", "").lower() == "deep" else "ci"


def fuzz_settings(ci_examples: int, **overrides: object) -> settings:
    """The current profile with `ci_examples` cases (DEEP_FACTOR times more when deep)."""
    deep = profile_name() == "deep"
    examples = ci_examples * DEEP_FACTOR if deep else ci_examples
    return settings(
        settings.get_profile(profile_name()),
        max_examples=examples,
        **overrides,  # type: ignore[arg-type]
    )
