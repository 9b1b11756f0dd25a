"""ResNet-18 for 32x32 inputs, registered in timm as ``resnet18_cifar``.

The CIFAR variant of He et al. (as in the target study and the DASH / Dohare code): a 3x3 stride-1
stem without max-pool, BasicBlocks [2, 2, 2, 2]. ``width`` scales every stage's channels so CPU runs
stay small (width 0.25 has ~0.7M parameters). Initialization is timm's (Kaiming-normal convs, BN
gamma 1), with ``zero_init_last=False`` like the plain CIFAR ResNets the references train.
"""

from __future__ import annotations

import torch.nn as nn
from timm.models import register_model
from timm.models.resnet import BasicBlock, ResNet


def _cifar_resnet(layers: list[int], width: float, in_chans: int, **kwargs) -> ResNet:
    channels = tuple(max(1, round(c * width)) for c in (64, 128, 256, 512))
    kwargs.setdefault("zero_init_last", False)
    model = ResNet(BasicBlock, layers, channels=channels, in_chans=in_chans, **kwargs)
    # timm's plain stem is a 7x7/2 conv + max-pool with a fixed 64 channels: swap in the CIFAR stem
    # (3x3/1, no pool, channels[0] wide) and rebuild the first block, which then needs no downsample.
    c0 = channels[0]
    model.conv1 = nn.Conv2d(in_chans, c0, kernel_size=3, stride=1, padding=1, bias=False)
    model.bn1 = nn.BatchNorm2d(c0)
    model.maxpool = nn.Identity()
    model.layer1[0] = BasicBlock(c0, c0)
    for module in (model.conv1, model.bn1, model.layer1[0]):  # the same init as ResNet.init_weights
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
    model.feature_info[0].update(num_chs=c0, reduction=1)
    for info, reduction in zip(model.feature_info[1:], (1, 2, 4, 8)):
        info["reduction"] = reduction
    return model


@register_model
def resnet18_cifar(pretrained: bool = False, width: float = 1.0, in_chans: int = 3, **kwargs) -> ResNet:
    """ResNet-18, CIFAR stem. ``timm.create_model("resnet18_cifar", num_classes=100, width=0.25)``."""
    if pretrained:
        raise ValueError("resnet18_cifar has no pretrained weights; train it from scratch (pretrained=False).")
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    return _cifar_resnet([2, 2, 2, 2], width, in_chans, **kwargs)
