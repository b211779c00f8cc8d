"""Images and datasets that would exhaust memory or hang a run (issue 38, cases 7-10 and 16).

Each is refused up front, with one problem per image naming the file and line (or one
`error:` line), in bounded memory. The runs that could take gigabytes on a broken build go
to a child process under an address-space limit, and its own peak RSS is measured, so the
test fails there (MemoryError) instead of taking the machine's memory.
"""

import os
import subprocess
import sys
import threading
import time

import pytest
from PIL import Image
from typer.testing import CliRunner

from labelclean.cli import app
from labelclean.data.decode import BadImage, decode_image
from labelclean.data.images import load_dataset
from labelclean.errors import ImageError, ManifestError

linux = pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS and /proc/self/status")
AS_LIMIT = 4 << 30  # the fixed `check` peaks at ~1.5 GiB of address space, ~150 MB resident


def _dataset(tmp_path, extra: dict):
    """Four good 8x8 PNGs and the ``extra`` entries (name -> callable making the file)."""
    root = tmp_path / "img"
    root.mkdir()
    rows = []
    for i in range(4):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(root / f"{i}.png")
        rows.append(f"{i}.png,{'ab'[i % 2]}")
    for name, make in extra.items():
        make(root / name)
        rows.append(f"{name},a")
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\n" + "\n".join(rows) + "\n")
    return root, csv


#: Runs ``python ARGS`` under AS_LIMIT and prints, at exit, the peak resident memory of the
#: program it ran (VmHWM: per address space, so it starts afresh at exec; ru_maxrss would
#: carry the forking test process's own peak into the child).
_PEAK_WRAPPER = """
import atexit, resource, runpy, sys
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
def peak():
    with open("/proc/self/status") as fh:
        kb = next(line.split()[1] for line in fh if line.startswith("VmHWM:"))
    sys.stderr.write("\\npeak-kb " + kb + "\\n")
atexit.register(peak)
args = sys.argv[1:]
if args[0] == "-m":
    sys.argv = [args[1], *args[2:]]
    runpy.run_module(args[1], run_name="__main__", alter_sys=True)
else:
    sys.argv = args
    runpy.run_path(args[0], run_name="__main__")
"""


