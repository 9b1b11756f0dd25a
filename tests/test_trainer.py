from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Array3D, Dataset, Features, Value
from transformers import TrainingArguments

from warmstart_hf.data import collate_pixels
from warmstart_hf.models import build_classifier_config, create_classifier
from warmstart_hf.trainer import PhaseTrainer, unwrap_optimizer_state


@pytest.fixture
def pixels():
    rng = np.random.default_rng(0)
    features = Features({"pixel_values": Array3D((1, 8, 8), "uint8"), "labels": Value("int64")})
    return Dataset.from_dict(
        {"pixel_values": rng.integers(0, 255, (40, 1, 8, 8), dtype=np.uint8), "labels": rng.integers(0, 4, 40)},
        features=features,
    ).with_format("numpy")


def _model():
    cfg = build_classifier_config(
        "resnet18_cifar", num_labels=4, num_channels=1, image_size=8, width=0.125, image_mean=[0.5], image_std=[0.5]
    )
    return create_classifier(cfg, 0)


def _trainer(tmp_path, model, data, **kwargs):
    args = TrainingArguments(
        output_dir=str(tmp_path),
        use_cpu=True,
        per_device_train_batch_size=10,
        num_train_epochs=4,
        learning_rate=0.1,
        optim="sgd",
        optim_args="momentum=0.9",
        weight_decay=1e-3,
        save_strategy="no",
        report_to="none",
        remove_unused_columns=False,
        lr_scheduler_type="constant",
        disable_tqdm=True,
    )
    return PhaseTrainer(model=model, args=args, train_dataset=data, data_collator=collate_pixels, **kwargs)


def test_multistep_schedule_multiplies_lr_at_epoch_milestones(tmp_path, pixels):
    trainer = _trainer(tmp_path, _model(), pixels, lr_milestones=[1, 3], lr_gamma=0.1)
    trainer.create_optimizer_and_scheduler(num_training_steps=16)  # 4 steps per epoch
    lrs = []
    for _ in range(16):
        lrs.append(trainer.optimizer.param_groups[0]["lr"])
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    assert lrs[:4] == pytest.approx([0.1] * 4)
    assert lrs[4:12] == pytest.approx([0.01] * 8)
    assert lrs[12:] == pytest.approx([0.001] * 4)


def test_weight_decay_on_every_parameter_by_default(tmp_path, pixels):
    trainer = _trainer(tmp_path, _model(), pixels)
    trainer.create_optimizer()
    decayed = sum(len(g["params"]) for g in trainer.optimizer.param_groups if g["weight_decay"] > 0)
    assert decayed == len(list(trainer.model.parameters()))
    hf_rule = _trainer(tmp_path, _model(), pixels, weight_decay_scope="no_bias_norm")
    hf_rule.create_optimizer()
    assert sum(len(g["params"]) for g in hf_rule.optimizer.param_groups if g["weight_decay"] > 0) < decayed


def test_carried_optimizer_state_keeps_momentum_but_restarts_lr(tmp_path, pixels):
    model = _model()
    first = _trainer(tmp_path / "a", model, pixels, lr_milestones=[1], lr_gamma=0.1)
    first.train()
    state = unwrap_optimizer_state(first.optimizer)
    assert state["param_groups"][0]["lr"] == pytest.approx(0.01)  # decayed at the end of phase 1
    carried = _trainer(tmp_path / "b", model, pixels, initial_optimizer_state=state)
    carried.create_optimizer()
    inner = carried.optimizer
    params = list(model.parameters())
    for index, param in enumerate(params):
        assert torch.equal(inner.state[param]["momentum_buffer"], state["state"][index]["momentum_buffer"])
    assert inner.param_groups[0]["lr"] == pytest.approx(0.1)
    reset = _trainer(tmp_path / "c", model, pixels)
    reset.create_optimizer()
    assert len(reset.optimizer.state) == 0


