"""Name -> class registries filled by a decorator (timm's ``register_model`` pattern), shared by the
strategies and the tasks."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T", bound=type)


class Registry(dict):
    """``REGISTRY.register("name")`` decorates a class: it sets ``cls.name`` and files it under it."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[T], T]:
        def decorate(cls: T) -> T:
            if name in self:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            cls.name = name
            self[name] = cls
            return cls

        return decorate
