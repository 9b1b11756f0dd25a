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


@pytest.mark.parametrize(("n", "fraction"), [(10, 0.25), (7, 0.5), (103, 0.05), (3, 0.1), (1, 0.5), (0, 0.3)])
def test_replay_sample_takes_exactly_round_f_n_in_original_order(n, fraction):
    from warmstart_hf.data import replay_sample

    earlier = [100 + 3 * i for i in range(n)]  # not 0..n-1: items, not positions, come back
    picked = replay_sample(earlier, fraction, seed=4)
    assert len(picked) == round(fraction * n)
    assert len(set(picked)) == len(picked) and set(picked) <= set(earlier)
    assert picked == sorted(picked, key=earlier.index)  # original order kept


def test_replay_sample_is_seeded_and_its_ends_are_identity_and_empty():
    from warmstart_hf.data import replay_sample

    earlier = list(range(50, 0, -1))  # descending: "original order" is not sorted order
    assert replay_sample(earlier, 0.3, seed=1) == replay_sample(earlier, 0.3, seed=1)
    assert replay_sample(earlier, 0.3, seed=1) != replay_sample(earlier, 0.3, seed=2)
    picked = np.random.default_rng(1).choice(50, size=15, replace=False)
    assert replay_sample(earlier, 0.3, seed=1) == [earlier[i] for i in sorted(picked)]  # numpy default_rng(seed)
    assert replay_sample(earlier, 1.0, seed=1) == earlier
    assert replay_sample(earlier, 0.0, seed=1) == []
    with pytest.raises(ValueError, match="1.5"):
        replay_sample(earlier, 1.5, seed=1)


@pytest.mark.parametrize("scenario", ["data", "class"])
def test_a_replay_plan_trains_each_phase_on_a_seeded_sample_of_the_earlier_chunks_then_the_new_one(uneven, scenario):
    from warmstart_hf.data import replay_sample
    from warmstart_hf.seeding import derive_seed

    train, test = uneven
    plan = build_phase_plan(train, test, scenario=scenario, num_phases=3, seed=3, replay_fraction=0.25)
    cumulative = build_phase_plan(train, test, scenario=scenario, num_phases=3, seed=3)
    assert plan.chunks == cumulative.chunks and plan.test_groups == cumulative.test_groups
    assert plan.train_indices(0) == plan.chunks[0]
    for k in (1, 2):
        earlier = [i for chunk in plan.chunks[:k] for i in chunk]
        indices = plan.train_indices(k)
        replayed, new = indices[: -len(plan.chunks[k])], indices[-len(plan.chunks[k]) :]
        assert new == plan.chunks[k]  # the whole new chunk, last
        assert len(replayed) == round(0.25 * len(earlier)) > 0
        assert len(set(indices)) == len(indices) and set(replayed) <= set(earlier)  # only chunks < k, once
        assert replayed == sorted(replayed, key=earlier.index)  # chunk order
        assert replayed == replay_sample(earlier, 0.25, derive_seed(3, "replay", k))
        assert plan.seen_indices(k) == earlier + plan.chunks[k]
        assert plan.classes_seen(k) == cumulative.classes_seen(k)
    assert plan.replayed[1] != plan.replayed[2][: len(plan.replayed[1])]  # each phase draws anew
    drawn_from = [bool(set(plan.replayed[2]) & set(chunk)) for chunk in plan.chunks[:2]]
    assert drawn_from == [True, True]  # a sample across the earlier chunks, not their newest examples
    assert build_phase_plan(train, test, scenario=scenario, num_phases=3, seed=3, replay_fraction=0.25) == plan
    other = build_phase_plan(train, test, scenario=scenario, num_phases=3, seed=3, replay_fraction=0.5)
    assert len(other.train_indices(2)) == round(0.5 * len(plan.seen_indices(1))) + len(plan.chunks[2])


def test_replay_zero_trains_on_the_new_chunk_only_and_the_plan_records_the_replay(uneven, tmp_path):
    import json

    from warmstart_hf.data import PhasePlan

    train, test = uneven
    plan = build_phase_plan(train, test, scenario="data", num_phases=3, seed=0, replay_fraction=0.0)
    assert [plan.train_indices(k) for k in range(3)] == plan.chunks
    record = plan.to_json()
    assert record["replay_fraction"] == 0.0 and record["replayed"] == [[], [], []]
    assert [p["num_train_examples"] for p in record["phases"]] == [len(c) for c in plan.chunks]
    (tmp_path / "split.json").write_text(json.dumps(record))
    loaded = PhasePlan.load(tmp_path / "split.json")
    assert loaded == plan and loaded.train_indices(2) == plan.chunks[2]


def test_replay_one_is_the_cumulative_plan_and_old_split_files_still_compare_equal(uneven, tmp_path):
    import json

    from warmstart_hf.data import PhasePlan

    train, test = uneven
    plan = build_phase_plan(train, test, scenario="data", num_phases=3, seed=0, replay_fraction=1.0)
    assert plan == build_phase_plan(train, test, scenario="data", num_phases=3, seed=0)
    assert plan.replayed is None and plan.train_indices(2) == plan.seen_indices(2)
    old = plan.to_json()
    del old["replay_fraction"], old["replayed"]  # a split.json written before replay existed
    (tmp_path / "split.json").write_text(json.dumps(old))
    assert PhasePlan.load(tmp_path / "split.json") == plan
    assert plan != build_phase_plan(train, test, scenario="data", num_phases=3, seed=0, replay_fraction=0.99)


def test_label_noise_with_replay_draws_from_and_relabels_what_the_phase_trains_on(uneven):
    from warmstart_hf.data import add_label_noise

    train, test = uneven
    labels = np.asarray(train["label"][:])
    plan = build_phase_plan(train, test, scenario="data", num_phases=3, seed=0, replay_fraction=0.25)
    noisy = add_label_noise(plan, labels, [0.0, 0.5, 0.5], seed=0)
    for k in (1, 2):
        indices = plan.train_indices(k)
        flipped = noisy.noisy_labels[k]
        assert len(flipped) == round(0.5 * len(indices)) and set(flipped) <= set(indices)
        assert set(flipped) & set(plan.replayed[k])  # replayed examples can be noisy too
        used = noisy.phase_labels(k, labels[indices].tolist())
        assert [i for i, a, b in zip(indices, used, labels[indices]) if a != b] == [i for i in indices if i in flipped]


@pytest.mark.parametrize("value", [1.5, -0.1])
def test_a_replay_fraction_outside_zero_one_is_refused_naming_the_field(tiny_recipe, value):
    from warmstart_hf.config import parse_config

    with pytest.raises(ConfigError) as info:
        parse_config(recipe={**tiny_recipe, "replay_fraction": value})
    message = str(info.value)
    assert "`replay_fraction`" in message and str(value) in message and "Fix" in message
    assert parse_config(recipe={**tiny_recipe, "replay_fraction": 0.0}).incremental.replay_fraction == 0.0
