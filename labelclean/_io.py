"""Outputs: checked before any work, written all-or-nothing, never over what the user owns.

Every command follows the same rules for every output (report, page, CSV, model, work and
cache folders, logs), so that no slip on the command line can cost the user a file:

- An output is never one of the command's inputs, under any spelling (relative, ``..``,
  symlink, hard link): the command refuses, naming both.
- A file output replaces only a regular file, and only with ``--overwrite``; never a folder.
- A folder output (an exported model, the demo) replaces only a folder that carries
  labelclean's marker file (:data:`MARKER`) and holds nothing but the files labelclean
  writes there; any other non-empty folder is refused whatever the flag.
- The folder an output goes to is checked before the work starts: it must be a folder (or
  creatable), writable, and the name short enough.
- Files are written to a temp file beside the target, fsynced and renamed, so a crash or a
  full disk leaves the previous file (if any) intact and no temp file behind. An
  ``OSError`` while writing becomes one :class:`~labelclean.errors.OutputError` naming the
  path and the option; :func:`os_error_message` gives the same line for any other one.

:func:`read_json` and :func:`loads_json` are the input side's helpers: every JSON value a
user controls (a Label Studio export, a model's ``config.json``, a report's metadata) is read
through them, so a file too large, nested too deep or not JSON is one error naming it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import stat
import tempfile
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

from labelclean._version import __version__
from labelclean.errors import OutputError, OutputExistsError

#: Marks a folder labelclean wrote as a whole (a model, the demo); JSON ``{"kind": ...}``.
MARKER = ".labelclean"
#: The inputs of a command, by how its help names them: ``{"LABELS": path, ...}``.
Inputs = Mapping[str, "str | os.PathLike[str] | None"]

_REASONS = {
    errno.ENOSPC: ("no space left on the device", "free some space or write elsewhere"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or write elsewhere"),
    errno.EFBIG: ("file too large for this file system", "write elsewhere"),
    errno.EACCES: ("permission denied", "choose a folder you can write to"),
    errno.EPERM: ("operation not permitted", "choose a folder you can write to"),
    errno.EROFS: ("read-only file system", "choose a folder you can write to"),
    errno.ENAMETOOLONG: ("file name too long", "choose a shorter name"),
    errno.EISDIR: ("is a directory", "name a file"),
    errno.ENOTDIR: ("a part of the path is not a directory", "check the path"),
    errno.ENOENT: ("no such file or directory", "check the path"),
    errno.ELOOP: ("too many levels of symbolic links", "check the path"),
    errno.EIO: ("input/output error", "check the disk"),
}


def _errno(err: OSError) -> int | None:
    """The errno of ``err``, also when a library (pyarrow) only put it in the message."""
    if err.errno is not None:
        return err.errno
    found = re.search(r"errno (\d+)", str(err), re.IGNORECASE)
    return int(found.group(1)) if found else None


#: The largest JSON file read: a Label Studio export of a million tasks is about 1 GB, and
#: Python's parser needs several times the file's size in memory.
MAX_JSON_BYTES = 1 << 30
#: The deepest nesting accepted. labelclean's own JSON nests a few levels; a value nested
#: thousands deep ends in a RecursionError in the parser, or later in any code that walks it.
MAX_JSON_DEPTH = 64


def _too_deep(value: Any, limit: int) -> bool:
    """True when ``value`` nests lists/objects more than ``limit`` deep.

    Level by level, without recursion: one list of the containers at each depth (five
    times faster than a stack of (container, depth) pairs on a Label Studio export).
    """
    level = [value] if isinstance(value, dict | list) else []
    for _ in range(limit):
        level = [
            child
            for item in level
            for child in (item.values() if isinstance(item, dict) else item)
            if isinstance(child, dict | list)
        ]
        if not level:
            return False
    return True


def loads_json(text: str | bytes, error: type[Exception], *, source: str, expected: str) -> Any:
    """The JSON value of ``text``; anything else raises ``error`` naming ``source``.

    Not JSON, not UTF-8, or nested deeper than :data:`MAX_JSON_DEPTH` (where ``json.loads``
    itself would raise a RecursionError) all end the same way: ``<source>: not <expected>
    (why)``.
    """
    try:
        value = json.loads(text)
    except RecursionError:
        value, depth_error = None, True
    except ValueError as err:  # JSONDecodeError, and UnicodeDecodeError for bytes
        raise error(f"{source}: not {expected} ({err})") from None
    else:
        depth_error = _too_deep(value, MAX_JSON_DEPTH)
    if depth_error:
        raise error(f"{source}: not {expected} (nested deeper than {MAX_JSON_DEPTH} levels)")
    return value


def read_json(
    path: Path, error: type[Exception], *, expected: str, max_bytes: int | None = None
) -> Any:
    """A JSON file's value; an unusable file raises ``error`` naming it and ``expected``.

    One place for the ways such a file fails (missing, not a regular file, larger than
    ``max_bytes``, not UTF-8, not JSON, nested too deep), so every input read this way says
    the same about them. The size is checked before anything is read (``max_bytes``
    defaults to :data:`MAX_JSON_BYTES`), and only a regular file is opened (a FIFO would
    block the read forever).
    """
    max_bytes = MAX_JSON_BYTES if max_bytes is None else max_bytes
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{path}: not {expected} (not a regular file)")
        if info.st_size > max_bytes:
            raise error(
                f"{path}: not {expected} ({info.st_size:,} bytes, more than the "
                f"{max_bytes:,} labelclean reads)"
            )
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as err:
        raise error(f"{path}: not {expected} ({err})") from None
    if len(data) > max_bytes:  # grew since the stat
        raise error(f"{path}: not {expected} (more than the {max_bytes:,} bytes labelclean reads)")
    return loads_json(data, error, source=str(path), expected=expected)


def not_a_file(path: Path, what: str) -> str:
    """Why ``path``, an input that is not a regular file, cannot be read as ``what``.

    "no such <what>", or what is there instead (a folder, a FIFO or a device), so the
    message does not say a file is missing that the user can see.
    """
    if path.is_dir():
        return f"{path}: a folder; expected a {what}"
    if path.exists():
        return f"{path}: not a regular file (a FIFO or a device); expected a {what}"
    return f"{path}: no such {what}"


def is_user_os_error(err: OSError) -> bool:
    """True for the failures a user's disk or folders cause (full, read-only, ...)."""
    return _errno(err) in _REASONS