def _bounded(tmp_path, *args, timeout=120):
    """``python *args`` under AS_LIMIT: (returncode, stderr, its own peak RSS in bytes, s)."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    wrapper = tmp_path / "peak_wrapper.py"
    wrapper.write_text(_PEAK_WRAPPER.format(limit=AS_LIMIT))
    start = time.perf_counter()
    with open(tmp_path / f"stderr-{time.time_ns()}", "w+") as err:
        child = subprocess.Popen(
            [sys.executable, wrapper, *map(str, args)], stdout=subprocess.DEVNULL, stderr=err, env=env
        )
        killer = threading.Timer(timeout, child.kill)
        killer.start()
        code = child.wait()
        killer.cancel()
        err.seek(0)
        stderr = err.read()
    seconds = time.perf_counter() - start
    peak = [line for line in stderr.splitlines() if line.startswith("peak-kb ")]
    assert peak, f"the child did not report its peak memory: {stderr[-2000:]}"
    rss = int(peak[-1].split()[1]) * 1024
    stderr = "\n".join(line for line in stderr.splitlines() if not line.startswith("peak-kb "))
    return code, stderr, rss, seconds


# 7. a 2,000,000 x 1 PNG of a few KB ---------------------------------------------------------------


def _strip(width, height=1):
    return lambda p: Image.new("RGB", (width, height), (9, 9, 9)).save(p)


@linux
def test_a_long_strip_is_refused_from_its_header_in_bounded_memory(tmp_path):
    root, csv = _dataset(tmp_path, {"strip.png": _strip(2_000_000)})
    assert (root / "strip.png").stat().st_size < 10_000
    args = ["-m", "labelclean", "check", root, csv, "--image-size", 32, "-q"]
    code, err, rss, _ = _bounded(tmp_path, *args)
    assert code == 1 and "Traceback" not in err, err
    assert (
        "labels.csv line 6: strip.png: aspect_ratio (2,000,000 x 1 pixels, more than 100:1" in err
    )
    assert rss < 600e6, f"peak RSS {rss / 1e6:.0f} MB"  # was a MemoryError (6 GB asked)


@linux
def test_the_resize_works_on_the_centre_square_whatever_the_long_side(tmp_path):
    script = (
        "from PIL import Image; from labelclean.data.decode import resize_square\n"
        "a = resize_square(Image.new('RGB', (2_000_000, 1), (9, 9, 9)), 32)\n"
        "assert a.shape == (3, 32, 32) and (a == 9).all(), a\n"
    )
    (tmp_path / "resize.py").write_text(script)
    code, err, rss, _ = _bounded(tmp_path, tmp_path / "resize.py")
    assert code == 0, err  # was MemoryError: a 64,000,000 x 32 resize before the crop
    assert rss < 600e6, f"peak RSS {rss / 1e6:.0f} MB"


def test_the_aspect_limit_is_100_to_1_either_way(tmp_path):
    root, csv = _dataset(
        tmp_path,
        {"ok.png": _strip(800, 8), "tall.png": _strip(8, 808), "wide.png": _strip(808, 8)},
    )
    with pytest.raises(ImageError) as err:
        load_dataset(root, csv, image_size=8)
    message = str(err.value)
    assert message.startswith("2 bad image(s)") and "ok.png" not in message, message
    assert "line 7: tall.png: aspect_ratio (8 x 808 pixels, more than 100:1" in message
    assert "line 8: wide.png: aspect_ratio (808 x 8 pixels" in message
    ds = load_dataset(root, csv, image_size=8, on_bad_image="skip", max_bad_fraction=0.5)
    assert len(ds.manifest) == 5 and [r.reason for r in ds.rejections] == ["aspect_ratio"] * 2


# 8. a 6 GB file named .png ------------------------------------------------------------------------


@linux
def test_a_6gb_file_is_refused_by_its_size_without_being_read(tmp_path):
    def sparse(p):
        with open(p, "wb") as f:
            f.truncate(6 << 30)  # no disk used

    root, csv = _dataset(tmp_path, {"huge.png": sparse})
    code, err, rss, seconds = _bounded(tmp_path, "-m", "labelclean", "check", root, csv, "-q")
    assert code == 1 and "Traceback" not in err, err
    assert "line 6: huge.png: too_large (6,442,450,944 bytes, more than an image of " in err
    assert "--max-pixels 89,478,485 can take (782,936,744 bytes)" in err, err
    assert rss < 600e6 and seconds < 60, (rss, seconds)  # was read whole: MemoryError


def test_the_size_cap_follows_max_pixels(tmp_path):
    from labelclean.data.decode import max_file_bytes

    cap = max_file_bytes(1_000)
    assert cap == 8 * 1_000 + (64 << 20)  # 16-bit RGBA, uncompressed, plus metadata
    at_cap, above = tmp_path / "at.png", tmp_path / "above.png"
    for path, size in ((at_cap, cap), (above, cap + 1)):
        with open(path, "wb") as f:
            f.truncate(size)
    with pytest.raises(BadImage) as err:
        decode_image(above, max_pixels=1_000)
    assert err.value.reason == "too_large" and "--max-pixels 1,000" in err.value.detail
    with pytest.raises(BadImage) as err:
        decode_image(at_cap, max_pixels=1_000)
    assert err.value.reason != "too_large"  # read (its first bytes only) and judged on them
    with pytest.raises(BadImage) as err:
        decode_image(above, max_pixels=2_000)
    assert err.value.reason != "too_large"


# 9. a FIFO (or a folder) named .png ---------------------------------------------------------------


def test_only_regular_files_are_opened(tmp_path):
    pipe, folder = tmp_path / "pipe.png", tmp_path / "folder.png"
    os.mkfifo(pipe)
    folder.mkdir()
    for path, kind in ((pipe, "a named pipe"), (folder, "a folder")):
        with pytest.raises(BadImage) as err:
            decode_image(path)
        assert err.value.reason == "not_a_file" and kind in err.value.detail, err.value.detail


def test_a_fifo_in_a_manifest_is_named_and_hangs_nothing(tmp_path):
    root, csv = _dataset(tmp_path, {"pipe.png": os.mkfifo})
    args = [sys.executable, "-m", "labelclean", "check", root, csv, "-q"]  # inferred size too
    try:
        done = subprocess.run(list(map(str, args)), capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("check hung on a FIFO")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "line 6: pipe.png: not_a_file (not a regular file but a named pipe" in done.stderr
    rejected = tmp_path / "rejected.csv"
    r = CliRunner().invoke(
        app,
        ["check", *map(str, (root, csv)), "--on-bad-image", "skip", "--max-bad-fraction", "0.5"]
        + ["--rejected-out", str(rejected), "-q", "--image-size", "8"],
    )
    assert r.exit_code == 0, r.output
    assert "6,pipe.png,not_a_file," in rejected.read_text()


def test_report_thumbnails_never_block_on_a_fifo(tmp_path):
    from labelclean.report.thumbs import Thumbnails

    os.mkfifo(tmp_path / "pipe.png")
    got: list = []
    reader = threading.Thread(target=lambda: got.append(Thumbnails(tmp_path, 96).image("pipe.png")))
    reader.daemon = True
    reader.start()
    reader.join(20)
    if reader.is_alive():  # release the blocked open before failing
        os.close(os.open(tmp_path / "pipe.png", os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("a thumbnail blocked on a FIFO")
    assert got == [None]


# 16. a symlink loop -------------------------------------------------------------------------------


def _loop(path):
    os.symlink(path.with_name("other.png"), path)
    os.symlink(path, path.with_name("other.png"))


@pytest.mark.parametrize("outside", [False, True])
def test_a_symlink_loop_is_one_problem_naming_file_and_line(tmp_path, outside):
    root, csv = _dataset(tmp_path, {"loop.png": _loop})
    extra = ["--allow-outside-root"] if outside else []
    r = CliRunner().invoke(app, ["check", str(root), str(csv), "-q", "--image-size", "8", *extra])
    assert r.exit_code == 1 and not isinstance(r.exception, RuntimeError), r.exception
    assert "labels.csv line 6: loop.png: unreadable (a symlink loop" in r.output, r.output


# 10. 100,000 classes ------------------------------------------------------------------------------


def _many_classes(tmp_path, n):
    """``n`` rows of ``n`` classes; no image exists, so any decoding would show as bad images."""
    (tmp_path / "img").mkdir()
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\n" + "".join(f"{i}.png,c{i}\n" for i in range(n)))
    return tmp_path / "img", csv


def test_an_audit_too_large_for_memory_is_refused_before_decoding(tmp_path, monkeypatch):
    import labelclean.fgcm.history as history

    # this machine "has" 64 MiB: 2,000 x 2,000 needs 84 MB, as 100,000^2 needs 196 GiB
    monkeypatch.setattr(history, "machine_memory", lambda: 64 << 20, raising=False)
    root, csv = _many_classes(tmp_path, 2_000)
    cache = tmp_path / "cache"
    args = ["audit", root, csv, "--out", tmp_path / "r.parquet", "--cache-dir", cache, "-q"]
    r = CliRunner().invoke(app, list(map(str, args)))
    assert r.exit_code == 1, r.output
    lines = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    assert "labels.csv: 2,000 images in 2,000 classes" in lines[0]
    assert "need at least 0.08 GiB of memory (21 bytes per image and class)" in lines[0]
    assert "more than the 0.06 GiB this machine has" in lines[0]
    assert not cache.exists() or not list(cache.iterdir())  # nothing decoded
    import labelclean

    with pytest.raises(ManifestError, match="2,000 images in 2,000 classes"):
        labelclean.audit(root, csv, epochs=1, data_options={"cache_dir": cache})


def test_the_estimate_at_100000_classes(monkeypatch):
    from labelclean.fgcm import history

    monkeypatch.setattr(history, "machine_memory", lambda: 64 << 30)
    with pytest.raises(ManifestError, match=r"need at least 195\.58 GiB .* than the 64\.00 GiB"):
        history.check_audit_memory(100_000, 100_000, where="labels.csv")
    history.check_audit_memory(100_000, 1_000, where="labels.csv")  # 1.96 GiB: fits


def test_check_summarises_repeated_warnings(tmp_path):
    root = tmp_path / "img"
    root.mkdir()
    rows = []
    for i in range(18):  # 12 classes of one image, two of three
        Image.new("RGB", (8, 8), (i, 0, 0)).save(root / f"{i}.png")
        rows.append(f"{i}.png,{f'single{i:02d}' if i < 12 else f'many{i % 2}'}")
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\n" + "\n".join(rows) + "\n")
    args = [sys.executable, "-m", "labelclean", "check", str(root), str(csv), "-q"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    singles = [line for line in lines if "has a single sample" in line]
    assert len(singles) == 6, done.stderr  # 5 shown, and the summary naming the last
    assert lines[5] == "WARNING: ... more like the above, counted at the end", lines
    assert "WARNING: ... and 7 more like the above; the last: " in singles[-1]
    assert singles[-1].endswith("class 'single11' has a single sample"), singles[-1]


# 9. ... and a stop is prompt ----------------------------------------------------------------------


def test_a_stop_skips_the_images_left_in_the_block(tmp_path, monkeypatch):
    from labelclean.data import images as images_mod
    from labelclean.errors import Interrupted

    root = tmp_path / "img"
    root.mkdir()
    for i in range(20):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(root / f"{i}.png")
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\n" + "".join(f"{i}.png,{'ab'[i % 2]}\n" for i in range(20)))
    decoded = []
    real = images_mod.decode_image

    def decode(path, **kwargs):
        decoded.append(path.name)
        return real(path, **kwargs)

    monkeypatch.setattr(images_mod, "decode_image", decode)
    cache = tmp_path / "cache"
    with pytest.raises(Interrupted, match=r"stopped while decoding images \(0 of 20\)"):
        # SIGTERM arrives while the first image decodes: the block of 16 is not finished
        load_dataset(
            root, csv, image_size=8, workers=1, cache_dir=cache, should_stop=lambda: bool(decoded)
        )
    assert decoded == ["0.png"]
    assert not list(cache.glob("*.npy")) and not list(cache.glob("*.json"))  # nothing written
