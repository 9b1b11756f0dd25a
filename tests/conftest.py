"""Shared fixtures. Tests never reach the network: the HF libraries run offline."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# A run small enough for seconds on 2 CPU cores: 8 px digits, a 1/8-width ResNet-18, 3 phases.
TINY = {
    "dataset": "sklearn:digits",
    "image_size": 8,
    "num_channels": 1,
    "max_train_examples": 240,
    "max_test_examples": 90,
    "num_phases": 3,
    "model_width": 0.125,
    "crop_padding": 1,
    "optim": "sgd",
    "optim_args": "momentum=0.9",
    "learning_rate": 0.05,
    "num_train_epochs": 2,
    "per_device_train_batch_size": 32,
    "use_cpu": True,
    "seed": 0,
    "strategies": ["warm", "cold"],
}


@pytest.fixture
def tiny_recipe(tmp_path) -> dict:
    return {**TINY, "output_dir": str(tmp_path / "runs"), "run_name": "tiny"}
