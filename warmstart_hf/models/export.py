"""Phase checkpoints in the formats plain transformers and timm load (what is pushed to the Hub).

A run directory keeps every model in this package's own format (``TimmImageClassifier``, model type
``warmstart_timm_classifier``: the network under ``timm_model.`` plus the normalisation buffers), which
resume, ``init_from``, ``pretrained`` and the downstream evaluation read. That format needs this
package imported to load, so :func:`export_for_hub` converts a model folder into the files pushed to
the Hub:

- a timm classifier becomes transformers' ``TimmWrapper`` format, which is also timm's own Hub
  format: ``config.json`` with ``architecture``, ``num_classes``, ``label_names``, ``model_args``
  (never ``num_classes``: TimmWrapper passes it itself) and ``pretrained_cfg`` (input size, mean and
  std, so ``AutoImageProcessor`` / timm's transforms normalise the images, as our model does inside);
  ``model.safetensors`` with timm's plain keys (transformers adds ``timm_model.`` when it loads).
  A timm architecture loads with ``AutoModelForImageClassification.from_pretrained(repo,
  revision=...)`` and ``timm.create_model("hf-hub:<repo>@<revision>", pretrained=True)``.
- ``resnet18_cifar`` exists only in this package: timm's ResNet arguments cannot express its
  stride-1 stem without max-pool. Its phases also carry ``resnet_cifar.py`` and ``timm_remote.py``
  (standalone: torch, timm, transformers) and an ``auto_map``, so transformers loads them with
  ``trust_remote_code=True``; a timm user imports ``resnet_cifar.py`` from the repo before
  ``timm.create_model``.
- an AID network (strategy ``aid``) is no plain timm architecture: it is pushed in the package's
  format, which :func:`load_classifier` reads.
- a ViTMAE (``PixelViTMAE``) is plain ``ViTMAEForPreTraining`` already; it gets that architecture
  name in ``config.json`` and a ``preprocessor_config.json`` with its mean and std.
- a model saved with a tokenizer (a causal LM's phase: the Trainer's ``processing_class``) is plain
  transformers already; its tokenizer files and ``generation_config.json`` go with it, so
  ``AutoTokenizer.from_pretrained(repo, revision=...)`` loads the run's tokenizer. A loss-alignment
  snapshot is saved without one: its tokenizer is the run's fixed one, taken from ``tokenizer_dir``.

:func:`load_classifier` reads a phase back into the package's classifier from either format (older
pushes are in the package's own format).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

if TYPE_CHECKING:
    from warmstart_hf.models.classifier import TimmImageClassifier

WEIGHTS, CONFIG = "model.safetensors", "config.json"
GENERATION_CONFIG, TOKENIZER_CONFIG = "generation_config.json", "tokenizer_config.json"
NATIVE_TYPE = "warmstart_timm_classifier"  # TimmClassifierConfig.model_type, without importing timm here
PREFIX = "timm_model."  # TimmImageClassifier.base_model_prefix
# Architectures registered with timm by this package only: the files shipped with their phases.
REMOTE_CODE = {"resnet18_cifar": ("resnet_cifar.py", "timm_remote.py")}
AUTO_MAP = {
    "AutoModel": "timm_remote.CifarTimmWrapperModel",
    "AutoModelForImageClassification": "timm_remote.CifarTimmWrapperForImageClassification",
}


def export_for_hub(folder: str | Path, out_dir: str | Path, tokenizer_dir: str | Path | None = None) -> dict[str, Path]:
    """The files to push for the model in ``folder`` (a phase or snapshot directory), as
    ``{path in repo: local file}``; converted ones are written under ``out_dir``. A model of another
    kind (e.g. an MAE probe, a causal LM) is pushed as saved, with its tokenizer (:func:`tokenizer_files`),
    and so is an AID network (strategy ``aid``): plain transformers or timm would build it with ReLUs
    and compute something else without a word, so it loads only with this package (``load_classifier``)."""
    folder, out_dir = Path(folder), Path(out_dir)
    config = json.loads((folder / CONFIG).read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    if config.get("model_type") == NATIVE_TYPE and config.get("aid_p") is None:
        return _export_timm_classifier(folder, config, out_dir)
    if config.get("model_type") == "vit_mae":
        return _export_vit_mae(folder, config, out_dir)
    files = {name: folder / name for name in (WEIGHTS, CONFIG, GENERATION_CONFIG) if (folder / name).is_file()}
    return {**files, **tokenizer_files(folder, out_dir / "tokenizer", tokenizer_dir)}


def tokenizer_files(folder: Path, out_dir: Path, fallback: str | Path | None = None) -> dict[str, Path]:
    """The tokenizer saved with the model in ``folder`` (else the one in ``fallback``), as the files its
    ``save_pretrained`` writes (whatever the tokenizer class); none when neither holds a tokenizer."""
    source = next((d for d in (folder, fallback) if d is not None and (Path(d) / TOKENIZER_CONFIG).is_file()), None)
    if source is None:
        return {}
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(source)).save_pretrained(str(out_dir))
    return {path.name: path for path in sorted(out_dir.iterdir()) if path.is_file()}


def timm_hub_config(config: dict[str, Any]) -> dict[str, Any]:
    """TimmWrapper's / timm's config.json for a ``TimmClassifierConfig`` dict."""
    import timm

    name, channels, size = config["timm_model"], config["num_channels"], config["image_size"]
    num_classes = len(config["id2label"])
    model_args = {**(config.get("model_kwargs") or {}), "in_chans": channels}
    with torch.device("meta"):  # only for timm's metadata: first conv, head name, feature width
        network = timm.create_model(name, pretrained=False, num_classes=num_classes, **model_args)
    defaults = getattr(network, "pretrained_cfg", {}) or {}
    pretrained_cfg = {
        "input_size": [channels, size, size],
        "fixed_input_size": bool(defaults.get("fixed_input_size", False)),
        "interpolation": "bilinear",
        "crop_pct": 1.0,  # an image of the model's size passes unchanged; others are resized, then cropped
        "crop_mode": "center",
        "mean": list(config["image_mean"]),
        "std": list(config["image_std"]),
        "num_classes": num_classes,
        "first_conv": defaults.get("first_conv"),
        "classifier": defaults.get("classifier"),
    }
    remote = name in REMOTE_CODE
    hub_config = {
        "architecture": name,
        "model_type": "timm_wrapper",
        "architectures": ["CifarTimmWrapperForImageClassification" if remote else "TimmWrapperForImageClassification"],
        "num_classes": num_classes,
        "num_features": network.num_features,
        "label_names": [config["id2label"][str(i)] for i in range(num_classes)],
        "model_args": model_args,
        "pretrained_cfg": pretrained_cfg,
        # what TimmWrapper has no field for, so that this package reads the phase back exactly
        "warmstart_hf": {
            "frozen_norm_stats": bool(config.get("frozen_norm_stats", False)),
            **({"aid_p": config["aid_p"]} if config.get("aid_p") is not None else {}),  # timm alone builds ReLUs
        },
    }
    return {**hub_config, "auto_map": AUTO_MAP} if remote else hub_config


def _export_timm_classifier(folder: Path, config: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    tensors = load_file(str(folder / WEIGHTS))
    plain = {k.removeprefix(PREFIX): v.contiguous() for k, v in tensors.items() if k.startswith(PREFIX)}
    save_file(plain, str(out_dir / WEIGHTS), metadata={"format": "pt"})
    hub_config = timm_hub_config(config)
    (out_dir / CONFIG).write_text(json.dumps(hub_config, indent=2) + "\n")
    files = {WEIGHTS: out_dir / WEIGHTS, CONFIG: out_dir / CONFIG}
    for name in REMOTE_CODE.get(config["timm_model"], ()):
        files[name] = Path(shutil.copyfile(Path(__file__).with_name(name), out_dir / name))
    return files


def _export_vit_mae(folder: Path, config: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Plain ViTMAE: its architecture name (not PixelViTMAE) and the image processor that normalises
    as PixelViTMAE does inside (transformers' run_mae.py feeds normalised pixel values)."""
    from transformers import ViTImageProcessor

    (out_dir / CONFIG).write_text(json.dumps({**config, "architectures": ["ViTMAEForPreTraining"]}, indent=2) + "\n")
    size = config["image_size"]
    processor = ViTImageProcessor(
        size={"height": size, "width": size}, image_mean=config["image_mean"], image_std=config["image_std"]
    )
    processor.save_pretrained(str(out_dir))
    return {
        WEIGHTS: folder / WEIGHTS,
        CONFIG: out_dir / CONFIG,
        "preprocessor_config.json": out_dir / "preprocessor_config.json",
    }


