"""One optimizer step of the real PhaseTrainer on a tiny causal LM, for tests/test_lm_scaling.py.

``python tests/lm_update_probe.py OUT ARCHITECTURE BATCH ACCUMULATION`` (or under ``accelerate launch``
with ``recipes/accelerate_configs/cpu_2proc.yaml``) trains a seeded decoder (``build_lm_config``, as the
causal_lm task builds it) for exactly one optimizer step on packed blocks (``collate_blocks``: every
block ``BLOCK`` tokens, no padding) and saves ``theta_after - theta_before`` to OUT (main process).
"""

from __future__ import annotations

import sys
import tempfile

import numpy as np
import torch
from datasets import Dataset
from transformers import TrainingArguments
from update_probe import save_and_leave  # a sibling script: its directory is first on sys.path

from warmstart_hf.data.text_blocks import collate_blocks
from warmstart_hf.models.causal_lm import build_lm_config, create_lm
from warmstart_hf.trainer import PhaseTrainer

VOCAB, BLOCK = 64, 16


def blocks(num: int = 64) -> Dataset:
    """Packed blocks of random token ids, as pack_blocks writes them."""
    ids = np.random.default_rng(0).integers(0, VOCAB, (num, BLOCK), dtype=np.int64)
    return Dataset.from_dict({"input_ids": ids.tolist()})


def tiny_lm(architecture: str):
    config = build_lm_config(
        architecture, vocab_size=VOCAB, block_size=BLOCK, hidden_size=16, layers=1, heads=2,
        intermediate_size=None, bos_token_id=None, eos_token_id=1, pad_token_id=0,
    )  # fmt: skip
    return create_lm(config, 0)


def one_step_update(architecture: str, batch: int, accumulation: int, output_dir: str) -> torch.Tensor:
    model = tiny_lm(architecture)
    before = torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()])
    args = TrainingArguments(
        output_dir=output_dir, use_cpu=True, per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation, max_steps=1, learning_rate=0.5, optim="sgd", weight_decay=0.0,
        max_grad_norm=0.0, lr_scheduler_type="constant", save_strategy="no", report_to="none",
        remove_unused_columns=False, disable_tqdm=True, seed=7,
    )  # fmt: skip
    trainer = PhaseTrainer(
        model=model, args=args, train_dataset=blocks(), data_collator=collate_blocks, running_accuracy=False
    )
    trainer.train()
    after = torch.cat([p.detach().reshape(-1).cpu() for p in trainer.model.parameters()])
    return after - before


def main(argv: list[str]) -> None:
    out, architecture, batch, accumulation = argv[0], argv[1], int(argv[2]), int(argv[3])
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as scratch:
        update = one_step_update(architecture, batch, accumulation, scratch)
    save_and_leave(update, out)


if __name__ == "__main__":
    main(sys.argv[1:])
