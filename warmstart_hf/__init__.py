"""warmstart-hf: warm vs cold starts (and the strategies between them) for models that keep
learning as data arrives, on Hugging Face datasets, Trainer and Accelerate."""

__version__ = "0.1.0"
