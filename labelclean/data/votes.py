"""Crowd votes from a manifest: one row per vote (long) or one column per annotator (wide).

- long: ``path,annotator,label``, one row per vote; a manifest with an ``annotator`` column
  (or the column ``--annotator-column`` names) is read this way. An image may have any
  number of votes, one is fine.
- wide: one row per image and several vote columns (``--label-column a1 --label-column
  a2``); the column name is the annotator, an empty cell a missing vote.

Checked once, like a single-label manifest: every problem names the file and the line (the
header is line 1). The same annotator voting twice for one image is dropped with a warning
when the labels agree and refused, naming both lines, when they differ. Labels and
annotator ids are read as text. Paths are normalised by the manifest reader's own function
(passed in as ``place``), so ``./a.png`` and ``a.png`` are one image in both layouts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from labelclean.crowd.model import Votes
from labelclean.errors import ManifestError

logger = logging.getLogger(__name__)

DEFAULT_ANNOTATOR_COLUMN = "annotator"


@dataclass(frozen=True)
class VoteTable:
    """What a vote manifest says, image by image."""

    paths: list[str]  #: normalised relative paths, one per image, in order of first appearance
    rows: list[int]  #: data row (0-based) of each image's first vote
    votes: Votes  #: every vote, sample indices into ``paths``, labels into ``class_names``
    class_names: list[str]  #: every class anyone voted, in the manifest's class order


def vote_layout(
    columns: Sequence[str], *, label_columns: Sequence[str], annotator_column: str | None
) -> str | None:
    """``"wide"``, ``"long"`` or None (a single-label manifest) for a table's columns.

    Raises:
        ManifestError: ``annotator_column`` was named explicitly but is missing, or both
            layouts were asked for at once.
    """
    if len(label_columns) > 1:
        if annotator_column is not None:
            raise ManifestError(
                "--annotator-column (one row per vote) and several --label-column (one column "
                "per annotator) describe two different layouts; give one of them"
            )
        return "wide"
    if annotator_column is not None and annotator_column not in columns:
        raise ManifestError(
            f"no annotator column {annotator_column!r}; found {', '.join(map(str, columns))}"
        )
    return "long" if (annotator_column or DEFAULT_ANNOTATOR_COLUMN) in columns else None


def _missing_columns(frame: pd.DataFrame, source: Path, wanted: Sequence[str]) -> None:
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise ManifestError(
            f"{source}: missing column(s) {', '.join(missing)}; found "
            f"{', '.join(map(str, frame.columns))} (choose others with --path-column, "
            "--label-column or --annotator-column)"
        )


def _first_empty(values: pd.Series) -> int | None:
    empty = np.flatnonzero((values.str.strip() == "").to_numpy())
    return int(empty[0]) if len(empty) else None


def _long_rows(
    frame: pd.DataFrame, source: Path, *, path_column: str, label_column: str, annotator_column: str
) -> pd.DataFrame:
    """One row per vote: ``raw, annotator, label, row`` from a long manifest."""
    _missing_columns(frame, source, [path_column, annotator_column, label_column])
    votes = pd.DataFrame(
        {
            "raw": frame[path_column].astype(str),
            "annotator": frame[annotator_column].astype(str),
            "label": frame[label_column].astype(str),
            "row": np.arange(len(frame)),
        }
    )
    for column, what in (("raw", "path"), ("annotator", "annotator"), ("label", "label")):
        row = _first_empty(votes[column])
        if row is not None:
            where = f"{source} line {row + 2}"
            if column == "raw":
                raise ManifestError(f"{where}: empty path")
            raise ManifestError(f"{where}: empty {what} for {votes['raw'].iloc[row]!r}")
    votes["annotator"] = votes["annotator"].str.strip()
    return votes


def _wide_rows(
    frame: pd.DataFrame, source: Path, *, path_column: str, label_columns: Sequence[str]
) -> pd.DataFrame:
    """One row per vote from a wide manifest: the column is the annotator, empty = no vote."""
    if len(set(label_columns)) != len(label_columns):
        twice = sorted({c for c in label_columns if list(label_columns).count(c) > 1})
        raise ManifestError(f"--label-column {', '.join(twice)} given more than once")
    _missing_columns(frame, source, [path_column, *label_columns])
    raw = frame[path_column].astype(str)
    row = _first_empty(raw)
    if row is not None:
        raise ManifestError(f"{source} line {row + 2}: empty path")
    cells = frame[list(label_columns)].astype(str)
    present = (cells.apply(lambda col: col.str.strip()) != "").to_numpy()
    none = np.flatnonzero(~present.any(1))
    if len(none):
        raise ManifestError(
            f"{source} line {none[0] + 2}: no vote for {raw.iloc[none[0]]!r} in "
            f"{', '.join(label_columns)}; every image needs at least one"
        )
    rows, cols = np.nonzero(present)  # row-major: an image's votes stay together
    return pd.DataFrame(
        {
            "raw": raw.to_numpy()[rows],
            "annotator": np.asarray(label_columns, dtype=object)[cols],
            "label": cells.to_numpy()[rows, cols],
            "row": rows,
        }
    )


def _drop_repeats(votes: pd.DataFrame, source: Path) -> pd.DataFrame:
    """The same annotator twice on one image: refuse differing labels, drop exact repeats."""
    repeated = votes.duplicated(["path", "annotator"], keep=False)
    if not repeated.any():
        return votes
    groups = votes[repeated].groupby(["path", "annotator"], sort=False)
    for (path, annotator), group in groups:
        labels = group["label"].to_numpy()
        differs = np.flatnonzero(labels != labels[0])
        if len(differs):
            first, other = group.iloc[0], group.iloc[int(differs[0])]
            raise ManifestError(
                f"{source}: annotator {annotator!r} votes {first['label']!r} for {path!r} on "
                f"line {first['row'] + 2} and {other['label']!r} on line {other['row'] + 2}; "
                "keep one"
            )
    later = votes.duplicated(["path", "annotator"], keep="first")
    logger.warning(
        "%s: %d repeated vote(s) (same annotator, image and label) dropped, first on line %d",
        source,
        int(later.sum()),
        int(votes.loc[later, "row"].iloc[0]) + 2,
    )
    return votes[~later]


def read_votes(
    frame: pd.DataFrame,
    source: Path,
    *,
    layout: str,
    path_column: str,
    label_columns: Sequence[str],
    annotator_column: str | None,
    place: Callable[[str, str], str],
    class_order: Callable[[list[str]], list[str]],
) -> VoteTable:
    """Validate a vote manifest and turn it into a :class:`VoteTable`.

    Args:
        frame: The manifest as text columns (see ``manifest.read_table``).
        source: Its file, for messages.
        layout: ``"long"`` or ``"wide"`` (:func:`vote_layout`).
        path_column: Column with image paths.
        label_columns: The label column (long) or the vote columns (wide).
        annotator_column: The annotator column (long; None = ``annotator``).
        place: ``place(raw_path, where)`` -> normalised relative path, raising ManifestError
            naming ``where`` for a path outside the image folder (the manifest's rules).
        class_order: Class names in their stable order (the manifest's rule).

    Raises:
        ManifestError: Naming the file and line.
    """
    if layout == "wide":
        votes = _wide_rows(frame, source, path_column=path_column, label_columns=label_columns)
    else:
        votes = _long_rows(
            frame,
            source,
            path_column=path_column,
            label_column=label_columns[0],
            annotator_column=annotator_column or DEFAULT_ANNOTATOR_COLUMN,
        )
    if votes.empty:
        raise ManifestError(f"{source}: no rows")
    first_rows = votes.drop_duplicates("raw")
    placed = {
        raw: place(raw.strip(), f"{source} line {row + 2}")
        for raw, row in zip(first_rows["raw"], first_rows["row"])
    }
    votes["path"] = votes["raw"].map(placed)
    votes = _drop_repeats(votes, source)
    sample, paths = pd.factorize(votes["path"], sort=False)  # order of first appearance
    label_text = votes["label"].tolist()
    class_names = class_order(label_text)
    label = pd.Categorical(label_text, categories=class_names).codes
    annotator_names = sorted(set(votes["annotator"]))
    annotator = pd.Categorical(votes["annotator"], categories=annotator_names).codes
    first_row = votes.groupby(sample, sort=True)["row"].min().to_numpy()
    return VoteTable(
        paths=list(paths),
        rows=[int(r) for r in first_row],
        votes=Votes(
            np.asarray(sample, dtype=np.int64),
            np.asarray(annotator, dtype=np.int64),
            np.asarray(label, dtype=np.int64),
            n_samples=len(paths),
            n_classes=len(class_names),
            annotator_names=tuple(annotator_names),
        ),
        class_names=class_names,
    )
