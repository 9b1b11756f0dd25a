"""Pushed phases load with plain transformers and timm, in a process that never imports warmstart_hf
(``tests/plain_hf_load.py``), and give the logits (an MAE: the loss) of the package's own model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import HfApi, constants
from safetensors.torch import load_file, save_file

from tests.conftest import REPO, TINY
from warmstart_hf.config import parse_config
from warmstart_hf.hub import arm_repo_id, load_init_from
from warmstart_hf.loop import run_experiment
from warmstart_hf.models import TimmImageClassifier
from warmstart_hf.models.export import export_for_hub, load_classifier
from warmstart_hf.models.mae import PixelViTMAE, fixed_noise
from warmstart_hf.models.pretrained import load_pretrained

CLASSIFIER = {**TINY, "max_train_examples": 60, "max_test_examples": 30, "num_train_epochs": 1, "diagnostics": False}
MAE_SHRINK = {"max_train_examples": 150, "max_test_examples": 60, "probe_examples": 20, "num_train_epochs": 1}
FIELDS = ("timm_model", "num_channels", "image_size", "model_kwargs", "image_mean", "image_std", "frozen_norm_stats")


def _fields(config) -> dict:
    """What defines a classifier: architecture, input, normalisation, labels."""
    return {name: getattr(config, name) for name in (*FIELDS, "num_labels", "id2label", "label2id")}


def _push_run(tmp_path: Path, repo_base: str, recipe: dict) -> tuple[Path, str]:
    """A two-phase warm run that pushes each phase; its arm directory and repo."""
    recipe = {**recipe, "output_dir": str(tmp_path / "runs"), "strategies": ["warm"], "num_phases": 2}
    run_dir = run_experiment(parse_config(recipe={**recipe, "push_to_hub": True, "hub_model_id": repo_base}))
    return run_dir / "warm-seed0", arm_repo_id(repo_base, "warm-seed0")


def _load_plainly(hub, tmp_path: Path, jobs: list[dict], inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Run plain_hf_load.py against the Hub, with fresh caches and without this checkout on the path."""
    work = tmp_path / "plain"
    work.mkdir()
    (work / "jobs.json").write_text(json.dumps(jobs))
    save_file(inputs, str(work / "inputs.safetensors"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HF_HUB_CACHE", "HF_HUB_OFFLINE")}
    env.update(HF_ENDPOINT=constants.ENDPOINT, HF_TOKEN=hub.token, HF_HOME=str(work / "hf_home"), HF_HUB_OFFLINE="0")
    env.update(HF_HUB_DISABLE_XET="1", OMP_NUM_THREADS="1")
    command = [sys.executable, str(REPO / "tests" / "plain_hf_load.py"), "jobs.json", "inputs.safetensors", "out.st"]
    proc = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return load_file(str(work / "out.st"))


def _images(channels: int, size: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (4, channels, size, size), dtype=torch.uint8, generator=generator)


@pytest.mark.slow
def test_pushed_timm_classifiers_load_with_plain_transformers_and_timm(hub, tmp_path):
    """resnet18_cifar (registered by this package: remote code) and test_resnet (a timm architecture:
    no code at all) load by revision through AutoModelForImageClassification + AutoImageProcessor and
    through timm.create_model("hf-hub:...") + timm's transforms, with our model's logits."""
    jobs, inputs, ours = [], {}, {}
    for name, model_name in (("cifar", "resnet18_cifar"), ("timm", "test_resnet")):
        arm, repo = _push_run(tmp_path / name, hub.repo(name), {**CLASSIFIER, "model_name": model_name})
        files = set(HfApi().list_repo_files(repo, revision="phase-01"))
        assert {"config.json", "model.safetensors"} <= files
        assert ({"resnet_cifar.py", "timm_remote.py"} <= files) == (model_name == "resnet18_cifar")
        model = TimmImageClassifier.from_pretrained(arm / "phase-01").eval()
        images = _images(model.config.num_channels, model.config.image_size, seed=len(jobs))
        with torch.no_grad():
            ours[name] = model(images).logits
        inputs[f"{name}.images"] = images
        labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        remote = model_name == "resnet18_cifar"
        jobs.append({"name": name, "kind": "timm", "repo": repo, "revision": "phase-01", "remote_code": remote,
                     "label_names": labels})  # fmt: skip

        # and the package reads the pushed phase back exactly (init_from and pretrained use this)
        back = load_init_from(f"hub://{repo}@phase-01", model.config)
        assert _fields(back.config) == _fields(model.config)
        local, remote_state = model.state_dict(), back.state_dict()
        assert set(local) == set(remote_state) and all(torch.equal(local[k], remote_state[k]) for k in local)
        weights = load_pretrained(f"hub://{repo}@phase-01")  # a finetune's `pretrained`: backbone, statistics
        assert (weights.timm_model, weights.image_mean, weights.input_size) == (model_name, model.config.image_mean, 8)
        assert weights.backbone and all(torch.equal(local[f"timm_model.{k}"], v) for k, v in weights.backbone.items())

    plain = _load_plainly(hub, tmp_path, jobs, inputs)
    for name, logits in ours.items():
        assert logits.abs().max() > 0 and logits.std() > 0
        for loader in ("timm", "transformers"):
            torch.testing.assert_close(plain[f"{name}.{loader}"], logits, rtol=1e-5, atol=1e-5, msg=f"{name} {loader}")


@pytest.mark.slow
def test_pushed_mae_phase_loads_with_plain_transformers(hub, tmp_path):
    """A pushed MAE phase is plain ViTMAE: ViTMAEForPreTraining and AutoModelForPreTraining load it by
    revision, AutoImageProcessor normalises as PixelViTMAE does inside, and the loss with fixed masks
    is ours."""
    recipe = yaml.safe_load((REPO / "recipes" / "mae" / "demo_pretrain_mnist.yaml").read_text())
    arm, repo = _push_run(tmp_path, hub.repo("mae"), {**recipe, **MAE_SHRINK})
    config = json.loads(Path(HfApi().hf_hub_download(repo, "config.json", revision="phase-01")).read_text())
    assert config["architectures"] == ["ViTMAEForPreTraining"] and config["model_type"] == "vit_mae"
    model = PixelViTMAE.from_pretrained(arm / "phase-01").eval()
    size, channels = model.config.image_size, model.config.num_channels
    images, noise = _images(channels, size, seed=7), fixed_noise(4, model.config, seed=3)
    with torch.no_grad():
        ours = model(images, noise=noise)
    job = {"name": "mae", "kind": "vit_mae", "repo": repo, "revision": "phase-01", "remote_code": False}
    plain = _load_plainly(hub, tmp_path, [job], {"mae.images": images, "mae.noise": noise})
    for loader in ("vitmae", "auto"):
        torch.testing.assert_close(plain[f"mae.{loader}.logits"], ours.logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(plain[f"mae.{loader}.loss"], ours.loss.reshape(1), rtol=1e-5, atol=1e-6)


def test_export_keeps_the_run_format_and_round_trips(tmp_path):
    """What is pushed is converted in a temporary folder (the phase directory stays in the package's
    format, which resume reads), and reads back into the same model and configuration."""
    from warmstart_hf.models import build_classifier_config, create_classifier

    config = build_classifier_config(
        "resnet18_cifar", num_labels=3, num_channels=1, image_size=8, width=0.125, image_mean=[0.3], image_std=[0.2],
        id2label={0: "a", 1: "b", 2: "c"},
    )  # fmt: skip
    config.frozen_norm_stats = True
    model = create_classifier(config, seed=0)
    model.save_pretrained(tmp_path / "phase-00")
    before = {p.name: p.read_bytes() for p in (tmp_path / "phase-00").iterdir()}
    files = export_for_hub(tmp_path / "phase-00", tmp_path / "hub")
    assert {p.name: p.read_bytes() for p in (tmp_path / "phase-00").iterdir()} == before
    assert set(files) == {"config.json", "model.safetensors", "resnet_cifar.py", "timm_remote.py"}
    pushed = load_file(str(files["model.safetensors"]))
    assert not any(k.startswith("timm_model.") or k.startswith("image_") for k in pushed)  # timm's plain keys
    hub_config = json.loads(files["config.json"].read_text())
    assert "num_classes" not in hub_config["model_args"]  # TimmWrapper passes it itself: twice would fail
    assert hub_config["pretrained_cfg"]["mean"] == [0.3] and hub_config["pretrained_cfg"]["input_size"] == [1, 8, 8]
    back = load_classifier(str(tmp_path / "hub"))
    assert _fields(back.config) == _fields(config) and back.config.frozen_norm_stats is True
    state, loaded = model.state_dict(), back.state_dict()
    assert set(state) == set(loaded) and all(torch.equal(state[k], loaded[k]) for k in state)
