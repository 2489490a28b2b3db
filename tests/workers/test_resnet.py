"""The ``resnet`` model kind: CIFAR-style structure (depth 6n + 2, option-A shortcuts),
batch-norm statistics kept as buffers, its spec's checks and its memory estimate."""

from __future__ import annotations

import functools

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from sparsetrain.errors import SpecError
from sparsetrain.spec import ResNetSpec, SklearnSpec, SyntheticSpec
from sparsetrain.spec.budget import DataShape, estimate_job_memory
from sparsetrain.workers.data.datasets import Dataset, build_dataset
from sparsetrain.workers.models.registry import build_model
from sparsetrain.workers.models.resnet import ResNet
from tests.specs import job_spec_model


@functools.cache
def digits() -> Dataset:
    return build_dataset(SklearnSpec(name="digits"), seed=0)


@pytest.mark.parametrize("depth", [8, 14, 20])
def test_depth_counts_the_weighted_layers(depth: int) -> None:
    model, _ = build_model(ResNetSpec(depth=depth, width=4), digits(), seed=0)
    weighted = [m for m in model.module.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert len(weighted) == depth
    norms = [m for m in model.module.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == depth - 1  # every convolution is followed by one


@pytest.mark.parametrize("depth", [7, 9, 10, 12, 2])
def test_a_depth_that_is_not_6n_plus_2_is_refused(depth: int) -> None:
    with pytest.raises(ValidationError):
        ResNetSpec(depth=depth)


def test_stages_double_the_channels_and_halve_the_resolution() -> None:
    net = ResNet(in_channels=3, outputs=5, blocks=1, width=4)
    seen: list[tuple[int, ...]] = []
    for block in net.blocks:
        block.register_forward_hook(lambda _m, _i, out: seen.append(tuple(out.shape)))
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 5)
    assert seen == [(2, 4, 32, 32), (2, 8, 16, 16), (2, 16, 8, 8)]
    # Odd sizes: the subsampled shortcut and the strided convolution agree (7 -> 4 -> 2).
    assert net(torch.zeros(1, 3, 7, 7)).shape == (1, 5)


def test_shortcuts_have_no_weights() -> None:
    """Option A: only convolutions, batch norms and the head hold parameters."""
    net = ResNet(in_channels=1, outputs=10, blocks=2, width=4)
    owners = {type(m) for m in net.modules() if list(m.parameters(recurse=False))}
    assert owners == {nn.Conv2d, nn.BatchNorm2d, nn.Linear}


def test_batch_norm_statistics_are_buffers_updated_by_training_only() -> None:
    dataset = digits()
    model, objective = build_model(ResNetSpec(depth=8, width=4), dataset, seed=0)
    assert "bn.running_mean" in model.buffers and "bn.running_var" in model.buffers
    x, y = dataset.x_train, dataset.y_train
    assert isinstance(x, torch.Tensor)  # digits rows are dense
    before = {name: buf.clone() for name, buf in model.buffers.items()}
    model.forward(x[:16])  # evaluation: statistics untouched
    assert all(torch.equal(before[n], b) for n, b in model.buffers.items())
    model.loss_and_grad(x[:16], y[:16], objective.data_loss)
    assert not torch.equal(before["bn.running_mean"], model.buffers["bn.running_mean"])
    assert int(model.buffers["bn.num_batches_tracked"]) == 1
    # The flat vector is the parameters only, not the statistics.
    assert model.numel == sum(p.numel() for p in model.module.parameters())


def test_resnet_on_tabular_data_is_a_spec_error() -> None:
    dataset = build_dataset(SyntheticSpec(n=40, d=6), seed=0)
    with pytest.raises(SpecError, match="resnet needs image data") as info:
        build_model(ResNetSpec(depth=8), dataset, seed=0)
    assert info.value.path == "model.kind"


@pytest.mark.parametrize(
    ("depth", "width", "shape", "classes"),
    [(8, 16, (3, 32, 32), 4), (20, 8, (1, 8, 8), 10), (14, 4, (3, 7, 9), 2)],
)
def test_the_memory_estimate_counts_exactly_the_parameters(
    depth: int, width: int, shape: tuple[int, int, int], classes: int
) -> None:
    spec = job_spec_model(
        model={"kind": "resnet", "depth": depth, "width": width},
        data={"kind": "image_folder", "path": "images", "size": 8},
    )
    estimate = estimate_job_memory(spec, DataShape(rows=100, input_shape=shape, classes=classes))
    net = ResNet(shape[0], 1 if classes == 2 else classes, (depth - 2) // 6, width)
    d = sum(p.numel() for p in net.parameters())
    assert estimate.params == 2 * 4 * d  # the module's tensors and the flat vector
    assert estimate.activations > spec.batch_size * 4 * width * shape[1] * shape[2]
