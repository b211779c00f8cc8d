"""Every command used as a hostile but realistic user would (issue 14).

Nothing a user types may destroy a file, and every failure is one `error:` line naming the
path or option, exit 1, found before the work starts, with nothing half-written.
Tiny data (100 digits, 2 epochs) keeps the module fast.
"""

import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from labelclean.cli import app

runner = CliRunner()
ROOT = os.geteuid() == 0


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def refused(r, *needles):
    """Exit 1 with one `error:` line holding every needle, no traceback, no work done."""
    assert not isinstance(r.exception, AssertionError), r.exception  # the work had started
    assert r.exit_code == 1, r.output
    lines = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    for needle in needles:
        assert str(needle) in lines[0], lines[0]
    return lines[0]


def listing(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in Path(folder).rglob("*"))


def retarget(report, image_root, out):
    """A copy of ``report`` whose metadata points at another image folder."""
    import json

    table = pq.read_table(report)
    md = json.loads(table.schema.metadata[b"labelclean"])
    md["image_root"] = str(Path(image_root).resolve())
    pq.write_table(table.replace_schema_metadata({b"labelclean": json.dumps(md)}), out)
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """100 digits, their audit report and a finetuned model, made once for the module."""
    from labelclean.data.digits import write_digits

    base = tmp_path_factory.mktemp("hostile")
    images, labels = write_digits(base / "ds" / "images", n_per_class=10)
    cache, report, model = base / "cache", base / "ds" / "report.parquet", base / "model"
    r = run("audit", images, labels, "--out", report, "--epochs", 2, "--warmup", 1, "--quiet",
            "--cache-dir", cache)
    assert r.exit_code == 0, r.output
    r = run("finetune", report, "--out", model, "--epochs", 1, "--mu", 1, "--batch-size", 32,
            "--quiet", "--cache-dir", cache)
    assert r.exit_code == 0, r.output
    from labelclean.review.decisions import Decision, report_fingerprint, write_decisions

    decisions = base / "ds" / "report.decisions.csv"
    write_decisions(decisions, [Decision("digit_0000.png", "drop")], fingerprint=report_fingerprint(report),
                    report_name=report.name)
    return SimpleNamespace(ds=base / "ds", images=images, labels=labels, report=report,
                           model=model, cache=cache, decisions=decisions)


@pytest.fixture
def ds(world, tmp_path):
    """A copy of the dataset folder (images, labels.csv, report pointing at the copy)."""
    folder = tmp_path / "ds"
    shutil.copytree(world.ds, folder)
    retarget(world.report, folder / "images", folder / "report.parquet")
    return SimpleNamespace(folder=folder, images=folder / "images", labels=folder / "images" / "labels.csv",
                           report=folder / "report.parquet", decisions=folder / "report.decisions.csv")


@pytest.fixture
def no_work(monkeypatch):
    """Any command that starts decoding, training or rendering fails the test."""
    import labelclean.data.images as images
    import labelclean.report.html as html
    import labelclean.review.apply as apply
    import labelclean.review.server as server

    def boom(*args, **kwargs):
        raise AssertionError("the work started before the outputs were checked")

    for module, name in ((images, "load_dataset"), (images, "load_images"), (html, "write_html_report"),
                         (server, "ReviewServer"), (apply, "apply_decisions")):
        monkeypatch.setattr(module, name, boom)


# 1. --overwrite replaces only what labelclean wrote ------------------------------------------


