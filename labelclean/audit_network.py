"""The audit's trained network, saved beside its report so that ``finetune`` starts from it.

``report.parquet`` gets ``report.network.safetensors``: the weights of the network the audit
trained (not for ``--frozen``, whose heads only see embeddings). The report's metadata names
the file with its SHA-256, so ``finetune`` uses the network only when the file is the one
the audit wrote. Why (README "How it works"): on CIFAR-10N "worst" finetune from the audit's
network reached .735 test accuracy in 30 epochs and .725 in 15, against .716 from a fresh
network in 30 (DESIGN.md re-initialises); cross-entropy on the noisy labels from the same
start stayed at .681. The audit's network already knows the images; training it on the
cleaned labels beats learning them again.

The file carries labelclean's mark in its header, so ``--overwrite`` replaces an earlier
audit's network and never a file of the user's that happens to have the name.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from labelclean._io import Inputs, check_writable, sidecar_path
from labelclean._version import __version__
from labelclean.errors import ConfigError, OutputError

SUFFIX = ".network.safetensors"
#: The safetensors header key that marks a file as an audit's network.
MARK = "labelclean"
MARK_VALUE = "audit network"


def network_path(report: str | os.PathLike[str]) -> Path:
    """Where the network of the report at ``report`` lives: ``report.network.safetensors``."""
    return sidecar_path(report, SUFFIX)


def _is_ours(path: Path) -> bool:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return (fh.metadata() or {}).get(MARK) == MARK_VALUE
    except Exception:  # noqa: BLE001 - safetensors raises its own types for foreign files
        return False


def check_network_output(
    report: str | os.PathLike[str], *, overwrite: bool, inputs: Inputs | None = None
) -> Path:
    """Refuse the network file beside ``report`` before any work, as ``--out`` is refused.

    An existing file is replaced only with ``overwrite`` and only if an audit wrote it.
    """
    path = network_path(report)
    check_writable(path, overwrite=overwrite, flag="--out", inputs=inputs)
    if path.is_file() and not _is_ours(path):
        raise OutputError(
            f"--out: {path} (where the audit saves its network) exists and labelclean did not "
            "write it; move it away or choose another --out"
        )
    return path


def network_file(
    state: Mapping[str, torch.Tensor], *, architecture: str
) -> tuple[bytes, dict[str, Any]]:
    """``state`` as safetensors bytes (with labelclean's mark) and the report's entry for it.

    The caller writes the bytes to :func:`network_path` together with the report (see
    :meth:`labelclean.fgcm.result.AuditResult.write`); the entry's ``file`` is filled there.
    """
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    header = {MARK: MARK_VALUE, "architecture": architecture, "tool_version": __version__}
    blob = save(tensors, metadata=header)
    return blob, {"sha256": hashlib.sha256(blob).hexdigest(), "architecture": architecture}


def finetune_start(
    report: Path, metadata: Mapping[str, Any], *, init: str | None, architecture: str | None
) -> tuple[Path | None, str]:
    """The audit network finetune starts from (or None) and a one-line note saying so.

    Args:
        report: The report's path (the network lives beside it).
        metadata: The report's metadata (its ``network`` entry, when the audit saved one).
        init: ``--init``: ``audit``, ``scratch``, or None (the audit's network when there is
            one that fits).
        architecture: ``--model`` when given: another architecture cannot start from it.

    Raises:
        ConfigError: ``--init audit`` without a usable network, or a network file that is
            not the one the audit wrote.
    """
    if init == "scratch":
        return None, "starting from a fresh network (--init scratch)"
    entry = metadata.get("network")
    explicit = init == "audit"
    if not entry:
        if explicit:
            raise ConfigError(
                f"--init audit: {report} names no network of its audit (a --frozen audit, or "
                "an older labelclean's); use --init scratch"
            )
        return None, "starting from a fresh network (the report has no audit network)"
    if architecture is not None and architecture != entry.get("architecture"):
        if explicit:
            raise ConfigError(
                f"--init audit: the audit trained {entry.get('architecture')}, not --model "
                f"{architecture}; drop --model or use --init scratch"
            )
        return None, f"starting from a fresh {architecture} (the audit trained another network)"
    path = report.parent / str(entry["file"])
    if not path.is_file():
        if explicit:
            raise ConfigError(
                f"--init audit: the audit's network {path} is missing; keep it beside the "
                "report, or use --init scratch"
            )
        return None, f"starting from a fresh network ({path} is missing)"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != entry.get("sha256"):
        raise ConfigError(
            f"{path}: not the network the audit of {report} saved (its SHA-256 differs); "
            "restore it, or use --init scratch"
        )
    return path, f"starting from the audit's network ({path.name})"