# --- reading back ---------------------------------------------------------------------------------


def load_classifier(source: str, revision: str | None = None) -> TimmImageClassifier:
    """The package's classifier from a local phase directory (``revision`` None) or a Hub revision, in
    the package's format or the TimmWrapper / timm format of :func:`export_for_hub`; safetensors only."""
    from warmstart_hf.models.classifier import TimmImageClassifier

    folder = Path(source)
    if revision is not None:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(source, revision=revision, allow_patterns=[CONFIG, WEIGHTS]))
    config = json.loads((folder / CONFIG).read_text())
    if "pretrained_cfg" not in config:
        return TimmImageClassifier.from_pretrained(str(folder), use_safetensors=True)
    return _from_timm_format(config, load_file(str(folder / WEIGHTS)))


def classifier_config_from_timm(config: dict[str, Any]):
    """The ``TimmClassifierConfig`` of a TimmWrapper / timm config.json."""
    from warmstart_hf.models.classifier import TimmClassifierConfig

    pretrained_cfg = config["pretrained_cfg"]
    model_args = {k: v for k, v in (config.get("model_args") or {}).items() if k != "num_classes"}
    channels = model_args.pop("in_chans", pretrained_cfg["input_size"][0])
    names = config.get("label_names") or [str(i) for i in range(config["num_classes"])]
    return TimmClassifierConfig(
        timm_model=config["architecture"],
        num_channels=channels,
        image_size=pretrained_cfg["input_size"][-1],
        model_kwargs=model_args,
        image_mean=pretrained_cfg["mean"],
        image_std=pretrained_cfg["std"],
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={name: i for i, name in enumerate(names)},
        **(config.get("warmstart_hf") or {}),
    )


def _from_timm_format(config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> TimmImageClassifier:
    from warmstart_hf.models.classifier import TimmImageClassifier

    model_config = classifier_config_from_timm(config)
    with torch.random.fork_rng(devices=[]):  # the draw is overwritten: leave the caller's RNG alone
        model = TimmImageClassifier(model_config)
    state = {f"{PREFIX}{k.removeprefix(PREFIX)}": v for k, v in tensors.items()}
    state.update(image_mean=model.image_mean, image_std=model.image_std)  # from the config's statistics
    model.load_state_dict(state, strict=True)
    return model.eval()
