"""Build hook (all metadata is in pyproject.toml): the wheel ships the top-level ``recipes/`` folder,
the one source of the recipes, as ``warmstart_hf/recipes``, so that ``warmstart-train digits`` works
after a plain ``pip install``. A checkout, run in place or installed editable, reads ``recipes/``
itself (warmstart_hf/bundled_recipes.py); no second copy lives in the source tree to drift."""

from __future__ import annotations

import os
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithRecipes(build_py):
    """build_py plus ``recipes/**/*.yaml`` -> ``<build>/warmstart_hf/recipes/`` (also in the output
    mapping, so a strict editable install links them too)."""

    def _recipe_mapping(self) -> dict[str, str]:
        recipes = sorted((ROOT / "recipes").rglob("*.yaml"))
        return {os.path.join(self.build_lib, "warmstart_hf", *p.relative_to(ROOT).parts): str(p) for p in recipes}

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
