"""One optimizer step of a causal LM with global batch B is the same update for 1 process x B,
2 processes x B/2 and 1 process x B/2 x 2 accumulation steps: every packed block has block_size tokens
and no padding, so the mean of the per-batch mean losses is the global batch's mean loss, and the
decoders are built without dropout (a dropout mask would depend on how the batch is split)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.conftest import REPO, launch_two_cpu_processes
from tests.lm_update_probe import one_step_update, tiny_lm

ARCHITECTURES = ["llama", "gpt2"]


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_gradient_accumulation_gives_the_update_of_the_full_batch(tmp_path, architecture):
    full = one_step_update(architecture, 16, 1, str(tmp_path / "a"))
    accumulated = one_step_update(architecture, 8, 2, str(tmp_path / "b"))
    assert full.abs().max() > 1e-3  # the step moved the weights
    torch.testing.assert_close(accumulated, full, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_the_decoders_have_no_dropout(architecture):
    model = tiny_lm(architecture)
    rates = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
    rates += [getattr(model.config, name) for name in ("attention_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop")
              if hasattr(model.config, name)]  # fmt: skip
    assert rates and all(rate == 0 for rate in rates)


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_two_processes_give_the_update_of_one(tmp_path, architecture):
    single = one_step_update(architecture, 16, 1, str(tmp_path / "a"))
    out = tmp_path / "two.pt"
    proc = launch_two_cpu_processes(REPO / "tests" / "lm_update_probe.py", str(out), architecture, "8", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    torch.testing.assert_close(torch.load(out), single, rtol=1e-4, atol=1e-6)