def os_error_message(err: OSError) -> str:
    """One line for an ``OSError``: the path it concerns and the reason, in plain words."""
    reason, _ = _REASONS.get(_errno(err) or -1, (err.strerror or str(err), ""))
    return f"{err.filename}: {reason}" if err.filename else reason


def output_error(err: OSError, path: str | os.PathLike[str], *, flag: str) -> OutputError:
    """An ``OSError`` met writing ``path`` -> an OutputError naming the path and the option."""
    reason, hint = _REASONS.get(_errno(err) or -1, (err.strerror or str(err), "write elsewhere"))
    return OutputError(f"{flag} {path}: cannot write: {reason}; {hint}")


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)  # hard links, symlinks, case-insensitive file systems
    except OSError:
        return a.resolve() == b.resolve()


def _refuse_inputs(
    path: Path, flag: str, inputs: Inputs | None, *, folder: bool, inside: bool = False
) -> None:
    """An output is never an input, nor an image in an input folder.

    A folder output never holds an input, and with ``inside`` never sits in an input folder
    (a model folder among the images would be read as a class, or replaced with them).
    """
    from labelclean.data.manifest import IMAGE_SUFFIXES

    target = path.resolve()
    for name, given in (inputs or {}).items():
        if given is None:
            continue
        source = Path(given)
        within = source.is_dir() and target.is_relative_to(source.resolve())
        if _same(path, source):
            kind = "folder" if source.is_dir() else "file"
            raise OutputError(
                f"{flag} {path} is the same {kind} as {name} ({source}); write the output elsewhere"
            )
        if not folder and within and path.suffix.lower() in IMAGE_SUFFIXES:
            raise OutputError(f"{flag} {path} is an image in {name} ({source}); name another file")
        if folder and source.resolve().is_relative_to(target):
            raise OutputError(f"{flag} {path} contains {name} ({source}); name a new folder")
        if folder and inside and within:
            raise OutputError(
                f"{flag} {path} is inside {name} ({source}); name a folder outside it"
            )


def _existing_ancestor(path: Path) -> Path:
    ancestor = path.absolute().parent
    while not os.path.lexists(ancestor) and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    return ancestor


