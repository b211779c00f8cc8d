"""One validated table of (path, given label) from a folder, a CSV or a Parquet manifest.

Checked once, at the edge: every problem names the file and the row (as a spreadsheet
shows it: the header is line 1) and says how to fix it. Labels are read as text, so class
names such as "NA", "None" or "007" stay as written.
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from labelclean._csv import unescape_frame
from labelclean.errors import ManifestError

if TYPE_CHECKING:
    from labelclean.crowd.model import Votes

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)


@dataclass(frozen=True)
class Manifest:
    """Paths and given labels, in manifest order."""

    root: Path  #: absolute image root
    paths: list[str]  #: normalised relative POSIX paths
    given_labels: np.ndarray  #: int64 [N], indices into class_names
    class_names: list[str]  #: stable order (sorted; numerically when all are integers)
    source: Path  #: the label file, or the image folder for the folder layout
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  #: [N] data rows
    #: crowd input: every vote (then ``given_labels`` is their consensus), else None
    votes: Votes | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def where(self, i: int) -> str:
        """Human location of sample ``i``: ``labels.csv line 7`` or the folder path."""
        if self.source.is_dir():
            return str(self.source / self.paths[i])
        return f"{self.source} line {int(self.rows[i]) + 2}"

    def subset(self, keep: np.ndarray) -> Manifest:
        """The rows where ``keep`` is True (row numbers are kept)."""
        keep = np.asarray(keep, dtype=bool)
        return replace(
            self,
            paths=[p for p, k in zip(self.paths, keep) if k],
            given_labels=self.given_labels[keep],
            rows=self.rows[keep],
            votes=None if self.votes is None else self.votes.subset(keep),
        )

    def fingerprint(self) -> str:
        """sha256 over root, paths, labels and class names (for caches and resume)."""
        h = hashlib.sha256()
        h.update(str(self.root).encode())
        h.update("\0".join(self.class_names).encode())
        h.update("\0".join(self.paths).encode())
        h.update(np.ascontiguousarray(self.given_labels, dtype=np.int64).tobytes())
        if self.votes is not None:
            h.update("\0".join(self.votes.annotator_names).encode())
            for codes in (self.votes.sample, self.votes.annotator, self.votes.label):
                h.update(np.ascontiguousarray(codes, dtype=np.int64).tobytes())
        return h.hexdigest()


def class_order(labels: list[str]) -> list[str]:
    """Sorted class names; numerically when every label is a canonical integer ("3", "10")."""
    unique = set(labels)
    if all(s.lstrip("-").isdigit() and str(int(s)) == s for s in unique):
        return sorted(unique, key=int)
    return sorted(unique)


def normalise_path(raw: str) -> str:
    """One spelling per file: ``./a//b.jpg`` and ``x/../a/b.jpg`` -> ``a/b.jpg``.

    Windows separators are accepted. ``..`` is resolved lexically (as the shell and the
    user read the path), so a path that leaves the folder still starts with ``..``.
    """
    return posixpath.normpath(raw.replace("\\", "/"))


def path_key(raw: str) -> str:
    """The key two spellings of one path share: normalised, Unicode NFC (for matching)."""
    return unicodedata.normalize("NFC", normalise_path(raw))


def leaves_root(rel: str) -> bool:
    """True when a normalised relative path points outside its folder (or is absolute)."""
    return posixpath.isabs(rel) or rel == ".." or rel.startswith("../")


def _on_disk(root: Path, rel: str) -> str:
    """The spelling the file has on disk when it differs only in Unicode normalisation.

    macOS writes names decomposed (NFD) and most other tools composed (NFC), so a
    manifest made on one machine may spell a name differently than the disk does.
    """
    if rel.isascii() or (root / rel).exists():
        return rel
    for form in ("NFC", "NFD"):
        other = unicodedata.normalize(form, rel)
        if other != rel and (root / other).exists():
            return other
    return rel


def _check_inside(root: Path, rel: str, where: str, allow_outside_root: bool) -> None:
    if allow_outside_root:
        return
    target = (root / rel).resolve()
    if os.path.isabs(rel) or not target.is_relative_to(root.resolve()):
        raise ManifestError(
            f"{where}: path {rel!r} points outside the image folder {root}; "
            "pass --allow-outside-root if that is intended"
        )


def read_table(labels: Path) -> pd.DataFrame:
    """A CSV, TSV or Parquet table as text columns, empty cells as ``""`` (ManifestError else)."""
    suffix = labels.suffix.lower()
    try:
        if suffix == ".parquet":
            frame = pd.read_parquet(labels)
            return frame.astype(str).where(frame.notna(), "")
        if suffix in (".csv", ".tsv", ".txt"):
            sep = "\t" if suffix == ".tsv" else ","
            try:
                frame = pd.read_csv(
                    labels, dtype=str, keep_default_na=False, sep=sep, encoding="utf-8-sig"
                )
                return unescape_frame(frame)  # cells labelclean escaped for spreadsheets
            except UnicodeDecodeError as err:
                raise ManifestError(
                    f"{labels}: not UTF-8 text (byte {err.start}); save it as UTF-8 and retry"
                ) from err
    except ManifestError:
        raise
    except Exception as err:  # noqa: BLE001 - parser errors come in many types
        raise ManifestError(f"{labels}: cannot be read as a table ({err})") from err
    raise ManifestError(f"{labels}: expected a .csv, .tsv or .parquet manifest")


def _refuse_nested(labels: Path, columns: tuple[str, ...]) -> None:
    """A Parquet column of lists (or structs) is not one path or one label per row."""
    if labels.suffix.lower() != ".parquet":
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.read_schema(labels)
    for name in columns:
        if name in schema.names and pa.types.is_nested(schema.field(name).type):
            raise ManifestError(
                f"{labels}: column {name!r} holds {schema.field(name).type} values, not one "
                "value per row; write one row per image with a single path and label"
            )


def _from_table(
    root: Path,
    labels: Path,
    *,
    path_column: str,
    label_column: str | Sequence[str],
    annotator_column: str | None,
    allow_outside_root: bool,
) -> Manifest:
    frame = read_table(labels)
    label_columns = [label_column] if isinstance(label_column, str) else list(label_column)
    from labelclean.data.votes import vote_layout  # votes.py reads this module's helpers

    layout = vote_layout(
        list(frame.columns), label_columns=label_columns, annotator_column=annotator_column
    )
    if layout is not None:
        return _from_votes(
            root,
            labels,
            frame,
            layout=layout,
            path_column=path_column,
            label_columns=label_columns,
            annotator_column=annotator_column,
            allow_outside_root=allow_outside_root,
        )
    label_column = label_columns[0]
    missing = [c for c in (path_column, label_column) if c not in frame.columns]
    if missing:
        raise ManifestError(
            f"{labels}: missing column(s) {', '.join(missing)}; found {', '.join(frame.columns)}"
            " (choose others with --path-column/--label-column)"
        )
    _refuse_nested(labels, (path_column, label_column))
    paths_raw = frame[path_column].astype(str).tolist()
    labels_raw = frame[label_column].astype(str).tolist()
    paths: list[str] = []
    label_text: list[str] = []
    rows: list[int] = []
    seen: dict[str, int] = {}
    for row, (raw_path, label) in enumerate(zip(paths_raw, labels_raw)):
        line = f"{labels} line {row + 2}"
        if not raw_path.strip():
            raise ManifestError(f"{line}: empty path")
        if not label.strip():
            raise ManifestError(f"{line}: empty label for {raw_path!r}")
        rel = _on_disk(root, normalise_path(raw_path.strip()))
        _check_inside(root, rel, line, allow_outside_root)
        if rel in seen:
            first = seen[rel]
            if label_text[first] != label:
                raise ManifestError(
                    f"{labels}: {rel!r} appears on line {rows[first] + 2} as "
                    f"{label_text[first]!r} and on line {row + 2} as {label!r}; keep one"
                )
            logger.warning("%s: duplicate of line %d dropped (%s)", line, rows[first] + 2, rel)
            continue
        seen[rel] = len(paths)
        paths.append(rel)
        label_text.append(label)
        rows.append(row)
    return _finish(root, labels, paths, label_text, rows)


def _from_votes(
    root: Path,
    labels: Path,
    frame: pd.DataFrame,
    *,
    layout: str,
    path_column: str,
    label_columns: list[str],
    annotator_column: str | None,
    allow_outside_root: bool,
) -> Manifest:
    """A vote manifest (labelclean.data.votes): the given label is the crowd's consensus."""
    from labelclean.crowd.model import fit_crowd
    from labelclean.data.votes import read_votes

    def place(raw: str, where: str) -> str:
        rel = normalise_path(raw)
        _check_inside(root, rel, where, allow_outside_root)
        return rel

    table = read_votes(
        frame,
        labels,
        layout=layout,
        path_column=path_column,
        label_columns=label_columns,
        annotator_column=annotator_column,
        place=place,
        class_order=class_order,
    )
    consensus = fit_crowd(table.votes).posterior.argmax(1)
    text = [table.class_names[k] for k in consensus]
    names, votes = table.class_names, table.votes  # a class anyone voted, even if no consensus
    return _finish(root, labels, table.paths, text, table.rows, class_names=names, votes=votes)


