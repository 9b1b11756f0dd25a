"""Masked autoencoders: transformers' ViTMAE, taking the project's uint8 images.

``PixelViTMAE`` is ``ViTMAEForPreTraining`` with one addition: ``forward`` normalises uint8 (or
[0, 1] float) images with the mean/std recorded in its config, as the project's classifiers do, so
the batched on-device augmentation feeds it directly. Its weights and config are plain ViTMAE:
``ViTMAEForPreTraining.from_pretrained`` and ``AutoModel`` load every saved phase (they then expect
normalised pixel values, as transformers' ``run_mae.py`` does).

Where HF's ViTMAE differs from the reference code (He et al. 2022, facebookresearch/mae), and what
``mae_init`` chooses:
- layer-norm eps: HF 1e-12, reference 1e-6 (``mae_layer_norm_eps``; the recipes use 1e-6);
- initialisation: HF draws every Linear from N(0, 0.02) and zeroes the mask token; the reference
  uses Xavier-uniform Linear weights (q, k, v drawn as one fused 3d x d matrix, as its qkv Linear),
  the patch projection's weight as a Linear (its bias PyTorch's default), zero Linear biases, and
  N(0, 0.02) class and mask tokens. ``mae_init: reference`` applies the latter (the recipes' choice),
  ``hf`` keeps transformers'.
- position embeddings: fixed 2-D sin-cos in both. transformers 5.24 leaves them at zero when the
  model is built from a config (its ``initialize_weights`` returns early), so :func:`create_mae`
  writes them explicitly, in HF's layout of the reference weights.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import ViTMAEConfig, ViTMAEForPreTraining
from transformers.models.vit_mae.modeling_vit_mae import build_2d_sinusoidal_position_embedding

from warmstart_hf.models.frozen import KeepsFrozen
from warmstart_hf.models.normalize import normalize_pixels


class PixelViTMAE(KeepsFrozen, ViTMAEForPreTraining):
    """ViTMAE pretraining on uint8 or [0, 1] float images (normalised here with config.image_mean/std).
    The sin-cos position tables stay fixed, also in a loaded model (``KeepsFrozen``)."""

    accepts_loss_kwargs = False  # the loss is a per-batch mean (see PhaseTrainer)

    def freeze(self) -> PixelViTMAE:
        self.vit.embeddings.position_embeddings.requires_grad_(False)
        self.decoder.decoder_pos_embed.requires_grad_(False)
        return self

    def forward(self, pixel_values: torch.Tensor, noise: torch.Tensor | None = None, **kwargs):
        kwargs.pop("labels", None)
        x = normalize_pixels(pixel_values, self.config.image_mean, self.config.image_std)
        return super().forward(pixel_values=x, noise=noise, **kwargs)


def build_mae_config(
    *,
    image_size: int,
    num_channels: int,
    patch_size: int,
    hidden_size: int,
    layers: int,
    heads: int,
    decoder_hidden_size: int,
    decoder_layers: int,
    decoder_heads: int,
    mask_ratio: float,
    layer_norm_eps: float,
    image_mean: list[float],
    image_std: list[float],
) -> ViTMAEConfig:
    """A ViTMAE config; the MLPs are 4x wide as in ViT and the MAE decoder; ``norm_pix_loss`` on (the
    MAE paper's default for its headline results)."""
    return ViTMAEConfig(
        image_size=image_size,
        num_channels=num_channels,
        patch_size=patch_size,
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden_size,
        decoder_hidden_size=decoder_hidden_size,
        decoder_num_hidden_layers=decoder_layers,
        decoder_num_attention_heads=decoder_heads,
        decoder_intermediate_size=4 * decoder_hidden_size,
        mask_ratio=mask_ratio,
        norm_pix_loss=True,
        layer_norm_eps=layer_norm_eps,
        image_mean=list(image_mean),
        image_std=list(image_std),
    )


def reference_init(model: ViTMAEForPreTraining) -> ViTMAEForPreTraining:
    """The reference code's initialisation (see the module docstring), drawn from the global RNG."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for module in model.modules():  # after the Linears above: q, k, v redrawn as one fused matrix
            if all(hasattr(module, name) for name in ("q_proj", "k_proj", "v_proj")):
                fused = torch.empty(3 * module.q_proj.out_features, module.q_proj.in_features)
                nn.init.xavier_uniform_(fused)  # the reference's one qkv Linear
                for part, linear in zip(fused.chunk(3), (module.q_proj, module.k_proj, module.v_proj)):
                    linear.weight.copy_(part)
        conv = model.vit.embeddings.patch_embeddings.projection
        conv.reset_parameters()  # PyTorch's default bias, as the reference's PatchEmbed
        nn.init.xavier_uniform_(conv.weight.view(conv.weight.shape[0], -1))
        nn.init.normal_(model.vit.embeddings.cls_token, std=0.02)
        nn.init.normal_(model.decoder.mask_token, std=0.02)
    return model


def create_mae(config: ViTMAEConfig, seed: int, init: str = "reference") -> PixelViTMAE:
    """A seeded draw (the global RNG is left untouched), with its fixed sin-cos position embeddings."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = PixelViTMAE(config)
        model = reference_init(model) if init == "reference" else model
    return sincos_position_embeddings(model)


def sincos_position_embeddings(model: ViTMAEForPreTraining) -> ViTMAEForPreTraining:
    """The encoder's and decoder's fixed 2-D sin-cos tables (class token row zero), in the layout
    transformers uses for the reference weights (its two halves swapped)."""
    grid = int(model.vit.embeddings.patch_embeddings.num_patches**0.5)
    with torch.no_grad():
        for table in (model.vit.embeddings.position_embeddings, model.decoder.decoder_pos_embed):
            values = build_2d_sinusoidal_position_embedding(grid, grid, table.shape[-1], cls_token=True)
            half = values.shape[-1] // 2
            table.copy_(torch.cat([values[..., half:], values[..., :half]], dim=-1).unsqueeze(0).to(table.dtype))
    return model


def fixed_noise(num_examples: int, config: ViTMAEConfig, seed: int) -> torch.Tensor:
    """The masking noise of the probe set: the same masks for every model, phase and arm."""
    patches = (config.image_size // config.patch_size) ** 2
    return torch.rand(num_examples, patches, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def probe_loss(model: PixelViTMAE, images: torch.Tensor, noise: torch.Tensor, batch_size: int = 256) -> float:
    """The pretraining loss on a fixed image set with fixed masks, in eval mode and float32:
    deterministic, so checkpoints of different arms compare (mean over images). Accelerate patches
    mixed-precision autocast into a trained model's ``forward``; the original forward is used."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    forward = getattr(model, "_original_forward", model.forward)
    total = 0.0
    try:
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].to(device)
            n = noise[start : start + batch_size].to(device)
            total += float(forward(pixel_values=x, noise=n).loss) * len(x)
    finally:
        model.train(was_training)
    return total / len(images)
