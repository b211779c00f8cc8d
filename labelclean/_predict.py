"""``labelclean.predict()``: classes for new images from a model ``finetune`` exported."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labelclean.config import checked
from labelclean.progress import Progress

if TYPE_CHECKING:
    import pandas as pd

    from labelclean.data.manifest import Manifest


@dataclass
class Predictions:
    """One row per image: path, [label], prediction, confidence, [correct], prob_<class>."""

    frame: pd.DataFrame
    #: Images that could not be read, left out (``labelclean.data.images.Rejection``).
    rejections: list[Any] = field(default_factory=list)
    #: What the predictions were made from (:func:`predict_inputs`): :meth:`write` never
    #: writes over one of them.
    inputs: dict[str, str | None] = field(default_factory=dict)

    @property
    def accuracy(self) -> float | None:
        """The share predicted right, when the true labels were given; else None."""
        return float(self.frame["correct"].mean()) if "correct" in self.frame else None

    def write(self, out: str | Path, *, overwrite: bool = False) -> Path:
        """Write ``.csv`` or else Parquet, atomically; an existing ``out`` needs ``overwrite``.

        ``out`` may not be one of the inputs (the manifest, an image, the model's files),
        ``overwrite`` or not, as ``labelclean predict --out`` may not.
        """
        from labelclean._csv import frame_to_csv
        from labelclean._io import atomic_write_with, check_writable

        out, frame = Path(out), self.frame
        check_writable(out, overwrite=overwrite, inputs=self.inputs)
        if out.suffix.lower() == ".csv":
            atomic_write_with(out, lambda tmp: frame_to_csv(frame, tmp), overwrite=overwrite)
        else:
            atomic_write_with(
                out, lambda tmp: frame.to_parquet(tmp, index=False), overwrite=overwrite
            )
        return out


def predict_inputs(
    model_dir: str | Path, images: str | Path, labels: str | Path | None
) -> dict[str, str | None]:
    """``predict``'s inputs by the names its CLI gives them, its model's files included."""
    from labelclean.export import MODEL_FILES

    given: dict[str, str | Path | None] = {
        "IMAGES": images,
        "LABELS": labels,
        "MODEL_DIR": model_dir,
    }
    given |= {f"the model's {name}": Path(model_dir) / name for name in MODEL_FILES}
    return {k: str(Path(v).absolute()) if v else None for k, v in given.items()}


@checked
def predict(
    model_dir: str | Path,
    images: str | Path,
    labels: str | Path | None = None,
    *,
    path_column: str = "path",
    label_column: str = "label",
    cache_dir: str | Path | None = None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Predictions:
    """Predict a class for every image with an exported model.

    Without ``labels`` (and no class folders) every image file under ``images`` is
    predicted; with them the true label is kept and :attr:`Predictions.accuracy` is set.
    Unreadable images are skipped and listed in ``rejections``.

    Example:
        >>> labelclean.predict("model/", "new-images/").frame  # doctest: +SKIP
    """
    import numpy as np
    import pandas as pd
    import torch

    from labelclean.data.images import load_images
    from labelclean.export import load_model
    from labelclean.training import ImageBatches, Precision, predict_probs, resolve_device

    model, cfg = load_model(model_dir)
    names = cfg["class_names"]
    manifest, has_truth = _manifest(Path(images), labels, path_column, label_column)
    device = resolve_device("auto")
    precision = Precision.choose(device)
    model = model.to(device)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    data = load_images(
        manifest,
        image_size=int(cfg["image_size"]),
        cache_dir=Path(cache_dir) if cache_dir is not None else None,
        on_bad_image="skip",
        max_bad_fraction=1.0,
        progress=progress,
        should_stop=should_stop,
    )
    norm = cfg["normalization"]
    batches = ImageBatches(data.cache.images, norm["mean"], norm["std"], precision)
    rows = np.arange(len(data.manifest))
    probs = predict_probs(
        model, batches, rows, batch_size=256, progress=progress, should_stop=should_stop
    )
    pred = probs.argmax(1)
    frame = pd.DataFrame(
        {
            "path": data.manifest.paths,
            "prediction": np.asarray(names, dtype=object)[pred],
            "confidence": probs.max(1).astype(np.float32),
        }
    )
    for j, name in enumerate(names):
        frame[f"prob_{name}"] = probs[:, j]
    if has_truth:
        given = np.asarray(data.manifest.class_names, dtype=object)[data.manifest.given_labels]
        frame.insert(1, "label", given)
        frame.insert(3, "correct", frame["label"] == frame["prediction"])
    return Predictions(frame, list(data.rejections), predict_inputs(model_dir, images, labels))


def _manifest(
    images: Path, labels: str | Path | None, path_column: str, label_column: str
) -> tuple[Manifest, bool]:
    """The images' manifest and whether it has true labels (a flat folder has none)."""
    import numpy as np

    from labelclean.data.manifest import IMAGE_SUFFIXES, Manifest, read_manifest
    from labelclean.errors import ManifestError

    try:
        return read_manifest(
            images, labels, path_column=path_column, label_column=label_column
        ), True
    except ManifestError:
        if labels is not None:
            raise
    files = sorted(
        p.relative_to(images).as_posix()
        for p in images.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )
    if not files:
        raise ManifestError(f"{images}: no images found")
    manifest = Manifest(
        images.resolve(),
        files,
        np.zeros(len(files), np.int64),
        ["?", "??"],
        images,
        np.arange(len(files)),
    )
    return manifest, False
