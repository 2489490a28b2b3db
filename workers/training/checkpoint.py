"""Checkpoints of a running job: atomic, checksummed files on any fsspec filesystem.

A checkpoint is one file ``step-{step:010d}.ckpt`` inside a root folder (a local path or an
fsspec URL such as ``memory://x`` or ``s3://bucket/job``). Its layout is ``MAGIC``, the
payload length (8 bytes, little-endian), the payload's SHA-256 (32 bytes), then the payload:
``torch.save`` of a plain dict, read back with ``torch.load(weights_only=True)``.

Writes go to ``.step-{step:010d}.ckpt.tmp-<uuid4 hex>`` in the same folder and are then moved
onto the final name, so a final name never holds a half-written file written by this module.

A sampling job's replicas hold the same chain (its samples grow with the run), a
gradient-mode job's replicas the same optimizer state, and every replica the same module
buffers (batch-norm statistics, averaged over the group before each checkpoint, under
``"buffers"`` in each rank's state): the file stores each once, in rank 0's state, and later
ranks whose ``chain`` / ``optimizer`` / ``buffers`` equals rank 0's carry the marker
``"shared"`` there, which loading replaces with rank 0's again. Files of format 3 and older
hold no buffers; a job resumed from one starts from the model's initial buffers.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import numbers
import os
import posixpath
import re
import uuid
from dataclasses import dataclass, field, fields
from typing import Any

import fsspec
import torch

from sparsetrain.errors import CheckpointError

MAGIC = b"SPTCKPT1"
# 2: a shared chain is stored once; 3: a shared optimizer state too; 4: module buffers too
FORMAT_VERSION = 4
READABLE_VERSIONS = (1, 2, 3, 4)
_HEADER = len(MAGIC) + 8 + 32
_FINAL = re.compile(r"^step-(\d{10,})\.ckpt$")
_TMP = re.compile(r"^\.step-\d{10,}\.ckpt\.tmp-[0-9a-f]{32}$")
SHARED = "shared"
SHARED_KEYS = ("chain", "optimizer", "buffers")


@dataclass
class Checkpoint:
    """Everything needed to resume a job exactly after ``step`` completed steps."""

    step: int
    params: torch.Tensor
    workers: list[dict[str, Any]]
    averager: dict[str, Any] | None
    spec_json: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint file found or written: its step, full path/URL and size in bytes."""

    step: int
    path: str
    nbytes: int


def _join(root: str, name: str) -> str:
    return f"{root}{name}" if root.endswith("/") else f"{root}/{name}"


def _plain(value: Any, where: str) -> Any:
    """``value`` as types ``torch.load(weights_only=True)`` accepts.

    Tensors are detached, moved to the CPU and made compact (no views of larger storage);
    other ``numbers.Integral`` / ``Real`` (e.g. numpy scalars) become ``int`` / ``float``;
    anything else raises ``CheckpointError``.
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, torch.Tensor):  # a view would drag its whole storage along
        value = value.detach().cpu()
        whole = value.untyped_storage().nbytes() == value.numel() * value.element_size()
        compact = whole and value.is_contiguous()
        return value if compact else value.clone(memory_format=torch.contiguous_format)
    if isinstance(value, dict):
        return {key: _plain(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, list | tuple):
        items = [_plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise CheckpointError(f"{where}: a {type(value).__name__} cannot be stored in a checkpoint")


def _check(state: dict[str, Any], where: str) -> None:
    """Raise ``CheckpointError`` naming ``where`` unless ``state`` is a usable checkpoint."""
    step, params, workers = state.get("step"), state.get("params"), state.get("workers")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        problem = f"step must be an int >= 0, not {step!r}"
    elif not (isinstance(params, torch.Tensor) and params.dim() == 1):
        problem = "params must be a 1-D tensor"
    elif params.dtype != torch.float32:
        problem = f"params must be float32, not {params.dtype}"
    elif not isinstance(workers, list):
        problem = "workers must be a list of per-rank states"
    elif bad := [i for i, w in enumerate(workers) if not isinstance(w, dict) or w.get("rank") != i]:
        problem = f"workers[{bad[0]}] is not the state of rank {bad[0]}"
    elif not isinstance(state.get("averager"), dict | None):
        problem = "averager must be a dict or None"
    elif not isinstance(state.get("spec_json"), str) or not isinstance(state.get("extra"), dict):
        problem = "spec_json must be a str and extra a dict"
    else:
        return
    raise CheckpointError(f"{where}: {problem}")


def _bytes_of(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().contiguous().reshape(-1).view(torch.uint8)


def _equal(a: Any, b: Any) -> bool:
    """Deep equality of plain checkpoint values: the same types and containers, tensors of
    the same dtype and shape with the same bytes."""
    if type(a) is not type(b):
        return False
    if isinstance(a, torch.Tensor):
        if a.dtype != b.dtype or a.shape != b.shape:
            return False
        return torch.equal(_bytes_of(a), _bytes_of(b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _shared_once(workers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``workers`` with every later rank's ``SHARED_KEYS`` entry that equals rank 0's
    replaced by the marker."""
    if not workers:
        return workers
    stored = [workers[0]]
    for state in workers[1:]:
        for key in SHARED_KEYS:
            first = workers[0].get(key)
            if isinstance(first, dict) and _equal(state.get(key), first):
                state = {**state, key: SHARED}
        stored.append(state)
    return stored


