"""Write a small image-folder dataset (circles vs. squares) for examples/cnn_images.yaml.

python examples/make_shapes.py .sparsetrain/datasets/shapes --per-class 200
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from PIL import Image, ImageDraw


def make_shapes(root: Path, per_class: int, size: int = 32, seed: int = 0) -> None:
    """Draw ``per_class`` random circles and squares into ``root/circle`` and ``root/square``."""
    rng = random.Random(seed)
    for shape in ("circle", "square"):
        folder = root / shape
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            image = Image.new("RGB", (size, size), tuple(rng.randrange(60) for _ in range(3)))
            draw = ImageDraw.Draw(image)
            radius = rng.randrange(size // 6, size // 3)
            cx, cy = rng.randrange(radius, size - radius), rng.randrange(radius, size - radius)
            box = (cx - radius, cy - radius, cx + radius, cy + radius)
            color = tuple(rng.randrange(120, 256) for _ in range(3))
            (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=color)
            image.save(folder / f"{index:05d}.png")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--per-class", type=int, default=200)
    args = parser.parse_args()
    make_shapes(args.root, args.per_class)
