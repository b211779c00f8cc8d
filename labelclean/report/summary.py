"""What a report says at a glance: counts, the estimated noise, the classes and flips.

Pure functions on a report's frame (shared by the terminal summary and the HTML page), so
every figure can be tested on a hand-made table, and a rich renderer for the terminal.
All of them are vectorised (group-bys, no per-class loop over N), so a 1M-row report
summarises in about a second.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from labelclean.fgcm.clustering import CLUSTER_NAMES
from labelclean.fgcm.guard import GUARD_REASONS
from labelclean.report.parquet import Report, suggested_label

if TYPE_CHECKING:  # rich is imported only when rendering
    from rich.console import Console

ACTIONS = ("keep", "relabel", "unlabel")
CLUSTER_ORDER = CLUSTER_NAMES  # the audit's own order: CS, CH, NS, NHR, NHI
#: Plain names of the paper's clusters (README "How it works"). They say where a sample sits
#: in the joint confidence, not what the audit did with it: the guards move samples between
#: actions, so what each cluster's samples got is counted per report
#: (:func:`cluster_action_counts`), never stated here.
CLUSTER_MEANING = {
    "CS": "clean, easy: the model agrees with the label, learnt early",
    "CH": "clean, hard: the model agrees with the label, learnt late",
    "NS": "noisy, easy: the model is sure of another label (relabel candidates)",
    "NHR": "noisy, hard: the model is unsure, the given label plausible",
    "NHI": "noisy, hard: the model is unsure, the given label unlikely",
}
#: The same, in two or three words, for chips, legends and filters.
CLUSTER_SHORT = {
    "CS": "clean, learnt early",
    "CH": "clean, learnt late",
    "NS": "likely wrong, the model sure of another",
    "NHR": "unclear, given label plausible",
    "NHI": "unclear, given label unlikely",
}
#: What each guard did, in plain words (the codes are the report's ``guard`` column).
GUARD_MEANING = {
    "unsure_relabel": (
        "looked mislabeled, but the model was not sure enough of a new label: "
        "unlabeled instead of relabeled"
    ),
    "budget": (
        "more samples looked wrong than the estimated noise allows: kept with the given label"
    ),
    "class_floor": (
        "kept with the given label so that no class loses most of the samples the network trains on"
    ),
    "partly_disputed": (
        "the model disputed the label in some late epochs only, at low noise: kept with it "
        "(finetune trains on it as unlabeled)"
    ),
    "semi_agrees": (
        "flagged, but the network trained further after the report agrees with the given "
        "label: kept with it (finetune trains on it as unlabeled)"
    ),
}
#: Guards that kept a label the model disputes: worth a person's look.
DISPUTED_GUARDS = ("partly_disputed", "semi_agrees")
ACTION_WORDS = {"keep": "kept", "relabel": "relabeled", "unlabel": "unlabeled"}
PER_CLASS_COLUMNS = (
    "class",
    "size",
    "flagged",
    "noise_estimate",
    "relabeled_out",
    "relabeled_in",
    "unlabeled",
)


@dataclass
class Summary:
    """Headline figures of one report (see :func:`summarize`)."""

    n: int  #: samples N
    n_classes: int  #: classes C
    clusters: dict[str, int]  #: samples per cluster, CS CH NS NHR NHI first
    actions: dict[str, int]  #: samples per action: keep, relabel, unlabel
    estimated_noise: float  #: flagged (relabel + unlabel) / N
    per_class: pd.DataFrame  #: one row per class in class order, :data:`PER_CLASS_COLUMNS`
    most_relabeled: pd.DataFrame  #: per_class rows with relabels out, most first
    top_flips: pd.DataFrame  #: given, clean, count over relabel rows, most first
    #: samples each guard moved in the last clustering (reason -> count, zeros included);
    #: None for a report written before the ``guard`` column existed
    guard: dict[str, int] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    #: per cluster (as in ``clusters``), samples per action (keep, relabel, unlabel)
    cluster_actions: dict[str, dict[str, int]] = field(default_factory=dict)
    #: kept samples whose label a guard kept although the model disputes it
    #: (:data:`DISPUTED_GUARDS`); 0 for a report without the ``guard`` column
    disputed: int = 0


def cluster_counts(frame: pd.DataFrame) -> dict[str, int]:
    """Samples per cluster: the five FGCM clusters (zeros included), then any other name."""
    counts = frame["cluster"].value_counts()
    out = {c: int(counts.get(c, 0)) for c in CLUSTER_ORDER}
    out.update({str(c): int(k) for c, k in counts.items() if c not in out})
    return out


def action_counts(frame: pd.DataFrame) -> dict[str, int]:
    """Samples per action (keep, relabel, unlabel; zeros included)."""
    counts = frame["action"].value_counts()
    return {a: int(counts.get(a, 0)) for a in ACTIONS}


def cluster_action_counts(frame: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Per cluster (the order of :func:`cluster_counts`), samples per action, zeros included.

    The legend of a page says what happened from this, not from a fixed cluster -> action
    rule: the guards keep NHI samples, unlabel NS ones, and so on.
    """
    table = pd.crosstab(frame["cluster"], frame["action"]) if len(frame) else pd.DataFrame()
    out = {}
    for c in cluster_counts(frame):
        row = table.loc[c] if c in table.index else pd.Series(dtype=np.int64)
        out[c] = {a: int(row.get(a, 0)) for a in ACTIONS}
    return out


