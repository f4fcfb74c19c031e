import os
from pathlib import Path

import pytest

# Public reference data lives beside the checkout in CI and in developer sessions, never in a user's clone.
SHARED_DATA = Path(os.environ.get("EGSPO_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"public reference data not found at {SHARED_DATA} (only present beside a development checkout)")
    return SHARED_DATA
