"""Issue 8: a killed or interrupted audit resumes to exactly the report of an unbroken run."""

import os
import signal
import subprocess
import sys

import pandas as pd
import pytest
import torch

from labelclean.checkpoint import WorkDirLock, load_latest, save_checkpoint
from labelclean.errors import CheckpointError

EPOCHS = ["--epochs", "5", "--warmup", "2"]
# The fast suite keeps one kill per phase that matters; the other cases run under -m slow.
SLOW = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from labelclean.data.digits import write_digits

    return write_digits(tmp_path_factory.mktemp("d"), n_per_class=25)


def _audit(data, out, *extra, fault=None, cache, traces_on_disk=False):
    images, labels = data
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LABELCLEAN_CACHE_DIR": str(cache)}
    env.pop("LABELCLEAN_FAULT", None)
    if traces_on_disk:  # as a large run would: traces memory-mapped, checkpointed by reference
        env["LABELCLEAN_TRACE_MEMMAP_BYTES"] = "0"
    if fault:
        env["LABELCLEAN_FAULT"] = fault
    cmd = [sys.executable, "-m", "labelclean", "audit", str(images), str(labels), "--out", str(out),
           "--deterministic", "--no-hflip", "--quiet", "--batch-size", "32", *EPOCHS, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ref")
    proc = _audit(data, tmp / "ref.parquet", cache=tmp / "cache")
    assert proc.returncode == 0, proc.stderr
    return pd.read_parquet(tmp / "ref.parquet")


def _same(a, b):
    pd.testing.assert_frame_equal(a, b, check_exact=True)


@pytest.mark.parametrize(
    "fault,code",
    [pytest.param("epoch_end:2:KILL", -9, marks=SLOW), pytest.param("train_step:3:KILL", -9, marks=SLOW),
     pytest.param("record:1:KILL", -9, marks=SLOW), ("checkpoint_write:3:KILL", -9),
     ("train_step:2:INT", 130), ("record:3:TERM", 143)],
)
def test_killed_then_resumed_equals_unbroken(data, reference, tmp_path, fault, code):
    out = tmp_path / "r.parquet"
    first = _audit(data, out, fault=fault, cache=tmp_path / "cache")
    assert first.returncode == code, first.stderr
    assert not out.exists()
    if code > 0:
        assert "--resume" in first.stderr and "Resume with" in first.stderr
    second = _audit(data, out, "--resume", cache=tmp_path / "cache")
    assert second.returncode == 0, second.stderr
    _same(pd.read_parquet(out), reference)


@pytest.mark.parametrize("fault", ["checkpoint_write:3:KILL", pytest.param("train_step:3:KILL", marks=SLOW)])
def test_traces_on_disk_are_checkpointed_by_reference_and_resume_exactly(data, reference, tmp_path, fault):
    """kill -9 after epoch 4's trace column is written but before (or while) its checkpoint is."""
    out, work = tmp_path / "r.parquet", tmp_path / "r.parquet.work"
    first = _audit(data, out, fault=fault, cache=tmp_path / "cache", traces_on_disk=True)
    assert first.returncode == -9, first.stderr
    payload, _ = load_latest(work)
    history = payload["audit"]["history"]
    assert payload["epoch"] == 3 and history["trace_files"]["epochs"] == 3
    assert "trace_given" not in history and (work / "traces" / "trace_given.npy").is_file()
    second = _audit(data, out, "--resume", cache=tmp_path / "cache", traces_on_disk=True)
    assert second.returncode == 0, second.stderr
    _same(pd.read_parquet(out), reference)
    assert not work.exists()  # checkpoints and trace files go once the report is written


@pytest.mark.slow
def test_two_deterministic_runs_hash_the_same(data, reference, tmp_path):
    assert _audit(data, tmp_path / "b.parquet", cache=tmp_path / "c").returncode == 0
    _same(pd.read_parquet(tmp_path / "b.parquet"), reference)


def test_changed_options_refuse_to_resume_unless_forced(data, tmp_path):
    out = tmp_path / "r.parquet"
    assert _audit(data, out, fault="epoch_end:1:KILL", cache=tmp_path / "c").returncode == -9
    changed = _audit(data, out, "--resume", "--lr", "0.01", cache=tmp_path / "c")
    assert changed.returncode == 1 and "lr: 0.02 -> 0.01" in changed.stderr and "--force" in changed.stderr
    forced = _audit(data, out, "--resume", "--lr", "0.01", "--force", cache=tmp_path / "c")
    assert forced.returncode == 0, forced.stderr


def test_resume_without_checkpoint_is_an_error(data, tmp_path):
    proc = _audit(data, tmp_path / "r.parquet", "--resume", cache=tmp_path / "c")
    assert proc.returncode == 1 and "no readable checkpoint" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_truncated_newest_checkpoint_falls_back_to_the_previous(tmp_path, caplog):
    save_checkpoint(tmp_path, {"epoch": 1, "x": torch.ones(3)})
    newest = save_checkpoint(tmp_path, {"epoch": 2, "x": torch.ones(3) * 2})
    newest.write_bytes(newest.read_bytes()[:50])
    payload, path = load_latest(tmp_path)
    assert payload["epoch"] == 1 and "unreadable" in caplog.text


def test_selection_is_by_the_epoch_stored_inside(tmp_path):
    save_checkpoint(tmp_path, {"epoch": 3})
    os.replace(tmp_path / "checkpoint-00003.pt", tmp_path / "checkpoint-00001.pt")
    save_checkpoint(tmp_path, {"epoch": 2}, keep=5)
    assert load_latest(tmp_path)[0]["epoch"] == 3


class Evil:
    pass


def test_checkpoints_keep_only_tensors_and_plain_values(tmp_path):
    save_checkpoint(tmp_path, {"epoch": 1, "obj": Evil()})
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        load_latest(tmp_path)


def test_lock_stops_a_second_run_and_stale_locks_are_taken_over(tmp_path):
    lock = WorkDirLock(tmp_path)
    with lock.held():
        with pytest.raises(CheckpointError, match="in use by process"):
            WorkDirLock(tmp_path).acquire()
    (tmp_path / "lock").write_text("999999")  # a process that no longer exists
    with WorkDirLock(tmp_path).held():
        assert (tmp_path / "lock").read_text() == str(os.getpid())
    assert not (tmp_path / "lock").exists()


@pytest.mark.slow
def test_earlier_checkpoints_without_resume_are_refused(data, tmp_path):
    out = tmp_path / "r.parquet"
    assert _audit(data, out, fault="epoch_end:1:KILL", cache=tmp_path / "c").returncode == -9
    again = _audit(data, out, cache=tmp_path / "c")
    assert again.returncode == 1 and "pass --resume" in again.stderr


@pytest.mark.slow
def test_shuffled_manifest_gives_the_same_report_sorted_by_path(data, tmp_path):
    images, labels = data
    frame = pd.read_csv(labels).sample(frac=1, random_state=1)
    shuffled = tmp_path / "shuffled.csv"
    frame.to_csv(shuffled, index=False)
    a = _audit((images, labels), tmp_path / "a.parquet", cache=tmp_path / "c")
    b = _audit((images, shuffled), tmp_path / "b.parquet", cache=tmp_path / "c")
    assert a.returncode == 0 and b.returncode == 0
    ra = pd.read_parquet(tmp_path / "a.parquet").sort_values("path").reset_index(drop=True)
    rb = pd.read_parquet(tmp_path / "b.parquet").sort_values("path").reset_index(drop=True)
    _same(ra.drop(columns="index"), rb.drop(columns="index"))
    assert rb["index"].tolist() != ra["index"].tolist()  # rows still name their own manifest line


@pytest.mark.slow
def test_finetune_interrupted_then_resumed_equals_unbroken(tmp_path):
    """finetune --resume: SIGINT mid-run, resume, same weights as an unbroken run."""
    from labelclean.demo import run_demo

    demo = run_demo(tmp_path / "demo", epochs=4, warmup=2)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LABELCLEAN_CACHE_DIR": str(tmp_path / "c")}
    base = [sys.executable, "-m", "labelclean", "finetune", str(demo.report), "--epochs", "3", "--mu", "1",
            "--batch-size", "128", "--quiet"]
    ref = subprocess.run([*base, "--out", str(tmp_path / "ref")], capture_output=True, text=True, env=env, timeout=300)
    assert ref.returncode == 0, ref.stderr

    # interrupt during epoch 2: send SIGINT once the first checkpoint exists
    proc = subprocess.Popen([*base, "--out", str(tmp_path / "m")], stderr=subprocess.PIPE, text=True, env=env)
    work = tmp_path / "m.work"
    import time

    deadline = time.time() + 120
    while not list(work.glob("checkpoint-00001.pt")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Resume with" in err and not (tmp_path / "m").exists()
    again = subprocess.run([*base, "--out", str(tmp_path / "m"), "--resume"], capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    from labelclean.export import load_model

    a, _ = load_model(tmp_path / "ref")
    b, _ = load_model(tmp_path / "m")
    for (k, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(va, vb), k
    assert not work.exists()


def test_run_checkpoints_save_resume_and_refuse(tmp_path):
    """The helper audit and finetune share: a fresh run refuses, resume compares, clear empties."""
    from labelclean._version import __version__
    from labelclean.checkpoint import RunCheckpoints

    ckpts = RunCheckpoints(tmp_path / "w")
    ckpts.refuse_earlier_run()  # nothing there yet
    run_id = {"config": {"lr": 0.1, "device": "cpu"}, "manifest_fingerprint": "abc"}
    ckpts.save(1, **run_id, state={"x": torch.ones(2)})
    with pytest.raises(CheckpointError, match="pass --resume"):
        ckpts.refuse_earlier_run()
    payload, path = ckpts.resume(**run_id)
    assert path.name == "checkpoint-00001.pt" and payload["tool_version"] == __version__
    assert torch.equal(payload["state"]["x"], torch.ones(2))
    ckpts.resume(config={"lr": 0.1, "device": "cuda"}, manifest_fingerprint="abc")  # safe field
    with pytest.raises(CheckpointError, match=r"lr: 0.1 -> 0.2.*--force"):
        ckpts.resume(config={"lr": 0.2}, manifest_fingerprint="abc")
    assert ckpts.resume(config={"lr": 0.2}, manifest_fingerprint="x", force=True)[0]["epoch"] == 1
    RunCheckpoints(tmp_path / "w", is_main=False).save(2, **run_id)  # other ranks never write
    with ckpts.held():
        assert (tmp_path / "w" / "lock").is_file()
    ckpts.clear()
    assert not (tmp_path / "w").exists()
