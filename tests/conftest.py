import os
import sys
from pathlib import Path

import pytest

# tests/ holds small helpers (tiny.py, fixtures.py) that tests import directly.
sys.path.insert(0, str(Path(__file__).parent))

#: The real-data folder every developer machine and CI run has next to the project (never copied in).
#: MMSEQREC_SHARED_DATA points elsewhere, for a checkout (a git worktree, say) that is not next to it.
SHARED_DATA = Path(os.environ.get("MMSEQREC_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` next to the project root (or $MMSEQREC_SHARED_DATA); skips the test when it
    is absent (a fresh clone)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"real data folder {SHARED_DATA} is absent (only developer machines and CI have ../shared/data; "
            "MMSEQREC_SHARED_DATA can point to it)"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def toys_release(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the raw ``amazon2014-toys-mm`` folder, its processed domain), prepared once per session
    through ``mmseqrec prepare release`` (several seconds); tests must not change the domain."""
    from mmseqrec.cli import main

    raw = shared_data / "amazon2014-toys-mm"
    if not raw.is_dir():
        pytest.skip(f"{raw} is absent")
    out = tmp_path_factory.mktemp("toys")
    assert main(["prepare", "release", "--path", str(raw), "--name", "Toys", "--data-dir", str(out)]) == 0
    return raw, out / "Toys"
