"""The loop's promises, checked against independent recomputations: where each phase starts (per
strategy), what data a strategy and a probe see, recounted accuracies, the resolved config, and the
independence of arms. Each test would fail if the behaviour it names broke (see tests/mutation_check.py)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from warmstart_hf.config import parse_config
from warmstart_hf.loop import MEASURED_FIELDS, prepare_data, run_experiment
from warmstart_hf.metrics.diagnostics import diagnostic_sample, gradient_norm
from warmstart_hf.metrics.evaluation import predict_logits
from warmstart_hf.models import TimmImageClassifier, create_classifier
from warmstart_hf.optimizer_state import load_optimizer_state
from warmstart_hf.seeding import derive_seed
from warmstart_hf.trainer import PhaseTrainer

pytestmark = pytest.mark.slow


def _results(run_dir: Path, arm: str) -> list[dict]:
    return [json.loads(line) for line in (run_dir / arm / "results.jsonl").read_text().splitlines()]


def _capture_phase_starts(monkeypatch) -> dict[tuple[str, int], dict]:
    """{(arm, phase): {"state": the model's tensors when training starts, "optimizer": the carried
    optimizer state handed to the Trainer, "epoch_offset": ...}} for every phase of a run."""
    starts: dict[tuple[str, int], dict] = {}
    original = PhaseTrainer.train

    def train(self, *args, **kwargs):
        phase_dir = Path(self.args.output_dir)
        starts[(phase_dir.parent.name, int(phase_dir.name.split("-")[1]))] = {
            "state": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            "optimizer": copy.deepcopy(self.initial_optimizer_state),  # training updates it in place
            "epoch_offset": self.epoch_offset,
        }
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PhaseTrainer, "train", train)
    return starts


def _final(run_dir: Path, arm: str, phase: int) -> dict[str, torch.Tensor]:
    return load_file(run_dir / arm / f"phase-{phase:02d}" / "model.safetensors")


def _equal(a: dict, b: dict, keys) -> bool:
    return all(torch.equal(a[k].cpu(), b[k].cpu()) for k in keys)


def test_each_strategy_starts_each_phase_where_it_promises(tiny_recipe, monkeypatch):
    recipe = {
        **tiny_recipe,
        "num_train_epochs": 1,
        "diagnostics": False,
        "optimizer_state": "carry",
        "strategies": ["warm", "cold", "reset_head", "reset_last_k"],
        "reset_k": 2,
        "reset_unit": "block",
    }
    starts = _capture_phase_starts(monkeypatch)
    config = parse_config(recipe=recipe)
    run_dir = run_experiment(config)
    model_config = prepare_data(config).model_config
    keys = list(_final(run_dir, "warm-seed0", 0))
    for phase in (1, 2):
        fresh = create_classifier(model_config, derive_seed(0, "fresh", phase)).state_dict()
        # warm: exactly the previous phase's final weights and buffers, and its optimizer state
        warm = starts[("warm-seed0", phase)]
        assert _equal(warm["state"], _final(run_dir, "warm-seed0", phase - 1), keys)
        saved = load_optimizer_state(run_dir / "warm-seed0" / f"phase-{phase - 1:02d}" / "optimizer_state.safetensors")
        assert warm["optimizer"] is not None and warm["optimizer"]["state"].keys() == saved["state"].keys()
        for index, buffers in saved["state"].items():
            assert torch.equal(warm["optimizer"]["state"][index]["momentum_buffer"], buffers["momentum_buffer"])
        # cold: the seeded fresh draw of this phase (a new one per phase), and a new optimizer
        cold = starts[("cold-seed0", phase)]
        assert _equal(cold["state"], fresh, keys) and cold["optimizer"] is None
        # reset_head: the head from the fresh draw, everything else from the previous phase
        head = [k for k in keys if k.startswith("timm_model.fc.")]
        previous = _final(run_dir, "reset_head-seed0", phase - 1)
        start = starts[("reset_head-seed0", phase)]["state"]
        assert head and _equal(start, fresh, head) and _equal(start, previous, set(keys) - set(head))
        # reset_last_k, 2 blocks: the last two residual blocks and the head are the fresh draw's
        reset = [k for k in keys if k.startswith(("timm_model.layer4.0.", "timm_model.layer4.1.", "timm_model.fc."))]
        previous = _final(run_dir, "reset_last_k-seed0", phase - 1)
        start = starts[("reset_last_k-seed0", phase)]["state"]
        assert _equal(start, fresh, reset) and _equal(start, previous, set(keys) - set(reset))
        assert not _equal(start, previous, reset)
    cold_1, cold_2 = starts[("cold-seed0", 1)]["state"], starts[("cold-seed0", 2)]["state"]
    assert not _equal(cold_1, cold_2, ["timm_model.conv1.weight"])  # a new draw every phase
    assert _results(run_dir, "reset_last_k-seed0")[1]["strategy_stats"]["reset_modules"] == [
        "timm_model.layer4.0",
        "timm_model.layer4.1",
        "timm_model.fc",
    ]


def test_dash_estimates_on_all_seen_data_with_the_newest_chunk_last(tiny_recipe, monkeypatch):
    import importlib

    dash_module = importlib.import_module("warmstart_hf.strategies.dash")  # the package re-exports the function

    seen: dict[int, list[torch.Tensor]] = {}
    calls = []

    def recording_dash(model, batches, **kwargs):
        calls.append([x.clone() for x, _ in batches])
        return {}

    monkeypatch.setattr(dash_module, "dash", recording_dash)
    recipe = {**tiny_recipe, "num_train_epochs": 1, "diagnostics": False, "strategies": ["dash"]}
    config = parse_config(recipe=recipe)
    run_dir = run_experiment(config)
    split = json.loads((run_dir / "dash-seed0" / "split.json").read_text())
    train = prepare_data(config).train
    assert len(calls) == 2  # before phases 1 and 2, not before phase 0
    for phase, batches in zip((1, 2), calls):
        seen[phase] = batches
        chunks = split["chunks"][: phase + 1]
        assert [len(b) for b in batches] == [len(split["chunks"][phase])] * (phase + 1)  # batch = chunk size
        expected = torch.from_numpy(np.asarray(train.select([i for c in chunks for i in c])["pixel_values"][:]))
        assert torch.equal(torch.cat(batches), expected.to(torch.uint8))  # every seen example, chunk order
        newest = torch.from_numpy(np.asarray(train.select(split["chunks"][phase])["pixel_values"][:]))
        assert torch.equal(batches[-1], newest.to(torch.uint8))  # the newest chunk last


def test_gradient_probe_uses_the_old_chunks_and_the_new_one(tiny_recipe):
    recipe = {**tiny_recipe, "num_train_epochs": 1, "strategies": ["warm"], "diagnostics_samples": 1000}
    config = parse_config(recipe=recipe)
    run_dir = run_experiment(config)
    data = prepare_data(config)
    split = json.loads((run_dir / "warm-seed0" / "split.json").read_text())
    records = _results(run_dir, "warm-seed0")
    for phase in (1, 2):
        model = TimmImageClassifier.from_pretrained(run_dir / "warm-seed0" / f"phase-{phase - 1:02d}")
        old = [i for chunk in split["chunks"][:phase] for i in chunk]  # the sample is all of it (1000 > size)
        expected_old = gradient_norm(model, data.train.select(old))
        expected_new = gradient_norm(model, data.train.select(split["chunks"][phase]))
        d = records[phase]["diagnostics"]
        assert d["grad_norm_old_data"] == pytest.approx(expected_old, rel=1e-4)
        assert d["grad_norm_new_data"] == pytest.approx(expected_new, rel=1e-4)
        assert d["grad_norm_old_data"] != pytest.approx(d["grad_norm_new_data"], rel=1e-3)


def test_a_replay_run_trains_each_phase_on_the_replayed_sample_and_the_new_chunk(tiny_recipe):
    recipe = {**tiny_recipe, "num_train_epochs": 1, "strategies": ["warm"], "diagnostics_samples": 1000}
    config = parse_config(recipe={**recipe, "replay_fraction": 0.25})
    run_dir = run_experiment(config)
    split = json.loads((run_dir / "warm-seed0" / "split.json").read_text())
    records = _results(run_dir, "warm-seed0")
    assert split["replay_fraction"] == 0.25
    # 240 examples in 3 chunks of 80: phase k trains on round(0.25 * 80k) earlier examples and its 80 new ones
    assert [r["num_train_examples"] for r in records] == [80, 20 + 80, 40 + 80]
    for phase in (1, 2):
        earlier = [i for chunk in split["chunks"][:phase] for i in chunk]
        assert split["phases"][phase]["train_indices"] == split["replayed"][phase] + split["chunks"][phase]
        assert set(split["replayed"][phase]) <= set(earlier)
    # the gradient probe's "old data" is still every earlier chunk, not just the replayed sample
    data = prepare_data(config)
    model = TimmImageClassifier.from_pretrained(run_dir / "warm-seed0" / "phase-01")
    expected_old = gradient_norm(model, data.train.select([i for c in split["chunks"][:2] for i in c]))
    assert records[2]["diagnostics"]["grad_norm_old_data"] == pytest.approx(expected_old, rel=1e-4)


def test_continued_schedule_offsets_each_phase_by_the_epochs_before_it(tiny_recipe, monkeypatch):
    starts = _capture_phase_starts(monkeypatch)
    base = {
        **tiny_recipe,
        "strategies": ["warm"],
        "diagnostics": False,
        "lr_milestones": [1],
        "phase_epochs": [1, 2, 1],
    }
    run_experiment(parse_config(recipe={**base, "run_name": "restart"}))
    assert [starts[("warm-seed0", p)]["epoch_offset"] for p in range(3)] == [0.0, 0.0, 0.0]
    run_experiment(parse_config(recipe={**base, "run_name": "continue", "lr_schedule_across_phases": "continue"}))
    assert [starts[("warm-seed0", p)]["epoch_offset"] for p in range(3)] == [0.0, 1.0, 3.0]  # epochs before


@pytest.mark.parametrize("scenario", ["data", "class"])
def test_recounted_accuracies_equal_the_records(tiny_recipe, scenario):
    recipe = {**tiny_recipe, "num_train_epochs": 1, "strategies": ["warm"], "scenario": scenario}
    if scenario == "class":  # barely trained, so it still predicts unseen classes and masking matters
        recipe["learning_rate"] = 1e-3
    config = parse_config(recipe=recipe)
    run_dir = run_experiment(config)
    data = prepare_data(config)
    split = json.loads((run_dir / "warm-seed0" / "split.json").read_text())
    for record in _results(run_dir, "warm-seed0"):
        phase = record["phase"]
        model = TimmImageClassifier.from_pretrained(run_dir / "warm-seed0" / f"phase-{phase:02d}")
        logits, labels = predict_logits(model, data.test)
        seen = sorted({c for group in (split["class_groups"] or [list(range(10))])[: phase + 1] for c in group})
        on_seen = np.isin(labels, seen)
        masked = np.where(np.isin(np.arange(logits.shape[1]), seen), logits, -np.inf).argmax(1)
        assert record["test_accuracy"] == pytest.approx(np.mean(logits.argmax(1)[on_seen] == labels[on_seen]))
        assert record["test_accuracy_masked"] == pytest.approx(np.mean(masked[on_seen] == labels[on_seen]))
        assert record["test_accuracy_full"] == pytest.approx(np.mean(logits.argmax(1) == labels))
        per_group = [np.mean(logits.argmax(1)[g] == labels[g]) for g in map(np.asarray, split["test_groups"])]
        assert record["accuracy_per_group"] == pytest.approx(per_group)
        train_logits, train_labels = predict_logits(model, data.train.select(split["phases"][phase]["train_indices"]))
        assert record["train_accuracy"] == pytest.approx(np.mean(train_logits.argmax(1) == train_labels))
        if scenario == "class" and phase == 0:  # precondition: masking changes some prediction here
            assert (masked[on_seen] != logits.argmax(1)[on_seen]).any()


def test_config_yaml_holds_every_section_and_no_token(tiny_recipe):
    secret = "hf_DoNotWriteThisTokenAnywhere0123456789"
    config = parse_config(recipe={**tiny_recipe, "num_phases": 1, "num_train_epochs": 1, "hub_token": secret})
    config.incremental.strategies = ["warm"]
    run_dir = run_experiment(config)
    text = (run_dir / "config.yaml").read_text()
    saved = yaml.safe_load(text)
    assert secret not in text and not any("token" in key for key in saved["training"])
    for section, values in config.to_dict().items():
        assert saved[section] == yaml.safe_load(yaml.safe_dump(values)), section
    assert saved["data"]["dataset"] == "sklearn:digits" and saved["model"]["model_width"] == 0.125


def test_the_carved_test_split_is_fixed_across_seeds(tiny_recipe):
    zero = prepare_data(parse_config(recipe={**tiny_recipe, "seed": 0}))
    one = prepare_data(parse_config(recipe={**tiny_recipe, "seed": 1}))
    assert np.array_equal(np.asarray(zero.test["pixel_values"][:]), np.asarray(one.test["pixel_values"][:]))
    assert np.array_equal(np.asarray(zero.test["labels"][:]), np.asarray(one.test["labels"][:]))
    assert zero.plan.chunks != one.plan.chunks  # while the phase plan does follow the seed


def test_init_from_a_local_phase_directory_is_theta0(tiny_recipe):
    first = run_experiment(parse_config(recipe={**tiny_recipe, "num_train_epochs": 1, "strategies": ["warm"]}))
    phase_dir = first / "warm-seed0" / "phase-01"
    recipe = {**tiny_recipe, "num_train_epochs": 1, "strategies": ["warm"], "run_name": "from-local"}
    second = run_experiment(parse_config(recipe={**recipe, "init_from": str(phase_dir)}))
    theta0 = load_file(second / "warm-seed0" / "init" / "model.safetensors")
    assert _equal(theta0, load_file(phase_dir / "model.safetensors"), theta0)


def test_arms_do_not_depend_on_which_other_arms_run(tiny_recipe):
    timing = set(MEASURED_FIELDS)

    def strip(records):
        return [{k: v for k, v in r.items() if k not in timing} for r in records]

    recipe = {**tiny_recipe, "num_train_epochs": 1, "diagnostics": False}
    grown = run_experiment(parse_config(recipe={**recipe, "strategies": ["warm"]}))
    warm_alone = (grown / "warm-seed0" / "results.jsonl").read_text()
    run_experiment(parse_config(recipe={**recipe, "strategies": ["warm", "cold"]}))  # add an arm to the run
    assert (grown / "warm-seed0" / "results.jsonl").read_text() == warm_alone  # untouched
    cold_alone = run_experiment(parse_config(recipe={**recipe, "strategies": ["cold"], "run_name": "cold-only"}))
    assert strip(_results(grown, "cold-seed0")) == strip(_results(cold_alone, "cold-seed0"))
    both = run_experiment(parse_config(recipe={**recipe, "strategies": ["cold", "warm"], "run_name": "reversed"}))
    assert strip(_results(both, "warm-seed0")) == strip(_results(grown, "warm-seed0"))


def test_early_stopping_ends_the_phase_on_the_best_epoch(tiny_recipe):
    recipe = {
        **tiny_recipe,
        "strategies": ["warm"],
        "num_phases": 1,
        "validation_per_class": 3,
        "stop_rule": "early_stopping",
        "num_train_epochs": 5,
        "lr_milestones": [3],
        "lr_gamma": 30.0,  # the learning rate jumps x30 after epoch 3: later epochs get worse, so the best is not last
        "diagnostics": False,
    }
    config = parse_config(recipe=recipe)
    run_dir = run_experiment(config)
    record = _results(run_dir, "warm-seed0")[0]
    curve = record["curve"]
    best = max(curve, key=lambda p: p["validation_accuracy_masked"])
    assert best["epoch"] != curve[-1]["epoch"], "precondition: the best epoch must not be the last"
    assert best["validation_accuracy_masked"] > curve[-1]["validation_accuracy_masked"]
    model = TimmImageClassifier.from_pretrained(run_dir / "warm-seed0" / "phase-00")
    logits, labels = predict_logits(model, prepare_data(config).validation)
    assert np.mean(logits.argmax(1) == labels) == pytest.approx(best["validation_accuracy_masked"])


def test_the_diagnostic_sample_follows_its_seed():
    assert diagnostic_sample(1000, 50, 3) == diagnostic_sample(1000, 50, 3)
    assert diagnostic_sample(1000, 50, 3) != diagnostic_sample(1000, 50, 4)


def test_the_device_resident_data_path_trains_exactly_as_rows(tiny_recipe):
    """data_on_device: the same batches, so the same run, as reading rows through the DataLoader (training,
    per-epoch evaluation and the end-of-phase predictions); not part of the fingerprint."""
    timing = set(MEASURED_FIELDS)

    def strip(records):
        return [{k: v for k, v in r.items() if k not in timing} for r in records]

    recipe = {**tiny_recipe, "num_train_epochs": 2, "label_noise": [0.3, 0.0, 0.0], "strategies": ["warm", "cold"]}
    recipe["track_test_curve"] = True  # per-epoch evaluation reads the resident test set too
    rows = run_experiment(parse_config(recipe={**recipe, "data_on_device": "never"}))
    resident = run_experiment(parse_config(recipe={**recipe, "data_on_device": "always", "run_name": "resident"}))
    for arm in ("warm-seed0", "cold-seed0"):
        assert strip(_results(resident, arm)) == strip(_results(rows, arm))
    assert "data_on_device" not in parse_config(recipe=recipe).experiment_fingerprint()["incremental"]


def test_lazy_decoding_trains_exactly_as_the_decoded_copy(tiny_recipe):
    """decode: lazy (each row decoded when read) gives the same pixels, so the same run, as the eager
    decoded copy; label noise (a relabelled phase dataset) keeps the lazy transform."""
    timing = set(MEASURED_FIELDS)

    def strip(records):
        return [{k: v for k, v in r.items() if k not in timing} for r in records]

    recipe = {**tiny_recipe, "num_train_epochs": 1, "label_noise": [0.3, 0.0, 0.0], "strategies": ["warm"]}
    eager = run_experiment(parse_config(recipe=recipe))
    lazy = run_experiment(parse_config(recipe={**recipe, "decode": "lazy", "run_name": "lazy"}))
    assert strip(_results(lazy, "warm-seed0")) == strip(_results(eager, "warm-seed0"))
    final = [load_file(run / "warm-seed0" / "phase-02" / "model.safetensors") for run in (eager, lazy)]
    assert _equal(final[0], final[1], final[0])
    data = prepare_data(parse_config(recipe={**recipe, "decode": "lazy", "run_name": "lazy"}))
    assert "image" in data.train.column_names  # no decoded copy: the encoded images, decoded on access


def test_runs_leave_no_trainer_behind_and_the_collector_unfrozen(tiny_recipe):
    """The collector is frozen for a run (the Trainer's per-phase gc.collect is then cheap) and unfrozen
    after it, with the previous run's garbage collected first: repeated runs in one process (sweeps,
    downstream evaluation) free every phase's trainer."""
    import gc

    from warmstart_hf.trainer import PhaseTrainer

    recipe = {**tiny_recipe, "strategies": ["warm"], "num_phases": 2, "num_train_epochs": 1, "diagnostics": False}
    for name in ("first", "second"):
        run_experiment(parse_config(recipe={**recipe, "run_name": name}))
        assert gc.get_freeze_count() == 0
    gc.collect()
    assert not [o for o in gc.get_objects() if isinstance(o, PhaseTrainer)]
