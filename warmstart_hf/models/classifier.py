"""A timm network as a ``transformers`` model, so Trainer, safetensors checkpoints,
``save_pretrained`` / ``from_pretrained`` and the Hub work unchanged.

``TimmWrapperForImageClassification`` would re-initialize timm's weights with the HF scheme when
built from a config (its ``_init_weights`` applies ``PreTrainedModel._init_weights``; transformers'
models/timm_wrapper/modeling_timm_wrapper.py), which changes what "cold start" means; this wrapper
keeps timm's own initialization (``_init_weights`` does nothing) and takes uint8 or float images,
normalizing them on the device with the recorded per-channel statistics.

Loading this format needs this package imported (its model type is registered here), so a phase
pushed to the Hub is converted to ``TimmWrapper``'s format, with the statistics in the image
processor's ``pretrained_cfg`` (``models/export.py``); ``export.load_classifier`` reads either back.
"""

from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from transformers import (
    AutoConfig,
    AutoModelForImageClassification,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import ImageClassifierOutput

import warmstart_hf.models.resnet_cifar  # noqa: F401 - registers resnet18_cifar with timm
from warmstart_hf.models.aid import replace_relus
from warmstart_hf.models.normalize import unit_float


class TimmClassifierConfig(PretrainedConfig):
    model_type = "warmstart_timm_classifier"

    def __init__(
        self,
        timm_model: str = "resnet18_cifar",
        num_channels: int = 3,
        image_size: int = 32,
        model_kwargs: dict | None = None,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        frozen_norm_stats: bool = False,
        aid_p: float | None = None,
        **kwargs,
    ):
        self.timm_model = timm_model
        self.num_channels = num_channels
        self.image_size = image_size
        self.model_kwargs = dict(model_kwargs or {})
        self.image_mean = list(image_mean or [0.5] * num_channels)
        self.image_std = list(image_std or [0.5] * num_channels)
        self.frozen_norm_stats = frozen_norm_stats  # BatchNorm layers stay in eval mode (lora, linear finetuning)
        self.aid_p = aid_p  # set: every ReLU of the network is AID(aid_p) (the aid strategy; models/aid.py)
        super().__init__(**kwargs)


class TimmImageClassifier(PreTrainedModel):
    """``forward(pixel_values, labels=None)`` -> ``ImageClassifierOutput(loss, logits)``.

    ``pixel_values`` may be integers in [0, 255] (the uint8 training data path) or floats in [0, 1].
    """

    config_class = TimmClassifierConfig
    base_model_prefix = "timm_model"
    main_input_name = "pixel_values"
    # The loss is a per-batch mean. Without this the Trainer (seeing **kwargs in forward) assumes the
    # model normalises by num_items_in_batch: it skips the division by gradient-accumulation steps and
    # multiplies the loss by the number of processes (transformers' Trainer: model_accepts_loss_kwargs).
    accepts_loss_kwargs = False

    def __init__(self, config: TimmClassifierConfig):
        super().__init__(config)
        self.timm_model = timm.create_model(
            config.timm_model,
            pretrained=False,
            num_classes=config.num_labels,
            in_chans=config.num_channels,
            **config.model_kwargs,
        )
        if getattr(config, "aid_p", None) is not None:  # rebuilt by from_pretrained from config.json
            replace_relus(self.timm_model, config.aid_p)
        shape = (1, config.num_channels, 1, 1)
        # Persistent so that from_pretrained (which builds on the meta device) restores them.
        self.register_buffer("image_mean", torch.tensor(config.image_mean).view(shape))
        self.register_buffer("image_std", torch.tensor(config.image_std).view(shape))
        self.post_init()

    def train(self, mode: bool = True):
        """As nn.Module.train; with ``frozen_norm_stats`` every BatchNorm keeps eval mode, so a frozen
        backbone normalises with its pretrained statistics and never updates them."""
        super().train(mode)
        if mode and getattr(self.config, "frozen_norm_stats", False):
            for module in self.timm_model.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def _init_weights(self, module):
        """Keep timm's initialization: a cold start is timm's default draw, not the HF scheme."""

    def normalize(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return (unit_float(pixel_values) - self.image_mean) / self.image_std

    def forward_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Penultimate (pooled) features, for diagnostics and probes."""
        feats = self.timm_model.forward_features(self.normalize(pixel_values))
        return self.timm_model.forward_head(feats, pre_logits=True)

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, **kwargs):
        logits = self.timm_model(self.normalize(pixel_values))
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits)


AutoConfig.register(TimmClassifierConfig.model_type, TimmClassifierConfig)
AutoModelForImageClassification.register(TimmClassifierConfig, TimmImageClassifier)
