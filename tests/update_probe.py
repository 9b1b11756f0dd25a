"""One optimizer step of the real PhaseTrainer, for the loss-scaling test (tests/test_loss_scaling.py).

``python tests/update_probe.py OUT BATCH ACCUMULATION`` (or under ``accelerate launch`` with
``recipes/accelerate_configs/cpu_2proc.yaml``) trains a tiny classifier for exactly one optimizer
step and saves ``theta_after - theta_before`` to OUT (main process). BatchNorm is swapped for a
per-sample GroupNorm so the update depends only on which examples form the global batch, not on how
they are split across processes or accumulation steps; an L2-init regularizer with a shifted anchor
has a non-zero gradient, so its scaling is checked too.
"""

from __future__ import annotations

import sys
import tempfile

import numpy as np
import torch
from datasets import Array3D, Dataset, Features, Value
from torch import nn
from transformers import TrainingArguments

from warmstart_hf.data import collate_pixels
from warmstart_hf.fast_path import to_channels_last
from warmstart_hf.models import build_classifier_config, create_classifier
from warmstart_hf.strategies.regularizers import l2_init_penalty
from warmstart_hf.trainer import PhaseTrainer


def tiny_batch_independent_model() -> nn.Module:
    config = build_classifier_config(
        "resnet18_cifar", num_labels=4, num_channels=1, image_size=8, width=0.125, image_mean=[0.5], image_std=[0.5]
    )
    model = create_classifier(config, 0)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                setattr(parent, name, nn.GroupNorm(1, child.num_features))
    return model


def pixels(num: int = 64) -> Dataset:
    rng = np.random.default_rng(0)
    features = Features({"pixel_values": Array3D((1, 8, 8), "uint8"), "labels": Value("int64")})
    data = {"pixel_values": rng.integers(0, 255, (num, 1, 8, 8), dtype=np.uint8), "labels": rng.integers(0, 4, num)}
    return Dataset.from_dict(data, features=features).with_format("numpy")


def one_step_update(
    batch: int,
    accumulation: int,
    output_dir: str,
    l2_lam: float = 0.01,
    max_grad_norm: float = 0.0,
    data_on_device: bool = False,
    fast_path: bool = False,
    **training: object,
) -> torch.Tensor:
    """``fast_path``: channels-last weights and batches and the fused optimizer; ``training``: other
    TrainingArguments (e.g. ``torch_compile``)."""
    model = tiny_batch_independent_model()
    if fast_path:
        model = to_channels_last(model)
    before = torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()])
    anchor = {name: p.detach() + 0.05 for name, p in model.named_parameters()}  # a non-zero regularizer gradient
    args = TrainingArguments(
        output_dir=output_dir,
        use_cpu=True,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        learning_rate=0.5,
        optim="sgd",
        weight_decay=0.0,
        max_grad_norm=max_grad_norm,
        lr_scheduler_type="constant",
        save_strategy="no",
        report_to="none",
        remove_unused_columns=False,
        disable_tqdm=True,
        seed=7,
        **training,
    )
    trainer = PhaseTrainer(
        model=model,
        args=args,
        train_dataset=pixels(),
        data_collator=collate_pixels,
        regularizer=l2_init_penalty(anchor, l2_lam),
        data_on_device=data_on_device,
        channels_last=fast_path,
        fused_optimizer=fast_path,
    )
    trainer.train()
    after = torch.cat([p.detach().reshape(-1).cpu() for p in trainer.model.parameters()])
    return after - before


def main(argv: list[str]) -> None:
    out, batch, accumulation = argv[0], int(argv[1]), int(argv[2])
    resident = argv[3:] == ["resident"]
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as scratch:
        update = one_step_update(batch, accumulation, scratch, data_on_device=resident)
    save_and_leave(update, out)


def save_and_leave(update: dict, out: str) -> None:
    """Rank 0 (or the only process) saves ``update`` to ``out``; every process leaves its group."""
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        torch.save(update, out)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
