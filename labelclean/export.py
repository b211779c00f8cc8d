"""An exported model: ``model.safetensors`` + ``config.json``, loadable without pickles.

Every export is read back and its logits compared with the in-memory model's on a few
samples before it is reported as written; the directory appears all at once (written to a
temp directory beside it, then renamed) and carries labelclean's marker, so that
``--overwrite`` can later replace it and nothing else (see :mod:`labelclean._io`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from labelclean._io import (
    MARKER,
    Inputs,
    check_output_dir,
    marker_text,
    output_error,
    read_json,
    replace_dir,
)
from labelclean._version import __version__
from labelclean.config import checked
from labelclean.errors import ConfigError, ModelError

CONFIG_NAME, WEIGHTS_NAME, METRICS_NAME = "config.json", "model.safetensors", "metrics.json"
#: Everything an export writes in its folder (besides the marker).
MODEL_FILES = (CONFIG_NAME, WEIGHTS_NAME, METRICS_NAME)


def check_export_dir(out: Path, overwrite: bool, *, inputs: Inputs | None = None) -> Path:
    """Refuse ``--out`` before any work unless it is new, empty or an earlier export."""
    return check_output_dir(
        out, overwrite=overwrite, kind="model", files=MODEL_FILES, inputs=inputs
    )


def export_model(
    model: nn.Module,
    out: str | Path,
    *,
    config: dict[str, Any],
    check_inputs: torch.Tensor,
    overwrite: bool = False,
    extra_files: Mapping[str, str] | None = None,
) -> Path:
    """Write ``model`` and ``config`` to the directory ``out`` and verify the round trip.

    Args:
        model: The trained network.
        out: Target directory.
        config: Must hold ``architecture``, ``num_classes``, ``class_names``, ``image_size``
            and ``normalization`` ({"mean", "std"}); anything else JSON-able is kept.
        check_inputs: A few prepared input samples whose logits must match after reload.
        overwrite: Replace an earlier export in ``out`` (never a folder labelclean did not
            write).
        extra_files: More text files for the folder, by name (of :data:`MODEL_FILES`).
    """
    from safetensors.torch import save_file

    out = check_export_dir(Path(out), overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    full = {**config, "tool_version": __version__, "format": 1}
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name[:40]}.", dir=out.parent))
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        try:
            save_file(state, str(tmp / WEIGHTS_NAME))
        except Exception as err:  # noqa: BLE001 - safetensors wraps I/O errors in its own type
            raise output_error(OSError(str(err)), out, flag="--out") from None
        files = {
            CONFIG_NAME: json.dumps(full, indent=1),
            **(extra_files or {}),
            MARKER: marker_text("model"),
        }
        for name, text in files.items():
            (tmp / name).write_text(text)
        reloaded, _ = load_model(tmp)
        model.eval()
        device = next(model.parameters()).device
        with torch.no_grad():
            expected = model(check_inputs.to(device)).float().cpu()
            got = reloaded(check_inputs.float().cpu().contiguous()).float()
        if not torch.allclose(expected, got, atol=1e-3, rtol=1e-3):
            raise RuntimeError("exported model does not reproduce the trained model's logits")
        for name in (WEIGHTS_NAME, *files):
            with open(tmp / name, "rb") as fh:
                os.fsync(fh.fileno())
        replace_dir(tmp, out, files=MODEL_FILES)
    except OSError as err:
        raise output_error(err, out, flag="--out") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)
    return out


def _number_list(value: Any, n: int) -> bool:
    return (
        isinstance(value, list)
        and len(value) == n
        and all(isinstance(v, int | float) and math.isfinite(v) for v in value)
    )


def read_model_config(path: str | Path) -> dict[str, Any]:
    """The ``config.json`` of an exported model, checked; ModelError names what is wrong."""
    cfg_path = Path(path) / CONFIG_NAME
    config = read_json(cfg_path, ModelError, expected="a readable JSON file")
    if not isinstance(config, dict):
        raise ModelError(f"{cfg_path}: expected a JSON object")
    problems = []
    names, n = config.get("class_names"), config.get("num_classes")
    if not isinstance(config.get("architecture"), str):
        problems.append("architecture must be a model name")
    if not isinstance(n, int) or n < 1:
        problems.append("num_classes must be a positive integer")
    if not (isinstance(names, list) and all(isinstance(c, str) for c in names)):
        problems.append("class_names must be a list of names")
    elif isinstance(n, int) and len(names) != n:
        problems.append(f"class_names has {len(names)} names for num_classes {n}")
    elif len(set(names)) != len(names):
        problems.append("class_names repeats a name")
    size = config.get("image_size")
    if not isinstance(size, int) or not 4 <= size <= 1024:
        problems.append("image_size must be an integer from 4 to 1024")
    norm = config.get("normalization")
    if not (
        isinstance(norm, dict)
        and _number_list(norm.get("mean"), 3)
        and _number_list(norm.get("std"), 3)
        and all(s > 0 for s in norm["std"])
    ):
        problems.append("normalization must hold 3 means and 3 positive stds")
    if problems:
        raise ModelError(f"{cfg_path}: {'; '.join(problems)} (re-export the model with finetune)")
    return config


@checked
def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Load an exported model (eval mode, CPU) and its config; no pickles are read.

    Raises:
        ModelError: The folder lacks a file, the config is malformed, the weights are
            truncated or do not fit the architecture and classes the config names.

    Example:
        >>> model, config = labelclean.load_model("model/")  # doctest: +SKIP
    """
    from safetensors.torch import load_file

    from labelclean.models import create_model

    path = Path(path)
    cfg_path, weights_path = path / CONFIG_NAME, path / WEIGHTS_NAME
    if not cfg_path.is_file() or not weights_path.is_file():
        raise ModelError(f"{path}: not an exported model (needs {CONFIG_NAME} and {WEIGHTS_NAME})")
    config = read_model_config(path)
    arch, n = config["architecture"], config["num_classes"]
    try:
        state = load_file(str(weights_path))
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
        raise ModelError(
            f"{weights_path}: not a readable safetensors file; it may be truncated ({err})"
        ) from None
    try:
        if "frozen" in config:  # a frozen backbone + head from a --frozen report
            from labelclean.fgcm.frozen_finetune import build_frozen_classifier

            model = build_frozen_classifier(config)
        else:
            model = create_model(arch, int(n))
    except ConfigError as err:
        raise ModelError(f"{cfg_path}: architecture {arch!r} cannot be built ({err})") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = (str(err).split("\n\t")[1:] or [str(err)])[0][:200]
        raise ModelError(
            f"{weights_path} does not fit {CONFIG_NAME}'s {arch} with {n} classes ({first})"
        ) from None
    return model.eval(), config
