"""Downstream heads on a pretrained MAE encoder: the linear probe and the full-finetuning classifier.

The linear probe (He et al. 2022, its linear-probing protocol): a frozen ViTMAE encoder, the
class token after the encoder's final norm, ``BatchNorm1d(affine=False, eps=1e-6)`` and a linear head
drawn from a truncated normal (std 0.01) with zero bias; trained with LARS (momentum 0.9, no weight
decay, trust ratio on the weight matrix only).

The encoder runs with mask ratio 0 and the identity patch order (fixed ``noise``): every patch is
seen, in order, so features are deterministic. The model is a ``PreTrainedModel`` (registered with
the Auto classes) whose ``vit`` weights load into ``ViTMAEModel`` unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from timm.optim import Lars
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForImageClassification,
    PretrainedConfig,
    PreTrainedModel,
    ViTMAEConfig,
    ViTMAEModel,
)
from transformers.modeling_outputs import ImageClassifierOutput

from warmstart_hf.models.frozen import KeepsFrozen
from warmstart_hf.models.normalize import normalize_pixels


class MaeProbeConfig(PretrainedConfig):
    model_type = "warmstart_mae_probe"
    sub_configs = {"encoder": ViTMAEConfig}

    def __init__(self, encoder: dict | ViTMAEConfig | None = None, drop_path_rate: float = 0.0, **kwargs):
        if isinstance(encoder, dict):
            encoder = ViTMAEConfig(**encoder)
        self.encoder = encoder or ViTMAEConfig()
        self.encoder.mask_ratio = 0.0  # features from every patch
        self.drop_path_rate = drop_path_rate  # full finetuning only
        super().__init__(**kwargs)


class MaeFinetuneConfig(MaeProbeConfig):
    model_type = "warmstart_mae_finetune"
    sub_configs = {"encoder": ViTMAEConfig}

    def __init__(self, encoder: dict | ViTMAEConfig | None = None, drop_path_rate: float = 0.0, **kwargs):
        # spelled out: transformers' config machinery does not build the sub-config for an inherited __init__
        super().__init__(encoder=encoder, drop_path_rate=drop_path_rate, **kwargs)


class MaeLinearProbe(KeepsFrozen, PreTrainedModel):
    """``forward(pixel_values uint8 or [0, 1] float, labels=None)`` -> logits over ``num_labels``."""

    config_class = MaeProbeConfig
    base_model_prefix = "vit"
    main_input_name = "pixel_values"
    accepts_loss_kwargs = False

    def __init__(self, config: MaeProbeConfig):
        super().__init__(config)
        width = config.encoder.hidden_size
        self.vit = ViTMAEModel(config.encoder)
        self.head = nn.Sequential(nn.BatchNorm1d(width, affine=False, eps=1e-6), nn.Linear(width, config.num_labels))
        nn.init.trunc_normal_(self.head[1].weight, std=0.01)
        nn.init.zeros_(self.head[1].bias)
        self.freeze()
        self.post_init()

    def freeze(self) -> MaeLinearProbe:
        """The encoder is frozen (also in a loaded probe: ``KeepsFrozen``)."""
        self.vit.requires_grad_(False)
        return self

    def _init_weights(self, module):
        """The encoder comes from pretraining and the head is drawn in __init__: nothing to redo."""

    def train(self, mode: bool = True):
        super().train(mode)
        self.vit.eval()  # frozen: no dropout, whatever the Trainer asks
        return self

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        encoder = self.config.encoder
        x, order = _normalised(pixel_values, encoder), _identity_order(pixel_values, encoder)
        with torch.no_grad():
            return self.vit(pixel_values=x, noise=order).last_hidden_state[:, 0]

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, **kwargs):
        logits = self.head(self.features(pixel_values))
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits)


def lars_optimizer(model: MaeLinearProbe, lr: float) -> torch.optim.Optimizer:
    """LARS as the MAE probe uses it: momentum 0.9, no weight decay, trust ratio for ndim > 1 only."""
    matrices = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    vectors = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": matrices, "always_adapt": True}, {"params": vectors, "always_adapt": False}]
    return Lars(groups, lr=lr, momentum=0.9, weight_decay=0.0)


class MaeClassifier(PreTrainedModel):
    """The MAE full-finetuning model (He et al. 2022, ``global_pool``): the pretrained encoder
    without its final norm, the patch tokens averaged, ``fc_norm`` (LayerNorm) and a linear head
    (truncated normal, std 2e-5). transformers' ``ViTForImageClassification`` instead classifies the
    class token after the final norm and has no stochastic depth, hence this head. Stochastic depth
    (``drop_path_rate``, linear over depth, timm's ``DropPath``) is added after each block's two
    residual-branch dropouts, the places timm's Block applies it."""

    config_class = MaeFinetuneConfig
    base_model_prefix = "vit"
    main_input_name = "pixel_values"
    accepts_loss_kwargs = False

    def __init__(self, config: MaeFinetuneConfig):
        super().__init__(config)
        encoder = config.encoder
        self.vit = ViTMAEModel(encoder)
        self.vit.layernorm = nn.Identity()  # global pooling replaces the final norm with fc_norm
        rates = torch.linspace(0, config.drop_path_rate, len(self.vit.layers)).tolist()
        for layer, rate in zip(self.vit.layers, rates):
            layer.dropout = nn.Sequential(layer.dropout, DropPath(rate))
        self.fc_norm = nn.LayerNorm(encoder.hidden_size, eps=encoder.layer_norm_eps)
        self.head = nn.Linear(encoder.hidden_size, config.num_labels)
        nn.init.trunc_normal_(self.head.weight, std=2e-5)
        nn.init.zeros_(self.head.bias)
        # the reference finetunes its (sin-cos initialised) position embedding, which pretraining froze
        self.vit.embeddings.position_embeddings.requires_grad_(True)
        self.post_init()

    def _init_weights(self, module):
        """The encoder comes from pretraining and the head is drawn in __init__: nothing to redo."""

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, **kwargs):
        tokens = self.vit(
            pixel_values=_normalised(pixel_values, self.config.encoder),
            noise=_identity_order(pixel_values, self.config.encoder),
        ).last_hidden_state
        logits = self.head(self.fc_norm(tokens[:, 1:].mean(dim=1)))
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits)


