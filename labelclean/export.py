"""An exported model: ``model.safetensors`` + ``config.json``, loadable without pickles.

Every export is read back and its logits compared with the in-memory model's on a few
samples before it is reported as written; the directory appears all at once (written to a
temp directory beside it, then renamed).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from labelclean._version import __version__
from labelclean.errors import ConfigError, OutputExistsError

CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"


def _check_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise OutputExistsError(f"{out} exists and is not empty; pass --overwrite or another --out")


def export_model(
    model: nn.Module,
    out: str | Path,
    *,
    config: dict[str, Any],
    check_inputs: torch.Tensor,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` and ``config`` to the directory ``out`` and verify the round trip.

    Args:
        model: The trained network.
        out: Target directory.
        config: Must hold ``architecture``, ``num_classes``, ``class_names``, ``image_size``
            and ``normalization`` ({"mean", "std"}); anything else JSON-able is kept.
        check_inputs: A few prepared input samples whose logits must match after reload.
        overwrite: Replace a non-empty ``out``.
    """
    from safetensors.torch import save_file

    out = Path(out)
    _check_out_dir(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    full = {**config, "tool_version": __version__, "format": 1}
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_NAME))
        (tmp / CONFIG_NAME).write_text(json.dumps(full, indent=1))
        reloaded, _ = load_model(tmp)
        model.eval()
        device = next(model.parameters()).device
        with torch.no_grad():
            expected = model(check_inputs.to(device)).float().cpu()
            got = reloaded(check_inputs.float().cpu().contiguous()).float()
        if not torch.allclose(expected, got, atol=1e-3, rtol=1e-3):
            raise RuntimeError("exported model does not reproduce the trained model's logits")
        for name in (WEIGHTS_NAME, CONFIG_NAME):
            with open(tmp / name, "rb") as fh:
                os.fsync(fh.fileno())
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)
    return out


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Load an exported model (eval mode, CPU) and its config; no pickles are read.

    Example:
        >>> model, config = labelclean.load_model("model/")  # doctest: +SKIP
    """
    from safetensors.torch import load_file

    from labelclean.models import create_model

    path = Path(path)
    cfg_path, weights_path = path / CONFIG_NAME, path / WEIGHTS_NAME
    if not cfg_path.is_file() or not weights_path.is_file():
        raise ConfigError(f"{path}: not an exported model (needs {CONFIG_NAME} and {WEIGHTS_NAME})")
    config = json.loads(cfg_path.read_text())
    if "frozen" in config:  # a frozen backbone + head from a --frozen report
        from labelclean.fgcm.frozen_finetune import build_frozen_classifier

        model = build_frozen_classifier(config)
    else:
        model = create_model(config["architecture"], int(config["num_classes"]))
    model.load_state_dict(load_file(str(weights_path)))
    return model.eval(), config
