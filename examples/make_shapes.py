"""Write a small image-folder dataset of coloured shapes on dark backgrounds, one sub-folder
per shape: circles vs. squares for examples/cnn_images.yaml, and with --shapes also triangles
and diamonds (four classes, 32x32 RGB like CIFAR) for examples/resnet_images.yaml.

python examples/make_shapes.py .sparsetrain/datasets/shapes --per-class 200
python examples/make_shapes.py .sparsetrain/datasets/shapes4 --per-class 300 \
    --shapes circle square triangle diamond
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "diamond")


def _outline(shape: str, cx: int, cy: int, r: int) -> list[tuple[int, int]]:
    """The corners of a triangle (apex up) or a diamond of half-width ``r`` around (cx, cy)."""
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]


def make_shapes(
    root: Path,
    per_class: int,
    size: int = 32,
    seed: int = 0,
    shapes: Sequence[str] = ("circle", "square"),
    noise: float = 0.0,
) -> None:
    """Draw ``per_class`` random images of each of ``shapes`` (names from ``SHAPES``) into
    ``root/<shape>``: random position, size and colour, on a random dark background, plus
    Gaussian pixel noise of standard deviation ``noise`` (0-255 scale) when it is positive.

    The same arguments write the same files. Raises ``ValueError`` for an unknown shape.
    """
    unknown = sorted(set(shapes) - set(SHAPES))
    if unknown:
        raise ValueError(f"unknown shapes {unknown}; known: {', '.join(SHAPES)}")
    rng = random.Random(seed)
    pixels = np.random.default_rng(seed)
    for shape in shapes:
        folder = root / shape
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            image = Image.new("RGB", (size, size), tuple(rng.randrange(60) for _ in range(3)))
            draw = ImageDraw.Draw(image)
            radius = rng.randrange(size // 6, size // 3)
            cx, cy = rng.randrange(radius, size - radius), rng.randrange(radius, size - radius)
            box = (cx - radius, cy - radius, cx + radius, cy + radius)
            color = tuple(rng.randrange(120, 256) for _ in range(3))
            if shape == "circle":
                draw.ellipse(box, fill=color)
            elif shape == "square":
                draw.rectangle(box, fill=color)
            else:
                draw.polygon(_outline(shape, cx, cy, radius), fill=color)
            if noise > 0:
                noisy = np.asarray(image, dtype=np.float64) + pixels.normal(
                    0, noise, (size, size, 3)
                )
                image = Image.fromarray(noisy.clip(0, 255).round().astype(np.uint8))
            image.save(folder / f"{index:05d}.png")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--shapes", nargs="+", choices=SHAPES, default=["circle", "square"])
    parser.add_argument("--noise", type=float, default=0.0, help="pixel noise std (0-255)")
    args = parser.parse_args()
    make_shapes(args.root, args.per_class, shapes=args.shapes, noise=args.noise)
