"""Documents -> token ids -> fixed-length blocks, the way transformers' run_clm example packs text.

Each document is tokenized once (without special tokens) and ends with the tokenizer's EOS, the
separator between documents. Blocks are packed per chunk of documents (a phase's new chunk, or one
held-out group), so no block mixes two chunks: run_clm's ``group_texts`` over batches of
:data:`PACKING_BATCH` documents, each batch concatenated and cut into ``block_size`` blocks, its tail
shorter than a block dropped. The labels are the inputs (the model shifts them).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import numpy as np
import torch
from datasets import Dataset
from transformers import AutoTokenizer, ByT5Tokenizer, PreTrainedTokenizerBase

from warmstart_hf.config import ConfigError

PACKING_BATCH = 1000  # documents per packing batch: run_clm's default map batch size
BYTE = "byte"


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """``byte`` (ByT5's byte tokenizer: 256 byte ids + specials, no files) or an AutoTokenizer id / directory."""
    if name == BYTE:
        return ByT5Tokenizer()
    if name in ("train", "trained", "union"):
        raise ConfigError(
            f"Recipe field `tokenizer` has value {name!r}: a tokenizer trained on the corpus would be trained on "
            "every phase's text, leaking later phases into early ones. Fix: use byte or a fixed Hub tokenizer."
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except Exception as err:  # noqa: BLE001 - offline, a wrong id and a bad directory all land here
        raise ConfigError(
            f"Recipe field `tokenizer` has value {name!r}, which could not be loaded ({type(err).__name__}). Fix: "
            "use byte, a local tokenizer directory, or a Hub id downloaded once with network access."
        ) from err
    if tokenizer.eos_token_id is None:
        raise ConfigError(
            f"Recipe field `tokenizer` has value {name!r}, whose tokenizer has no EOS token to separate documents. "
            "Fix: choose a tokenizer with an eos_token."
        )
    return tokenizer


def tokenizer_sha256(tokenizer: PreTrainedTokenizerBase) -> str:
    """A hash of what decides the ids: the vocabulary, the special tokens, and a fast tokenizer's whole
    pipeline (merges, normalizer, pre-tokenizer). Not of the saved files: saving a reloaded tokenizer
    adds loader metadata (``is_local``, ...) to its config."""
    state = {"vocab": sorted(tokenizer.get_vocab().items()), "special": tokenizer.all_special_tokens}
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state["pipeline"] = backend.to_str()
    return hashlib.sha256(json.dumps(state, ensure_ascii=False).encode()).hexdigest()


def tokenize_documents(
    documents: Dataset, tokenizer: PreTrainedTokenizerBase, max_tokens: int | None = None
) -> Dataset:
    """An ``input_ids`` column: each document's ids (its first ``max_tokens`` when set) followed by EOS.
    A batched ``Dataset.map``, so a large corpus is tokenized once into the datasets cache."""
    eos = tokenizer.eos_token_id
    encode_texts = _byt5_ids(tokenizer.offset) if isinstance(tokenizer, ByT5Tokenizer) else _tokenizer_ids(tokenizer)

    def encode(batch: dict[str, list]) -> dict[str, list]:
        return {"input_ids": [list(x[:max_tokens] if max_tokens else x) + [eos] for x in encode_texts(batch["text"])]}

    return documents.map(encode, batched=True, remove_columns=documents.column_names, desc="tokenizing")


def _tokenizer_ids(tokenizer: PreTrainedTokenizerBase):
    return lambda texts: tokenizer(texts, add_special_tokens=False)["input_ids"]


def _byt5_ids(offset: int):
    """ByT5's ids without its tokenizer: the UTF-8 bytes + ``offset`` (pad, eos, unk come first).
    Hand-written because ByT5Tokenizer is pure Python, one character at a time: about 4 plays a second
    here, where this takes milliseconds; tests/test_causal_lm.py checks the ids are the tokenizer's."""

    def ids(texts: list[str]) -> list[list[int]]:
        return [(np.frombuffer(t.encode("utf-8"), dtype=np.uint8).astype(np.int64) + offset).tolist() for t in texts]

    return ids


def group_texts(token_lists: Sequence[Sequence[int]], block_size: int) -> list[list[int]]:
    """run_clm's ``group_texts`` on one batch: concatenate, drop the tail shorter than a block, cut."""
    joined = [t for ids in token_lists for t in ids]
    usable = (len(joined) // block_size) * block_size
    return [joined[i : i + block_size] for i in range(0, usable, block_size)]


def pack_blocks(tokenized: Dataset, indices: Sequence[int], block_size: int) -> Dataset:
    """The blocks of one chunk of documents (rows ``indices`` of ``tokenized``, in that order): an
    ``input_ids`` column of ``block_size`` ids, packed per :data:`PACKING_BATCH` documents."""
    chunk = tokenized.select(indices)
    return chunk.map(
        lambda batch: {"input_ids": group_texts(batch["input_ids"], block_size)},
        batched=True,
        batch_size=PACKING_BATCH,
        remove_columns=chunk.column_names,
        desc="packing",
    )


def block_tensor(blocks: Dataset) -> torch.Tensor:
    """A block dataset as one int64 tensor (blocks, block_size)."""
    if len(blocks) == 0:
        return torch.zeros(0, 0, dtype=torch.long)
    return torch.from_numpy(np.asarray(blocks.with_format("numpy")["input_ids"][:], dtype=np.int64))


def collate_blocks(rows: list[dict]) -> dict[str, torch.Tensor]:
    """Packed blocks as a batch: the labels are the inputs (the causal-LM model shifts them)."""
    ids = torch.as_tensor(np.stack([np.asarray(r["input_ids"], dtype=np.int64) for r in rows]))
    return {"input_ids": ids, "labels": ids}
