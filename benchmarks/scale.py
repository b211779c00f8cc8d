"""Bookkeeping cost per epoch at 100k and 1M samples (issue 9), no training involved.

Synthetic softmax outputs stand in for the model, so the figures isolate what grows with
N: the history update, joint confidence + pseudo labels, the GMM fit (cold and
warm-started) and assignment, the report write, and the memmap image cache. Peak memory is
the process's max RSS, measured for each N in a fresh subprocess.

Run by hand:  python benchmarks/scale.py [--sizes 100000 1000000] [--classes 10] [--epochs 20]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import limit_threads, markdown_table, replace_section  # noqa: E402


def _timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def measure(n: int, n_classes: int, epochs: int, image_size: int) -> dict:
    """All timings for one N (run in its own process so max RSS belongs to this N)."""
    limit_threads()
    from labelclean.fgcm.clustering import fit_gmm, gmm_posteriors
    from labelclean.fgcm.history import ConfidenceHistory
    from labelclean.report.parquet import build_report_table, write_report

    rng = np.random.default_rng(0)
    given = rng.integers(0, n_classes, n)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    history = ConfidenceHistory(n, n_classes, epochs)
    logits = rng.standard_normal((n, n_classes), dtype=np.float32)
    logits[np.arange(n), given] += 2.5
    update_s = []
    for _ in range(3):
        logits += rng.standard_normal((n, n_classes), dtype=np.float32) * 0.3
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        _, s = _timed(history.update, probs, given)
        update_s.append(s)
    del probs
    (pseudo, jc_s) = _timed(history.pseudo_labels)
    joint, s2 = _timed(history.joint_confidence, given)
    cold, cold_s = _timed(fit_gmm, joint, n_components=5, seed=0)
    warm, warm_s = _timed(fit_gmm, joint, n_components=5, init=cold, seed=0)
    post, assign_s = _timed(gmm_posteriors, joint, warm)
    e = history.epochs_recorded
    trace_given, trace_pseudo = history.traces()
    columns = {
        "index": np.arange(n),
        "path": [f"img/{i}.jpg" for i in range(n)],
        "given_label": given,
        "cluster": np.array(["CS", "CH", "NS", "NHR", "NHI"])[post.argmax(1)],
        "action": np.full(n, "keep"),
        "clean_label": given,
        "pseudo_label": pseudo,
        "conf_given": joint[:, 0],
        "conf_pseudo": joint[:, 1],
        "cluster_prob": post.max(1),
        "admitted_epoch": np.zeros(n, np.int32),
        "trace_given": trace_given,
        "trace_pseudo": trace_pseudo,
    }
    names = [str(c) for c in range(n_classes)]
    meta = {
        "tool_version": "bench",
        "image_root": "/",
        "class_names": names,
        "config": {},
        "seed": 0,
        "epochs": e,
        "device": "cpu",
        "mode": "bench",
        "wall_time_s": 0.0,
    }
    with tempfile.TemporaryDirectory() as tmp:
        table, build_s = _timed(build_report_table, columns, class_names=names)
        _, write_s = _timed(write_report, Path(tmp) / "r.parquet", table, meta, overwrite=True)
        # the memmap image cache: fill in chunks, then read random batches
        cache = np.lib.format.open_memmap(
            Path(tmp) / "c.npy", mode="w+", dtype=np.uint8, shape=(n, 3, image_size, image_size)
        )
        t0 = time.perf_counter()
        chunk = rng.integers(0, 255, (4096, 3, image_size, image_size), dtype=np.uint8)
        for start in range(0, n, 4096):
            cache[start : start + 4096] = chunk[: min(4096, n - start)]
        cache.flush()
        fill_s = time.perf_counter() - t0
        del cache
        cache = np.load(Path(tmp) / "c.npy", mmap_mode="r")
        t0 = time.perf_counter()
        for _ in range(20):
            idx = np.sort(rng.choice(n, 256, replace=False))
            np.asarray(cache[idx])
        read_s = (time.perf_counter() - t0) / 20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "N": n,
        "history update s": float(np.median(update_s)),
        "pseudo+joint s": jc_s + s2,
        "GMM cold s": cold_s,
        "GMM warm s": warm_s,
        "warm iters": int(warm.n_iter),
        "assign s": assign_s,
        "report write s": build_s + write_s,
        "cache fill s": fill_s,
        "cache batch read ms": read_s * 1e3,
        "history MB": ConfidenceHistory.memory_bytes(n, n_classes, epochs) / 2**20,
        "budget MB": (n_classes + epochs) * 8 * n / 2**20,
        "peak RSS MB": (rss - 0) / 2**20,
        "RSS before MB": rss0 / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--sklearn", action="store_true", help="also time sklearn's cold fit")
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(measure(args.one, args.classes, args.epochs, args.image_size)))
        return
    rows = []
    for n in args.sizes:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one",
                str(n),
                "--classes",
                str(args.classes),
                "--epochs",
                str(args.epochs),
                "--image-size",
                str(args.image_size),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    if args.sklearn:
        from sklearn.mixture import GaussianMixture

        rng = np.random.default_rng(0)
        pts = rng.random((args.sizes[-1], 2)).astype(np.float32)
        t0 = time.perf_counter()
        GaussianMixture(5, covariance_type="full", random_state=0).fit(pts)
        rows[-1]["sklearn cold s"] = time.perf_counter() - t0
    table = markdown_table(rows, list(rows[0]) + (["sklearn cold s"] if args.sklearn else []))
    print(table)
    if not args.no_write:
        replace_section(
            "Scale: bookkeeping per epoch",
            f"`python benchmarks/scale.py {' '.join(sys.argv[1:])}`: synthetic softmax for "
            f"{args.classes} classes, history sized for {args.epochs} epochs, "
            f"{args.image_size}px memmap cache. Targets: warm GMM step < 0.5 s at 1M; history "
            f"under (C + E) x 8 bytes per sample.\n\n{table}",
        )


if __name__ == "__main__":
    main()
