"""transformers' TimmWrapper classes for a timm architecture that only this package registers.

Uploaded verbatim, with ``resnet_cifar.py``, next to every pushed phase of ``resnet18_cifar``; the
phase's ``config.json`` names these classes in ``auto_map``. transformers then loads the phase with
``AutoModelForImageClassification.from_pretrained(repo, revision=..., trust_remote_code=True)``
(its mechanism for custom code): importing this file registers the architecture with timm, and the
classes are transformers' own ``TimmWrapper`` ones, so config, weights and image processor are the
standard TimmWrapper format. Imports only transformers, timm and the file beside it.
"""

from transformers import TimmWrapperForImageClassification, TimmWrapperModel

from .resnet_cifar import resnet18_cifar  # noqa: F401 - registers resnet18_cifar with timm


class CifarTimmWrapperModel(TimmWrapperModel):
    """``TimmWrapperModel`` (pooled features), once ``resnet18_cifar`` is registered with timm."""


class CifarTimmWrapperForImageClassification(TimmWrapperForImageClassification):
    """``TimmWrapperForImageClassification``, once ``resnet18_cifar`` is registered with timm."""
