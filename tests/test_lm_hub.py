"""A causal_lm run on the Hub: one branch per phase that plain transformers loads (model and tokenizer),
the same held-out loss and tokenizer as the run recorded, and a card that speaks of perplexity, tokens
and FLOPs. Against the local Hub server of ``tests/hub_server.py`` through the real clients."""

from __future__ import annotations

import csv
import json

import pytest
import torch
import yaml
from huggingface_hub import HfApi, ModelCard, hf_hub_download
from safetensors.torch import load_file

from tests.conftest import TINY_LM
from tests.test_lm_downstream import downstream_recipe
from warmstart_hf.config import parse_config
from warmstart_hf.data.text_blocks import tokenizer_sha256
from warmstart_hf.io import read_jsonl
from warmstart_hf.loop import prepare_data, run_experiment
from warmstart_hf.models.causal_lm import token_loss_sum
from warmstart_hf.tasks import create_task

# 2 phases of a few hundred byte-level tokens per play, a 1-layer decoder: seconds on 2 CPU cores.
LM_RECIPE = {
    **TINY_LM,
    "max_document_tokens": 400,
    "max_train_examples": 8,
    "max_test_examples": 3,
    "test_size": 0.15,
    "num_phases": 2,
    "per_device_train_batch_size": 16,
    "probe_examples": 16,
    "probe_every_steps": 2,
    "strategies": ["warm", "cold"],
}
PHASES = ["phase-00", "phase-01"]


def _held_out_loss(model, data) -> float:
    """The record's validation_loss, recomputed: token loss over every held-out group (data scenario)."""
    sums = [token_loss_sum(model, blocks, 64) for blocks in data.held_out if len(blocks)]
    return sum(total for total, _ in sums) / sum(count for _, count in sums)


@torch.no_grad()
def _model_mean_loss(model, data) -> float:
    """The same from the model's own loss, in one batch (every block is full: its mean is the token mean)."""
    blocks = torch.cat([blocks for blocks in data.held_out if len(blocks)])
    return float(model.eval()(input_ids=blocks, labels=blocks).loss)