def _shared_restored(workers: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """Undo ``_shared_once``; raises ``CheckpointError`` for a marker rank 0 cannot fill."""
    restored = []
    for rank, state in enumerate(workers):
        for key in SHARED_KEYS:
            if state.get(key) == SHARED:
                first = workers[0].get(key)
                if rank == 0 or not isinstance(first, dict):
                    raise CheckpointError(f"{where}: workers[{rank}] shares a {key} rank 0 lacks")
                state = {**state, key: first}
        restored.append(state)
    return restored


def save_checkpoint(root: str, checkpoint: Checkpoint) -> CheckpointInfo:
    """Write ``checkpoint`` atomically as ``<root>/step-{step:010d}.ckpt`` and describe it.

    Creates ``root`` if needed and replaces an existing file of the same step; does not
    mutate ``checkpoint`` (tensors are stored as CPU copies). Raises ``CheckpointError`` for
    content that is invalid or cannot be stored, and the filesystem's ``OSError`` on I/O
    failure; after a failure the final name is untouched (the temporary file is removed
    when possible; one left by a crash is ignored by ``list_checkpoints``).
    """
    state = {f.name: getattr(checkpoint, f.name) for f in fields(checkpoint)}
    state = _plain({**state, "format_version": FORMAT_VERSION}, "checkpoint")
    _check(state, "checkpoint")
    state["workers"] = _shared_once(state["workers"])
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    blob = MAGIC + len(payload).to_bytes(8, "little") + hashlib.sha256(payload).digest() + payload
    fs, base = fsspec.core.url_to_fs(root)
    fs.makedirs(base, exist_ok=True)
    name = f"step-{checkpoint.step:010d}.ckpt"
    final = posixpath.join(base, name)
    tmp = posixpath.join(base, f".{name}.tmp-{uuid.uuid4().hex}")
    try:
        with fs.open(tmp, "wb") as out:
            out.write(blob)
            out.flush()
            with contextlib.suppress(AttributeError, OSError, ValueError):
                os.fsync(out.fileno())  # local files only; others have no descriptor
        fs.mv(tmp, final)
    except BaseException:
        with contextlib.suppress(Exception):
            fs.rm(tmp)
        raise
    return CheckpointInfo(step=checkpoint.step, path=_join(root, name), nbytes=len(blob))


def _entries(root: str) -> list[tuple[str, int]]:
    """``(name, size)`` of every file directly under ``root``; ``[]`` when it is missing."""
    fs, base = fsspec.core.url_to_fs(root)
    try:
        listing = fs.ls(base, detail=True)
    except FileNotFoundError:
        return []
    return [
        (posixpath.basename(entry["name"].rstrip("/")), int(entry.get("size") or 0))
        for entry in listing
        if entry.get("type") == "file"
    ]


def list_checkpoints(root: str) -> list[CheckpointInfo]:
    """The checkpoints under ``root`` by ascending step; ``[]`` when ``root`` does not exist.

    Only exact final names count (temporary files are ignored); contents are not read, so a
    listed file may still fail ``load_checkpoint``. Reads only.
    """
    found = []
    for name, size in _entries(root):
        match = _FINAL.match(name)
        if match:
            found.append(CheckpointInfo(int(match.group(1)), _join(root, name), size))
    return sorted(found, key=lambda info: info.step)


def load_checkpoint(path: str) -> Checkpoint:
    """Read and verify the checkpoint at ``path`` (a path or URL); reads only.

    Raises ``CheckpointError`` naming ``path`` when the file is missing, not a checkpoint,
    truncated, fails its checksum, cannot be unpickled safely, or has invalid contents.
    Tensors are loaded onto the CPU.
    """
    fs, fs_path = fsspec.core.url_to_fs(path)
    try:
        with fs.open(fs_path, "rb") as source:
            data = source.read()
    except (FileNotFoundError, IsADirectoryError):
        raise CheckpointError(f"{path}: no such checkpoint") from None
    if not MAGIC.startswith(data[: len(MAGIC)]):  # a short prefix of MAGIC is a truncation
        raise CheckpointError(f"{path}: not a sparsetrain checkpoint")
    if len(data) < _HEADER:
        raise CheckpointError(
            f"{path}: truncated checkpoint ({len(data)} of at least {_HEADER} bytes)"
        )
    length = int.from_bytes(data[len(MAGIC) : len(MAGIC) + 8], "little")
    expected = _HEADER + length
    if len(data) < expected:
        raise CheckpointError(f"{path}: truncated checkpoint ({len(data)} of {expected} bytes)")
    if len(data) > expected:
        raise CheckpointError(
            f"{path}: {len(data)} bytes where {expected} were expected, the checkpoint is corrupt"
        )
    payload = data[_HEADER:]
    if hashlib.sha256(payload).digest() != data[len(MAGIC) + 8 : _HEADER]:
        raise CheckpointError(f"{path}: checksum mismatch, the checkpoint is corrupt")
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read the checkpoint payload: {exc}") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: the payload is not a dict")
    if state.get("format_version") not in READABLE_VERSIONS:
        raise CheckpointError(f"{path}: unsupported format version {state.get('format_version')!r}")
    _check(state, path)
    return Checkpoint(
        step=state["step"],
        params=state["params"],
        workers=_shared_restored(state["workers"], path),
        averager=state["averager"],
        spec_json=state["spec_json"],
        extra=state["extra"],
    )


def prune_checkpoints(root: str, keep: int) -> list[str]:
    """Delete all but the ``keep`` highest-step checkpoints under ``root``, plus stray temp files.

    Returns the deleted paths (old checkpoints by ascending step, then temp files). Call it
    from the job's single writer only: it removes any ``.step-*.ckpt.tmp-*`` file, including
    one that a concurrent ``save_checkpoint`` is still writing.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, not {keep}")
    fs, base = fsspec.core.url_to_fs(root)
    old = [posixpath.basename(info.path) for info in list_checkpoints(root)[:-keep]]
    names = old + [name for name, _ in _entries(root) if _TMP.match(name)]
    for name in names:
        fs.rm(posixpath.join(base, name))
    return [_join(root, name) for name in names]