def outcome_text(counts: dict[str, int]) -> str:
    """``{"keep": 417, "relabel": 0, "unlabel": 27}`` -> ``"417 kept, 27 unlabeled"``."""
    parts = [f"{k} {ACTION_WORDS.get(a, a)}" for a, k in counts.items() if k]
    return ", ".join(parts) or "no samples"


def disputed_count(frame: pd.DataFrame) -> int:
    """Kept samples a guard kept although the model disputes the label (DISPUTED_GUARDS)."""
    if "guard" not in frame:
        return 0
    return int(((frame["action"] == "keep") & frame["guard"].isin(DISPUTED_GUARDS)).sum())


def guard_counts(frame: pd.DataFrame, metadata: dict[str, Any]) -> dict[str, int] | None:
    """Samples each guard moved (``guard`` column), zeros included; None for older reports.

    A report of an earlier version reads back with an all-null ``guard`` column, like one
    where no guard acted; its metadata then lacks ``guard_note``, which tells them apart.
    """
    if "guard" not in frame or "guard_note" not in metadata:
        return None
    counts = frame["guard"].value_counts()
    return {r: int(counts.get(r, 0)) for r in GUARD_REASONS[1:]}


def estimated_noise(frame: pd.DataFrame) -> float:
    """Share of samples the audit flagged (relabel or unlabel): its estimate of the noise.

    A label the audit unlabels may be right but too hard to vouch for, so this is an upper
    estimate of the label noise the model found, not a measurement against the truth.
    """
    return float((frame["action"] != "keep").mean()) if len(frame) else 0.0


