"""Pretrained backbones for finetuning.

A recipe's ``pretrained`` resolves to a local folder (a Hub download fetches ``config.json``,
``model.safetensors`` and the tokenizer's data files a language-model checkpoint carries, nothing else: no
pickle is ever read, no code from a repo runs). Two layouts load: a
phase (or ``init``) directory this project wrote, and a timm model folder as timm publishes on the
Hub (``timm/resnet18.tv_in1k``). The classifier built from it holds the backbone's weights and
BatchNorm buffers and a new head, drawn from a seed, for the downstream classes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file

from warmstart_hf.config import ConfigError
from warmstart_hf.models.classifier import TimmClassifierConfig, TimmImageClassifier

WEIGHTS_FILE = "model.safetensors"
# a causal_lm phase's tokenizer (the downstream text tasks tokenize with it): JSON, text and SentencePiece
# protobuf files, read as data; absent from image checkpoints, so fetching them costs those nothing
TOKENIZER_FILES = [
    "tokenizer*.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "*.model",
]
_FIX_OFFLINE = (
    "Fix: check the id and revision; on a machine without network, download it once where there is "
    "network (it is then read from the Hugging Face cache), or point `pretrained` at a local folder."
)


@dataclass
class PretrainedWeights:
    """What a finetuned classifier takes from the pretrained network (timm state-dict keys)."""

    source: str
    timm_model: str
    num_channels: int
    input_size: int
    image_mean: list[float]
    image_std: list[float]
    model_kwargs: dict = field(default_factory=dict)
    backbone: dict[str, torch.Tensor] = field(default_factory=dict)  # every tensor but the head's


def resolve_pretrained(value: str) -> Path:
    """The local folder ``value`` names: a directory, or a Hub model (``timm/<name>``, ``hf-hub:...``,
    ``hub://<user>/<repo>@<revision>``) fetched into the Hugging Face cache (safetensors and tokenizer files only)."""
    local = Path(value).expanduser()
    if local.is_dir():
        return local
    repo, _, revision = value.removeprefix("hub://").removeprefix("hf-hub:").partition("@")
    if value.startswith((".", "/", "~")) or repo.count("/") != 1:
        raise ConfigError(
            f"Recipe field `pretrained` has value {value!r}, which is neither a local directory nor a Hub model id "
            "(<user>/<repo>[@<revision>]). Fix: give a timm Hub model such as timm/resnet18.tv_in1k, "
            "hub://<user>/<repo>@phase-00, or an existing folder."
        )
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(
            repo, revision=revision or None, allow_patterns=["config.json", WEIGHTS_FILE, *TOKENIZER_FILES]
        )
    except Exception as err:  # noqa: BLE001 - offline, unknown repo or revision all land here
        raise ConfigError(
            f"Recipe field `pretrained` has value {value!r}, which could not be fetched ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}). {_FIX_OFFLINE}"
        ) from err
    return Path(folder)


def load_pretrained(value: str) -> PretrainedWeights:
    """Read the pretrained network ``value`` names; fails with a ConfigError naming ``pretrained``."""
    folder = resolve_pretrained(value)
    if not (folder / WEIGHTS_FILE).exists() or not (folder / "config.json").exists():
        raise ConfigError(
            f"Recipe field `pretrained` has value {value!r}, but {str(folder)!r} holds no config.json and "
            f"{WEIGHTS_FILE}. Only safetensors weights are loaded (pickled .bin/.pth files can run code). "
            "Fix: use a model published with safetensors, or convert it once with safetensors.torch.save_file."
        )
    config = json.loads((folder / "config.json").read_text())
    tensors = load_file(str(folder / WEIGHTS_FILE))
    if config.get("model_type") == TimmClassifierConfig.model_type:
        weights = _from_project_layout(value, config, tensors)
    elif "architecture" in config:
        weights = _from_timm_layout(value, config, tensors)
    else:
        raise ConfigError(
            f"Recipe field `pretrained` has value {value!r}, whose config.json is neither a timm model's (an "
            "`architecture` key) nor this project's. Fix: point it at a timm model or a phase directory."
        )
    head = set(head_keys(weights))
    weights.backbone = {k: v for k, v in weights.backbone.items() if k not in head}
    return weights


def _from_project_layout(value: str, config: dict, tensors: dict) -> PretrainedWeights:
    prefix = f"{TimmImageClassifier.base_model_prefix}."
    return PretrainedWeights(
        source=value,
        timm_model=config["timm_model"],
        num_channels=config["num_channels"],
        input_size=config["image_size"],
        image_mean=list(config["image_mean"]),
        image_std=list(config["image_std"]),
        model_kwargs=dict(config.get("model_kwargs") or {}),
        backbone={k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)},
    )


def _from_timm_layout(value: str, config: dict, tensors: dict) -> PretrainedWeights:
    pretrained_cfg = config.get("pretrained_cfg") or {}
    args = dict(config.get("model_args") or {})
    input_size = pretrained_cfg.get("input_size") or [3, 224, 224]
    return PretrainedWeights(
        source=value,
        timm_model=config["architecture"],
        num_channels=int(args.pop("in_chans", input_size[0])),
        input_size=int(input_size[-1]),
        image_mean=list(pretrained_cfg.get("mean") or [0.485, 0.456, 0.406]),
        image_std=list(pretrained_cfg.get("std") or [0.229, 0.224, 0.225]),
        model_kwargs={k: v for k, v in args.items() if k != "num_classes"},
        backbone=dict(tensors),
    )


def head_keys(weights: PretrainedWeights) -> list[str]:
    """The state-dict keys of the architecture's classifier head (timm's ``get_classifier()``)."""
    with torch.device("meta"):
        network = timm.create_model(
            weights.timm_model, num_classes=2, in_chans=weights.num_channels, **weights.model_kwargs
        )
    head = network.get_classifier()
    name = next(n for n, module in network.named_modules() if module is head)
    return [f"{name}.{key}" for key in head.state_dict()]


def finetune_config(weights: PretrainedWeights, names: list[str], **extra) -> TimmClassifierConfig:
    """The classifier configuration: the pretrained architecture, normalisation and input size, a head
    for ``names``."""
    return TimmClassifierConfig(
        timm_model=weights.timm_model,
        num_channels=weights.num_channels,
        image_size=extra.pop("image_size", weights.input_size),
        model_kwargs=weights.model_kwargs,
        image_mean=weights.image_mean,
        image_std=weights.image_std,
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={name: i for i, name in enumerate(names)},
        **extra,
    )


def pretrained_classifier(weights: PretrainedWeights, config: TimmClassifierConfig, head_seed: int):
    """The pretrained backbone (parameters and buffers) with a head drawn from ``head_seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(head_seed)
        model = TimmImageClassifier(config)
    missing, unexpected = model.timm_model.load_state_dict(weights.backbone, strict=False)
    if unexpected or set(missing) != set(head_keys(weights)):
        raise ConfigError(
            f"Recipe field `pretrained` has value {weights.source!r}, whose weights do not fit "
            f"{weights.timm_model!r} (missing {sorted(set(missing) - set(head_keys(weights)))[:5]}, unexpected "
            f"{sorted(unexpected)[:5]}). Fix: use a checkpoint of that architecture."
        )
    return model
