from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from _deploy_helpers import Procs  # noqa: E402


@pytest.fixture
def procs(tmp_path):
    group = Procs(tmp_path)
    try:
        yield group
    finally:
        group.kill_all()
