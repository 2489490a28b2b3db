"""Tests for ``sparsetrain.workers.models.flat.FlatModel``: one flat vector behind a module."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsetrain.workers.models.flat import FlatModel

Batch = tuple[torch.Tensor, torch.Tensor]


def make_mlp() -> nn.Module:
    """A two-hidden-layer MLP on 12 features with 3 classes."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)
    )


def make_cnn() -> nn.Module:
    """A small CNN on (1, 8, 8) images with 4 classes."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 4 * 4, 10),
        nn.ReLU(),
        nn.Linear(10, 4),
    )


def mlp_batch() -> Batch:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(32, 12, generator=gen), torch.randint(0, 3, (32,), generator=gen)


def cnn_batch() -> Batch:
    gen = torch.Generator().manual_seed(2)
    return torch.randn(16, 1, 8, 8, generator=gen), torch.randint(0, 4, (16,), generator=gen)


CASES: list[tuple[str, Callable[[], nn.Module], Callable[[], Batch]]] = [
    ("mlp", make_mlp, mlp_batch),
    ("cnn", make_cnn, cnn_batch),
]


def seeded(factory: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Build ``factory()`` with a fixed initialisation, leaving the global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


@pytest.mark.parametrize(("name", "factory", "batch"), CASES, ids=[c[0] for c in CASES])
def test_flat_has_total_parameter_size(
    name: str, factory: Callable[[], nn.Module], batch: Callable[[], Batch]
) -> None:
    module = seeded(factory, 0)
    model = FlatModel(module)
    total = sum(p.numel() for p in module.parameters())
    assert model.numel == total
    assert model.flat.shape == (total,)
    assert model.flat.dtype == torch.float32
    assert sum(s.numel for s in model.slots) == total
    # The flat vector starts as the module's parameters, in order.
    expected = nn.utils.parameters_to_vector(module.parameters()).detach()
    assert torch.equal(model.flat, expected)


@pytest.mark.parametrize(("name", "factory", "batch"), CASES, ids=[c[0] for c in CASES])
def test_views_alias_the_flat_vector(
    name: str, factory: Callable[[], nn.Module], batch: Callable[[], Batch]
) -> None:
    """Writing into ``flat`` changes both the views and the forward output."""
    model = FlatModel(seeded(factory, 0))
    inputs, _ = batch()
    views = model.views()
    assert set(views) == {n for n, _ in model.module.named_parameters()}
    for name_, view in views.items():
        assert view.shape == dict(model.module.named_parameters())[name_].shape
        assert view.untyped_storage().data_ptr() == model.flat.untyped_storage().data_ptr()
    before = model.forward(inputs).detach().clone()

    last_bias = list(views)[-1]
    assert last_bias.endswith("bias")
    with torch.no_grad():
        model.flat[-views[last_bias].numel() :] += 1.0
    assert torch.equal(views[last_bias], model.flat[-views[last_bias].numel() :])
    after = model.forward(inputs).detach()
    torch.testing.assert_close(after, before + 1.0, rtol=0, atol=1e-5)

    with torch.no_grad():
        model.flat.zero_()
    assert all(bool((v == 0).all()) for v in model.views().values())
    assert torch.equal(model.forward(inputs), torch.zeros_like(before))


@pytest.mark.parametrize(("name", "factory", "batch"), CASES, ids=[c[0] for c in CASES])
def test_forward_with_explicit_flat(
    name: str, factory: Callable[[], nn.Module], batch: Callable[[], Batch]
) -> None:
    """``forward(inputs, flat)`` reads the given vector, not the model's own."""
    model = FlatModel(seeded(factory, 0))
    other = FlatModel(seeded(factory, 1))
    inputs, _ = batch()
    expected = other.module(inputs)
    torch.testing.assert_close(model.forward(inputs, other.flat), expected, rtol=0, atol=1e-6)
    assert not torch.allclose(model.forward(inputs), expected)


@pytest.mark.parametrize(("name", "factory", "batch"), CASES, ids=[c[0] for c in CASES])
def test_loss_and_grad_matches_backward(
    name: str, factory: Callable[[], nn.Module], batch: Callable[[], Batch]
) -> None:
    module = seeded(factory, 0)
    model = FlatModel(module)
    inputs, targets = batch()
    flat_before = model.flat.clone()

    loss, grad = model.loss_and_grad(inputs, targets, F.cross_entropy)

    module.zero_grad()
    reference_loss = F.cross_entropy(module(inputs), targets)
    reference_loss.backward()
    reference = nn.utils.parameters_to_vector(p.grad for p in module.parameters())

    assert grad.shape == (model.numel,)
    assert not loss.requires_grad and not grad.requires_grad
    torch.testing.assert_close(grad, reference, rtol=0, atol=1e-6)
    torch.testing.assert_close(loss, reference_loss.detach(), rtol=0, atol=1e-6)
    assert torch.equal(model.flat, flat_before), "loss_and_grad must not write the parameters"
    assert grad.untyped_storage().data_ptr() != model.flat.untyped_storage().data_ptr()


def test_loss_and_grad_follows_flat_not_module_parameters() -> None:
    """After the flat vector changes, the gradient is taken at the flat vector."""
    module = seeded(make_mlp, 0)
    model = FlatModel(module)
    inputs, targets = mlp_batch()
    target_params = seeded(make_mlp, 5)
    with torch.no_grad():
        model.flat.copy_(nn.utils.parameters_to_vector(target_params.parameters()))
    _, grad = model.loss_and_grad(inputs, targets, F.cross_entropy)
    F.cross_entropy(target_params(inputs), targets).backward()
    reference = nn.utils.parameters_to_vector(p.grad for p in target_params.parameters())
    torch.testing.assert_close(grad, reference, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("name", "factory", "batch"), CASES, ids=[c[0] for c in CASES])
def test_export_state_dict_round_trips(
    name: str, factory: Callable[[], nn.Module], batch: Callable[[], Batch]
) -> None:
    model = FlatModel(seeded(factory, 0))
    with torch.no_grad():
        model.flat.mul_(1.5).add_(0.01)  # the export must follow flat, not the module
    inputs, _ = batch()
    state = model.export_state_dict()
    assert all(t.device.type == "cpu" for t in state.values())

    fresh = seeded(factory, 9)
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh(inputs), model.forward(inputs), rtol=0, atol=1e-6)

    # The export is a copy: later writes into flat do not leak into it.
    snapshot = {k: v.clone() for k, v in state.items()}
    with torch.no_grad():
        model.flat.zero_()
    assert all(torch.equal(state[k], snapshot[k]) for k in state)


def test_export_state_dict_includes_buffers() -> None:
    """Buffers (batch-norm running statistics) are exported and used by the forward pass."""

    def factory() -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(192, 2)
        )

    module = seeded(factory, 0).eval()
    with torch.no_grad():
        bn = module[1]
        assert isinstance(bn, nn.BatchNorm2d)
        bn.running_mean.copy_(torch.tensor([0.5, -0.25, 1.0]))
        bn.running_var.copy_(torch.tensor([2.0, 0.5, 1.5]))
    model = FlatModel(module)
    inputs, _ = cnn_batch()
    state = model.export_state_dict()
    assert {"1.running_mean", "1.running_var", "1.num_batches_tracked"} <= set(state)

    fresh = seeded(factory, 3).eval()
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh(inputs), model.forward(inputs), rtol=0, atol=1e-6)
    torch.testing.assert_close(fresh(inputs), module(inputs), rtol=0, atol=1e-6)