def test_finetune_overwrite_never_deletes_a_users_folder(ds, no_work, monkeypatch, tmp_path):
    (ds.folder / "notes.txt").write_text("mine")
    before = listing(ds.folder)
    refused(run("finetune", ds.report, "--out", ds.folder, "--overwrite"), "contains REPORT")
    refused(run("finetune", ds.report, "--out", ds.images, "--overwrite"), "image folder")
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    refused(run("finetune", ds.report, "--out", mine, "--overwrite"), "labelclean did not write")
    assert (mine / "notes.txt").read_text() == "mine" and (mine / "sub").is_dir()
    refused(run("finetune", ds.report, "--out", ds.report), "same file as REPORT")
    refused(run("finetune", ds.report, "--out", ds.folder / "notes.txt"), "is a file, not a folder")
    assert listing(ds.folder) == before
    monkeypatch.chdir(ds.folder)
    refused(run("finetune", ds.report, "--out", ".", "--overwrite"), "current folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    refused(run("finetune", ds.report, "--out", ".", "--overwrite"), "current folder")
    assert listing(ds.folder) == before


def test_finetune_overwrite_replaces_its_own_model_and_nothing_else(world, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(world.model, model)
    args = ["finetune", world.report, "--out", model, "--epochs", 1, "--mu", 1, "--quiet",
            "--cache-dir", world.cache]
    refused(run(*args), "already exists", "--overwrite")
    (model / "notes.txt").write_text("mine")
    refused(run(*args, "--overwrite"), "notes.txt", "did not write")
    assert (model / "notes.txt").read_text() == "mine"
    (model / "notes.txt").unlink()
    r = run(*args, "--overwrite")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in model.iterdir()) == [".labelclean", "config.json", "metrics.json", "model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no old or temp folder left


def test_file_outputs_never_replace_a_folder(world, no_work, tmp_path):
    folder = tmp_path / "taken"
    (folder / "keep").mkdir(parents=True)
    for args in (
        ["audit", world.images, world.labels, "--out", folder, "--overwrite"],
        ["report", world.report, "--html", folder, "--overwrite"],
        ["export", world.report, "--out", folder, "--overwrite"],
        ["predict", world.model, world.images, "--out", folder, "--overwrite"],
        ["corrupt", world.labels, "--out", folder, "--overwrite"],
        ["apply", world.report, world.decisions, "--out", folder, "--overwrite"],
        ["export", world.report, "--format", "label-studio", "--out", folder, "--overwrite"],
        ["review", world.report, "--decisions", folder, "--no-browser"],
    ):
        refused(run(*args), folder, "is a folder")
    assert (folder / "keep").is_dir()


def test_demo_never_writes_into_a_users_folder(ds, no_work):
    before = listing(ds.folder)
    refused(run("demo", "--out", ds.folder), "labelclean did not write")
    refused(run("demo", "--out", ds.images), "labelclean did not write")
    assert listing(ds.folder) == before


# 2. an output is never an input ----------------------------------------------------------------


def test_no_output_may_be_an_input(ds, world, no_work):
    (ds.folder / "link.csv").symlink_to(ds.labels)
    for name in ("rep.json", "rep.csv"):  # another name for the report
        (ds.folder / name).symlink_to(ds.report)
    spelled = ds.folder / "images" / ".." / "images" / "labels.csv"
    before = listing(ds.folder)
    cases = [
        (["audit", ds.images, ds.labels, "--out", ds.labels, "--overwrite"], "LABELS"),
        (["audit", ds.images, ds.labels, "--out", spelled, "--overwrite"], "LABELS"),
        (["audit", ds.images, ds.labels, "--out", ds.folder / "link.csv", "--overwrite"], "LABELS"),
        (["audit", ds.images, ds.labels, "--log-json", ds.labels, "--overwrite"], "LABELS"),
        (["audit", ds.images, ds.labels, "--work-dir", ds.images], "IMAGES"),
        (["audit", ds.images, ds.labels, "--out", ds.images / "digit_0000.png", "--overwrite"], "an image in IMAGES"),
        (["check", ds.images, ds.labels, "--on-bad-image", "skip", "--rejected-out", ds.labels, "--overwrite"], "LABELS"),
        (["report", ds.report, "--html", ds.report, "--overwrite"], "REPORT"),
        (["export", ds.report, "--out", ds.report, "--overwrite"], "REPORT"),
        (["corrupt", ds.labels, "--out", ds.labels, "--overwrite"], "SOURCE"),
        (["corrupt", ds.labels, "--out", ds.folder / "n.csv", "--truth-out", ds.labels, "--overwrite"], "SOURCE"),
        (["corrupt", ds.labels, "--out", ds.folder / "n.csv", "--truth-out", ds.folder / "n.csv"], "--out"),
        (["predict", world.model, ds.images, ds.labels, "--out", ds.labels, "--overwrite"], "LABELS"),
        (["predict", world.model, ds.images, "--out", world.model / "config.json", "--overwrite"], "the model's config.json"),
        (["finetune", ds.report, "--out", ds.folder / "m", "--work-dir", ds.images], "image folder"),
        (["finetune", ds.report, "--out", ds.decisions, "--decisions", ds.decisions, "--overwrite"], "--decisions"),
        (["apply", ds.report, ds.decisions, "--out", ds.decisions, "--overwrite"], "DECISIONS"),
        (["apply", ds.report, ds.decisions, "--out", ds.folder / "." / "report.parquet", "--overwrite"], "REPORT"),
        (["export", ds.report, "--format", "label-studio", "--out", ds.folder / "rep.json", "--overwrite"], "REPORT"),
        (["review", ds.report, "--decisions", ds.folder / "rep.csv"], "REPORT"),
        (["review", ds.report, "--decisions", ds.images / "digit_0000.png"], "an image in the report's image folder"),
    ]
    for args, name in cases:
        refused(run(*args), name)
    assert listing(ds.folder) == before


# 3. every output is checked before the work ----------------------------------------------------


def test_bad_output_paths_are_refused_before_the_work(world, no_work, tmp_path):
    existing = tmp_path / "x.parquet"
    existing.write_text("mine")
    for args, needle in (
        (["audit", world.images, world.labels, "--out", existing], "already exists"),
        (["audit", world.images, world.labels, "--out", existing / "r.parquet"], "is a file, not a folder"),
        (["audit", world.images, world.labels, "--log-json", tmp_path], "is a folder"),
        (["audit", world.images, world.labels, "--work-dir", existing], "is a file"),
        (["check", world.images, world.labels, "--on-bad-image", "skip", "--rejected-out", existing], "--rejected-out"),
        (["predict", world.model, world.images, "--out", existing], "already exists"),
        (["report", world.report, "--html", existing / "p.html"], "is a file, not a folder"),
    ):
        refused(run(*args), needle)
    assert existing.read_text() == "mine"


# 4. read-only, full disk, no permission, name too long -----------------------------------------

LONG = "n" * 300


def _every_output(world, where):
    """(args, flag) for every output of every command, placed at ``where``."""
    return [
        (["audit", world.images, world.labels, "--out", where / "r.parquet"], "--out"),
        (["audit", world.images, world.labels, "--log-json", where / "log.jsonl"], "--log-json"),
        (["audit", world.images, world.labels, "--work-dir", where / "work"], "--work-dir"),
        (["check", world.images, world.labels, "--on-bad-image", "skip", "--rejected-out", where / "rej.csv"], "--rejected-out"),
        (["report", world.report, "--html", where / "p.html"], "--html"),
        (["export", world.report, "--out", where / "c.csv"], "--out"),
        (["corrupt", world.labels, "--out", where / "n.csv"], "--out"),
        (["corrupt", world.labels, "--out", where.parent / "n.csv", "--truth-out", where / "t.csv"], "--truth-out"),
        (["finetune", world.report, "--out", where / "model"], "--out"),
        (["finetune", world.report, "--out", where.parent / "m", "--work-dir", where / "work"], "--work-dir"),
        (["predict", world.model, world.images, "--out", where / "p.parquet"], "--out"),
        (["apply", world.report, world.decisions, "--out", where / "final.csv"], "--out"),
        (["export", world.report, "--format", "label-studio", "--out", where / "t.json"], "--out"),
        (["review", world.report, "--decisions", where / "d.csv", "--no-browser"], "--decisions"),
    ]


def test_a_name_too_long_is_one_line_before_the_work(world, no_work, tmp_path):
    for args, flag in _every_output(world, tmp_path / LONG):
        refused(run(*args), flag, "file name too long")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("code,reason", [(errno.EROFS, "read-only file system"), (errno.EACCES, "permission denied")])
def test_an_unwritable_folder_is_one_line_before_the_work(world, no_work, tmp_path, monkeypatch, code, reason):
    # Tests may run as root, whom chmod does not stop: the folder refuses through the one
    # probe every output check makes (a real read-only mount is tested below).
    locked = tmp_path / "locked"
    locked.mkdir()
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).is_relative_to(locked):
            raise OSError(code, os.strerror(code))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    for args, flag in _every_output(world, locked):
        refused(run(*args), flag, reason)
    assert list(locked.iterdir()) == []


def test_an_unusable_cache_dir_is_refused_before_decoding(world, tmp_path, monkeypatch):
    import labelclean.data.images as images

    locked = tmp_path / "locked"
    locked.mkdir()
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).is_relative_to(locked):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(images, "decode_image", lambda *a, **k: pytest.fail("decoding started"))
    for cache, reason in ((locked / "cache", "read-only file system"), (tmp_path / LONG, "file name too long")):
        refused(run("check", world.images, world.labels, "--cache-dir", cache), "--cache-dir", reason)
    assert list(locked.iterdir()) == []


