"""Installed like a library: bundled recipes by name, console scripts, a push that fails says so, and
a wheel that trains, pushes and reloads from outside the checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import warmstart_hf.hub as hub_module
from tests.conftest import REPO, TINY
from warmstart_hf.bundled_recipes import find_recipe
from warmstart_hf.cli import main_push, main_train
from warmstart_hf.config import ConfigError, load_recipe_file, parse_config

# What the wheel is built from (as in the sdist: pyproject, the build hook, the package, recipes/).
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "warmstart_hf", "recipes", "model_cards")
SHRUNK = ["--num_phases", "2", "--num_train_epochs", "1", "--max_train_examples", "120", "--max_test_examples", "45"]
SHRUNK += ["--image_size", "8", "--model_width", "0.125", "--crop_padding", "1", "--strategies", "warm"]


def test_bundled_names_resolve_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no recipes/ here: every name below is the checkout's bundled recipe
    assert find_recipe("digits") == REPO / "recipes" / "digits.yaml"
    assert find_recipe("mae/demo_pretrain_mnist") == REPO / "recipes" / "mae" / "demo_pretrain_mnist.yaml"
    assert find_recipe("recipes/digits.yaml") == REPO / "recipes" / "digits.yaml"  # as the sweep grids write it
    for not_a_recipe in ("accelerate_configs/cpu", "../pyproject", "nope", str(tmp_path / "digits.yaml")):
        assert find_recipe(not_a_recipe) is None
    config = parse_config(["mae/demo_pretrain_mnist", "--output_dir", str(tmp_path / "runs")])
    assert config.training.run_name == "mae_demo" and config.incremental.task == "mae_pretrain"
    grid = load_recipe_file("sweeps/cpu_study_digits")
    assert load_recipe_file(grid["recipe"]) == load_recipe_file(REPO / "recipes" / "digits.yaml")
    (tmp_path / "digits").write_text("num_phases: 2\n")  # a file wins over a bundled name
    assert load_recipe_file("digits") == {"num_phases": 2}


def test_a_recipe_that_is_neither_file_nor_name_fails_naming_it_and_the_listing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        parse_config(["digitz"])
    assert "'digitz'" in str(err.value) and "Did you mean digits" in str(err.value)
    assert main_train(["mae/nothing.yaml", "--seed", "1"]) == 2
    message = capsys.readouterr().err
    assert "'mae/nothing.yaml'" in message and "warmstart-train --list-recipes" in message
    assert main_train(["--list-recipes"]) == 0
    listed = capsys.readouterr().out.split()
    assert {"digits", "mae/demo_pretrain_mnist", "sweeps/cpu_study_digits"} <= set(listed)
    assert not any(name.startswith("accelerate_configs") for name in listed)


@pytest.mark.slow
def test_a_failed_push_fails_the_training_command_and_push_finishes_it(hub, tmp_path, monkeypatch, capsys):
    """The issue's case: the card template missing (a broken install) made every push fail with a
    FileNotFoundError that was only logged; no hub.json, exit status 0."""
    monkeypatch.setattr(hub_module, "CARD_TEMPLATE", tmp_path / "missing" / "phase_model.md")
    base = hub.repo("fails")
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(json.dumps({**TINY, "output_dir": str(tmp_path / "runs"), "run_name": "tiny"}))
    args = [str(recipe), *SHRUNK, "--push_to_hub", "true", "--hub_model_id", base]
    assert main_train(args) == 1
    err = capsys.readouterr().err
    run_dir = tmp_path / "runs" / "tiny"
    assert "FileNotFoundError" in err and f"warmstart-push {run_dir}" in err and "phase-00, phase-01" in err
    state = json.loads((run_dir / "warm-seed0" / "hub.json").read_text())
    assert state["pending"] == [0, 1] and "FileNotFoundError" in state["last_error"]

    monkeypatch.setattr(hub_module, "CARD_TEMPLATE", REPO / "model_cards" / "phase_model.md")
    assert main_push([str(run_dir)]) == 0
    state = json.loads((run_dir / "warm-seed0" / "hub.json").read_text())
    assert state["pending"] == [] and state["last_error"] is None and state["main"]["phase"] == 1


def _fresh_venv(tmp_path: Path) -> tuple[Path, Path]:
    """A venv that sees this venv's third-party packages (a .pth naming its site-packages, whose own
    .pth files, the editable install's finder among them, are not run) but not the checkout; its
    python and site-packages."""
    fresh = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(fresh)], check=True, timeout=120)
    python = fresh / "bin" / "python"
    where = [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
    site = Path(subprocess.run(where, capture_output=True, text=True, check=True, env=_clean_env()).stdout.strip())
    ours = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site / "third_party.pth").write_text("".join(f"{p}\n" for p in ours))
    return python, site


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return {**env, "PYTHONNOUSERSITE": "1", **extra}


def _build_wheel(tmp_path: Path) -> Path:
    """``pip wheel`` of a copy of the project's sources: offline, no build isolation, nothing written
    into the checkout."""
    source, dist = tmp_path / "src", tmp_path / "dist"
    source.mkdir()
    for name in SOURCES:
        src = REPO / name
        if not src.exists():
            continue
        if src.is_dir():
            shutil.copytree(src, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, source / name)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q"]
    subprocess.run([*command, "-w", str(dist), str(source)], check=True, cwd=tmp_path, env=_clean_env(), timeout=300)
    return next(dist.glob("warmstart_hf-*.whl"))


@pytest.mark.slow
def test_the_wheel_trains_a_bundled_recipe_pushes_and_reloads_outside_the_checkout(hub, tmp_path):
    if hub.server is None:
        pytest.skip("drives the local Hub server from a subprocess")
    wheel = _build_wheel(tmp_path)
    assert "warmstart_hf/report/templates/page.html.j2" in zipfile.ZipFile(wheel).namelist()  # the pages' template
    python, site = _fresh_venv(tmp_path)
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q"]
    subprocess.run([*install, str(wheel)], check=True, cwd=tmp_path, env=_clean_env(), timeout=300)
    work = tmp_path / "work"
    work.mkdir()
    env = _clean_env(
        HF_ENDPOINT=hub.server.url, HF_TOKEN=hub.token, HF_HUB_OFFLINE="0", HF_HOME=str(tmp_path / "hf_home")
    )

    def run(*command: str) -> subprocess.CompletedProcess:
        return subprocess.run(command, capture_output=True, text=True, cwd=work, env=env, timeout=600)

    listing = run(str(python.parent / "warmstart-train"), "--list-recipes")
    assert listing.returncode == 0, listing.stderr
    assert f"in {site / 'warmstart_hf' / 'recipes'}:" in listing.stdout  # the wheel's copy, not the checkout's
    assert "mae/demo_pretrain_mnist" in listing.stdout.split()

    base = hub.repo("wheel")
    push = ["--push_to_hub", "true", "--hub_model_id", base]
    train = run(str(python.parent / "warmstart-train"), "digits", *SHRUNK, *push)
    assert train.returncode == 0, train.stderr[-3000:]
    arm = work / "runs" / "digits" / "warm-seed0"
    state = json.loads((arm / "hub.json").read_text())
    assert state["pending"] == [] and sorted(state["branches"]) == ["phase-00", "phase-01"]
    assert state["main"]["phase"] == 1

    from huggingface_hub import hf_hub_download

    from warmstart_hf.models.export import load_classifier

    repo = f"{base}-warm-seed0"
    model = load_classifier(repo, revision="phase-00")  # the pushed plain format, read back into the package's model
    local = load_file(arm / "phase-00" / "model.safetensors")
    remote = model.state_dict()
    assert set(local) == set(remote) and all(torch.equal(local[k], remote[k]) for k in local)
    card = Path(hf_hub_download(repo, "README.md", revision="phase-00")).read_text()
    assert f'from_pretrained("{repo}", revision="phase-00")' in card
