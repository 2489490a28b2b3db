"""One flat parameter vector per model, with per-tensor views for the forward pass.

Compression, memory and exchange all work on this single vector, so nothing downstream
loops over tensors in Python. The gradient comes back flat as well: autograd differentiates
through the views straight into one buffer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from sparsetrain.workers.models.buffers import BufferLayout


@dataclass(frozen=True)
class _Slot:
    name: str
    shape: torch.Size
    offset: int
    numel: int


class FlatModel:
    """Holds ``module``'s parameters as one contiguous fp32 vector ``flat``.

    The module itself keeps its structure (and buffers) but its parameters are only used to
    know names and shapes; every forward pass reads from ``flat`` (or a vector passed in).
    """

    def __init__(self, module: nn.Module, device: torch.device | str = "cpu") -> None:
        self.module = module.to(device)
        self.slots: list[_Slot] = []
        offset = 0
        for name, param in module.named_parameters():
            self.slots.append(_Slot(name, param.shape, offset, param.numel()))
            offset += param.numel()
        self.numel = offset
        with torch.no_grad():
            self.flat = torch.cat(
                [p.detach().reshape(-1).to(torch.float32) for p in module.parameters()]
            ).to(device)
        # The buffers a forward pass reads and train mode updates in place: the module's own
        # until the simulator swaps in a logical worker's set (``RankBuffers``).
        self.buffers = dict(module.named_buffers())
        self.buffer_layout = BufferLayout(self.buffers)
        # What rebuilds the module without the data; ``build_model`` fills it in.
        self.description: dict[str, Any] = {}

    @property
    def device(self) -> torch.device:
        return self.flat.device

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """The parameter tensors' shapes, in the order they lie in ``flat``."""
        return [tuple(s.shape) for s in self.slots]

    def views(self, flat: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per-parameter views into ``flat`` (default: the model's own vector)."""
        source = self.flat if flat is None else flat
        return {s.name: source[s.offset : s.offset + s.numel].view(s.shape) for s in self.slots}

    def forward(
        self, inputs: torch.Tensor, flat: torch.Tensor | None = None, *, train: bool = False
    ) -> torch.Tensor:
        """Run the module on ``inputs`` with parameters taken from ``flat``, in train mode
        when ``train`` (dropout on, batch-norm statistics updated) and in eval mode
        otherwise. Sets the module's mode."""
        self.module.train(train)
        params = self.views(flat)
        return functional_call(self.module, {**params, **self.buffers}, (inputs,))

    def loss_and_grad(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        *,
        autocast: torch.dtype | None = None,
        loss_scale: float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean minibatch loss and its gradient w.r.t. the flat vector (a new fp32 tensor),
        with the module in train mode.

        ``autocast``: run the forward and backward pass under ``torch.autocast`` to that type
        (bf16, fp16); the flat vector and the gradient stay fp32. ``loss_scale``: the
        backward pass starts from ``loss_scale · loss`` and the gradient is divided by it
        again, so it comes back in true units (not finite when the scaled pass overflowed).
        ``flat`` is read, not written; the module's buffers (batch-norm statistics) update.
        """
        flat = self.flat.detach().requires_grad_(True)
        if autocast is None:
            loss = loss_fn(self.forward(inputs, flat, train=True), targets)
        else:
            with torch.autocast(self.device.type, dtype=autocast):
                loss = loss_fn(self.forward(inputs, flat, train=True), targets)
            loss = loss.float()
        if loss_scale is None:
            (grad,) = torch.autograd.grad(loss, flat)
        else:
            (grad,) = torch.autograd.grad(loss * loss_scale, flat)
            grad.mul_(1.0 / loss_scale)
        return loss.detach(), grad

    def buffer_state(self) -> dict[str, torch.Tensor]:
        """CPU copies of the buffers by name (empty without buffers)."""
        return self.buffer_layout.state(self.buffers)

    def load_buffer_state(self, state: dict[str, torch.Tensor]) -> None:
        """Copy ``state`` (as ``buffer_state`` returns it) into the buffers in place; raises
        ``ValueError`` when it does not fit the model."""
        self.buffer_layout.load(self.buffers, state)

    def export_state_dict(self) -> dict[str, torch.Tensor]:
        """A regular ``nn.Module`` state dict (CPU copies) built from the flat vector."""
        state = {name: view.detach().cpu().clone() for name, view in self.views().items()}
        state.update({name: buf.detach().cpu().clone() for name, buf in self.buffers.items()})
        return state