def per_class_table(frame: pd.DataFrame, class_names: Sequence[str]) -> pd.DataFrame:
    """One row per class, in ``class_names`` order.

    Columns: ``size`` (samples given this label), ``flagged`` (of those, relabeled or
    unlabeled), ``noise_estimate`` (flagged / size; NaN for an empty class),
    ``relabeled_out`` (given this label, relabeled to another), ``relabeled_in`` (relabeled
    to this label from another), ``unlabeled`` (given this label, label dropped).
    """
    names = list(dict.fromkeys([*class_names, *frame["given_label"].dropna().unique()]))
    given = frame["given_label"]
    relabel = frame["action"] == "relabel"

    def count(values: pd.Series) -> pd.Series:
        return values.value_counts().reindex(names, fill_value=0).astype(np.int64)

    table = pd.DataFrame(
        {
            "class": names,
            "size": count(given).to_numpy(),
            "flagged": count(given[frame["action"] != "keep"]).to_numpy(),
            "relabeled_out": count(given[relabel]).to_numpy(),
            "relabeled_in": count(frame.loc[relabel, "clean_label"]).to_numpy(),
            "unlabeled": count(given[frame["action"] == "unlabel"]).to_numpy(),
        }
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        table["noise_estimate"] = np.where(
            table["size"] > 0, table["flagged"] / table["size"].clip(lower=1), np.nan
        )
    return table[list(PER_CLASS_COLUMNS)]


def top_flips(frame: pd.DataFrame, *, top: int = 10) -> pd.DataFrame:
    """The most frequent given -> clean label changes (columns given, clean, count)."""
    rows = frame.loc[frame["action"] == "relabel", ["given_label", "clean_label"]]
    if rows.empty:
        return pd.DataFrame({"given": [], "clean": [], "count": []}).astype(
            {"given": object, "clean": object, "count": np.int64}
        )
    counts = rows.value_counts(sort=False).reset_index()
    counts.columns = ["given", "clean", "count"]
    # most first; ties in a stable, readable order
    counts = counts.sort_values(["count", "given", "clean"], ascending=[False, True, True])
    return counts.head(top).reset_index(drop=True)


def summarize(report: Report, *, top: int = 10) -> Summary:
    """Compute the headline figures of ``report``.

    Example:
        >>> s = summarize(read_report("report.parquet"))  # doctest: +SKIP
        >>> f"{s.estimated_noise:.1%} flagged"  # doctest: +SKIP
    """
    f = report.frame
    per_class = per_class_table(f, report.class_names)
    most = per_class[per_class["relabeled_out"] > 0].sort_values(
        "relabeled_out", ascending=False, kind="stable"
    )
    return Summary(
        n=len(f),
        n_classes=len(report.class_names),
        clusters=cluster_counts(f),
        actions=action_counts(f),
        estimated_noise=estimated_noise(f),
        per_class=per_class,
        most_relabeled=most.head(top).reset_index(drop=True),
        top_flips=top_flips(f, top=top),
        guard=guard_counts(f, report.metadata),
        metadata=report.metadata,
        cluster_actions=cluster_action_counts(f),
        disputed=disputed_count(f),
    )


def next_commands(report_path: str | os.PathLike[str] | None) -> list[tuple[str, str]]:
    """What to run after reading a report, as ``(what it does, exact command)`` pairs.

    The commands name the report as it was given (``report.parquet`` for a report that has
    no file) and the decisions file ``review`` writes by default beside it, shell-quoted,
    so they can be pasted as they are.
    """
    from labelclean.review.decisions import default_decisions_path

    path = Path(report_path) if report_path is not None else Path("report.parquet")
    rep, dec = shlex.quote(str(path)), shlex.quote(str(default_decisions_path(path)))
    return [
        ("decide in the browser", f"labelclean review {rep}"),
        ("write the final labels", f"labelclean apply {rep} {dec} --out final.csv"),
        (
            "train a model on them",
            f"labelclean finetune {rep} --decisions {dec} --out model/",
        ),
    ]


def confusion(report: Report, *, classes: Sequence[str] | None = None) -> pd.DataFrame:
    """Given label (rows) x clean label (columns) counts over labeled (keep/relabel) samples.

    Args:
        report: The report.
        classes: Restrict rows and columns to these classes (default: all, in class order).
    """
    f = report.frame[report.frame["action"] != "unlabel"]
    names = list(classes) if classes is not None else report.class_names
    table = pd.crosstab(
        pd.Categorical(f["given_label"], categories=names),
        pd.Categorical(f["clean_label"], categories=names),
        dropna=False,
    )
    table.index.name, table.columns.name = "given", "clean"
    return table


def cleaned_manifest(frame: pd.DataFrame, *, drop_unlabeled: bool) -> pd.DataFrame:
    """The report as a manifest for any training pipeline: ``path, label`` (+ what was done).

    ``label`` is the clean label: the given one when kept, the new one when relabeled.
    Unlabeled samples are kept by default, with an empty (null) label and the columns
    ``given_label`` and ``action`` so a user can filter or use them as unlabeled data;
    silently dropping a sample, or writing a guess as its label, would both surprise.
    ``drop_unlabeled`` leaves them out and returns ``path, label`` only. Beside them,
    ``suggested_label`` is the label the audit proposes for every row
    (:func:`~labelclean.report.schema.suggested_label`: its guess where it unlabeled), for a
    pipeline that wants one.
    """
    if drop_unlabeled:
        kept = frame.loc[frame["action"] != "unlabel", ["path", "clean_label"]]
        return kept.rename(columns={"clean_label": "label"}).reset_index(drop=True)
    table = frame[["path", "clean_label", "given_label", "action"]]
    table = table.assign(suggested_label=suggested_label(frame))
    return table.rename(columns={"clean_label": "label"}).reset_index(drop=True)


def _pct(value: float) -> str:
    return "-" if not np.isfinite(value) else f"{value:.1%}"


def render_terminal(summary: Summary, *, console: Console | None = None) -> None:
    """Print the summary as rich tables (stdout unless ``console`` says otherwise).

    Class names are user data: they are escaped, so a name like ``[red]`` prints as is.
    """
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    md = summary.metadata
    n = max(summary.n, 1)
    console.print(
        f"[bold]{summary.n}[/] samples, {summary.n_classes} classes; "
        f"model {escape(str(md.get('model', '?')))}, {escape(str(md.get('epochs', '?')))} "
        f"epochs, mode {escape(str(md.get('mode', '?')))}"
    )
    console.print(
        f"estimated noise [bold]{summary.estimated_noise:.1%}[/] "
        f"(relabel + unlabel over all samples)"
    )
    for warning in md.get("warnings") or []:
        console.print(f"[bold red]warning:[/] {escape(str(warning))}")
    legend = {
        c: f"{CLUSTER_MEANING.get(c, c)}; here {outcome_text(summary.cluster_actions.get(c, {}))}"
        for c in summary.clusters
    }
    console.print(_share_table("clusters", "cluster", summary.clusters, n, legend))
    console.print(_share_table("actions", "action", summary.actions, n))
    if summary.guard is None:
        console.print("guard: not recorded (a report from an earlier labelclean version)")
    elif not any(summary.guard.values()):
        console.print("guard: no sample was moved by a guard")
    else:
        title = "moved by a guard (last clustering)"
        console.print(_share_table(title, "guard", summary.guard, n, GUARD_MEANING))
    if len(summary.most_relabeled):
        pc = Table(title="classes with the most relabels")
        for col in ("class", "size", "noise est.", "relabeled out", "relabeled in", "unlabeled"):
            pc.add_column(col, justify="left" if col == "class" else "right")
        for r in summary.most_relabeled.to_dict("records"):
            pc.add_row(
                escape(str(r["class"])),
                str(r["size"]),
                _pct(r["noise_estimate"]),
                str(r["relabeled_out"]),
                str(r["relabeled_in"]),
                str(r["unlabeled"]),
            )
        console.print(pc)
    else:
        console.print("no sample was relabeled")
    if len(summary.top_flips):
        fl = Table(title="top given -> clean flips")
        fl.add_column("given")
        fl.add_column("clean")
        fl.add_column("count", justify="right")
        for r in summary.top_flips.to_dict("records"):
            fl.add_row(escape(str(r["given"])), escape(str(r["clean"])), str(r["count"]))
        console.print(fl)


def _share_table(
    title: str, column: str, counts: dict[str, int], n: int, meaning: dict[str, str] | None = None
) -> Any:
    """A rich table of ``name, samples, share`` (and ``meaning``) rows; names are escaped."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title)
    table.add_column(column)
    table.add_column("samples", justify="right")
    table.add_column("share", justify="right")
    if meaning is not None:
        table.add_column("meaning")
    for name, k in counts.items():
        cells = [escape(name), str(k), f"{k / n:.1%}"]
        table.add_row(*cells, *([meaning.get(name, "")] if meaning is not None else []))
    return table
