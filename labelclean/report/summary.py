"""What a report says at a glance: counts, the estimated noise, the classes and flips.

Pure functions on a :class:`~labelclean.report.parquet.Report` (used by the terminal
summary and the HTML page alike).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from labelclean.report.parquet import Report

CLUSTER_ORDER = ("CS", "CH", "NS", "NHR", "NHI")
CLUSTER_MEANING = {
    "CS": "clean, simple: kept",
    "CH": "clean, hard: kept",
    "NS": "noisy, simple: relabeled",
    "NHR": "noisy, hard, relevant label: unlabeled",
    "NHI": "noisy, hard, irrelevant label: unlabeled",
}


@dataclass
class Summary:
    """Headline figures of one report."""

    n: int
    clusters: dict[str, int]
    actions: dict[str, int]
    estimated_noise: float  #: (relabel + unlabel) / N
    per_class: pd.DataFrame  #: class, size, flagged, noise_estimate, relabeled_out, relabeled_in
    top_flips: pd.DataFrame  #: given, clean, count
    metadata: dict[str, Any] = field(default_factory=dict)


def summarize(report: Report, *, top: int = 10) -> Summary:
    """Compute the summary of ``report``."""
    f = report.frame
    n = len(f)
    clusters = {c: int((f["cluster"] == c).sum()) for c in CLUSTER_ORDER}
    actions = {a: int((f["action"] == a).sum()) for a in ("keep", "relabel", "unlabel")}
    flagged = f["action"] != "keep"
    relabel = f["action"] == "relabel"
    rows = []
    for name in report.class_names:
        mine = f["given_label"] == name
        size = int(mine.sum())
        rows.append(
            {
                "class": name,
                "size": size,
                "flagged": int((mine & flagged).sum()),
                "noise_estimate": float((mine & flagged).sum() / size) if size else np.nan,
                "relabeled_out": int((mine & relabel).sum()),
                "relabeled_in": int((relabel & (f["clean_label"] == name)).sum()),
            }
        )
    per_class = pd.DataFrame(rows).sort_values("relabeled_out", ascending=False, kind="stable")
    flips = (
        f.loc[relabel, ["given_label", "clean_label"]]
        .value_counts()
        .head(top)
        .reset_index()
        .set_axis(["given", "clean", "count"], axis=1)
    )
    return Summary(
        n=n,
        clusters=clusters,
        actions=actions,
        estimated_noise=float(flagged.mean()) if n else 0.0,
        per_class=per_class.reset_index(drop=True),
        top_flips=flips,
        metadata=report.metadata,
    )


def confusion(report: Report) -> pd.DataFrame:
    """Given label (rows) x clean label (columns) counts over labeled samples."""
    f = report.frame[report.frame["action"] != "unlabel"]
    names = report.class_names
    table = pd.crosstab(
        pd.Categorical(f["given_label"], categories=names),
        pd.Categorical(f["clean_label"], categories=names),
        dropna=False,
    )
    table.index.name, table.columns.name = "given", "clean"
    return table


def render_terminal(summary: Summary) -> None:
    """Print the summary as rich tables on stdout."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    md = summary.metadata
    console.print(
        f"[bold]{summary.n}[/] samples, {len(md.get('class_names', []))} classes; "
        f"model {md.get('model', '?')}, {md.get('epochs', '?')} epochs, mode {md.get('mode')}; "
        f"estimated noise [bold]{summary.estimated_noise:.1%}[/]"
    )
    t = Table(title="clusters")
    for col in ("cluster", "samples", "share", "meaning"):
        t.add_column(col, justify="left" if col in ("cluster", "meaning") else "right")
    for c, k in summary.clusters.items():
        t.add_row(c, str(k), f"{k / max(summary.n, 1):.1%}", CLUSTER_MEANING[c])
    console.print(t)
    a = Table(title="actions")
    a.add_column("action")
    a.add_column("samples", justify="right")
    for name, k in summary.actions.items():
        a.add_row(name, str(k))
    console.print(a)
    pc = Table(title="classes with the most relabels")
    for col in ("class", "size", "flagged", "noise est.", "relabeled out", "relabeled in"):
        pc.add_column(col, justify="right")
    for row in summary.per_class.head(10).itertuples():
        pc.add_row(
            str(row[1]),
            str(row.size),
            str(row.flagged),
            f"{row.noise_estimate:.1%}",
            str(row.relabeled_out),
            str(row.relabeled_in),
        )
    console.print(pc)
    if len(summary.top_flips):
        fl = Table(title="top given -> clean flips")
        for col in ("given", "clean", "count"):
            fl.add_column(col, justify="right")
        for row in summary.top_flips.itertuples(index=False):
            fl.add_row(str(row.given), str(row.clean), str(row.count))
        console.print(fl)
