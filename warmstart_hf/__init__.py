"""warmstart-hf: warm vs cold starts (and the strategies between them) for models that keep
learning as data arrives, on Hugging Face datasets, Trainer and Accelerate."""

__version__ = "0.3.0"

# Modules that register recipe checks (warmstart_hf.config.register_recipe_check): imported here so
# every check is in place before any recipe is parsed, while config.py imports none of them.
from warmstart_hf import fast_path, hub, models, strategies, tasks, tracking  # noqa: E402,F401
from warmstart_hf.data import augment  # noqa: E402,F401
