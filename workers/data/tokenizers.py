"""Tokenizers that need no download: UTF-8 bytes, or the characters of a training text.

A tokenizer is described by a small dict (its ``preprocessing``) that is saved with the
model, so ``tokenizer_from`` rebuilds the same one where the model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

BYTE_VOCAB = 256


@dataclass(frozen=True)
class Tokenizer:
    """``alphabet`` None: UTF-8 bytes (256 tokens); else one token per character of it."""

    alphabet: str | None = None

    @property
    def vocab_size(self) -> int:
        """Number of distinct token ids."""
        return BYTE_VOCAB if self.alphabet is None else len(self.alphabet)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; ``ValueError`` naming a character outside the alphabet."""
        if self.alphabet is None:
            return list(text.encode("utf-8"))
        index = {c: i for i, c in enumerate(self.alphabet)}
        try:
            return [index[c] for c in text]
        except KeyError as error:
            raise ValueError(f"character {error.args[0]!r} is not in the tokenizer") from None

    def decode(self, tokens: list[int]) -> str:
        """The text of ``tokens`` (invalid UTF-8 byte runs become U+FFFD)."""
        if self.alphabet is None:
            return bytes(tokens).decode("utf-8", errors="replace")
        return "".join(self.alphabet[t] for t in tokens)

    def describe(self) -> dict[str, Any]:
        """What ``tokenizer_from`` needs to rebuild this tokenizer."""
        if self.alphabet is None:
            return {"tokenizer": "byte"}
        return {"tokenizer": "char", "alphabet": self.alphabet}


def tokenizer_from(preprocessing: dict[str, Any]) -> Tokenizer:
    """The tokenizer ``describe`` described; ``ValueError`` for an unknown one."""
    kind = preprocessing.get("tokenizer")
    if kind == "byte":
        return Tokenizer()
    if kind == "char" and isinstance(preprocessing.get("alphabet"), str):
        return Tokenizer(preprocessing["alphabet"])
    raise ValueError(f"unknown tokenizer {kind!r}")
