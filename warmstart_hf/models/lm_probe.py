"""The linear probe of a pretrained causal language model (the language counterpart of the MAE probe,
``warmstart_hf/models/probe.py``): the decoder frozen, its last hidden states mean-pooled over the real
tokens (the attention mask: padding never enters the mean), then as MAE's probe a
``BatchNorm1d(affine=False)`` (the features standardised: a small decoder's pooled states differ little
between texts) and a linear head (normal, std 0.01, zero bias). Full finetuning needs no model here:
transformers' ``AutoModelForSequenceClassification`` (LLaMA / GPT-2 pool the last non-pad token).

``forward`` takes token ids, or the pooled ``features`` themselves: the decoder is frozen and texts are
not augmented, so the task computes each text's features once (``features()``) and trains the head on
them, instead of running the decoder every epoch.

The decoder is the checkpoint's base model (``AutoModel``: ``LlamaModel`` / ``GPT2Model``), built from
its config (kept as a plain dict, ``backbone``), so any decoder architecture the Auto classes know
serves. The probe is a ``PreTrainedModel`` registered with the Auto classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from warmstart_hf.models.frozen import KeepsFrozen


class LmProbeConfig(PretrainedConfig):
    model_type = "warmstart_lm_probe"

    def __init__(self, backbone: dict | None = None, **kwargs):
        # the pretrained decoder's config.json; not named `decoder`, which transformers reads as a text sub-config
        self.backbone = dict(backbone or {"model_type": "llama"})
        super().__init__(**kwargs)

    def decoder_config(self) -> PretrainedConfig:
        settings = dict(self.backbone)
        return AutoConfig.for_model(settings.pop("model_type"), **settings)


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean of ``hidden`` (batch, tokens, width) over the tokens whose mask is 1."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class LmLinearProbe(KeepsFrozen, PreTrainedModel):
    """``forward(input_ids, attention_mask, labels=None)`` -> logits over ``num_labels``."""

    config_class = LmProbeConfig
    base_model_prefix = "decoder"
    main_input_name = "input_ids"
    accepts_loss_kwargs = False

    def __init__(self, config: LmProbeConfig):
        super().__init__(config)
        decoder = config.decoder_config()
        self.decoder = AutoModel.from_config(decoder)
        width = decoder.hidden_size
        self.head = nn.Sequential(nn.BatchNorm1d(width, affine=False, eps=1e-6), nn.Linear(width, config.num_labels))
        nn.init.normal_(self.head[1].weight, std=0.01)
        nn.init.zeros_(self.head[1].bias)
        self.freeze()
        self.post_init()

    def freeze(self) -> LmLinearProbe:
        """The decoder is frozen (also in a loaded probe: ``KeepsFrozen``)."""
        self.decoder.requires_grad_(False)
        return self

    def _init_weights(self, module):
        """The decoder comes from pretraining and the head is drawn in __init__: nothing to redo."""

    def train(self, mode: bool = True):
        super().train(mode)
        self.decoder.eval()  # frozen: no dropout, whatever the Trainer asks
        return self

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The decoder's last hidden states, mean-pooled over the real tokens. No graph is built through the
        frozen decoder (no parameter of it requires a gradient): ``freeze`` is the one thing keeping it fixed."""
        hidden = self.decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return masked_mean(hidden, attention_mask)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ):
        """Logits from token ids (the decoder runs) or from their pooled ``features`` (it does not)."""
        if features is None:
            mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
            features = self.features(input_ids, mask)
        logits = self.head(features)
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


AutoConfig.register(LmProbeConfig.model_type, LmProbeConfig)
AutoModelForSequenceClassification.register(LmProbeConfig, LmLinearProbe)
