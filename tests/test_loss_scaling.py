"""One optimizer step with global batch B is the same update for 1 process x B, 2 processes x B/2
and 1 process x B/2 x 2 accumulation steps (BatchNorm swapped for a per-sample norm, so only the
loss scaling can differ), with the L2-init regularizer in the loss."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import REPO, launch_two_cpu_processes
from tests.update_probe import one_step_update


def test_gradient_accumulation_gives_the_update_of_the_full_batch(tmp_path):
    full = one_step_update(16, 1, str(tmp_path / "a"))
    accumulated = one_step_update(8, 2, str(tmp_path / "b"))
    assert full.abs().max() > 1e-3  # the step moved the weights
    torch.testing.assert_close(accumulated, full, rtol=1e-4, atol=1e-6)


def test_regularizer_is_scaled_like_the_loss(tmp_path):
    plain = one_step_update(16, 1, str(tmp_path / "a"), l2_lam=0.0)
    regularized = one_step_update(16, 1, str(tmp_path / "b"), l2_lam=0.01)
    accumulated = one_step_update(8, 2, str(tmp_path / "c"), l2_lam=0.01)
    # lr 0.5 x d/dtheta [0.01 ||theta - (theta0 + 0.05)||^2] at theta0 = 0.5 x 0.01 x 2 x 0.05 per weight
    torch.testing.assert_close(regularized - plain, torch.full_like(plain, 0.5 * 0.01 * 2 * 0.05), rtol=1e-3, atol=1e-6)
    torch.testing.assert_close(accumulated, regularized, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_two_processes_give_the_update_of_one(tmp_path):
    single = one_step_update(16, 1, str(tmp_path / "a"))
    out = tmp_path / "two.pt"
    proc = launch_two_cpu_processes(REPO / "tests" / "update_probe.py", str(out), "8", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    torch.testing.assert_close(torch.load(out), single, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_the_device_resident_data_path_gives_the_same_updates(tmp_path):
    """Batches gathered by index from the device-resident tensors: the rows path's update, for
    1 x B, B/2 x 2 accumulation and 2 processes x B/2."""
    rows = one_step_update(16, 1, str(tmp_path / "a"))
    torch.testing.assert_close(one_step_update(16, 1, str(tmp_path / "b"), data_on_device=True), rows, rtol=0, atol=0)
    accumulated = one_step_update(8, 2, str(tmp_path / "c"), data_on_device=True)
    torch.testing.assert_close(accumulated, rows, rtol=1e-4, atol=1e-6)
    out = tmp_path / "two.pt"
    proc = launch_two_cpu_processes(REPO / "tests" / "update_probe.py", str(out), "8", "1", "resident")
    assert proc.returncode == 0, proc.stderr[-3000:]
    torch.testing.assert_close(torch.load(out), rows, rtol=1e-4, atol=1e-6)


def test_gradients_are_not_clipped_unless_the_recipe_says_so(tmp_path):
    from warmstart_hf.config import parse_config

    default = parse_config([]).training.max_grad_norm
    assert parse_config([]).to_dict()["training"]["max_grad_norm"] == default == 0.0  # recorded in config.yaml
    assert parse_config(["--max_grad_norm", "0.5"]).training.max_grad_norm == 0.5
    unclipped = one_step_update(16, 1, str(tmp_path / "a"), max_grad_norm=default)
    clipped = one_step_update(16, 1, str(tmp_path / "b"), max_grad_norm=1.0)  # transformers' own default
    assert unclipped.norm() / 0.5 > 1.0  # lr 0.5: the gradient norm exceeds 1, so clipping would bite
    torch.testing.assert_close(unclipped, one_step_update(16, 1, str(tmp_path / "c"), max_grad_norm=0.0))
    assert clipped.norm() < 0.9 * unclipped.norm()


def test_a_plain_trainer_also_takes_the_loss_as_a_per_batch_mean(tmp_path):
    from transformers import Trainer, TrainingArguments

    from tests.update_probe import tiny_batch_independent_model

    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    assert Trainer(model=tiny_batch_independent_model(), args=args).model_accepts_loss_kwargs is False


def test_the_fast_path_gives_the_same_update(tmp_path):
    """channels_last (weights and batches, NHWC) and the fused optimizer kernel change how the step
    runs, not what it computes: the default path's update up to floating-point reordering."""
    default = one_step_update(16, 1, str(tmp_path / "a"))
    fast = one_step_update(16, 1, str(tmp_path / "b"), fast_path=True)
    torch.testing.assert_close(fast, default, rtol=1e-4, atol=1e-6)
    accumulated = one_step_update(8, 2, str(tmp_path / "c"), fast_path=True, data_on_device=True)
    torch.testing.assert_close(accumulated, default, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_a_compiled_model_gives_the_same_update(tmp_path):
    """``torch_compile: true`` (the Trainer's field; inductor on CPU here, CUDA graphs with
    ``torch_compile_mode: reduce-overhead`` on a GPU) trains the same step."""
    from torch._dynamo.utils import counters

    default = one_step_update(16, 1, str(tmp_path / "a"), data_on_device=True)
    counters.clear()
    compiled = one_step_update(
        16, 1, str(tmp_path / "b"), data_on_device=True, fast_path=True, torch_compile=True,
        torch_compile_mode="reduce-overhead",  # on a CPU: inductor without the CUDA graphs
    )  # fmt: skip
    assert counters["stats"]["unique_graphs"] >= 1  # dynamo did compile the model
    torch.testing.assert_close(compiled, default, rtol=1e-4, atol=1e-5)


def test_gradient_norm_is_logged_only_when_clipping_computes_it(tmp_path):
    """Without clipping the Trainer would take a full pass over the gradients every step only to log
    their norm; with clipping the norm it computed is logged."""
    from transformers import TrainingArguments

    from tests.update_probe import pixels, tiny_batch_independent_model
    from warmstart_hf.data import collate_pixels
    from warmstart_hf.trainer import PhaseTrainer

    for clip in (0.0, 1.0):
        args = TrainingArguments(
            output_dir=str(tmp_path / str(clip)), use_cpu=True, per_device_train_batch_size=16, max_steps=2,
            logging_steps=1, max_grad_norm=clip, save_strategy="no", report_to="none", remove_unused_columns=False,
            disable_tqdm=True,
        )  # fmt: skip
        trainer = PhaseTrainer(
            model=tiny_batch_independent_model(), args=args, train_dataset=pixels(), data_collator=collate_pixels
        )
        trainer.train()
        norms = [entry["grad_norm"] for entry in trainer.state.log_history if "grad_norm" in entry]
        assert len(norms) == (2 if clip else 0) and all(n > 0 for n in norms)
