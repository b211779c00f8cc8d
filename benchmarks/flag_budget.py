"""How many labels should the report flag? Replays of saved default trainings (issue 15).

The default report flags the labels the network disputes (the max-repeating late label
differs from the given one); when it disputes at most a third of them, only those disputed
in every late epoch (``guard.partly_disputed``). This replays trainings saved by ``audit_quality.py
--save-dir DIR`` and asks two questions the truth can answer:

- P(wrong | d): among the samples whose given label the network's argmax disputed in d of
  the K late epochs, the share whose label is really wrong.
- Given a number of flags n, flag the n most disputed labels (by d, then by the lowest mean
  late confidence of the given label) and keep the rest: n from the true noise rate (an
  oracle no user has) and from estimates the run could compute itself.

Run by hand:  python benchmarks/audit_quality.py --variants default --no-write --save-dir S
              python benchmarks/flag_budget.py S/*-default.pkl
"""

from __future__ import annotations

import argparse
import copy
import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from audit_quality import score  # noqa: E402


def with_flags(frame: pd.DataFrame, flag: np.ndarray) -> pd.DataFrame:
    """The report with exactly ``flag`` flagged: the others keep their given label."""
    out = frame.copy()
    keep = ~flag
    out.loc[keep, "action"] = "keep"
    out.loc[keep, "clean_label"] = out.loc[keep, "given_label"]
    out.loc[flag & (frame["action"] == "keep").to_numpy(), "action"] = "unlabel"
    return out


def late_disputes(history, given: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(d, mean, own)``: late epochs whose argmax disputed the given label ``[N]``, the late
    mean softmax ``[N, C]`` and its confidence in the given label ``[N]``."""
    rows = np.arange(len(given))
    mean = history.late_sums / history.late_epochs
    return history.late_epochs - history.late_counts[rows, given], mean, mean[rows, given]


def noise_estimates(history, given: np.ndarray, flagged: np.ndarray) -> dict[str, float]:
    """Noise rates the run itself can compute, from its late-window history."""
    k = history.late_epochs
    disputes, mean, own = late_disputes(history, given)
    n_classes = mean.shape[1]
    # cleanlab's confident joint: a class counts where its mean confidence reaches the mean
    # self-confidence of the samples given that class
    thresholds = np.array([own[given == c].mean() if (given == c).any() else 1.0 for c in range(n_classes)])
    above = mean >= thresholds[None, :]
    confident = np.where(above, mean, -1).argmax(1)
    counted = above.any(1)
    return {
        "disputed (today's report)": float(flagged.mean()),
        "disputed in all K": float((disputes == k).mean()),
        "confident joint": float((counted & (confident != given)).sum() / max(counted.sum(), 1)),
        "mean d / K": float((disputes / k).mean()),
    }


def replay(path: Path) -> list[dict]:
    from labelclean.fgcm.audit import run_audit

    with open(path, "rb") as fh:
        saved = pickle.load(fh)
    state, run, truth = copy.deepcopy(saved["final"]), copy.deepcopy(saved["run"]), saved["truth"]
    frame = run_audit(run.dataset, run.config, state=state, run=run).to_pandas()
    history, given = saved["final"].history, run.given
    names = np.asarray(run.dataset.manifest.class_names)
    if not (names[given] == frame["given_label"].to_numpy()).all():
        raise SystemExit(f"{path}: the report's rows are not in the history's order")
    k = history.late_epochs
    disputes, _, own = late_disputes(history, given)
    wrong = names[given] != truth
    setting = path.name.split("-default")[0]
    curve = [float(wrong[disputes == d].mean()) if (disputes == d).any() else None for d in range(k + 1)]
    print(f"{setting}: P(wrong | d) for d = 0..{k}:", [None if c is None else round(c, 2) for c in curve])
    flagged = (frame["action"] != "keep").to_numpy()
    order = np.lexsort((own, -disputes))  # most disputed first, then the least confident
    estimates = {"true noise rate (oracle)": float(wrong.mean()), **noise_estimates(history, given, flagged)}
    out = [{"noise": setting, "flags": "today's report", "n / N": float(flagged.mean()), **score(frame, truth)}]
    for name, rate in estimates.items():
        flag = np.zeros(len(given), bool)
        flag[order[: int(round(rate * len(given)))]] = True
        out.append({"noise": setting, "flags": f"top n, n = {name}", "n / N": rate,
                    **score(with_flags(frame, flag), truth)})
    for row in out:
        print(json.dumps(row), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("states", nargs="+", type=Path, help="*-default.pkl from audit_quality.py --save-dir")
    args = parser.parse_args()
    from _common import limit_threads, markdown_table

    limit_threads()
    rows = [row for path in args.states for row in replay(path)]
    cols = ["noise", "flags", "n / N", "label precision", "label recall", "detection P", "detection R",
            "detection F1", "cleaned acc"]
    print(markdown_table(rows, cols))


if __name__ == "__main__":
    main()
