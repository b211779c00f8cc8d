"""labelclean._io: the rules every output follows (issue 14), one at a time."""

import errno
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labelclean import _io
from labelclean._io import (
    MARKER,
    append_line,
    atomic_write_text,
    check_output_dir,
    check_work_dir,
    check_writable,
    marker_text,
    os_error_message,
    replace_dir,
)
from labelclean.errors import OutputError, OutputExistsError


def test_a_file_output_is_never_an_input_under_any_spelling(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\n")
    (tmp_path / "soft.csv").symlink_to(labels)
    os.link(labels, tmp_path / "hard.csv")
    for spelling in (labels, tmp_path / "x" / ".." / "labels.csv", tmp_path / "soft.csv", tmp_path / "hard.csv"):
        with pytest.raises(OutputError, match=r"is the same file as LABELS \("):
            check_writable(spelling, overwrite=True, inputs={"LABELS": labels, "unused": None})
    with pytest.raises(OutputError, match="is an image in IMAGES"):
        check_writable(tmp_path / "a.PNG", overwrite=True, inputs={"IMAGES": tmp_path})
    assert check_writable(tmp_path / "report.parquet", overwrite=False, inputs={"IMAGES": tmp_path})


def test_a_file_output_replaces_only_a_regular_file_and_only_when_asked(tmp_path):
    mine = tmp_path / "mine.csv"
    mine.write_text("mine")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        check_writable(mine, overwrite=False, flag="--html")
    assert check_writable(mine, overwrite=True) == mine
    with pytest.raises(OutputError, match="is a folder"):
        check_writable(tmp_path, overwrite=True)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(OutputError, match="not a regular file"):
        check_writable(tmp_path / "fifo", overwrite=True)
    with pytest.raises(OutputError, match="mine.csv is a file, not a folder"):
        check_writable(mine / "deeper" / "x.csv", overwrite=True)
    with pytest.raises(OutputError, match="--out .*: cannot write: file name too long"):
        check_writable(tmp_path / ("n" * 300) / "x.csv", overwrite=False)
    check_writable(tmp_path / "new" / "deeper" / "x.csv", overwrite=False)
    assert not (tmp_path / "new").exists()  # the check creates nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "mine.csv"]  # no probe left


def test_a_folder_output_replaces_only_labelclean_s_own_folder(tmp_path, monkeypatch):
    files = ("config.json", "model.safetensors")
    check_output_dir(tmp_path / "new", overwrite=False, kind="model", files=files)
    (tmp_path / "empty").mkdir()
    check_output_dir(tmp_path / "empty", overwrite=False, kind="model", files=files)
    user = tmp_path / "user"
    user.mkdir()
    (user / "config.json").write_text("{}")
    with pytest.raises(OutputError, match="labelclean did not write .* even with --overwrite"):
        check_output_dir(user, overwrite=True, kind="model", files=files)
    (user / MARKER).write_text(marker_text("demo"))
    with pytest.raises(OutputError, match="did not write"):  # a demo folder is not a model
        check_output_dir(user, overwrite=True, kind="model", files=files)
    (user / MARKER).write_text(marker_text("model"))
    with pytest.raises(OutputExistsError):
        check_output_dir(user, overwrite=False, kind="model", files=files)
    check_output_dir(user, overwrite=True, kind="model", files=files)
    (user / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"holds files labelclean did not write \(notes.txt\)"):
        check_output_dir(user, overwrite=True, kind="model", files=files)
    monkeypatch.chdir(tmp_path / "empty")
    for here in (".", "..", str(tmp_path)):
        with pytest.raises(OutputError, match="current folder"):
            check_output_dir(Path(here), overwrite=True, kind="model", files=files)


def test_replace_dir_swaps_the_folder_and_removes_only_labelclean_s_files(tmp_path):
    old, new = tmp_path / "model", tmp_path / ".model.tmp"
    for folder, text in ((old, "old"), (new, "new")):
        folder.mkdir()
        (folder / "config.json").write_text(text)
        (folder / MARKER).write_text(marker_text("model"))
    replace_dir(new, old, files=("config.json",))
    assert (old / "config.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_work_folder_is_not_an_input_nor_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_work_dir(tmp_path / "f", flag="--work-dir")
    with pytest.raises(OutputError, match="--work-dir .* contains IMAGES"):
        check_work_dir(tmp_path, flag="--work-dir", inputs={"IMAGES": tmp_path / "img"})
    assert check_work_dir(tmp_path / "w", flag="--cache-dir") == tmp_path / "w"


def test_a_failed_write_keeps_the_old_file_and_names_the_option(tmp_path, monkeypatch):
    out = atomic_write_text(tmp_path / "page.html", "old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutputError, match="--html .*page.html: cannot write: no space left"):
        atomic_write_text(out, "new", flag="--html")
    assert out.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["page.html"]


def test_a_log_line_that_fails_is_cut_back_out(tmp_path, monkeypatch):
    log = tmp_path / "log.jsonl"
    append_line(log, "", flag="--log-json", truncate=True)
    append_line(log, '{"epoch": 0}\n', flag="--log-json")
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    with pytest.raises(OutputError, match="--log-json"):
        append_line(log, '{"epoch": 1}\n', flag="--log-json")
    assert log.read_text() == '{"epoch": 0}\n'


def test_os_errors_in_plain_words_also_from_libraries_that_hide_the_errno():
    assert os_error_message(PermissionError(errno.EACCES, "Permission denied", "x.csv")) == "x.csv: permission denied"
    assert os_error_message(OSError("[Errno 28] Error writing bytes to file")) == "no space left on the device"
    assert _io.is_user_os_error(OSError(errno.EROFS, "ro")) and not _io.is_user_os_error(OSError("?"))


def test_the_cli_turns_a_user_os_error_anywhere_into_one_line(tmp_path, monkeypatch):
    import labelclean.report.parquet as parquet
    from labelclean.cli import app

    def denied(path, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(parquet, "read_report", denied)
    r = CliRunner().invoke(app, ["report", str(tmp_path / "r.parquet")])
    assert r.exit_code == 1 and r.output == f"error: {tmp_path / 'r.parquet'}: permission denied\n"
