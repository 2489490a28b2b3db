"""``text``: local UTF-8 text files as next-token windows for a language model."""

from __future__ import annotations

import math

import torch

from sparsetrain.errors import DataError
from sparsetrain.spec.budget import DataShape
from sparsetrain.spec.data import TextSpec
from sparsetrain.workers.data.datasets import DATASETS, Dataset
from sparsetrain.workers.data.files import list_files
from sparsetrain.workers.data.tokenizers import Tokenizer
from sparsetrain.workers.training.budget import check_data_memory


def read_text(path: str) -> str:
    """The text of ``path``; ``DataError`` naming the file when it is empty, holds a NUL
    byte or is not UTF-8 (a binary file), with the offending byte's offset."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as error:
        raise DataError(path, f"cannot read: {error.strerror}") from None
    if not raw.strip():
        raise DataError(path, "is empty")
    if (nul := raw.find(b"\x00")) >= 0:
        raise DataError(path, f"looks binary: NUL byte at offset {nul}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(path, f"looks binary: not UTF-8 at byte offset {error.start}") from None


def _windows(tokens: torch.Tensor, context: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``tokens[s : s+context]`` and targets ``tokens[s+1 : s+context+1]`` for
    every start ``s`` a multiple of ``stride`` (copies, contiguous)."""
    if tokens.numel() < context + 1:
        empty = torch.zeros((0, context), dtype=torch.int64)
        return empty, empty.clone()
    spans = tokens.unfold(0, context + 1, stride)
    return spans[:, :-1].contiguous(), spans[:, 1:].contiguous()


@DATASETS.register("text")
def build_text(spec: TextSpec, seed: int) -> Dataset:
    """Tokenize the files (concatenated in order), hold out the last ``test_fraction`` of
    the tokens, and cut both parts into windows. ``seed`` is unused (the split is by
    position, so no window of the test part overlaps the training text).

    A ``char`` tokenizer's alphabet is every distinct character of the files, in sorted
    order. Raises ``DataError`` for an empty or binary file or too little text for one
    training window (or one test window when ``test_fraction`` > 0).
    """
    files = list_files(spec.path, (".txt",), "text")
    text = "".join(read_text(path) for path in files)
    tokenizer = Tokenizer() if spec.tokenizer == "byte" else Tokenizer("".join(sorted(set(text))))
    tokens = torch.tensor(tokenizer.encode(text), dtype=torch.int64)
    stride = spec.stride or spec.context
    check_data_memory(DataShape(2 * (tokens.numel() // stride), (spec.context,), None))
    n_test = math.floor(tokens.numel() * spec.test_fraction + 1e-9)
    x_train, y_train = _windows(tokens[: tokens.numel() - n_test], spec.context, stride)
    x_test, y_test = _windows(tokens[tokens.numel() - n_test :], spec.context, stride)
    need = spec.context + 1
    if x_train.shape[0] == 0 or (n_test and x_test.shape[0] == 0):
        part = "training" if x_train.shape[0] == 0 else "held-out"
        message = (
            f"{tokens.numel()} tokens ({n_test} held out) leave the {part} part shorter than "
            f"context + 1 = {need} tokens; add text or lower context or test_fraction"
        )
        raise DataError(files[0], message)
    return Dataset(
        name=spec.kind,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        input_shape=(spec.context,),
        num_classes=tokenizer.vocab_size,
        task="language_model",
        preprocessing={**tokenizer.describe(), "context": spec.context},
    )
