"""labelclean: find wrong labels in image datasets, fix them, and train a robust model.

Example:
    >>> import labelclean
    >>> result = labelclean.audit("images/", "labels.csv")  # doctest: +SKIP
    >>> result.write("report.parquet")  # doctest: +SKIP
    >>> labelclean.finetune("report.parquet", "model/")  # doctest: +SKIP

The verbs are imported lazily, so ``import labelclean`` (and ``labelclean --help``) does
not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from labelclean._version import __version__
from labelclean.errors import (
    ConfigError,
    ImageError,
    LabelcleanError,
    ManifestError,
    ReportError,
)

_LAZY = {
    "audit": "labelclean.api",
    "finetune": "labelclean.api",
    "predict": "labelclean.api",
    "AuditConfig": "labelclean.config",
    "FinetuneConfig": "labelclean.config",
    "AuditResult": "labelclean.fgcm.audit",
    "read_report": "labelclean.report.parquet",
    "load_model": "labelclean.export",
}

__all__ = [
    "AuditConfig",
    "AuditResult",
    "ConfigError",
    "FinetuneConfig",
    "ImageError",
    "LabelcleanError",
    "ManifestError",
    "ReportError",
    "__version__",
    "audit",
    "finetune",
    "load_model",
    "predict",
    "read_report",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'labelclean' has no attribute {name!r}")
