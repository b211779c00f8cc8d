"""``labelclean demo``: the built-in example, audited and scored against the truth."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from labelclean.cli._app import app
from labelclean.cli._console import RichProgress
from labelclean.cli._screen import EpochPrinter


@app.command()
def demo(
    folder: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for the images, labels and report.")
    ] = Path("labelclean-demo"),
    noise: Annotated[float, typer.Option(help="Fraction of labels to flip.")] = 0.3,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    epochs: Annotated[int | None, typer.Option(min=1, help="Override the demo's epochs.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """The built-in example: digits with 30% wrong labels, audited and scored against truth.

    --out must be a new or empty folder, or one an earlier demo wrote (its files are replaced).
    """
    from labelclean.demo import DEMO_CONFIG, check_noise_rate, run_demo

    check_noise_rate(noise)
    n_epochs = epochs or DEMO_CONFIG["epochs"]
    overrides = {"epochs": epochs} if epochs else {}
    if epochs and epochs <= DEMO_CONFIG["warmup"]:
        overrides["warmup"] = max(0, epochs // 3)
    with RichProgress(quiet=quiet) as progress:
        progress.log(f"writing 1797 digit images with {noise:.0%} wrong labels to {folder}/")
        printer = EpochPrinter(progress, n_epochs, None)
        result = run_demo(
            folder, noise_rate=noise, seed=seed, progress=progress, on_epoch=printer, **overrides
        )
    m = result.metrics
    typer.echo(f"report: {result.report}")
    typer.echo(
        f"wrong labels found: precision {m['detection_precision']:.3f}, "
        f"recall {m['detection_recall']:.3f} (F1 {m['detection_f1']:.3f})"
    )
    typer.echo(
        f"labeled set precision {m['label_precision']:.3f} vs given {m['given_precision']:.3f}; "
        f"relabel accuracy {m['relabel_accuracy']:.3f}; cleaned accuracy "
        f"{m['cleaned_accuracy']:.3f}"
    )
    typer.echo(f"next: labelclean report {result.report} --html {folder}/report.html")