@pytest.mark.skipif(ROOT, reason="root writes through chmod; the probe test above covers it")
def test_a_chmod_read_only_folder_is_refused(world, no_work, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    for args, flag in _every_output(world, locked):
        refused(run(*args), flag, "permission denied")


@pytest.fixture
def full_disk(monkeypatch):
    """``full_disk("name")``: the disk fills up once a file whose path holds "name" has data."""

    def arm(name):
        real_fsync, real_reserve = os.fsync, os.posix_fallocate

        def full(fd):
            if name in os.readlink(f"/proc/self/fd/{fd}") and os.fstat(fd).st_size:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(os, "fsync", lambda fd: full(fd) or real_fsync(fd))
        monkeypatch.setattr(os, "posix_fallocate", lambda fd, *a: full(fd) or real_reserve(fd, *a))

    return arm


_TRAIN = ("--epochs", 2, "--warmup", 1, "--quiet")
FULL_DISK = {  # output: (arguments, a name in the file written, the option named)
    "export": (lambda w, t: ["export", w.report, "--out", t / "old.csv", "--overwrite"], "old.csv", "--out"),
    "html": (lambda w, t: ["report", w.report, "--html", t / "p.html", "-q"], "p.html", "--html"),
    "corrupt": (lambda w, t: ["corrupt", w.labels, "--out", t / "n.csv"], "n.csv", "--out"),
    "predictions": (lambda w, t: ["predict", w.model, w.images, "--out", t / "p.parquet"], "p.parquet", "--out"),
    "rejected": (lambda w, t: ["check", w.images, w.labels, "--on-bad-image", "skip", "--rejected-out", t / "rej.csv"], "rej.csv", "--rejected-out"),
    "cache": (lambda w, t: ["check", w.images, w.labels, "--cache-dir", t / "cache"], ".npy", "--cache-dir"),
    "report": (lambda w, t: ["audit", w.images, w.labels, "--out", t / "r.parquet", *_TRAIN], "/.r.parquet.", "--out"),  # its temp file, not r.parquet.work/
    "network": (lambda w, t: ["audit", w.images, w.labels, "--out", t / "r.parquet", *_TRAIN], "r.network.safetensors", "--out"),
    "checkpoint": (lambda w, t: ["audit", w.images, w.labels, "--out", t / "r.parquet", *_TRAIN], ".checkpoint-", "--work-dir"),
    "log-json": (lambda w, t: ["audit", w.images, w.labels, "--out", t / "r.parquet", "--log-json", t / "l.jsonl", *_TRAIN], "l.jsonl", "--log-json"),
    "apply": (lambda w, t: ["apply", w.report, w.decisions, "--out", t / "old.csv", "--overwrite"], "old.csv", "--out"),
    "label-studio": (lambda w, t: ["export", w.report, "--format", "label-studio", "--out", t / "t.json"], "t.json", "--out"),
    "model": (lambda w, t: ["finetune", w.report, "--out", t / "m", "--epochs", 1, "--mu", 1, "--quiet"], "model.safetensors", "--out"),
}


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to tell files apart")
@pytest.mark.parametrize("output", FULL_DISK)
def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(world, full_disk, tmp_path, output, monkeypatch):
    build, name, flag = FULL_DISK[output]
    if output != "cache":
        monkeypatch.setenv("LABELCLEAN_CACHE_DIR", str(world.cache))  # decoded already
    if output == "rejected":  # one unreadable image, so that there is a list to write
        shutil.copytree(world.ds, tmp_path / "ds")
        (tmp_path / "ds" / "images" / "digit_0000.png").write_bytes(b"junk")
        world = SimpleNamespace(**{**vars(world), "images": tmp_path / "ds" / "images",
                                   "labels": tmp_path / "ds" / "images" / "labels.csv"})
    old = tmp_path / "old.csv"
    old.write_text("mine")
    full_disk(name)
    refused(run(*build(world, tmp_path)), flag, "no space left")
    assert old.read_text() == "mine"  # --overwrite never lost the previous file
    leftovers = [p.name for p in tmp_path.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == []
    if output == "log-json":
        assert (tmp_path / "l.jsonl").read_text() == ""  # the failed line was cut back out
    if output == "label-studio":
        assert not (tmp_path / "t.label-config.xml").exists()  # no config without its tasks
    if output in ("network", "report"):  # the report and its network appear together or not at all
        assert not (tmp_path / "r.parquet").exists() and not (tmp_path / "r.network.safetensors").exists()


def _namespace(script):
    """Run ``script`` as root of a private user and mount namespace (real tmpfs), or skip."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("needs unprivileged user namespaces (unshare -rm) to mount a real tmpfs")
    return subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=300)


def test_a_real_full_disk_and_read_only_mount(world, tmp_path):
    full, ro = tmp_path / "full", tmp_path / "ro"
    full.mkdir()
    ro.mkdir()
    lc = f"{sys.executable} -m labelclean"
    script = (
        f"mount -t tmpfs -o size=64k tmpfs {full} && mount -t tmpfs -o ro,size=64k tmpfs {ro} && "
        f"(dd if=/dev/zero of={full}/filler bs=4k 2>/dev/null; true) && "
        f"{{ {lc} export {world.report} --out {full}/clean.csv; echo rc=$?; "
        f"{lc} check {world.images} {world.labels} --cache-dir {full}/cache -q; echo rc=$?; "
        f"{lc} report {world.report} --html {ro}/page.html -q; echo rc=$?; "
        f"ls -A {full}; }}"
    )
    done = _namespace(script)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.stdout.count("rc=1") == 3, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and len(errors) == 3, done.stderr
    assert f"--out {full}/clean.csv: cannot write: no space left" in errors[0]
    assert f"--cache-dir {full}/cache" in errors[1] and "no space left" in errors[1]
    assert f"--html {ro}/page.html: cannot write: read-only file system" in errors[2]
    assert done.stdout.split("rc=1")[-1].split() == ["cache", "filler"]  # no temp file left


# 6. a corrupt exported model --------------------------------------------------------------------


def _broken_models(world, tmp_path):
    import json

    def copy(name, change):
        folder = tmp_path / name
        shutil.copytree(world.model, folder)
        change(folder)
        return folder

    def edit(key, value):
        def change(folder):
            cfg = json.loads((folder / "config.json").read_text())
            cfg[key] = value
            (folder / "config.json").write_text(json.dumps(cfg))
        return change

    weights = world.model / "model.safetensors"
    return [
        (copy("json", lambda f: (f / "config.json").write_text("{not json")), "config.json: not a readable JSON"),
        (copy("names", edit("class_names", ["a", "b"])), "class_names has 2 names for num_classes 10"),
        (copy("keys", edit("normalization", None)), "normalization"),
        (copy("arch", edit("architecture", "no_such_net")), "no_such_net"),
        (copy("head", edit("num_classes", 3)), "class_names has 10 names for num_classes 3"),
        (copy("cut", lambda f: (f / "model.safetensors").write_bytes(weights.read_bytes()[:5000])), "may be truncated"),
        (copy("other", edit("architecture", "preact_resnet18")), "does not fit"),
    ]


def test_a_corrupt_model_is_one_named_error(world, tmp_path):
    for folder, needle in _broken_models(world, tmp_path):
        refused(run("predict", folder, world.images, "--out", tmp_path / "p.parquet"), folder.name, needle)
    assert not (tmp_path / "p.parquet").exists()


# 7. one file under two spellings is one file ----------------------------------------------------


def test_two_spellings_of_one_file_are_one_file(world, tmp_path):
    import unicodedata

    from PIL import Image

    images = tmp_path / "img"
    for name in ("cat/1.png", "dog/2.png", unicodedata.normalize("NFC", "cat/café.png")):
        (images / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (len(name), 0, 0)).save(images / name)
    labels = tmp_path / "l.csv"
    labels.write_text("path,label\ndog/../cat/1.png,dog\ncat/1.png,cat\ndog/2.png,dog\n")
    refused(run("check", images, labels), "'cat/1.png' appears on line 2 as 'dog' and on line 3 as 'cat'")
    nfd = unicodedata.normalize("NFD", "cat/café.png")
    labels.write_text(f"path,label\n./cat//1.png,cat\ndog/2.png,dog\n{nfd},cat\ncat/../cat/1.png,cat\n")
    r = run("check", images, labels, "--image-size", 8, "-q")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("3 images in 2 classes")  # NFD matched the NFC file; the duplicate dropped


# 8. Ctrl-C while images are decoded ---------------------------------------------------------------


def test_ctrl_c_while_decoding_stops_at_once_with_130(world, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    common = [world.images, world.labels, "--cache-dir", cache, "--image-size", 16, "-q"]
    monkeypatch.setenv("LABELCLEAN_FAULT", "decode:1:INT")  # Ctrl-C at the second block
    r = run("audit", *common, "--out", tmp_path / "r.parquet")
    assert r.exit_code == 128 + signal.SIGINT, r.output
    assert "interrupted: stopped while decoding images (32 of 100); nothing was written" in r.output
    assert list(cache.glob("*")) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["cache"]
    # the same from a real process, for the exit status a shell sees
    env = {**os.environ, "LABELCLEAN_FAULT": "decode:1:INT"}
    args = [sys.executable, "-m", "labelclean", "check", *map(str, common)]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 130 and "interrupted: stopped while decoding" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and list(cache.glob("*")) == []


# 9. the small confusions ------------------------------------------------------------------------


def test_max_pixels_message_states_the_limit_in_force_and_refuses_nonsense(world, tmp_path):
    from PIL import Image

    images = tmp_path / "img"
    for name, side in (("a/1.png", 8), ("b/2.png", 8), ("b/big.png", 300)):
        (images / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (side, side)).save(images / name)
    r = run("check", images, "--max-pixels", 10_000)
    assert r.exit_code == 1 and "90,000 pixels, above --max-pixels 10,000" in r.output, r.output
    assert "20000" not in r.output
    for value in (-5, 0):
        refused(run("check", images, "--max-pixels", value), f"--max-pixels {value}: expected a positive")


def test_list_valued_labels_are_named_as_such(world, tmp_path):
    manifest = tmp_path / "m.parquet"
    pd.DataFrame({"path": ["digit_0000.png", "digit_0001.png"], "label": [["0"], ["1", "7"]]}).to_parquet(manifest)
    refused(run("check", world.images, manifest), "column 'label' holds list", "one value per row")


def test_rejected_list_has_manifest_lines_and_the_name_the_help_gives(ds):
    (ds.images / "digit_0000.png").write_bytes(b"junk")  # manifest line 2
    out = ds.folder / "r.parquet"
    r = run("audit", ds.images, ds.labels, "--out", out, "--on-bad-image", "skip", *_TRAIN)
    assert r.exit_code == 0, r.output
    rejected = pd.read_csv(ds.folder / "r.rejected.csv")
    assert rejected[["line", "path", "reason"]].values.tolist() == [[2, "digit_0000.png", "not_an_image"]]
    help_text = runner.invoke(app, ["audit", "--help"], env={"COLUMNS": "300"}).output
    assert "report.rejected.csv for report.parquet" in " ".join(help_text.split())


def test_check_twice_with_skip_names_its_own_option(ds):
    (ds.images / "digit_0000.png").write_bytes(b"junk")
    args = ["check", ds.images, ds.labels, "--on-bad-image", "skip", "--rejected-out", ds.folder / "rej.csv", "-q"]
    assert run(*args).exit_code == 0
    refused(run(*args), "--rejected-out", "--overwrite")


def test_demo_refuses_a_bad_noise_before_writing(tmp_path):
    r = run("demo", "--out", tmp_path / "d", "--noise", 1.5)
    refused(r, "--noise 1.5")
    assert "writing" not in r.output  # not even announced
    assert run("demo", "--out", tmp_path / "d", "--epochs", -1).exit_code == 2
    assert not (tmp_path / "d").exists()


def test_finetune_on_moved_images_points_at_image_root_and_skip(ds, world, tmp_path):
    moved = tmp_path / "moved"
    ds.images.rename(moved)
    refused(run("finetune", ds.report, "--out", tmp_path / "m"), "--image-root")
    (moved / "digit_0001.png").unlink()
    args = ["finetune", ds.report, "--out", tmp_path / "m", "--image-root", moved, "--epochs", 1, "--mu", 1, "-q"]
    r = run(*args)
    assert r.exit_code == 1 and "--on-bad-image skip" in r.output  # an option finetune has
    r = run(*args, "--on-bad-image", "skip")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "m" / "model.safetensors").is_file()


def test_a_report_rewritten_by_pandas_is_read(world, tmp_path):
    table = pq.read_table(world.report)
    wide = {pa.string(): pa.large_string(), pa.list_(pa.float32()): pa.large_list(pa.float32())}
    schema = pa.schema([pa.field(f.name, wide.get(f.type, f.type)) for f in table.schema], metadata=table.schema.metadata)
    pq.write_table(table.cast(schema), tmp_path / "wide.parquet")
    r = run("export", tmp_path / "wide.parquet", "--out", tmp_path / "c.csv")
    assert r.exit_code == 0, r.output
    assert pd.read_csv(tmp_path / "c.csv").shape[0] == 100


@pytest.mark.parametrize("column,value,needle", [
    ("action", "maybe", "an action other than keep, relabel, unlabel"),
    ("path", "../../etc/passwd", "a path outside the image folder"),
    ("given_label", "giraffe", "an unknown class"),
])
def test_an_edited_report_is_refused(world, tmp_path, column, value, needle):
    table = pq.read_table(world.report)
    values = table[column].to_pylist()
    values[3] = value
    edited = table.set_column(table.schema.get_field_index(column), column, pa.array(values, pa.string()))
    pq.write_table(edited.cast(table.schema), tmp_path / "e.parquet")
    for command in (["export", tmp_path / "e.parquet", "--out", tmp_path / "c.csv"],
                    ["finetune", tmp_path / "e.parquet", "--out", tmp_path / "m"]):
        refused(run(*command), "e.parquet", needle, "row 3")


def test_evaluate_refuses_a_truth_with_other_class_names(world, tmp_path):
    truth = pd.read_csv(world.labels, dtype=str)
    truth["label"] = "class_" + truth["label"]
    truth.to_csv(tmp_path / "truth.csv", index=False)
    refused(run("evaluate", world.report, "--truth", tmp_path / "truth.csv"), "class_0", "not classes of the report")


def test_weights_that_need_unpickling_are_refused_in_labelclean_words(world, tmp_path):
    import torch

    torch.save({"model": SimpleNamespace(w=torch.zeros(2))}, tmp_path / "pickled.pt")
    (tmp_path / "junk.pt").write_bytes(b"garbage" * 10)
    for name, needle in (("pickled.pt", "holds pickled Python objects"), ("junk.pt", "not a safetensors")):
        line = refused(run("audit", world.images, world.labels, "--out", tmp_path / "r.parquet",
                           "--weights", tmp_path / name, "-q"), name, needle, "never unpickles")
        assert "weights_only" not in line
