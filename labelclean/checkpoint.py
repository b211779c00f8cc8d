"""Checkpoints and the work directory: a killed or interrupted run costs at most one epoch.

Layout of a work directory (``--work-dir``, by default ``<out>.work`` beside the output)::

    lock                    pid of the run using it; a second run refuses to start
    checkpoint-00012.pt     the newest complete checkpoint (epoch 12)
    checkpoint-00011.pt     the previous one, kept until the newest is complete
    traces/                 a large audit's confidence traces (memory-mapped .npy files),
                            which its checkpoints refer to instead of copying them

A checkpoint holds only tensors and plain values, so it loads with
``torch.load(weights_only=True)``. It is written to a unique temp file in the same
directory, fsynced, then ``os.replace``-d; older ones are deleted only after that. Loading
picks the highest epoch *stored inside* a file that reads back whole, falling back to the
previous one (and saying so) when the newest is truncated.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from labelclean._faults import maybe_fail
from labelclean._io import atomic_path
from labelclean._version import __version__
from labelclean.errors import CheckpointError
from labelclean.fgcm.history import TRACE_FILES

logger = logging.getLogger(__name__)

FORMAT = 1
_NAME = re.compile(r"^checkpoint-(\d+)\.pt$")
#: Sub-folder of the work directory holding the trace files (labelclean.fgcm.history).
TRACE_DIR = "traces"
#: Config fields that may change on resume without changing the result's meaning.
#: Not ``deterministic``: it picks other algorithms, so the resumed run is not the one that
#: checkpointed (and not reproducible, which is what it was asked for).
RESUME_SAFE_FIELDS = frozenset({"device", "amp"})


def default_work_dir(out: str | os.PathLike[str]) -> Path:
    """``report.parquet`` -> ``report.parquet.work`` beside it; ``model/`` -> ``model.work``.

    The whole name, so outputs that differ anywhere in theirs (``r.v1.parquet`` and
    ``r.v2.parquet``) never share, and mix, each other's checkpoints.
    """
    out = Path(out)
    return out.with_name(out.name + ".work")


def save_checkpoint(work_dir: Path, payload: dict[str, Any], *, keep: int = 2) -> Path:
    """Write ``payload`` (which must hold an int ``epoch``) as the newest checkpoint.

    A full disk or read-only folder is an OutputError naming ``--work-dir``; the previous
    checkpoints are untouched.
    """
    epoch = int(payload["epoch"])
    target = work_dir / f"checkpoint-{epoch:05d}.pt"
    with atomic_path(target, flag="--work-dir") as tmp:
        try:
            torch.save({"format": FORMAT, **payload}, tmp)
        except RuntimeError as err:  # torch reports a failed write as its own error
            full = os.statvfs(work_dir).f_bavail == 0
            raise OSError(errno.ENOSPC if full else errno.EIO, str(err)) from None
        maybe_fail("checkpoint_write", epoch - 1)  # the epoch whose end this checkpoint saves
    for old in _checkpoint_files(work_dir)[keep:]:
        with contextlib.suppress(FileNotFoundError):
            old.unlink()
    return target


def _checkpoint_files(work_dir: Path) -> list[Path]:
    """Checkpoint files, newest name first (the epoch inside decides when loading)."""
    files = [p for p in work_dir.glob("checkpoint-*.pt") if _NAME.match(p.name)]
    return sorted(files, key=lambda p: int(_NAME.match(p.name).group(1)), reverse=True)  # type: ignore[union-attr]


def load_latest(work_dir: Path) -> tuple[dict[str, Any], Path]:
    """The newest checkpoint that reads back whole, by the epoch stored inside.

    Raises:
        CheckpointError: no work directory, or no readable checkpoint in it.
    """
    if not work_dir.is_dir():
        raise CheckpointError(
            f"--resume: no work directory {work_dir}; nothing to resume (run without --resume "
            "to start fresh, or pass the --work-dir the first run used)"
        )
    loaded: list[tuple[int, dict[str, Any], Path]] = []
    bad: list[str] = []
    for path in _checkpoint_files(work_dir):
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            loaded.append((int(payload["epoch"]), payload, path))
        except Exception as err:  # noqa: BLE001 - any failure means this file is unusable
            bad.append(f"{path.name} ({type(err).__name__})")
    if bad:
        logger.warning("skipping unreadable checkpoint(s) in %s: %s", work_dir, ", ".join(bad))
    if not loaded:
        raise CheckpointError(
            f"--resume: no readable checkpoint in {work_dir}"
            + (f" (unreadable: {', '.join(bad)})" if bad else "")
        )
    epoch, payload, path = max(loaded, key=lambda item: item[0])
    if bad:
        logger.warning("resuming from %s (epoch %d) instead", path.name, epoch)
    return payload, path


def clear_checkpoints(work_dir: Path) -> None:
    """Delete this tool's checkpoints and trace files (nothing else), then empty folders."""
    traces = work_dir / TRACE_DIR
    # a kill -9 while a checkpoint was written leaves its temporary file (_io.atomic_path)
    leftovers = [*work_dir.glob(".checkpoint-*.pt.*.tmp"), *traces.glob(".trace_*.tmp")]
    for path in [
        *_checkpoint_files(work_dir),
        *(traces / name for name in TRACE_FILES),
        *leftovers,
    ]:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    for folder in (traces, work_dir):
        with contextlib.suppress(OSError):
            folder.rmdir()