def _check_names(path: Path, flag: str) -> None:
    """Every name still to be created fits the file system (checked before anything else)."""
    ancestor = _existing_ancestor(path)
    try:
        name_max = os.pathconf(ancestor, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    new_parts = path.absolute().relative_to(ancestor).parts
    if any(len(os.fsencode(part)) > name_max for part in new_parts):
        raise output_error(OSError(errno.ENAMETOOLONG, "name too long"), path, flag=flag)


def _check_parent(path: Path, flag: str) -> None:
    """The nearest existing ancestor is a writable folder."""
    ancestor = _existing_ancestor(path)
    if not ancestor.is_dir():
        raise OutputError(f"{flag} {path}: {ancestor} is a file, not a folder; choose another path")
    try:  # a real probe: access() ignores ACLs and cannot see a full or read-only disk's quirks
        fd, probe = tempfile.mkstemp(prefix=".labelclean-probe-", dir=ancestor)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise output_error(err, path, flag=flag) from None


def check_writable(
    path: str | os.PathLike[str],
    *,
    overwrite: bool,
    flag: str = "--out",
    inputs: Inputs | None = None,
) -> Path:
    """Refuse a file output before any work: an input, a folder, existing, or unwritable.

    Args:
        path: The output file.
        overwrite: Whether an existing regular file may be replaced (``--overwrite``).
        flag: The option that named it, for the messages.
        inputs: The command's inputs; the output may be none of them.

    Raises:
        OutputError: ``path`` is an input, a folder or not a regular file, or its folder
            cannot be written. OutputExistsError: it exists and ``overwrite`` is off.
    """
    path = Path(path)
    _check_names(path, flag)
    _refuse_inputs(path, flag, inputs, folder=False)
    if path.is_dir():
        raise OutputError(f"{flag} {path} is a folder; name a file to write, e.g. {path}/out")
    if os.path.lexists(path):
        if not path.is_file():
            raise OutputError(f"{flag} {path} is not a regular file; labelclean never replaces it")
        if not overwrite:
            raise OutputExistsError(
                f"{path} already exists; pass --overwrite to replace it, or choose another {flag}"
            )
    _check_parent(path, flag)
    return path


def _marker_kind(folder: Path) -> str | None:
    try:
        marker = read_json(folder / MARKER, ValueError, expected="a marker", max_bytes=1 << 16)
        return str(marker["kind"])
    except (ValueError, KeyError, TypeError):
        return None


def check_output_dir(
    path: str | os.PathLike[str],
    *,
    overwrite: bool,
    kind: str,
    files: Collection[str],
    flag: str = "--out",
    inputs: Inputs | None = None,
) -> Path:
    """Refuse a folder output before any work unless it is new, empty, or labelclean's own.

    A non-empty folder is replaced only with ``overwrite``, only when it carries the
    :data:`MARKER` of ``kind`` and only when it holds nothing but ``files`` (and the marker):
    a folder the user owns is never deleted, whatever the flag.
    """
    path = Path(path)
    _check_names(path, flag)
    if Path.cwd().resolve().is_relative_to(path.resolve()):
        raise OutputError(
            f"{flag} {path} is the current folder or holds it; name a new folder, e.g. model/"
        )
    _refuse_inputs(path, flag, inputs, folder=True, inside=True)
    if os.path.lexists(path) and not path.is_dir():
        raise OutputError(f"{flag} {path} is a file, not a folder; name a new folder")
    entries = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    if entries:
        if _marker_kind(path) != kind:
            raise OutputError(
                f"{flag} {path} is a non-empty folder labelclean did not write (no {MARKER} "
                f"{kind} marker); it is never replaced, even with --overwrite: name a new folder"
            )
        foreign = [e for e in entries if e not in {*files, MARKER}]
        if foreign:
            raise OutputError(
                f"{flag} {path} holds files labelclean did not write ({', '.join(foreign[:5])}); "
                "move them out or name a new folder"
            )
        if not overwrite:
            raise OutputExistsError(
                f"{path} already exists; pass --overwrite to replace it, or choose another {flag}"
            )
    _check_parent(path, flag)
    return path


def check_work_dir(
    path: str | os.PathLike[str], *, flag: str, inputs: Inputs | None = None
) -> Path:
    """A folder labelclean writes into but never replaces (work dir, cache): usable now."""
    path = Path(path)
    _check_names(path / "probe", flag)
    _refuse_inputs(path, flag, inputs, folder=True)
    if os.path.lexists(path) and not path.is_dir():
        raise OutputError(f"{flag} {path} is a file, not a folder; name a folder")
    _check_parent(path / "probe", flag)
    return path


def marker_text(kind: str) -> str:
    """The :data:`MARKER` file's content for a folder of ``kind`` ("model", "demo")."""
    return json.dumps({"kind": kind, "tool_version": __version__})


def replace_dir(new: Path, target: Path, *, files: Collection[str], flag: str = "--out") -> None:
    """Move the finished folder ``new`` to ``target``, replacing labelclean's old one.

    The old folder is renamed aside before the new one takes its place, and only then are
    its files (checked to be ``files`` and the marker by :func:`check_output_dir`) deleted.
    ``new`` gets the modes of a folder the user made (:func:`_usual_modes`) first.
    """
    old = None
    try:
        _usual_modes(new)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name[:40]}.old.", dir=target.parent))
            os.replace(target, old / "dir")
        os.replace(new, target)
        _fsync_dir(target.parent)
    except OSError as err:
        if old is not None and not target.exists():
            os.replace(old / "dir", target)  # put the previous folder back
        raise output_error(err, target, flag=flag) from None
    finally:
        if old is not None:
            for name in {*files, MARKER}:
                with contextlib.suppress(FileNotFoundError):
                    (old / "dir" / name).unlink()
            with contextlib.suppress(OSError):
                (old / "dir").rmdir()
                old.rmdir()


