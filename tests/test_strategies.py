from __future__ import annotations

import pytest
import torch

from warmstart_hf.config import StrategyArguments
from warmstart_hf.models import build_classifier_config, create_classifier
from warmstart_hf.strategies import STRATEGIES, PhaseContext, create_strategy


def _config():
    return build_classifier_config(
        "resnet18_cifar", num_labels=4, num_channels=1, image_size=8, width=0.125, image_mean=[0.5], image_std=[0.5]
    )


def _context(model, phase, init_state, **options):
    cfg = _config()
    return PhaseContext(
        phase=phase,
        num_phases=3,
        previous_model=model,
        fresh_model=lambda: create_classifier(cfg, 100 + phase),
        init_state=init_state,
        train_dataset=None,
        new_indices=[],
        seed=phase,
        options=StrategyArguments(**options),
    )


def _trained(seed=0):
    model = create_classifier(_config(), seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    for _ in range(3):
        x = torch.randint(0, 255, (16, 1, 8, 8), dtype=torch.uint8)
        model(x, labels=torch.randint(0, 4, (16,))).loss.backward()
        opt.step()
        opt.zero_grad()
    return model


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_registry_knows_warm_and_cold_and_rejects_unknown():
    assert {"warm", "cold"} <= set(STRATEGIES)
    with pytest.raises(KeyError):
        create_strategy("tepid")


def test_warm_keeps_the_previous_weights_and_reset_is_default():
    init = create_classifier(_config(), 0)
    theta0 = {k: v.clone() for k, v in init.state_dict().items()}
    trained = _trained()
    snapshot = {k: v.clone() for k, v in trained.state_dict().items()}
    start = create_strategy("warm").prepare(_context(trained, 1, theta0))
    assert start.model is trained
    assert all(torch.equal(snapshot[k], v) for k, v in start.model.state_dict().items())
    assert start.carry_optimizer_state is False
    carry = create_strategy("warm", StrategyArguments(optimizer_state="carry"))
    assert carry.prepare(_context(trained, 1, theta0, optimizer_state="carry")).carry_optimizer_state is True


def test_cold_fresh_draws_new_weights_each_phase():
    init = create_classifier(_config(), 0)
    theta0 = {k: v.clone() for k, v in init.state_dict().items()}
    trained = _trained()
    cold = create_strategy("cold")
    assert cold.prepare(_context(init, 0, theta0)).model is init  # phase 0 starts from theta0
    one = cold.prepare(_context(trained, 1, theta0)).model
    two = cold.prepare(_context(trained, 2, theta0)).model
    assert not _same(one, trained) and not _same(one, init) and not _same(one, two)
    assert not cold.prepare(_context(trained, 1, theta0)).carry_optimizer_state


def test_cold_same_restores_theta0_including_batchnorm_buffers():
    init = create_classifier(_config(), 0)
    theta0 = {k: v.clone() for k, v in init.state_dict().items()}
    trained = _trained()
    bn = trained.timm_model.bn1
    assert not torch.equal(bn.running_mean, theta0["timm_model.bn1.running_mean"])
    restored = (
        create_strategy("cold", StrategyArguments(cold_init="same"))
        .prepare(_context(trained, 1, theta0, cold_init="same"))
        .model
    )
    for key, value in restored.state_dict().items():
        assert torch.equal(value, theta0[key]), key


def test_fresh_init_shrink_perturb_also_applies_before_the_first_phase_by_default():
    """The Ash & Adams code applies S&P to the round-1 initialization too; that is the default."""
    theta0 = create_classifier(_config(), 0)
    init_state = {k: v.clone() for k, v in theta0.state_dict().items()}
    ctx = _context(theta0, 0, init_state, sp_mode="fresh_init")
    fresh = ctx.fresh_model()
    start = create_strategy("shrink_perturb", ctx.options).prepare(ctx)
    for name, param in start.model.named_parameters():
        torch.testing.assert_close(param, 0.4 * init_state[name] + 0.1 * dict(fresh.named_parameters())[name])
    assert start.stats["mode"] == "fresh_init"
    untouched = create_classifier(_config(), 0)
    ctx = _context(untouched, 0, init_state, sp_mode="fresh_init", sp_apply_before_first_phase=False)
    kept = create_strategy("shrink_perturb", ctx.options).prepare(ctx).model
    assert all(torch.equal(v, init_state[k]) for k, v in kept.state_dict().items())  # the paper's variant