@pytest.mark.slow
def test_causal_lm_phases_load_from_the_hub_with_the_recorded_loss_and_tokenizer(hub, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = hub.repo("lm")
    recipe = {**LM_RECIPE, "output_dir": str(tmp_path / "runs"), "run_name": "lm"}
    config = parse_config(recipe={**recipe, "push_to_hub": True, "hub_model_id": base})
    run_dir = run_experiment(config)
    data = prepare_data(config)  # the run's held-out blocks, as the task packed them
    api, repo = HfApi(), f"{base}-warm-seed0"
    records = read_jsonl(run_dir / "warm-seed0" / "results.jsonl")
    state = json.loads((run_dir / "warm-seed0" / "hub.json").read_text())
    assert sorted(state["branches"]) == PHASES and state["pending"] == [] and state["last_error"] is None
    assert {ref.name for ref in api.list_repo_refs(repo).branches} >= {"main", *PHASES}

    for phase, branch in enumerate(PHASES):
        files = set(api.list_repo_files(repo, revision=branch))
        assert {"model.safetensors", "config.json", "tokenizer_config.json", "README.md"} <= files
        assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)  # safetensors only
        model = AutoModelForCausalLM.from_pretrained(repo, revision=branch)
        tokenizer = AutoTokenizer.from_pretrained(repo, revision=branch)
        record = records[phase]
        assert tokenizer_sha256(tokenizer) == record["tokenizer_sha256"] == data.tokenizer_sha256
        assert _held_out_loss(model, data) == pytest.approx(record["validation_loss"], rel=1e-6, abs=1e-9)
        assert _model_mean_loss(model, data) == pytest.approx(record["validation_loss"], rel=1e-5)
        local = AutoTokenizer.from_pretrained(run_dir / "warm-seed0" / branch)  # saved with the phase model
        assert tokenizer_sha256(local) == record["tokenizer_sha256"]
    assert records[1]["validation_loss"] != records[0]["validation_loss"]  # the branches hold different phases

    # the card: perplexity, tokens and FLOPs, no accuracy; the model-index result is the perplexity
    card = ModelCard.load(hf_hub_download(repo, "README.md", revision="phase-01"))
    result = card.data.eval_results[0]
    assert (result.metric_type, result.metric_value) == ("perplexity", records[1]["validation_perplexity"])
    assert result.task_type == card.data.pipeline_tag == "text-generation"
    meta = card.data.to_dict()["warmstart_hf"]
    assert [p["validation_loss"] for p in meta["phases"]] == [r["validation_loss"] for r in records]
    assert [p["train_flops"] for p in meta["phases"]] == [r["train_flops"] for r in records]
    text = card.text
    for r in records:
        row = f"| {r['phase']} | `phase-{r['phase']:02d}` | {r['num_train_examples']} | {r['train_tokens']:,} |"
        row += f" {r['train_flops']:.3e} | {r['validation_loss']:.4f} | {r['validation_perplexity']:.2f} |"
        assert row in text
    assert "causal language model" in text and "train FLOPs (6ND)" in text
    prose = text.split("<details>")[0]  # the card without the resolved recipe (which names every field)
    for nonsense in ("accuracy", "masked autoencoder", "ViTMAE", "AutoImageProcessor", "classes)", "init_from"):
        assert nonsense not in prose, nonsense
    assert f'AutoTokenizer.from_pretrained("{repo}", revision="phase-01")' in text
    assert ModelCard(card.content).data.to_dict() == card.data.to_dict()  # parses back the same

    # a loss-aligned snapshot (saved without a tokenizer) is pushed with the run's tokenizer too
    aligned = {
        branch: json.loads((arm / "hub.json").read_text())["repo_id"]
        for arm in run_dir.glob("*-seed0")
        for branch in json.loads((arm / "hub.json").read_text()).get("aligned", {})
    }
    assert aligned, "the run pushed no loss-aligned checkpoint"
    for branch, aligned_repo in aligned.items():
        tokenizer = AutoTokenizer.from_pretrained(aligned_repo, revision=branch)
        assert tokenizer_sha256(tokenizer) == data.tokenizer_sha256
        assert AutoModelForCausalLM.from_pretrained(aligned_repo, revision=branch).config.model_type == "llama"

    # a downstream probe names a branch as `pretrained` (one whose files no earlier check fetched into the
    # cache): the fetch brings the run's tokenizer with the model
    cold_repo = f"{base}-cold-seed0"
    probe_recipe = downstream_recipe("demo_probe_genre.yaml", tmp_path, pretrained=f"hub://{cold_repo}@phase-01")
    probe_data = create_task(parse_config(recipe=probe_recipe)).prepare()
    assert tokenizer_sha256(probe_data.tokenizer) == data.tokenizer_sha256
    weights = load_file(probe_data.checkpoint / "model.safetensors")
    local = load_file(run_dir / "cold-seed0" / "phase-01" / "model.safetensors")
    assert weights.keys() == local.keys() and all(torch.equal(weights[k], local[k]) for k in local)

    # the downstream evaluation puts each checkpoint's top-1 on its pushed branch's card
    from warmstart_hf.downstream import evaluate_run

    probe_file = tmp_path / "probe.yaml"
    probe_file.write_text(yaml.safe_dump(downstream_recipe("demo_probe_genre.yaml", tmp_path)))
    out = evaluate_run(run_dir, [str(probe_file)])
    with (out / "downstream.csv").open() as handle:
        row = next(
            r for r in csv.DictReader(handle) if (r["arm"], r["phase"], r["kind"]) == ("warm", "1", "end_of_phase")
        )
    card = ModelCard.load(hf_hub_download(repo, "README.md", revision="phase-01")).text
    assert "## Downstream evaluation" in card
    assert f"| probe | {100 * float(row['test_accuracy']):.2f} |" in card
