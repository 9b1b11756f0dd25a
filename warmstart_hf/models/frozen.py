"""Parameters a model keeps frozen stay frozen when it is loaded.

transformers 5's ``from_pretrained`` materialises every parameter with ``requires_grad=True``, undoing
what a model's ``__init__`` froze (ViTMAE's fixed sin-cos position tables, a linear probe's encoder).
A run resumed from a saved phase would then train what the reference keeps fixed, and a resumed
phase's optimizer would no longer match its checkpoint's parameter groups. Hand-written because no
loading option of transformers keeps the flags.
"""

from __future__ import annotations

from typing import Any


class KeepsFrozen:
    """Mixin for a ``PreTrainedModel``: ``freeze()`` (the subclass's) runs again after loading."""

    def freeze(self):
        raise NotImplementedError

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any):
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # output_loading_info=True
        model.freeze()
        return loaded