def test_augmentation_runs_only_in_training(tmp_path, pixels):
    seen = []

    def spy(images):
        seen.append(images.dtype)
        return images

    trainer = _trainer(tmp_path, _model(), pixels, augment=spy)
    trainer.args.num_train_epochs = 1
    trainer.train()
    assert seen and all(d == torch.uint8 for d in seen)
    count = len(seen)
    trainer.predict(pixels)
    assert len(seen) == count


def test_train_accuracy_stop_rule_ends_the_phase_early(tmp_path, pixels):
    trainer = _trainer(tmp_path, _model(), pixels, stop_train_accuracy=0.0)  # reached after any epoch
    trainer.train()
    assert trainer.state.global_step == 4 and trainer.state.epoch == 1.0  # 40 examples / 10 per step
    logged = [e["train_accuracy_running"] for e in trainer.state.log_history if "train_accuracy_running" in e]
    assert len(logged) == 1 and 0.0 <= logged[0] <= 1.0
    full = _trainer(tmp_path / "full", _model(), pixels, stop_train_accuracy=None)
    full.train()
    assert full.state.global_step == 16


def test_continued_schedule_counts_epochs_from_the_first_phase(tmp_path, pixels):
    trainer = _trainer(tmp_path, _model(), pixels, lr_milestones=[1, 3], lr_gamma=0.1, epoch_offset=2.0)
    trainer.create_optimizer_and_scheduler(num_training_steps=16)
    lrs = []
    for _ in range(8):
        lrs.append(trainer.optimizer.param_groups[0]["lr"])
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    assert lrs[:4] == pytest.approx([0.01] * 4)  # global epoch 2: one milestone passed
    assert lrs[4:] == pytest.approx([0.001] * 4)  # global epoch 3: both


def test_warmup_epochs_ramp_the_learning_rate(tmp_path, pixels):
    trainer = _trainer(tmp_path, _model(), pixels, lr_milestones=[3], warmup_epochs=1.0)
    trainer.create_optimizer_and_scheduler(num_training_steps=16)
    lrs = []
    for _ in range(6):
        lrs.append(trainer.optimizer.param_groups[0]["lr"])
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    assert lrs == pytest.approx([0.0, 0.025, 0.05, 0.075, 0.1, 0.1])


def test_drop_last_applies_to_training_batches_only(tmp_path, pixels):
    trainer = _trainer(tmp_path, _model(), pixels.select(range(37)))
    trainer.args.dataloader_drop_last = True
    trainer.args.num_train_epochs = 1
    trainer.train()
    assert trainer.state.global_step == 3  # 37 // 10: the partial training batch is dropped
    assert len(trainer.predict(pixels.select(range(37))).predictions) == 37  # evaluation sees all
    assert trainer.args.dataloader_drop_last is True


def test_masked_loss_trains_only_the_seen_classes(tmp_path, pixels):
    """With loss_classes the softmax covers the seen classes only: the head rows of unseen classes get
    no gradient (plain SGD, no decay), while the full-head loss moves them."""
    seen_only = pixels.filter(lambda y: y < 2, input_columns="labels")

    def head_rows_after(loss_classes):
        model = _model()
        before = model.timm_model.fc.weight.detach().clone()
        trainer = _trainer(tmp_path, model, seen_only, loss_classes=loss_classes)
        trainer.args.optim_args, trainer.args.weight_decay, trainer.args.num_train_epochs = None, 0.0, 1
        trainer.train()
        return before, model.timm_model.fc.weight.detach().cpu()

    before, masked = head_rows_after([0, 1])
    assert torch.equal(masked[2:], before[2:]) and not torch.equal(masked[:2], before[:2])
    before, full = head_rows_after(None)
    assert not torch.equal(full[2:], before[2:])


