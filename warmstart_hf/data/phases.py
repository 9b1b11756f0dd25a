"""Phase plans: which training examples each phase sees, and which test examples form each group.

By default phases are cumulative: phase k trains on chunks 0..k (no forgetting by design, as in the
target study). With ``replay_fraction`` f < 1, phase k trains on its new chunk plus a seeded sample of
``round(f * n)`` of the ``n`` earlier examples (continual pretraining with replay, Ibrahim et al. 2024).
``scenario: data`` cuts a seeded shuffle into contiguous shards (``Dataset.shard``) or at
cumulative ``phase_fractions``; ``scenario: class`` partitions a seeded (or explicit) class order
into groups and selects their examples with ``Dataset.filter(input_columns=...)`` so no image is
decoded. Nothing is dropped when counts do not divide evenly: sizes differ by at most one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from datasets import Dataset

from warmstart_hf.config import ConfigError
from warmstart_hf.seeding import derive_seed


@dataclass
class PhasePlan:
    """The split of one seed: shared by every arm of that seed and saved as ``split.json``."""

    scenario: str
    seed: int
    num_phases: int
    num_classes: int
    class_order: list[int] | None
    class_groups: list[list[int]] | None
    chunks: list[list[int]]  # new training indices (into the source train split) per phase
    test_groups: list[list[int]]  # test indices per chunk (data) or class group (class)
    noisy_labels: list[dict[int, int]] | None = None  # per phase: {train index: the label used instead}
    replay_fraction: float = 1.0
    # per phase: the earlier indices it replays (chunk order); None when every earlier example is replayed,
    # so plans and split.json files written before replay existed still compare equal and resume
    replayed: list[list[int]] | None = None

    def train_indices(self, phase: int) -> list[int]:
        """What phase ``phase`` trains on, in chunk order with the newest chunk last: the replayed
        earlier examples (all of them unless ``replay_fraction`` < 1), then the new chunk."""
        if self.replayed is None:
            return self.seen_indices(phase)
        return self.replayed[phase] + self.chunks[phase]

    def seen_indices(self, phase: int) -> list[int]:
        """Every training index that phases 0..``phase`` brought (chunk order), replayed or not."""
        return [i for chunk in self.chunks[: phase + 1] for i in chunk]

    def classes_seen(self, phase: int) -> list[int]:
        if self.class_groups is None:
            return list(range(self.num_classes))
        return sorted(c for group in self.class_groups[: phase + 1] for c in group)

    def to_json(self) -> dict:
        record = asdict(self)
        record["phases"] = [
            {
                "phase": k,
                "num_train_examples": len(self.train_indices(k)),
                "classes_seen": self.classes_seen(k),
                "train_indices": self.train_indices(k),
            }
            for k in range(self.num_phases)
        ]
        return record

    @classmethod
    def from_json(cls, record: dict) -> PhasePlan:
        fields = cls.__dataclass_fields__
        plan = cls(**{k: v for k, v in record.items() if k in fields})
        if plan.noisy_labels is not None:  # JSON object keys are strings
            plan.noisy_labels = [{int(k): int(v) for k, v in phase.items()} for phase in plan.noisy_labels]
        return plan

    def phase_labels(self, phase: int, clean: list[int]) -> list[int]:
        """The labels phase ``phase`` trains on, given the clean labels of ``train_indices(phase)``."""
        if not self.noisy_labels or not self.noisy_labels[phase]:
            return list(clean)
        noisy = self.noisy_labels[phase]
        return [noisy.get(i, y) for i, y in zip(self.train_indices(phase), clean)]

    @classmethod
    def load(cls, path: str | Path) -> PhasePlan:
        return cls.from_json(json.loads(Path(path).read_text()))


def replay_sample(earlier: Sequence[int], fraction: float, seed: int) -> list[int]:
    """Exactly ``round(fraction * len(earlier))`` items of ``earlier``, drawn without replacement
    (numpy ``default_rng(seed)``) and kept in their original order, so a phase's training set stays in
    chunk order with the newest chunk last; fraction 1.0 is ``list(earlier)``, 0.0 is ``[]``."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"replay fraction {fraction!r} is outside [0, 1]")
    count = round(fraction * len(earlier))
    if count >= len(earlier):
        return list(earlier)
    picked = np.random.default_rng(seed).choice(len(earlier), size=count, replace=False)
    return [earlier[i] for i in np.sort(picked)]


def _with_replay(plan: PhasePlan, fraction: float) -> PhasePlan:
    """``plan`` with each phase replaying ``fraction`` of the earlier chunks' examples (seeded per
    phase from the plan's seed); fraction 1.0 leaves the cumulative plan unchanged."""
    if fraction == 1.0:
        return plan
    plan.replay_fraction = fraction
    plan.replayed = [
        replay_sample(plan.seen_indices(k - 1), fraction, derive_seed(plan.seed, "replay", k)) if k else []
        for k in range(plan.num_phases)
    ]
    return plan


def _indexed(ds: Dataset) -> Dataset:
    """The label column plus each row's position in the source split; images are never touched."""
    return ds.select_columns(["label"]).add_column("source_index", np.arange(len(ds), dtype=np.int64))


