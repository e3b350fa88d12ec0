"""The tokenizers the device runs before a text model: the deterministic hashing tokenizer shared by training
(fedge.core.tasks.intent) and the edge, and a pretrained base's own ``tokenizer.json`` run by Hugging Face's
``tokenizers`` (Rust; no torch or transformers on the device) for the ``text`` task. ``load_tokenizer`` picks by
the manifest's ``preprocessing.tokenizer.kind``.

The tokenizer has no vocabulary file: words and word bigrams are hashed (CRC-32, stable across processes
and platforms) into ``num_buckets`` ids. Its parameters travel in the release manifest, so the edge
tokenizes exactly as training did.

>>> tok = HashingTokenizer(num_buckets=1000, max_len=6)
>>> tok.encode("Block my card!").tolist()
[..., 0, 0]   # doctest: +SKIP
"""

from __future__ import annotations

import re
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fedge.edge_runtime.common.errors import ConfigError

_WORD = re.compile(r"[a-z0-9']+")
PAD_ID = 0
_RESERVED = 1  # id 0 is padding


@dataclass(frozen=True)
class HashingTokenizer:
    num_buckets: int = 8192  # ids in [1, num_buckets); 0 is padding
    max_len: int = 128  # tokens kept per text (unigrams then bigrams, in reading order)
    bigrams: bool = True

    def __post_init__(self) -> None:
        if self.num_buckets < 2:
            raise ConfigError(f"num_buckets must be >= 2, got {self.num_buckets}")
        if self.max_len < 1:
            raise ConfigError(f"max_len must be >= 1, got {self.max_len}")

    def tokens(self, text: str) -> list[str]:
        words = _WORD.findall(text.lower())
        if not self.bigrams:
            return words
        out: list[str] = []
        for i, w in enumerate(words):  # interleave so truncation keeps local context for long texts
            out.append(w)
            if i + 1 < len(words):
                out.append(f"{w}_{words[i + 1]}")
        return out

    def encode(self, text: str) -> np.ndarray:
        """Text -> int64 ids of shape (max_len,), zero-padded."""
        ids = np.zeros(self.max_len, dtype=np.int64)
        for i, tok in enumerate(self.tokens(text)[: self.max_len]):
            ids[i] = _RESERVED + zlib.crc32(tok.encode("utf-8")) % (self.num_buckets - _RESERVED)
        return ids

    def encode_batch(self, texts: list[str]) -> np.ndarray:
        """list of N texts -> (N, max_len) int64."""
        if not texts:
            return np.zeros((0, self.max_len), dtype=np.int64)
        return np.stack([self.encode(t) for t in texts])

    def to_dict(self) -> dict:
        return {"kind": "hashing-crc32", **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> HashingTokenizer:
        if d.get("kind", "hashing-crc32") != "hashing-crc32":
            raise ValueError(f"unsupported tokenizer kind {d.get('kind')!r}")
        return cls(num_buckets=int(d["num_buckets"]), max_len=int(d["max_len"]), bigrams=bool(d["bigrams"]))


TOKENIZERS_INSTALL = 'pip install --no-deps "tokenizers==0.23.3"'


class HFTokenizer:
    """A Hugging Face ``tokenizer.json`` shipped in the bundle: truncated to ``max_len``, and each batch padded only
    to its longest row with ``pad_id`` (the file's own fixed padding is switched off), so short requests cost
    little and requests of different lengths can share a batch (the batcher pads them to one length)."""

    def __init__(self, path: Path, max_len: int, pad_id: int) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise RuntimeError(
                f"this release tokenizes text with Hugging Face tokenizers, which is not installed:"
                f" {TOKENIZERS_INSTALL} (12 MB; its hub-client dependencies are not needed)"
            ) from None
        self.max_len, self.pad_id = int(max_len), int(pad_id)
        self._tok = Tokenizer.from_file(str(path))
        self._tok.no_padding()
        self._tok.enable_truncation(max_length=self.max_len)
        unk = getattr(self._tok.model, "unk_token", None)  # WordPiece's [UNK] (monitoring counts them)
        self.unk_id: int | None = self._tok.token_to_id(unk) if unk else None

    def encode_batch(self, texts: list[str]) -> np.ndarray:
        """list of N texts -> (N, longest row) int64 ids, right-padded with the pad id."""
        encs = self._tok.encode_batch(list(texts)) if texts else []
        width = max([len(e.ids) for e in encs] + [1])
        out = np.full((len(encs), width), self.pad_id, dtype=np.int64)
        for i, e in enumerate(encs):
            out[i, : len(e.ids)] = e.ids
        return out


def load_tokenizer(spec: dict, bundle_dir: Path):
    """The tokenizer a manifest's ``preprocessing.tokenizer`` describes (files relative to the bundle)."""
    kind = spec.get("kind", "hashing-crc32")
    if kind == "hf-tokenizers":
        name = str(spec["file"])
        if Path(name).name != name:
            raise ValueError(f"tokenizer file {name!r} must be a file of the bundle")
        return HFTokenizer(Path(bundle_dir) / name, int(spec["max_len"]), int(spec["pad_id"]))
    return HashingTokenizer.from_dict(spec)
