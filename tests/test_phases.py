from __future__ import annotations

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, Features, Image, Value

from warmstart_hf.config import ConfigError
from warmstart_hf.data import build_phase_plan


def _labels_dataset(labels: list[int], num_classes: int) -> Dataset:
    # No images: plans only ever read the label column.
    features = Features({"label": ClassLabel(num_classes=num_classes), "x": Value("int64")})
    return Dataset.from_dict({"label": labels, "x": list(range(len(labels)))}, features=features)


@pytest.fixture
def uneven():
    rng = np.random.default_rng(0)
    train = _labels_dataset(rng.integers(0, 7, size=103).tolist(), 7)
    test = _labels_dataset(rng.integers(0, 7, size=41).tolist(), 7)
    return train, test


def test_data_scenario_chunks_cover_exactly_once_and_are_cumulative(uneven):
    train, test = uneven
    plan = build_phase_plan(train, test, scenario="data", num_phases=4, seed=1)
    flat = [i for chunk in plan.chunks for i in chunk]
    assert sorted(flat) == list(range(103))  # exact cover, nothing dropped, disjoint
    sizes = [len(c) for c in plan.chunks]
    assert sizes == [26, 26, 26, 25]  # uneven: sizes differ by at most one
    for k in range(4):
        assert plan.train_indices(k) == flat[: sum(sizes[: k + 1])]
    assert sorted(i for g in plan.test_groups for i in g) == list(range(41))
    assert plan.classes_seen(0) == list(range(7))


def test_data_scenario_uses_dataset_shard_on_a_seeded_shuffle(uneven):
    train, test = uneven
    plan = build_phase_plan(train, test, scenario="data", num_phases=4, seed=1)
    from warmstart_hf.seeding import derive_seed

    shuffled = train.shuffle(seed=derive_seed(1, "split"))
    expected = shuffled.shard(num_shards=4, index=2, contiguous=True)["x"][:]
    assert plan.chunks[2] == expected  # x is the row position


def test_plans_are_deterministic_in_the_seed(uneven):
    train, test = uneven
    a = build_phase_plan(train, test, scenario="data", num_phases=3, seed=5)
    b = build_phase_plan(train, test, scenario="data", num_phases=3, seed=5)
    c = build_phase_plan(train, test, scenario="data", num_phases=3, seed=6)
    assert a == b and a.chunks != c.chunks
    d = build_phase_plan(train, test, scenario="class", num_phases=3, seed=5)
    e = build_phase_plan(train, test, scenario="class", num_phases=3, seed=5)
    assert d == e


def test_phase_fractions_give_the_two_phase_protocol(uneven):
    train, test = uneven
    plan = build_phase_plan(train, test, scenario="data", num_phases=2, seed=0, phase_fractions=[0.5, 1.0])
    assert [len(c) for c in plan.chunks] == [52, 51]
    assert sorted(plan.train_indices(1)) == list(range(103))


def test_class_scenario_groups_classes_and_restricts_test(uneven):
    train, test = uneven
    labels = np.asarray(train["label"][:])
    test_labels = np.asarray(test["label"][:])
    plan = build_phase_plan(train, test, scenario="class", num_phases=3, seed=2)
    assert sorted(plan.class_order) == list(range(7))
    assert [len(g) for g in plan.class_groups] == [3, 2, 2]  # 7 classes, none dropped
    for k, group in enumerate(plan.class_groups):
        assert set(labels[plan.chunks[k]]) == set(group)
        assert set(test_labels[plan.test_groups[k]]) <= set(group)
        assert sorted(plan.chunks[k]) == np.flatnonzero(np.isin(labels, group)).tolist()
    assert plan.classes_seen(1) == sorted(plan.class_groups[0] + plan.class_groups[1])
    assert sorted(plan.train_indices(2)) == list(range(103))


def test_explicit_class_order_is_used(uneven):
    train, test = uneven
    plan = build_phase_plan(train, test, scenario="class", num_phases=2, seed=0, class_order=[6, 5, 4, 3, 2, 1, 0])
    assert plan.class_groups == [[6, 5, 4, 3], [2, 1, 0]]


@pytest.mark.parametrize(
    ("kwargs", "needles"),
    [
        ({"scenario": "class", "num_phases": 8}, ["num_phases", "8", "7 classes"]),
        ({"scenario": "data", "num_phases": 104}, ["num_phases", "104", "103 examples"]),
        ({"scenario": "class", "num_phases": 2, "class_order": [0, 1, 2, 3, 4, 5, 5]}, ["class_order", "permutation"]),
        ({"scenario": "class", "num_phases": 2, "class_order": [0, 1, 2]}, ["class_order", "permutation"]),
        ({"scenario": "data", "num_phases": 2, "phase_fractions": [0.001, 1.0]}, ["phase_fractions", "no new"]),
    ],
)
def test_impossible_plans_fail_fast(uneven, kwargs, needles):
    train, test = uneven
    with pytest.raises(ConfigError) as info:
        build_phase_plan(train, test, seed=0, **kwargs)
    for needle in needles:
        assert needle in str(info.value)


def test_plan_json_round_trip(uneven, tmp_path):
    import json

    from warmstart_hf.data import PhasePlan

    train, test = uneven
    plan = build_phase_plan(train, test, scenario="class", num_phases=3, seed=2)
    record = plan.to_json()
    assert record["phases"][1]["train_indices"] == plan.train_indices(1)
    assert record["class_order"] == plan.class_order
    (tmp_path / "split.json").write_text(json.dumps(record))
    assert PhasePlan.load(tmp_path / "split.json") == plan


def test_class_filter_does_not_decode_images(tmp_path):
    """The plan reads labels only: a dataset whose images cannot be decoded still plans fine."""
    features = Features({"image": Image(), "label": ClassLabel(num_classes=2)})
    broken = {"bytes": b"not an image", "path": None}
    ds = Dataset.from_dict({"image": [broken] * 6, "label": [0, 1] * 3}, features=features)
    plan = build_phase_plan(ds, ds, scenario="class", num_phases=2, seed=0)
    assert sorted(plan.train_indices(1)) == list(range(6))


def test_label_noise_is_exact_symmetric_seeded_and_recorded(uneven):
    import json

    from warmstart_hf.data import PhasePlan, add_label_noise

    train, test = uneven
    labels = np.asarray(train["label"][:])
    plan = build_phase_plan(train, test, scenario="data", num_phases=2, seed=0, phase_fractions=[0.4, 1.0])
    noisy = add_label_noise(plan, labels, [0.5, 0.0], seed=0)
    first = noisy.noisy_labels[0]
    assert len(first) == round(0.5 * len(plan.train_indices(0)))
    assert set(first) <= set(plan.train_indices(0))
    assert all(label != labels[i] and 0 <= label < 7 for i, label in first.items())  # never the true class
    assert noisy.noisy_labels[1] == {}  # the second phase is clean
    clean = labels[plan.train_indices(0)].tolist()
    used = noisy.phase_labels(0, clean)
    assert sum(a != b for a, b in zip(used, clean)) == len(first)
    again = add_label_noise(
        build_phase_plan(train, test, scenario="data", num_phases=2, seed=0, phase_fractions=[0.4, 1.0]),
        labels,
        [0.5, 0.0],
        seed=0,
    )
    assert again.noisy_labels == noisy.noisy_labels
    record = json.loads(json.dumps(noisy.to_json()))
    assert PhasePlan.from_json(record) == noisy