def _cut(shuffled: Dataset, num_phases: int, fractions: list[float] | None) -> list[list[int]]:
    if fractions is None:
        return [
            shuffled.shard(num_shards=num_phases, index=k, contiguous=True)["source_index"][:]
            for k in range(num_phases)
        ]
    bounds = [0] + [round(f * len(shuffled)) for f in fractions]
    return [shuffled.select(range(a, b))["source_index"][:] for a, b in zip(bounds, bounds[1:])]


def _as_ints(values) -> list[int]:
    return [int(v) for v in values]


def build_phase_plan(
    train: Dataset,
    test: Dataset,
    *,
    scenario: str,
    num_phases: int,
    seed: int,
    phase_fractions: list[float] | None = None,
    class_order: list[int] | None = None,
    replay_fraction: float = 1.0,
) -> PhasePlan:
    """Cut ``train`` into phases and ``test`` into the matching groups; phase k trains on chunk k plus
    ``replay_fraction`` of chunks 0..k-1 (1.0: all of them, the cumulative protocol)."""
    num_classes = train.features["label"].num_classes
    if scenario == "data":
        if num_phases > len(train):
            raise ConfigError(
                f"Recipe field `num_phases` has value {num_phases}, but the train split has only {len(train)} "
                f"examples. Fix: use at most {len(train)} phases or a larger dataset."
            )
        order_seed = derive_seed(seed, "split")
        chunks = _cut(_indexed(train).shuffle(seed=order_seed), num_phases, phase_fractions)
        test_groups = _cut(_indexed(test).shuffle(seed=derive_seed(seed, "test_groups")), num_phases, phase_fractions)
        empty = [k for k, c in enumerate(chunks) if not c]
        if empty:
            raise ConfigError(
                f"Recipe field `phase_fractions` has value {phase_fractions}, which leaves phase {empty[0]} with "
                f"no new examples out of {len(train)}. Fix: use fractions further apart or a larger dataset."
            )
        plan = PhasePlan(scenario, seed, num_phases, num_classes, None, None, _ints2(chunks), _ints2(test_groups))
        return _with_replay(plan, replay_fraction)
    if scenario != "class":
        raise ConfigError(f"Recipe field `scenario` has value {scenario!r}; allowed values are 'data', 'class'.")
    if num_phases > num_classes:
        raise ConfigError(
            f"Recipe field `num_phases` has value {num_phases}, but the dataset has only {num_classes} classes, "
            f"so some class-incremental phase would bring no class. Fix: use at most {num_classes} phases."
        )
    if class_order is None:
        rng = np.random.default_rng(derive_seed(seed, "class_order"))
        class_order = _as_ints(rng.permutation(num_classes))
    elif sorted(class_order) != list(range(num_classes)):
        raise ConfigError(
            f"Recipe field `class_order` has value {class_order}, which is not a permutation of the labels "
            f"0..{num_classes - 1}. Fix: list every label exactly once, or remove `class_order` for a seeded one."
        )
    groups = [_as_ints(g) for g in np.array_split(np.asarray(class_order), num_phases)]
    chunks, test_groups = [], []
    for ds, out in ((_indexed(train), chunks), (_indexed(test), test_groups)):
        for group in groups:
            members = set(group)
            out.append(ds.filter(lambda y, m=members: y in m, input_columns="label")["source_index"][:])
    empty = [k for k, c in enumerate(chunks) if not c]
    if empty:
        raise ConfigError(
            f"Class group {groups[empty[0]]} of phase {empty[0]} has no training examples. Fix: check "
            "`label_column`, use fewer `num_phases`, or raise `max_train_examples`."
        )
    plan = PhasePlan(
        scenario, seed, num_phases, num_classes, _as_ints(class_order), groups, _ints2(chunks), _ints2(test_groups)
    )
    return _with_replay(plan, replay_fraction)


def _ints2(lists) -> list[list[int]]:
    return [_as_ints(x) for x in lists]


def add_label_noise(plan: PhasePlan, labels: np.ndarray, rates: list[float], seed: int) -> PhasePlan:
    """Symmetric label noise, drawn per phase: ``round(rate * n)`` of the phase's ``n`` training
    examples get a label drawn uniformly from the OTHER classes, so exactly that fraction is wrong.
    Each phase draws independently (seeded), so a noisy first phase can be followed by clean ones
    (Hare & Tortoise: 10% of the data at 50% noise, then all of it clean)."""
    noisy: list[dict[int, int]] = []
    for phase, rate in enumerate(rates):
        indices = np.asarray(plan.train_indices(phase))
        count = round(rate * len(indices))
        rng = np.random.default_rng(derive_seed(seed, "label_noise", phase))
        chosen = rng.choice(indices, size=count, replace=False) if count else np.zeros(0, dtype=int)
        shift = rng.integers(1, plan.num_classes, size=count)  # never the true class
        noisy.append({int(i): int((labels[i] + s) % plan.num_classes) for i, s in zip(chosen, shift)})
    plan.noisy_labels = noisy
    return plan