def test_running_accuracy_is_recounted_and_the_stop_rule_uses_its_threshold(tmp_path, pixels):
    """With a learning rate of 0 and a batch-independent model the predictions never change, so each
    epoch's running accuracy must equal an independent count over the training set."""
    from tests.update_probe import tiny_batch_independent_model
    from warmstart_hf.metrics.evaluation import predict_logits

    logits, labels = predict_logits(tiny_batch_independent_model(), pixels)
    expected = float(np.mean(logits.argmax(1) == labels))
    assert 0.0 < expected < 0.5  # precondition: hits and errors differ (4 classes, untrained)

    def run(threshold, folder):
        trainer = _trainer(tmp_path / folder, tiny_batch_independent_model(), pixels, stop_train_accuracy=threshold)
        trainer.args.learning_rate = 0.0
        trainer.train()
        logged = [e["train_accuracy_running"] for e in trainer.state.log_history if "train_accuracy_running" in e]
        return trainer.state.epoch, logged

    epochs, logged = run(expected + 1e-6, "above")  # never reached: all 4 epochs
    assert epochs == 4.0 and logged == pytest.approx([expected] * 4)
    epochs, logged = run(expected, "at")  # reached after the first epoch
    assert epochs == 1.0 and logged == pytest.approx([expected])


@pytest.mark.parametrize(("minutes", "saves"), [(0.0, 4), (1e-9, 4), (60.0, 0)])
def test_checkpoints_are_written_at_most_every_save_interval(tmp_path, pixels, minutes, saves):
    """save_strategy epoch over 4 epochs: every epoch's checkpoint without an interval (the Trainer's
    behaviour), none when an hour must pass between two."""
    trainer = _trainer(tmp_path, _model(), pixels, save_interval_minutes=minutes)
    trainer.args.save_strategy = "epoch"
    trainer.train()
    assert len(list(tmp_path.glob("checkpoint-*"))) == saves  # no save_total_limit: every one is kept


def test_a_signal_or_a_best_model_reload_saves_whatever_the_interval(monkeypatch):
    from types import SimpleNamespace

    from transformers import TrainerControl

    from warmstart_hf.graceful_stop import STOP
    from warmstart_hf.trainer import _SavePolicy

    policy = _SavePolicy(interval_seconds=3600)
    state = SimpleNamespace(epoch=1.5)
    for stopping, best_reload, expected in [(False, False, False), (True, False, True), (False, True, True)]:
        monkeypatch.setattr(STOP, "agreed", stopping)
        control = TrainerControl(should_save=True)
        args = SimpleNamespace(load_best_model_at_end=best_reload)
        assert policy.on_step_end(args, state, control).should_save is expected


def test_predictions_are_copied_out_of_cuda_graph_memory(tmp_path, pixels, monkeypatch):
    """A CUDA-graph replay writes its outputs into the same memory every time, and the prediction loop
    keeps the first batch's logits by reference. Simulated here with a model that returns one reused
    buffer: with the copy every batch's predictions survive; without it they would not."""
    model = _model()
    expected = _trainer(tmp_path, model, pixels).predict(pixels).predictions
    forward, buffer = model.forward, {}

    def replayed(*args, **kwargs):
        out = forward(*args, **kwargs)
        reused = buffer.setdefault(out.logits.shape, torch.empty_like(out.logits))
        out.logits = reused.copy_(out.logits)
        return out

    monkeypatch.setattr(model, "forward", replayed)
    trainer = _trainer(tmp_path, model, pixels)
    trainer.args.per_device_eval_batch_size = 10  # 4 batches of one shape: one buffer
    assert not np.allclose(trainer.predict(pixels).predictions, expected)  # the loop keeps references
    monkeypatch.setattr(PhaseTrainer, "_cuda_graphs", lambda self: True)
    np.testing.assert_allclose(trainer.predict(pixels).predictions, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("on_device", [True, False])
def test_index_loaders_need_no_worker_processes(tmp_path, pixels, on_device):
    """On the device-resident path the loaders yield only indices: no workers (forked again every epoch
    otherwise); rows read from a dataset keep the recipe's workers."""
    trainer = _trainer(tmp_path, _model(), pixels, data_on_device=on_device)
    trainer.args.dataloader_num_workers, trainer.args.dataloader_persistent_workers = 2, True
    expected = 0 if on_device else 2
    assert trainer.get_train_dataloader().base_dataloader.num_workers == expected
    assert trainer.get_eval_dataloader(pixels).base_dataloader.num_workers == expected
    assert trainer.args.dataloader_num_workers == 2 and trainer.args.dataloader_persistent_workers  # restored
