"""The audit's semi-supervised epilogue (``--semi-epochs``) on saved trainings, side by side.

``audit_quality.py --save-dir DIR`` keeps each training's final state (``SETTING-TRAINING.pkl``).
This script runs today's end of the audit on such a state once per ``--semi-epochs``,
``--semi-tau`` and ``--guess`` value: the final clustering, then that many epochs of
finetune's mixed semi-training at that confidence threshold, whose network guesses the
unlabeled rows (0 epochs = the report of the clustering alone), either weighing the given
label (``weighed``, the default, labelclean.fgcm.transition) or not (``plain``: the softmax's
argmax). Every row of a state shares its training, so the rows differ only by the epilogue.

Run by hand:  python benchmarks/semi_epilogue.py S/worst-default.pkl S/rand1-default.pkl
              python benchmarks/semi_epilogue.py S/*.pkl --semi-epochs 5 --semi-tau 0.95 0
              python benchmarks/semi_epilogue.py S/*.pkl --semi-epochs 5 --guess plain weighed
Figures go to benchmarks/RESULTS.md, section "The audit's semi-supervised epilogue" and its
subsections "No confidence threshold in the epilogue" and "The given label as evidence".
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import itertools
import pickle
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import limit_threads, markdown_table  # noqa: E402

from labelclean.fgcm.semi import SEMI_TAU  # noqa: E402


def _plain(probs, given, clean, plain, **_):  # the guess before labelclean.fgcm.transition
    return plain, 1.0


def replay(
    path: Path, saved: dict, semi_epochs: int, tau: float, guess: str = "weighed"
) -> dict[str, object]:
    """The report of the state ``saved`` (read from ``path``) with ``semi_epochs``, scored."""
    from unittest import mock

    from audit_quality import score

    from labelclean.fgcm import semi
    from labelclean.fgcm.audit import run_audit

    state, run = copy.deepcopy(saved["final"]), copy.deepcopy(saved["run"])
    run.config = dataclasses.replace(run.config, semi_epochs=0)
    start = time.perf_counter()
    result = run_audit(run.dataset, run.config, state=state, run=run)  # the clustering's report
    run.config = dataclasses.replace(run.config, semi_epochs=semi_epochs)
    plain = mock.patch.object(semi, "guess_flagged", _plain)
    with plain if guess == "plain" else contextlib.nullcontext():
        result = semi.semi_epilogue(result, state, run, tau=tau)
    seconds = time.perf_counter() - start
    semi = result.metadata.get("semi") or {}
    return {
        "state": path.stem,
        "semi epochs": semi_epochs,
        "tau": tau,
        "guess": guess,
        **score(result.to_pandas(), saved["truth"]),
        "guesses changed": semi.get("changed", 0),
        "pair rows kept": semi.get("kept_systematic_pair", 0),
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("states", nargs="+", type=Path, help="SETTING-TRAINING.pkl files")
    parser.add_argument("--semi-epochs", nargs="+", type=int, default=[0, 5])
    parser.add_argument(
        "--semi-tau", nargs="+", type=float, default=[SEMI_TAU], help="confidence thresholds"
    )
    parser.add_argument("--guess", nargs="+", choices=["weighed", "plain"], default=["weighed"])
    args = parser.parse_args()
    limit_threads()
    rows = []
    for path in args.states:
        with open(path, "rb") as fh:
            saved = pickle.load(fh)  # once per state; each replay works on a copy
        for epochs, tau, guess in itertools.product(args.semi_epochs, args.semi_tau, args.guess):
            if epochs == 0 and (tau, guess) != (args.semi_tau[0], args.guess[0]):
                continue  # no epilogue: the threshold and the guess change nothing
            rows.append(replay(path, saved, epochs, tau, guess))
            print({k: round(v, 4) if isinstance(v, float) else v for k, v in rows[-1].items()})
    print(markdown_table(rows, list(rows[0])))


if __name__ == "__main__":
    main()