def _from_folder(root: Path, *, allow_outside_root: bool) -> Manifest:
    classes = sorted(
        d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith((".", "_"))
    )
    if not classes:
        raise ManifestError(
            f"{root}: no class folders; expected one sub-folder per class, or give a labels file"
        )
    paths, label_text = [], []
    for name in classes:
        files = sorted(
            p
            for p in (root / name).rglob("*")
            if p.is_file()
            and p.suffix.lower() in IMAGE_SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
        if not files:
            raise ManifestError(f"{root / name}: class folder has no images")
        for p in files:
            rel = p.relative_to(root).as_posix()
            _check_inside(root, rel, str(p), allow_outside_root)  # a symlink may leave root
            paths.append(rel)
            label_text.append(name)
    return _finish(root, root, paths, label_text, list(range(len(paths))))


def _finish(
    root: Path,
    source: Path,
    paths: list[str],
    label_text: list[str],
    rows: list[int],
    *,
    class_names: list[str] | None = None,
    votes: Votes | None = None,
) -> Manifest:
    if not paths:
        raise ManifestError(f"{source}: no rows")
    names = class_order(label_text) if class_names is None else class_names
    if len(names) < 2:
        raise ManifestError(
            f"{source}: only one class ({names[0]!r}); finding wrong labels needs at least two"
        )
    code = {n: i for i, n in enumerate(names)}
    given = np.array([code[t] for t in label_text], dtype=np.int64)
    counts = np.bincount(given, minlength=len(names))
    for name, count in zip(names, counts):
        if count == 1:
            logger.warning("%s: class %r has a single sample", source, name)
    return Manifest(
        root.resolve(), paths, given, names, source, np.asarray(rows, np.int64), votes=votes
    )


def read_manifest(
    images: str | Path,
    labels: str | Path | None = None,
    *,
    path_column: str = "path",
    label_column: str | Sequence[str] = "label",
    annotator_column: str | None = None,
    allow_outside_root: bool = False,
) -> Manifest:
    """Read a dataset description.

    A manifest with an annotator column (one row per vote), or several label columns (one
    per annotator), is read as crowd votes (:mod:`labelclean.data.votes`): ``votes`` holds
    them and ``given_labels`` is their consensus (:func:`labelclean.crowd.model.fit_crowd`).

    Args:
        images: The image folder; with ``labels`` None, one sub-folder per class.
        labels: A CSV/TSV/Parquet manifest; its paths are relative to ``images``.
        path_column: Column holding image paths.
        label_column: Column holding labels (read as text); several: one vote column each.
        annotator_column: Column naming who voted (one row per vote); None: ``annotator``
            when the manifest has it.
        allow_outside_root: Accept paths (or symlinks) that leave ``images``.

    Example:
        >>> m = read_manifest("images/", "labels.csv")  # doctest: +SKIP
        >>> m.class_names, len(m)  # doctest: +SKIP
    """
    root = Path(images)
    if not root.is_dir():
        raise ManifestError(f"{root}: no such image folder")
    if labels is None:
        return _from_folder(root, allow_outside_root=allow_outside_root)
    labels = Path(labels)
    if not labels.is_file():
        raise ManifestError(f"{labels}: no such labels file")
    return _from_table(
        root,
        labels,
        path_column=path_column,
        label_column=label_column,
        annotator_column=annotator_column,
        allow_outside_root=allow_outside_root,
    )