def resume_differences(
    saved: dict[str, Any],
    *,
    config: dict[str, Any],
    manifest_fingerprint: str,
    images_fingerprint: str | None = None,
) -> list[str]:
    """What changed between the checkpointed run and this one (empty when safe to resume).

    ``images_fingerprint``: the decoded images' cache key (each file's size and modification
    time, the image size, the pixel limit; ``labelclean.data.images``), so that images
    edited or replaced since the checkpoint are not trained on as if they were the same.
    """
    changes = []
    if saved.get("tool_version") != __version__:
        changes.append(f"tool version {saved.get('tool_version')} -> {__version__}")
    if saved.get("manifest_fingerprint") != manifest_fingerprint:
        changes.append("the manifest (paths, labels or image root) changed")
    if images_fingerprint is not None and saved.get("images_fingerprint") != images_fingerprint:
        changes.append(
            "the images changed (a file's size or modification time, or --image-size or "
            "--max-pixels)"
        )
    old = saved.get("config", {})
    for key in sorted(set(old) | set(config)):
        if key in RESUME_SAFE_FIELDS:
            continue
        if old.get(key) != config.get(key):
            changes.append(f"{key}: {old.get(key)!r} -> {config.get(key)!r}")
    return changes


@dataclass
class RunCheckpoints:
    """One run's use of its work directory, shared by audit and finetune (CLI and API).

    A fresh run refuses a directory holding another run's checkpoints (it would mix with, and
    later delete, them); ``--resume`` continues only the same run (:func:`resume_differences`).
    Only the main rank locks, writes and clears; every rank reads the same checkpoint.
    """

    work_dir: Path
    is_main: bool = True

    def held(self) -> contextlib.AbstractContextManager[object]:
        """The work directory's lock while the run uses it (the main rank's only)."""
        return WorkDirLock(self.work_dir).held() if self.is_main else contextlib.nullcontext()

    def exist(self) -> bool:
        """Whether the work directory holds a checkpoint: whether ``--resume`` has a start."""
        return bool(_checkpoint_files(self.work_dir)) if self.work_dir.is_dir() else False

    def refuse_earlier_run(self) -> None:
        """Raise CheckpointError when a run that is not resuming finds checkpoints."""
        if self.is_main and any(self.work_dir.glob("checkpoint-*.pt")):
            raise CheckpointError(
                f"{self.work_dir} holds checkpoints of an earlier run; pass --resume to continue "
                "it, or remove the directory / choose another --work-dir to start fresh"
            )

    def resume(
        self,
        *,
        config: dict[str, Any],
        manifest_fingerprint: str,
        images_fingerprint: str | None = None,
        force: bool = False,
    ) -> tuple[dict[str, Any], Path]:
        """The newest good checkpoint and its file, if this same run made it (else ``force``)."""
        payload, path = load_latest(self.work_dir)
        changes = resume_differences(
            payload,
            config=config,
            manifest_fingerprint=manifest_fingerprint,
            images_fingerprint=images_fingerprint,
        )
        if changes and not force:
            raise CheckpointError(
                f"--resume: {path} was made by a different run: "
                + "; ".join(changes)
                + ". Pass --force to resume anyway, or start fresh without --resume"
            )
        logger.info("resuming from %s (epoch %d)", path, int(payload["epoch"]))
        return payload, path

    def save(
        self, epoch: int, *, config: dict[str, Any], manifest_fingerprint: str, **state: Any
    ) -> None:
        """Checkpoint ``state`` at the end of ``epoch`` with what :meth:`resume` compares."""
        if self.is_main:
            self.save_payload(
                {
                    "epoch": epoch,
                    "tool_version": __version__,
                    "config": config,
                    "manifest_fingerprint": manifest_fingerprint,
                    **state,
                }
            )

    def save_payload(self, payload: dict[str, Any]) -> None:
        """Checkpoint a payload built elsewhere (the audit's: ``fgcm.audit.checkpoint_payload``)."""
        if self.is_main:
            save_checkpoint(self.work_dir, payload)

    def clear(self) -> None:
        """The run's output is complete: its checkpoints are moot (main rank)."""
        if self.is_main:
            clear_checkpoints(self.work_dir)


@dataclass
class WorkDirLock:
    """An exclusive lock file so two runs never write one work directory.

    A lock left by a process that no longer exists (killed with SIGKILL) is taken over.
    """

    work_dir: Path

    @property
    def path(self) -> Path:
        """The lock file."""
        return self.work_dir / "lock"

    def acquire(self) -> None:
        """Take the lock or raise CheckpointError naming the holder."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                holder = self._holder()
                if holder is not None and _alive(holder):
                    raise CheckpointError(
                        f"{self.work_dir} is in use by process {holder}; wait for it, or pass "
                        "another --work-dir"
                    ) from None
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(str(os.getpid()))
            return
        raise CheckpointError(f"could not lock {self.work_dir}")

    def release(self) -> None:
        """Remove the lock if it is ours."""
        if self._holder() == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def _holder(self) -> int | None:
        try:
            return int(self.path.read_text().strip() or -1)
        except (FileNotFoundError, ValueError):
            return None

    @contextlib.contextmanager
    def held(self) -> Iterator[WorkDirLock]:
        """``with lock.held(): ...``."""
        self.acquire()
        try:
            yield self
        finally:
            self.release()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
