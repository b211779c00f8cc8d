"""One validated table of (path, given label) from a folder, a CSV or a Parquet manifest.

Checked once, at the edge: every problem names the file and the row (as a spreadsheet
shows it: the header is line 1) and says how to fix it. Labels are read as text, so class
names such as "NA", "None" or "007" stay as written; but two names that differ only in case
or surrounding spaces are one class misspelled, refused unless ``normalize_labels`` merges
them (:func:`merge_spellings`). An absolute path into the image folder is stored relative to
it (:func:`inside_spelling`), so every spelling of a file is one sample.
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
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


def inside_spelling(root: Path, rel: str) -> str:
    """An absolute path into the image folder, spelled relative to it; any other path as given.

    ``/data/images/a/b.png`` with the image folder ``/data/images`` (or ``images`` run from
    ``/data``, or a link that resolves to it) is ``a/b.png``: one spelling per file, so
    duplicates, reports, caches and resume fingerprints are those of the relative spelling.
    The folder is compared lexically, then resolved; the file's own links are not followed
    (a link inside the folder that leaves it is refused later, as for a relative path).
    """
    if not posixpath.isabs(rel):
        return rel
    for base in (os.path.abspath(root), str(root.resolve())):
        prefix = normalise_path(base).rstrip("/") + "/"
        if rel.startswith(prefix) and len(rel) > len(prefix):
            return rel[len(prefix) :]
    return rel


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
    try:
        target = (root / rel).resolve()
    except RuntimeError:  # a symlink loop (Python < 3.13): it opens nowhere; decoding names it
        return
    if os.path.isabs(rel) or not target.is_relative_to(root.resolve()):
        raise ManifestError(
            f"{where}: path {rel!r} points outside the image folder {root}; "
            "pass --allow-outside-root if that is intended"
        )


def read_table(labels: Path) -> pd.DataFrame:
    """A CSV, TSV or Parquet table as text columns, empty cells as ``""`` (ManifestError else).

    Refused with a message that says how to fix the file: a header naming one column twice
    (which of the two a reader takes is arbitrary: pandas renames the second ``label.1``,
    pyarrow cannot pick), and a one-column table whose header holds another separator (a
    ``;``-separated CSV, as spreadsheets in many locales write it, or tabs in a ``.csv``).
    """
    suffix = labels.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            _refuse_repeated_names(labels, pq.read_schema(labels).names)
            frame = pd.read_parquet(labels)
            return frame.astype(str).where(frame.notna(), "")
        if suffix in (".csv", ".tsv", ".txt"):
            sep = "\t" if suffix == ".tsv" else ","
            try:
                header = _read_csv(labels, sep, header_only=True)
                _refuse_repeated_names(
                    labels, [str(v) for v in header.iloc[0]] if len(header) else []
                )
                frame = _read_csv(labels, sep)
            except UnicodeDecodeError as err:
                raise ManifestError(
                    f"{labels}: not UTF-8 text (byte {err.start}); save it as UTF-8 and retry"
                ) from err
            _refuse_other_separator(labels, list(frame.columns), sep)
            return unescape_frame(frame)  # cells labelclean escaped for spreadsheets
    except ManifestError:
        raise
    except Exception as err:  # noqa: BLE001 - parser errors come in many types
        sep = "\t" if suffix == ".tsv" else ","
        hint = None if suffix == ".parquet" else _separator_hint(labels, _first_line(labels), sep)
        detail = " ".join(str(err).split())  # one line: the C parser's message ends in one
        raise ManifestError(
            f"{labels}: cannot be read as a table ({detail})" + (f"; it {hint}" if hint else "")
        ) from err
    raise ManifestError(f"{labels}: expected a .csv, .tsv or .parquet manifest")


def _read_csv(labels: Path, sep: str, *, header_only: bool = False) -> pd.DataFrame:
    """Text cells, empty as ``""``; ``header_only``: the first line as a row of its own."""
    if header_only:
        return pd.read_csv(
            labels,
            sep=sep,
            header=None,
            nrows=1,
            dtype=str,
            keep_default_na=False,
            encoding="utf-8-sig",
        )
    return pd.read_csv(labels, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8-sig")


def _refuse_repeated_names(labels: Path, names: Sequence[str]) -> None:
    """A column name given twice (empty names aside: pandas numbers them ``Unnamed: N``)."""
    positions: dict[str, list[int]] = {}
    for number, name in enumerate(names, start=1):
        if name.strip():
            positions.setdefault(name, []).append(number)
    for name, where in positions.items():
        if len(where) > 1:
            listed = ", ".join(map(str, where[:-1])) + f" and {where[-1]}"
            raise ManifestError(
                f"{labels}: column {name!r} appears {len(where)} times (columns {listed}); "
                "rename all but one, so it is clear which one to read"
            )


_SEPARATORS = {";": "';'", "\t": "tabs", ",": "commas", "|": "'|'"}


def _separator_hint(labels: Path, header: str, sep: str) -> str | None:
    """What to do when ``header`` (a table's first line) holds another separator than ``sep``."""
    for other, name in _SEPARATORS.items():
        if other != sep and other in header and sep not in header:
            kind = f"a {labels.suffix.lower()} is read as " + (
                "tab-separated" if sep == "\t" else "comma-separated"
            )
            fix = {"\t": "rename it to .tsv", ",": "rename it to .csv"}.get(
                other, "save it with tabs" if sep == "\t" else "save it with commas"
            )
            return f"looks separated by {name} (its header reads {header!r}); {kind}: {fix}"
    return None


def _refuse_other_separator(labels: Path, columns: list[str], sep: str) -> None:
    """A one-column table whose header holds another separator: say so, with the fix."""
    hint = _separator_hint(labels, str(columns[0]), sep) if len(columns) == 1 else None
    if hint is not None:
        raise ManifestError(f"{labels}: {hint}")


def _first_line(labels: Path) -> str:
    """The header line as text, for a hint ("" when even that cannot be read)."""
    try:
        with open(labels, "rb") as fh:
            return fh.readline(1 << 16).decode("utf-8-sig", "replace").rstrip("\r\n")
    except OSError:
        return ""


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


def spelling_key(label: str) -> str:
    """What two spellings of one class share: no surrounding spaces, Unicode NFC, case folded."""
    return unicodedata.normalize("NFC", label.strip()).casefold()


def class_finder(classes: Iterable[str]) -> Callable[[str], str | None]:
    """A lookup of a label among ``classes``: verbatim, else the one class spelled like it.

    A label written by hand or by another tool (a truth file, a decisions row) may lose a
    class's surrounding spaces (``cat`` for ``"cat "``, a tab before ``x``) or name the
    spelling ``--normalize-labels`` merged away (``Cat`` for ``cat``). An audit's classes
    never share a :func:`spelling_key` (:func:`merge_spellings` refuses or merges them), so
    the match is the class the writer meant; where two classes would match, none does (None).
    The index is built once, so looking up every label of a file costs O(N + C).
    """
    names = set(classes)
    by_key: dict[str, list[str]] = {}
    for c in names:
        by_key.setdefault(spelling_key(c), []).append(c)

    def find(text: str) -> str | None:
        if text in names:
            return text
        near = by_key.get(spelling_key(text), [])
        return near[0] if len(near) == 1 else None

    return find


def merge_spellings(
    spellings: Sequence[str],
    counts: Sequence[int],
    where: Sequence[str],
    source: Path,
    *,
    normalize: bool,
) -> dict[str, str]:
    """The class name each label spelling becomes; spellings that differ only in form refused.

    ``cat``, ``cat `` and ``Cat`` would silently be three classes, each with a share of one
    class's images, and every audit decision between them would be noise. Without
    ``normalize`` two such spellings are an error naming both and where each first occurs.
    With it (``--normalize-labels``) surrounding spaces are stripped and each group takes its
    most frequent stripped spelling (the first seen on a tie), so ``cat`` (90 rows) and
    ``Cat`` (3) both read ``cat``.

    Args:
        spellings: Every distinct label, in order of first appearance.
        counts: How many cells hold each.
        where: Where each first occurs (``line 7``, a folder), for the message.
        source: The manifest or folder, for the message.
        normalize: Merge instead of refusing.
    """
    groups: dict[str, list[int]] = {}
    for i, text in enumerate(spellings):
        groups.setdefault(spelling_key(text), []).append(i)
    mapping = {text: text for text in spellings}
    for members in groups.values():
        if not normalize:
            if len(members) > 1:
                a, b = members[0], members[1]
                raise ManifestError(
                    f"{source}: class names {spellings[a]!r} ({where[a]}) and {spellings[b]!r} "
                    f"({where[b]}) differ only in case or surrounding spaces, so they would be "
                    "two classes; write one spelling, or merge them with --normalize-labels "
                    "(check, audit; normalize_labels=True in Python)"
                )
            continue
        total: dict[str, int] = {}
        for i in members:
            stripped = spellings[i].strip()
            total[stripped] = total.get(stripped, 0) + counts[i]
        chosen = max(total, key=lambda t: total[t])  # dicts keep order: ties go to the first
        for i in members:
            mapping[spellings[i]] = chosen
        if len(members) > 1:
            logger.info(
                "%s: --normalize-labels merged %s into %r",
                source,
                ", ".join(repr(spellings[i]) for i in members),
                chosen,
            )
    return mapping


def unify_spellings(
    frame: pd.DataFrame, columns: Sequence[str], source: Path, *, normalize: bool
) -> pd.DataFrame:
    """``frame`` with its label ``columns`` checked by :func:`merge_spellings` (merged if asked).

    Every label column counts, so a vote ``Cat`` in one annotator's column and ``cat`` in
    another's are caught as in a single column. Empty cells (missing votes) are left alone.
    """
    n = len(frame)
    cells = pd.DataFrame(
        {
            "label": np.concatenate([frame[c].astype(str).to_numpy(dtype=object) for c in columns])
            if columns
            else np.zeros(0, dtype=object),
            "row": np.tile(np.arange(n), len(columns)),
            "column": np.repeat(np.arange(len(columns)), n),
        }
    )
    cells = cells[cells["label"].str.strip() != ""]
    if len(columns) > 1:  # first occurrences in the order a reader meets them: row by row
        cells = cells.sort_values(["row", "column"], kind="stable")
    counts = cells["label"].value_counts(sort=False)
    first = cells.drop_duplicates("label")
    spellings = first["label"].tolist()
    where = [
        f"line {row + 2}" + (f", column {columns[col]!r}" if len(columns) > 1 else "")
        for row, col in zip(first["row"], first["column"])
    ]
    mapping = merge_spellings(
        spellings, [int(counts[t]) for t in spellings], where, source, normalize=normalize
    )
    changed = {text: name for text, name in mapping.items() if text != name}
    if not changed:
        return frame
    frame = frame.copy()
    for c in columns:
        frame[c] = frame[c].astype(str).map(lambda v: changed.get(v, v))
    return frame


def _refuse_missing(labels: Path, columns: list[str], wanted: list[str], *, votes: bool) -> None:
    """Name the missing columns against the found ones, with a hint for a near miss.

    A header with spaces around its names (``path, label``, as typed by hand) is refused, not
    read: its rows then nearly always have the same spaces (``a.png, cat``), and reading
    them would make `` cat`` a class of its own. The message names the spelled column and
    says to remove the spaces after the separators, header and rows alike.
    """
    missing = [c for c in wanted if c not in columns]
    if not missing:
        return
    flags = "--path-column, --label-column or --annotator-column"
    if not votes:
        flags = "--path-column/--label-column"
    message = (
        f"{labels}: missing column(s) {', '.join(missing)}; found {', '.join(map(str, columns))}"
        f" (choose others with {flags})"
    )
    spaced = [
        c for name in missing for c in columns if c != name and str(c).strip() == name.strip()
    ]
    if spaced:
        message += (
            f"; the header spells {', '.join(map(repr, spaced))} with spaces around the name: "
            "remove the spaces after the separators, in the header and in the rows"
        )
    raise ManifestError(message)


def _from_table(
    root: Path,
    labels: Path,
    *,
    path_column: str,
    label_column: str | Sequence[str],
    annotator_column: str | None,
    allow_outside_root: bool,
    normalize_labels: bool,
) -> Manifest:
    frame = read_table(labels)
    label_columns = [label_column] if isinstance(label_column, str) else list(label_column)
    from labelclean.data.votes import DEFAULT_ANNOTATOR_COLUMN, vote_layout  # votes.py reads ours

    layout = vote_layout(
        list(frame.columns), label_columns=label_columns, annotator_column=annotator_column
    )
    wanted = [path_column, *(label_columns if layout == "wide" else label_columns[:1])]
    if layout == "long":
        wanted.insert(1, annotator_column or DEFAULT_ANNOTATOR_COLUMN)
    _refuse_missing(labels, list(frame.columns), wanted, votes=layout is not None)
    _refuse_nested(labels, tuple(wanted))
    vote_columns = wanted[2:] if layout == "long" else wanted[1:]
    frame = unify_spellings(frame, vote_columns, labels, normalize=normalize_labels)
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
        rel = _on_disk(root, inside_spelling(root, normalise_path(raw_path.strip())))
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
        rel = inside_spelling(root, normalise_path(raw))
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


def _from_folder(root: Path, *, allow_outside_root: bool, normalize_labels: bool) -> Manifest:
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
    counts = Counter(label_text)
    where = [str(root / name) for name in classes]
    spelled = merge_spellings(
        classes, [counts[name] for name in classes], where, root, normalize=normalize_labels
    )
    label_text = [spelled[name] for name in label_text]
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
    normalize_labels: bool = False,
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
        normalize_labels: Merge class names that differ only in case or surrounding spaces
            (``cat``, ``cat ``, ``Cat``) into their most frequent stripped spelling; without
            it they are an error naming both (:func:`merge_spellings`).

    Example:
        >>> m = read_manifest("images/", "labels.csv")  # doctest: +SKIP
        >>> m.class_names, len(m)  # doctest: +SKIP
    """
    root = Path(images)
    if not root.is_dir():
        raise ManifestError(f"{root}: no such image folder")
    if labels is None:
        return _from_folder(
            root, allow_outside_root=allow_outside_root, normalize_labels=normalize_labels
        )
    labels = Path(labels)
    if not labels.is_file():
        from labelclean._io import not_a_file

        raise ManifestError(not_a_file(labels, "labels file"))
    return _from_table(
        root,
        labels,
        path_column=path_column,
        label_column=label_column,
        annotator_column=annotator_column,
        allow_outside_root=allow_outside_root,
        normalize_labels=normalize_labels,
    )
