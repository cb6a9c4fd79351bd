import sys
from pathlib import Path

import pytest

# tests/ holds small helpers (tiny.py, fixtures.py) that tests import directly.
sys.path.insert(0, str(Path(__file__).parent))

#: The real-data folder every developer machine and CI run has next to the project (never copied in).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` next to the project root; skips the test when it is absent (a fresh clone)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (only developer machines and CI have ../shared/data)")
    return SHARED_DATA
