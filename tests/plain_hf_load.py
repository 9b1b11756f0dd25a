"""Load pushed phases the way a colleague without warmstart_hf would: transformers and timm only.

``python tests/plain_hf_load.py JOBS.json INPUTS.safetensors OUT.safetensors`` (run by
tests/test_hub_export.py in a subprocess, with HF_ENDPOINT pointing at the Hub). Importing warmstart_hf
is blocked, and the script checks at the end that it was never imported. Each job names a repo and
revision; the outputs are the logits (and an MAE's loss) on the images of INPUTS, uint8 (N, C, H, W).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path


class _NoWarmstart:
    """A meta-path finder that refuses warmstart_hf: a load that needs the package fails here."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "warmstart_hf":
            raise ImportError(f"{name} is blocked: this process loads phases without warmstart_hf")
        return None


sys.meta_path.insert(0, _NoWarmstart())

import timm  # noqa: E402
import torch  # noqa: E402
from huggingface_hub import hf_hub_download  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import (  # noqa: E402
    AutoImageProcessor,
    AutoModelForImageClassification,
    AutoModelForPreTraining,
    ViTMAEForPreTraining,
)


def pil_images(x: torch.Tensor) -> list[Image.Image]:
    arrays = [image.permute(1, 2, 0).numpy() for image in x]
    return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in arrays]


def timm_logits(job: dict, images: list[Image.Image]) -> torch.Tensor:
    """timm alone: ``hf-hub:`` model and timm's own eval transform from the pushed pretrained_cfg. An
    architecture only the package registers is imported first from the file pushed with the phase."""
    repo, revision = job["repo"], job["revision"]
    if job["remote_code"]:
        path = hf_hub_download(repo, "resnet_cifar.py", revision=revision)
        spec = importlib.util.spec_from_file_location("resnet_cifar", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["resnet_cifar"] = module  # timm's register_model looks the module up here
        spec.loader.exec_module(module)
    model = timm.create_model(f"hf-hub:{repo}@{revision}", pretrained=True).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model), is_training=False)
    with torch.no_grad():
        return model(torch.stack([transform(image) for image in images]))


def transformers_logits(job: dict, images: list[Image.Image]) -> torch.Tensor:
    repo, revision = job["repo"], job["revision"]
    model = AutoModelForImageClassification.from_pretrained(
        repo, revision=revision, trust_remote_code=job["remote_code"]
    ).eval()
    expected = "CifarTimmWrapperForImageClassification" if job["remote_code"] else "TimmWrapperForImageClassification"
    assert type(model).__name__ == expected, type(model)
    assert model.config.id2label == dict(enumerate(job["label_names"])), model.config.id2label
    processor = AutoImageProcessor.from_pretrained(repo, revision=revision)
    with torch.no_grad():
        return model(**processor(images, return_tensors="pt")).logits


def mae_outputs(job: dict, images: list[Image.Image], noise: torch.Tensor) -> dict[str, torch.Tensor]:
    repo, revision = job["repo"], job["revision"]
    pixel_values = AutoImageProcessor.from_pretrained(repo, revision=revision)(images, return_tensors="pt")
    out = {}
    for name, cls in (("vitmae", ViTMAEForPreTraining), ("auto", AutoModelForPreTraining)):
        model = cls.from_pretrained(repo, revision=revision).eval()
        assert type(model) is ViTMAEForPreTraining, type(model)
        with torch.no_grad():
            result = model(pixel_values=pixel_values["pixel_values"], noise=noise)
        out[f"{name}.logits"], out[f"{name}.loss"] = result.logits, result.loss.reshape(1)
    return out


def main(jobs_path: str, inputs_path: str, out_path: str) -> None:
    jobs, inputs = json.loads(Path(jobs_path).read_text()), load_file(inputs_path)
    outputs = {}
    for job in jobs:
        images = pil_images(inputs[f"{job['name']}.images"])
        if job["kind"] == "vit_mae":
            for key, value in mae_outputs(job, images, inputs[f"{job['name']}.noise"]).items():
                outputs[f"{job['name']}.{key}"] = value
        else:  # timm first: its recipe must work on its own, before transformers imports the remote code
            outputs[f"{job['name']}.timm"] = timm_logits(job, images)
            outputs[f"{job['name']}.transformers"] = transformers_logits(job, images)
    assert not any(name.split(".")[0] == "warmstart_hf" for name in sys.modules)
    save_file({k: v.contiguous() for k, v in outputs.items()}, out_path)


if __name__ == "__main__":
    main(*sys.argv[1:4])
