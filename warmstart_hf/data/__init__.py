"""Data: sources -> uint8 pixel tensors (stored, or per-sample views of the full image) -> phase plans;
batched on-device augmentation."""

from warmstart_hf.data.augment import AUGMENTATIONS, build_augmentation
from warmstart_hf.data.phases import PhasePlan, add_label_noise, build_phase_plan, replay_sample
from warmstart_hf.data.pixels import channel_statistics, collate_pixels, to_pixel_dataset
from warmstart_hf.data.sources import load_source

__all__ = [
    "AUGMENTATIONS",
    "PhasePlan",
    "add_label_noise",
    "build_augmentation",
    "build_phase_plan",
    "channel_statistics",
    "collate_pixels",
    "load_source",
    "replay_sample",
    "to_pixel_dataset",
]
