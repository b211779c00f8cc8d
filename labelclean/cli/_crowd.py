"""The CLI's crowd-vote parts: outputs checked before training, the crowd lines, the tables.

Kept apart from the commands' modules, which stay thin and under the size of one screenful
of options each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from labelclean.cli.evaluate import format_value, print_next, table_writer


def check_crowd_outputs(out: Path, labels: Path | None, *, overwrite: bool) -> None:
    """Before training: the annotators table beside --out can be written, and harms nothing."""
    from labelclean.report.annotators import check_annotators_writable

    check_annotators_writable(out, overwrite=overwrite, inputs=[p for p in (labels,) if p])


def crowd_line(manifest: Any) -> str:
    """``30000 votes by 220 annotators (3.0 per image)``."""
    votes = manifest.votes
    return (
        f"{len(votes)} votes by {votes.n_annotators} annotators "
        f"({len(votes) / max(len(manifest), 1):.1f} per image)"
    )


def print_crowd_outcome(result: Any, out: Path) -> None:
    """After a crowd audit: where the annotators table is and what the network changed."""
    from labelclean.report.annotators import annotators_path

    crowd = result.metadata["crowd"]
    typer.echo(
        f"annotators: {annotators_path(out)}  ({crowd['n_annotators']} annotators; the "
        f"network and the votes changed {crowd['consensus_changed']} consensus labels)"
    )


def write_crowd(
    manifest: Any,
    out: Path,
    truth_out: Path | None,
    *,
    overwrite: bool,
    votes_per_image: int,
    workers: int,
    spammers: float,
    seed: int,
) -> None:
    """``corrupt --annotators``: a simulated crowd's votes (and the truth) on clean labels."""
    import pandas as pd

    from labelclean._io import atomic_write_with
    from labelclean.crowd.simulate import simulate_crowd_votes

    if manifest.votes is not None:
        from labelclean.errors import ConfigError

        raise ConfigError(f"{manifest.source} already holds votes; give clean labels (path,label)")
    frame, summary = simulate_crowd_votes(
        manifest.paths,
        manifest.given_labels,
        manifest.class_names,
        votes_per_image=votes_per_image,
        workers=workers,
        spammers=spammers,
        seed=seed,
    )
    truth = pd.DataFrame(
        {"path": manifest.paths, "label": [manifest.class_names[k] for k in manifest.given_labels]}
    )
    if truth_out is not None:
        frame = frame.drop(columns="true_label")
    write_truth = table_writer(truth, truth_out, "--truth-out") if truth_out else None
    atomic_write_with(out, table_writer(frame, out, "--out"), overwrite=overwrite)
    if truth_out is not None and write_truth is not None:
        atomic_write_with(truth_out, write_truth, overwrite=overwrite)
    typer.echo(
        f"wrote {out}: {len(frame)} votes ({votes_per_image} per image) by {workers} workers "
        f"({summary['spammers']} spammers), seed {seed}; {summary['wrong']:.1%} of the votes "
        f"are wrong, the majority vote is right on {summary['majority']:.1%} of the images"
    )
    print_next(manifest, out, truth_out)


_CROWD_FIGURES = (
    ("vote_accuracy", "votes equal to the truth / votes"),
    ("majority_accuracy", "majority vote (ties at random) true / images"),
    ("consensus_accuracy", "the audit's starting label (given_label) true / images"),
    ("final_accuracy", "final label (clean_label) true / images; unlabeled count wrong"),
    ("unlabeled", "images left without a final label"),
    ("annotator_rank_correlation", "Spearman: estimated vs true accuracy of the annotators"),
)


def print_crowd_scores(scores: dict[str, Any]) -> None:
    """The crowd figures of ``labelclean evaluate`` as a table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"crowd: {scores['n_votes']} votes, {scores['n_annotators']} annotators")
    for col, justify in (("figure", "left"), ("value", "right"), ("definition", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for key, definition in _CROWD_FIGURES:
        table.add_row(key.replace("_", " "), format_value(scores[key]), definition)
    Console().print(table)
