"""Shared fixtures: the embedded tiny model is built once per test session into a temp cache, so no
test touches the user's cache or the network."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a test must never reach a hub
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def _tiny_cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("securefed-cache")
    old = os.environ.get("SECUREFED_CACHE")
    os.environ["SECUREFED_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("SECUREFED_CACHE", None)
    else:
        os.environ["SECUREFED_CACHE"] = old


# A federation small enough to run in seconds on 2 CPU cores.
SMALL = [
    "parties=3",
    "rounds=2",
    "training.max_steps=2",
    "training.batch_size=4",
    "training.max_length=48",
    "data.max_examples=240",
    "data.eval_max=16",
    "evaluation.max_examples=16",
    "evaluation.batch_size=16",
]


@pytest.fixture
def small_overrides():
    return list(SMALL)
