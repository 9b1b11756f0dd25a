"""The MAE linear probe (He et al. 2022, its linear-probing protocol): a frozen ViTMAE encoder, the
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


class MaeProbeConfig(PretrainedConfig):
    model_type = "warmstart_mae_probe"
    sub_configs = {"encoder": ViTMAEConfig}

    def __init__(self, encoder: dict | ViTMAEConfig | None = None, **kwargs):
        if isinstance(encoder, dict):
            encoder = ViTMAEConfig(**encoder)
        self.encoder = encoder or ViTMAEConfig()
        self.encoder.mask_ratio = 0.0  # features from every patch
        super().__init__(**kwargs)


class MaeLinearProbe(PreTrainedModel):
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
        self.vit.requires_grad_(False)

    def _init_weights(self, module):
        """The encoder comes from pretraining and the head is drawn in __init__: nothing to redo."""

    def train(self, mode: bool = True):
        super().train(mode)
        self.vit.eval()  # frozen: no dropout, whatever the Trainer asks
        return self

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        encoder = self.config.encoder
        x = pixel_values.float() if pixel_values.is_floating_point() else pixel_values.float() / 255.0
        mean = torch.tensor(encoder.image_mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(encoder.image_std, device=x.device).view(1, -1, 1, 1)
        patches = (encoder.image_size // encoder.patch_size) ** 2
        order = torch.arange(patches, device=x.device, dtype=torch.float32).expand(len(x), patches)
        with torch.no_grad():
            return self.vit(pixel_values=(x - mean) / std, noise=order).last_hidden_state[:, 0]

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


AutoConfig.register(MaeProbeConfig.model_type, MaeProbeConfig)
AutoModelForImageClassification.register(MaeProbeConfig, MaeLinearProbe)