def _normalised(pixel_values: torch.Tensor, encoder: ViTMAEConfig) -> torch.Tensor:
    return normalize_pixels(pixel_values, encoder.image_mean, encoder.image_std)


def _identity_order(pixel_values: torch.Tensor, encoder: ViTMAEConfig) -> torch.Tensor:
    """ViTMAE's ``noise`` that keeps every patch in order (with mask ratio 0)."""
    patches = (encoder.image_size // encoder.patch_size) ** 2
    return torch.arange(patches, device=pixel_values.device, dtype=torch.float32).expand(len(pixel_values), patches)


def layer_decay_optimizer(model: MaeClassifier, lr: float, weight_decay: float, decay: float, betas=(0.9, 0.999)):
    """AdamW with MAE's layer-wise learning-rate decay: the embeddings are layer 0, block i is layer
    i + 1, fc_norm and the head are layer L + 1; a parameter's LR is lr x decay^(L + 1 - layer). No
    weight decay on 1-D parameters (biases, norms) and on the class token and position embeddings."""
    depth = len(model.vit.layers)
    groups: dict[tuple[int, bool], list] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if name.startswith("vit.embeddings"):
            layer = 0
        elif name.startswith("vit.layers."):
            layer = int(name.split(".")[2]) + 1
        else:
            layer = depth + 1
        decayed = parameter.ndim > 1 and "cls_token" not in name and "position_embeddings" not in name
        groups.setdefault((layer, decayed), []).append(parameter)
    param_groups = [
        {"params": params, "lr": lr * decay ** (depth + 1 - layer), "weight_decay": weight_decay if decayed else 0.0}
        for (layer, decayed), params in sorted(groups.items())
    ]
    return torch.optim.AdamW(param_groups, lr=lr, betas=betas)


for _config, _model in ((MaeProbeConfig, MaeLinearProbe), (MaeFinetuneConfig, MaeClassifier)):
    AutoConfig.register(_config.model_type, _config)
    AutoModelForImageClassification.register(_config, _model)
