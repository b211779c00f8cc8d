"""scikit-learn's 8x8 digits written as image files: real, offline data for the demo and tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image


def write_digits(
    folder: str | Path,
    *,
    layout: str = "csv",
    image_format: str = "png",
    n_per_class: int | None = None,
    upscale: int = 1,
    seed: int = 0,
) -> tuple[Path, Path | None]:
    """Write the 1,797 digits (or ``n_per_class`` of each) as images.

    Args:
        folder: Where to write; created if needed.
        layout: ``csv`` (flat folder + ``labels.csv`` with path,label) or ``folder`` (one
            sub-folder per class, no label file).
        image_format: ``png`` or ``jpg``.
        n_per_class: Take the first N of each class (a small, fast dataset).
        upscale: Integer upscaling factor (nearest neighbour) of the 8x8 images.
        seed: Unused by the data itself; kept so callers can thread one seed everywhere.

    Returns:
        ``(images_dir, labels_csv)``; ``labels_csv`` is None for the folder layout.
    """
    from sklearn.datasets import load_digits

    del seed
    digits = load_digits()
    pixels = (digits.images / 16.0 * 255).round().astype(np.uint8)
    targets = digits.target
    index = np.arange(len(targets))
    if n_per_class is not None:
        index = np.concatenate([index[targets == c][:n_per_class] for c in range(10)])
        index.sort()
    folder = Path(folder)
    images_dir = folder if layout == "folder" else folder
    images_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in index:
        label = str(int(targets[i]))
        name = f"digit_{i:04d}.{image_format}"
        rel = f"{label}/{name}" if layout == "folder" else name
        (images_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        img = Image.fromarray(pixels[i])
        if upscale > 1:
            img = img.resize((8 * upscale, 8 * upscale), Image.Resampling.NEAREST)
        img.save(images_dir / rel)
        rows.append((rel, label))
    if layout == "folder":
        return images_dir, None
    labels_csv = folder / "labels.csv"
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(labels_csv, index=False)
    return images_dir, labels_csv