def sidecar_path(out: str | os.PathLike[str], suffix: str) -> Path:
    """A file beside ``out`` named after it: ``report.parquet`` -> ``report.rejected.csv``."""
    out = Path(out)
    return out.with_name(out.stem + suffix)


def append_line(
    path: str | os.PathLike[str], text: str, *, flag: str, truncate: bool = False
) -> None:
    """Append ``text`` (one whole line) to ``path``, or start it afresh with ``truncate``.

    A failed write (full disk, ...) is cut back to the file's previous length, so a log
    never ends in half a line, and raised as an OutputError naming ``flag``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if truncate else os.O_APPEND)
        fd = os.open(path, mode, 0o666)
        try:
            size = os.lseek(fd, 0, os.SEEK_END)
            try:
                data = memoryview(text.encode("utf-8"))
                while data:
                    data = data[os.write(fd, data) :]
                os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)
    except OSError as err:
        raise output_error(err, path, flag=flag) from None


def reserve_space(path: Path) -> None:
    """Allocate ``path``'s blocks now: a full disk is then an OSError, not a later SIGBUS.

    Writing to a memory map of a sparse file on a full disk kills the process.
    """
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.EOPNOTSUPP):  # unsupported: write as usual
            raise
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _usual_modes(folder: Path) -> None:
    """Give ``folder`` and everything in it the modes the user's umask gives new files.

    A temp folder (``mkdtemp``: 0700) and files some libraries write (safetensors: 0600)
    are private; an output folder is not: 0755 and 0644 under umask 022, as ``mkdir`` and
    ``open`` make them. Links are left as they are.
    """
    mask = _umask()
    for parent, _dirs, names in os.walk(folder):
        os.chmod(parent, 0o777 & ~mask)
        for name in names:
            if not os.path.islink(os.path.join(parent, name)):
                os.chmod(os.path.join(parent, name), 0o666 & ~mask)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike[str], *, overwrite: bool = True, flag: str = "--out"
) -> Iterator[Path]:
    """Yield a temp path in the target's directory; on success it replaces ``path``.

    An ``OSError`` on the temp file (full disk, read-only folder, ...) becomes an
    :class:`~labelclean.errors.OutputError` naming ``path`` and ``flag``.

    Example:
        >>> with atomic_path("report.parquet") as tmp:  # doctest: +SKIP
        ...     table.to_parquet(tmp)
    """
    path = Path(path)
    check_writable(path, overwrite=overwrite, flag=flag)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{path.name[:40]}.", suffix=".tmp", dir=path.parent
        )
        os.close(fd)
        tmp = Path(tmp_name)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        if not overwrite and path.exists():
            raise OutputExistsError(
                f"{path} appeared while writing; pass --overwrite to replace it"
            )
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as err:
        if err.filename not in (None, str(tmp), str(path), str(path.parent)):
            raise  # about another file (an input read while writing): reported as it is
        raise output_error(err, path, flag=flag) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, *, overwrite: bool = True, flag: str = "--out"
) -> Path:
    """Write ``data`` to ``path`` all-or-nothing."""
    with atomic_path(path, overwrite=overwrite, flag=flag) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(
    path: str | os.PathLike[str], text: str, *, overwrite: bool = True, flag: str = "--out"
) -> Path:
    """Write UTF-8 ``text`` to ``path`` all-or-nothing."""
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite, flag=flag)


def atomic_write_with(
    path: str | os.PathLike[str],
    write: Callable[[Path], object],
    *,
    overwrite: bool = True,
    flag: str = "--out",
) -> Path:
    """Call ``write(tmp_path)`` and move the result into place all-or-nothing."""
    with atomic_path(path, overwrite=overwrite, flag=flag) as tmp:
        write(tmp)
    return Path(path)
