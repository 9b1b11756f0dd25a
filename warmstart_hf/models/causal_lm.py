"""Decoder-only language models built from recipe fields (transformers only), seeded, and the held-out
loss that judges them.

``llama`` is a LLaMA-style decoder (RMSNorm, SwiGLU MLP of 8/3 x the width, rotary positions, untied
embeddings), ``gpt2`` the GPT-2 architecture; both with transformers' own initialisation
(N(0, ``initializer_range`` = 0.02) linears and embeddings, as their reference code), drawn under a
seed without touching the global generator. Neither has dropout (LLaMA has none; GPT-2's config
defaults of 0.1 are set to 0, as in single-pass pretraining, e.g. Pythia): a dropout mask depends on
how a global batch is split over processes and accumulation steps, so with it 1 x B, N x B/N and
B/k x k would no longer take the same optimizer step (tests/test_lm_scaling.py).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, PretrainedConfig


def llama_intermediate_size(hidden_size: int) -> int:
    """LLaMA's MLP width: 2/3 of 4 x the width, rounded up to a multiple of 64 (Touvron et al. 2023)."""
    return 64 * math.ceil(8 * hidden_size / 3 / 64)


def build_lm_config(
    architecture: str,
    *,
    vocab_size: int,
    block_size: int,
    hidden_size: int,
    layers: int,
    heads: int,
    intermediate_size: int | None,
    bos_token_id: int | None,
    eos_token_id: int,
    pad_token_id: int | None,
) -> PretrainedConfig:
    """The configuration every model of a run is built from."""
    tokens = {"bos_token_id": bos_token_id, "eos_token_id": eos_token_id, "pad_token_id": pad_token_id}
    if architecture == "gpt2":
        return GPT2Config(
            vocab_size=vocab_size,
            n_positions=block_size,
            n_embd=hidden_size,
            n_layer=layers,
            n_head=heads,
            n_inner=intermediate_size,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            **tokens,
        )
    return LlamaConfig(
        vocab_size=vocab_size,
        max_position_embeddings=block_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or llama_intermediate_size(hidden_size),
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        tie_word_embeddings=False,
        **tokens,
    )


def create_lm(config: PretrainedConfig, seed: int) -> nn.Module:
    """A seeded draw of the architecture (the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(config)


@torch.no_grad()
def token_loss_sum(model: nn.Module, blocks: torch.Tensor, batch_size: int) -> tuple[float, int]:
    """Summed next-token cross-entropy over ``blocks`` (in float64) and the number of predicted tokens,
    in eval mode; the model's own ``loss`` is a per-batch mean, so the sum is rebuilt from the logits."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    try:
        for start in range(0, len(blocks), batch_size):
            ids = blocks[start : start + batch_size].to(device)
            logits = model(input_ids=ids).logits[:, :-1].float()
            targets = ids[:, 1:]
            total += float(nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="sum").double())
            count += targets.numel()
    finally:
        model.train(was_training)
    return total, count


def held_out_loss(model: nn.Module, blocks: torch.Tensor, batch_size: int = 64) -> float | None:
    """Mean next-token loss (nats per token) over ``blocks``; None for an empty set."""
    total, count = token_loss_sum(model, blocks, batch_size)
    return total / count if count else None


def parameter_count(model: nn.Module) -> int:
    """N of the 6 N D training-FLOPs estimate: every parameter (embeddings included)."""
    return sum(p.numel() for p in model.parameters())
