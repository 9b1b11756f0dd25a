"""Recipes by name: ``warmstart-train digits`` after a plain ``pip install``.

The top-level ``recipes/`` folder of the checkout is the one source of the recipes; the wheel ships a
copy of it as ``warmstart_hf/recipes`` (the build hook in setup.py). A recipe argument that is not a
file is looked up there by name: ``digits``, ``mae/demo_pretrain_mnist``, and also
``recipes/digits.yaml``, so that the sweep grids' ``recipe: recipes/digits.yaml`` resolve from any
directory. A standard-library leaf module: config.py imports it and builds the error from it.
"""

from __future__ import annotations

import difflib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
SUFFIXES = (".yaml", ".yml")
# Not recipes: Accelerate's own configs (accelerate launch --config_file PATH).
NOT_RECIPES = ("accelerate_configs",)
LIST_OPTION = "--list-recipes"


def shipped_dir(folder: str) -> Path | None:
    """A top-level folder the wheel carries (``recipes``, ``model_cards``): the wheel's copy, or, for a
    checkout (run in place or installed editable), the folder itself."""
    installed = PACKAGE / folder
    if installed.is_dir():
        return installed
    checkout = PACKAGE.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / folder).is_dir():
        return checkout / folder
    return None


def recipes_dir() -> Path | None:
    return shipped_dir("recipes")


def _name(value: str) -> str:
    """``recipes/mae/x.yaml`` -> ``mae/x``: the name a value means once the folder and suffix are off."""
    name = value.replace("\\", "/").removeprefix("./").removeprefix("recipes/")
    for suffix in SUFFIXES:
        name = name.removesuffix(suffix)
    return name


def find_recipe(value: str | Path) -> Path | None:
    """The file ``value`` names: itself if it is a file, else the bundled recipe of that name; None if neither."""
    path = Path(value)
    if path.is_file():
        return path
    directory = recipes_dir()
    if directory is None or path.is_absolute():
        return None
    name = _name(str(value))
    if name not in bundled_names():
        return None  # also keeps '..' and accelerate configs out
    return next(directory / f"{name}{s}" for s in SUFFIXES if (directory / f"{name}{s}").is_file())


def bundled_names() -> list[str]:
    """Every bundled recipe and sweep grid by name (``digits``, ``mae/demo_pretrain_mnist``, ``sweeps/...``)."""
    directory = recipes_dir()
    if directory is None:
        return []
    files = [p for s in SUFFIXES for p in directory.rglob(f"*{s}")]
    names = {p.relative_to(directory).with_suffix("").as_posix() for p in files}
    return sorted(n for n in names if n.split("/")[0] not in NOT_RECIPES)


def unknown_recipe_message(value: str | Path) -> str:
    """The ConfigError text for a value that is neither a file nor a bundled name: what was given, the
    nearest bundled names, and how to list them all."""
    close = difflib.get_close_matches(_name(str(value)), bundled_names(), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return (
        f"Recipe {str(value)!r} is neither a file nor the name of a bundled recipe.{hint} Fix: pass the path of "
        f"a YAML recipe or a bundled name (e.g. digits, mae/demo_pretrain_mnist); `warmstart-train {LIST_OPTION}` "
        "lists the bundled names."
    )


def listing() -> str:
    """What ``warmstart-train --list-recipes`` prints: the bundled names, recipes first, then sweep grids."""
    names = bundled_names()
    if not names:
        return "No bundled recipes found (the package was installed without its recipes/ folder)."
    recipes = [n for n in names if not n.startswith("sweeps/")]
    grids = [n for n in names if n.startswith("sweeps/")]
    return "\n".join(
        [f"Bundled recipes (warmstart-train NAME), in {recipes_dir()}:", *(f"  {n}" for n in recipes)]
        + ["Sweep grids (warmstart-sweep NAME):", *(f"  {n}" for n in grids)]
    )
