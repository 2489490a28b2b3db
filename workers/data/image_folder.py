"""``image_folder``: a folder with one sub-folder of images per class (like torchvision's
ImageFolder), read with Pillow, resized to a square, scaled to [0, 1]."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sparsetrain.errors import DataError
from sparsetrain.spec.budget import DataShape
from sparsetrain.spec.data import ImageFolderSpec
from sparsetrain.workers.data.datasets import DATASETS, Dataset, finish_dataset, split_rows
from sparsetrain.workers.training.budget import check_data_memory

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


@DATASETS.register("image_folder")
def build_image_folder(spec: ImageFolderSpec, seed: int) -> Dataset:
    """Load every image under ``spec.path/<class>/``; classes are the sorted sub-folders.

    Raises ``DataError`` naming the folder or the image that cannot be used, ``SpecError``
    (``data``) before loading more images than fit in memory.
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(spec.path)
    if not root.is_dir():
        raise DataError(str(root), "not a folder of class sub-folders")
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(str(root), f"needs at least 2 class sub-folders, found {len(classes)}")
    mode, channels = ("L", 1) if spec.grayscale else ("RGB", 3)
    listed: list[list[Path]] = []
    for folder in classes:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTENSIONS)
        if not files:
            raise DataError(str(folder), "no images (png, jpg, jpeg, bmp, gif, webp)")
        listed.append(files[: spec.max_per_class])
    rows = sum(len(files) for files in listed)
    check_data_memory(DataShape(rows, (channels, spec.size, spec.size), len(classes)))
    images: list[np.ndarray] = []
    labels: list[int] = []
    for label, files in enumerate(listed):
        for file in files:
            try:
                with Image.open(file) as image:
                    pixels = image.convert(mode).resize((spec.size, spec.size))
                    images.append(np.asarray(pixels, dtype=np.float32) / 255.0)
            except (UnidentifiedImageError, OSError) as error:
                raise DataError(str(file), f"cannot read image: {error}") from None
            labels.append(label)
    x = torch.from_numpy(np.stack(images)).reshape(len(images), spec.size, spec.size, channels)
    x = x.permute(0, 3, 1, 2).contiguous()
    y = torch.tensor(labels, dtype=torch.int64)
    return finish_dataset(
        root.name, x, y, split_rows(len(labels), spec.test_fraction, seed), len(classes)
    )
