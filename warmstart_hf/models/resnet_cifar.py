"""ResNet-18 for 32x32 inputs, registered in timm as ``resnet18_cifar``.

The CIFAR variant of He et al. (as in the target study and the DASH / Dohare code): a 3x3 stride-1
stem without max-pool, BasicBlocks [2, 2, 2, 2]. ``width`` scales every stage's channels so CPU runs
stay small (width 0.25 has ~0.7M parameters). Initialization is timm's (Kaiming-normal convs, BN
gamma 1), with ``zero_init_last=False`` like the plain CIFAR ResNets the references train.

timm's ``ResNet`` cannot express this stem through its keyword arguments (its plain stem is a 7x7/2
conv with a fixed 64 channels and a max-pool, its deep stems start with stride 2), so the network is
a subclass. This file imports only torch and timm: it is uploaded verbatim next to every pushed
phase of this architecture, where it is the code that transformers runs with
``trust_remote_code=True`` (see ``timm_remote.py``) and that a timm user imports before
``timm.create_model("hf-hub:<repo>@<branch>", pretrained=True)``. The factory goes through timm's
``build_model_with_cfg``, so that call loads the pushed weights like any timm Hub model.
"""

from __future__ import annotations

import torch.nn as nn
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.resnet import BasicBlock, ResNet


class CifarResNet(ResNet):
    """timm's ResNet with the CIFAR stem (3x3/1 conv, no max-pool, ``channels[0]`` wide)."""

    def __init__(self, layers=(2, 2, 2, 2), width: float = 1.0, in_chans: int = 3, zero_init_last=False, **kwargs):
        channels = tuple(max(1, round(c * width)) for c in (64, 128, 256, 512))
        super().__init__(
            BasicBlock, layers, channels=channels, in_chans=in_chans, zero_init_last=zero_init_last, **kwargs
        )
        # Swap in the CIFAR stem and rebuild the first block, which then needs no downsample.
        c0 = channels[0]
        self.conv1 = nn.Conv2d(in_chans, c0, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c0)
        self.maxpool = nn.Identity()
        self.layer1[0] = BasicBlock(c0, c0)
        for module in (self.conv1, self.bn1, self.layer1[0]):  # the same init as ResNet.init_weights
            for m in module.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
        self.feature_info[0].update(num_chs=c0, reduction=1)
        for info, reduction in zip(self.feature_info[1:], (1, 2, 4, 8)):
            info["reduction"] = reduction


default_cfgs = generate_default_cfgs(
    {
        "resnet18_cifar": {
            "num_classes": 1000,  # timm's default head, as ResNet's; a pushed phase's config.json sets its own
            "input_size": (3, 32, 32),
            "pool_size": None,
            "crop_pct": 1.0,
            "interpolation": "bilinear",
            "mean": (0.5, 0.5, 0.5),
            "std": (0.5, 0.5, 0.5),
            "first_conv": "conv1",
            "classifier": "fc",
        }
    }
)


@register_model
def resnet18_cifar(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-18, CIFAR stem. ``timm.create_model("resnet18_cifar", num_classes=100, width=0.25)``; with
    ``pretrained=True`` only from a Hub or local export (``hf-hub:<repo>@<branch>``): none is built in."""
    return build_model_with_cfg(CifarResNet, "resnet18_cifar", pretrained, layers=(2, 2, 2, 2), **kwargs)
