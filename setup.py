"""Build hook (all metadata is in pyproject.toml): the wheel ships the top-level ``recipes/`` and
``model_cards/`` folders, the one source of each, as ``warmstart_hf/recipes`` and
``warmstart_hf/model_cards``, so that ``warmstart-train digits`` and a Hub push's model card work
after a plain ``pip install``. A checkout, run in place or installed editable, reads the top-level
folders itself (warmstart_hf/bundled_recipes.py); no second copy lives in the source tree to drift."""

from __future__ import annotations

import os
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


SHIPPED = (("recipes", "*.yaml"), ("model_cards", "*.md"))  # top-level folder, files the wheel carries


class BuildPyWithRecipes(build_py):
    """build_py plus ``recipes/**/*.yaml`` and ``model_cards/*.md`` -> ``<build>/warmstart_hf/...``
    (also in the output mapping, so a strict editable install links them too)."""

    def _recipe_mapping(self) -> dict[str, str]:
        files = sorted(p for folder, pattern in SHIPPED for p in (ROOT / folder).rglob(pattern))
        return {os.path.join(self.build_lib, "warmstart_hf", *p.relative_to(ROOT).parts): str(p) for p in files}

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        for target, source in self._recipe_mapping().items():
            self.mkpath(os.path.dirname(target))
            self.copy_file(source, target)

    def get_output_mapping(self) -> dict[str, str]:
        return {**super().get_output_mapping(), **self._recipe_mapping()}

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        return outputs if self.editable_mode else [*outputs, *self._recipe_mapping()]


setup(cmdclass={"build_py": BuildPyWithRecipes})
