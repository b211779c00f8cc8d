"""A given -> other label count table for the shared heatmap macro (page and review app)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

#: Above this many classes the heatmap keeps those with the most off-diagonal counts.
HEATMAP_MAX_CLASSES = 30


def heat_table(
    given: Sequence[str] | pd.Series,
    other: Sequence[str] | pd.Series,
    class_names: Sequence[str],
    *,
    row_title: str = "given",
    col_title: str = "clean",
    max_classes: int = HEATMAP_MAX_CLASSES,
) -> tuple[dict[str, Any], str]:
    """Counts of ``given -> other`` pairs as the heatmap macro's context, and a note.

    Cells get a level 0-5 on a log scale (so one odd pair still shows next to a thousand
    clean ones). With more than ``max_classes`` classes, those with the most off-diagonal
    pairs are kept and the note says so.
    """
    names = list(class_names)
    g = pd.Categorical(np.asarray(given, dtype=object), categories=names)
    o = pd.Categorical(np.asarray(other, dtype=object), categories=names)
    counts = pd.crosstab(g, o, dropna=False).reindex(index=names, columns=names, fill_value=0)
    table = counts.to_numpy(dtype=np.int64)
    note = ""
    if len(names) > max_classes:
        off = table - np.diag(np.diag(table))
        activity = off.sum(0) + off.sum(1)
        keep = np.sort(np.argsort(-activity, kind="stable")[:max_classes])
        table = table[np.ix_(keep, keep)]
        note = f"the {len(keep)} classes with the most changes of {len(names)}"
        names = [names[i] for i in keep]
    top = np.log1p(table.max()) if table.size and table.max() > 0 else 1.0
    levels = np.where(table > 0, 1 + np.floor(4 * np.log1p(table) / top).clip(0, 4), 0)
    heat = {
        "rows": names,
        "cols": names,
        "counts": table.tolist(),
        "levels": levels.astype(int).tolist(),
        "row_title": row_title,
        "col_title": col_title,
    }
    return heat, note
