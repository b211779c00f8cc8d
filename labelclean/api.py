"""The Python API: the same verbs as the CLI, returning objects instead of printing."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from labelclean._progress import Progress
from labelclean.config import AuditConfig
from labelclean.fgcm.audit import AuditResult, EpochHook, run_audit


def audit(
    images: str | Path,
    labels: str | Path | None = None,
    *,
    config: AuditConfig | None = None,
    data_options: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
    on_epoch: EpochHook | None = None,
    **options: Any,
) -> AuditResult:
    """Audit the labels of an image dataset with FGCM.

    Args:
        images: Image folder (one sub-folder per class when ``labels`` is None).
        labels: CSV or Parquet manifest with ``path,label`` columns, paths relative to
            ``images``.
        config: Full settings; or pass individual :class:`AuditConfig` fields as keywords.
        data_options: Keyword arguments for :func:`labelclean.data.images.load_dataset`
            (``image_size``, ``on_bad_image``, ``cache_dir``, ...).
        progress: ``progress(task, done, total)`` callback.
        on_epoch: Called after every epoch with the audit state and the epoch's log record.
        **options: :class:`AuditConfig` fields, e.g. ``epochs=20``, ``preset="paper"``.

    Returns:
        An :class:`AuditResult`; ``.to_pandas()`` gives the report, ``.write(path)`` the file.

    Example:
        >>> result = labelclean.audit("images/", "labels.csv", epochs=20)  # doctest: +SKIP
        >>> result.to_pandas().query("action == 'relabel'")  # doctest: +SKIP
    """
    from labelclean.data.images import load_dataset

    if config is None:
        config = AuditConfig.from_preset(options.pop("preset", None), **options)
    elif options:
        raise TypeError("pass either config= or individual options, not both")
    dataset = load_dataset(images, labels, progress=progress, **dict(data_options or {}))
    return run_audit(dataset, config, progress=progress, on_epoch=on_epoch)
