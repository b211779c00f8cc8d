"""The audit's semi-supervised epilogue (``--semi-epochs``) on saved trainings, side by side.

``audit_quality.py --save-dir DIR`` keeps each training's final state (``SETTING-TRAINING.pkl``).
This script runs today's end of the audit on such a state once per ``--semi-epochs`` and
``--semi-tau`` value: the final clustering, then that many epochs of finetune's mixed
semi-training at that confidence threshold, whose network guesses the unlabeled rows (0
epochs = the report of the clustering alone). Every row of a state shares its training, so
the rows differ only by the epilogue.

Run by hand:  python benchmarks/semi_epilogue.py S/worst-default.pkl S/rand1-default.pkl
              python benchmarks/semi_epilogue.py S/*.pkl --semi-epochs 5 --semi-tau 0.95 0
Figures go to benchmarks/RESULTS.md, section "The audit's semi-supervised epilogue" and its
subsection "No confidence threshold in the epilogue".
"""

from __future__ import annotations

import argparse
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


def replay(path: Path, saved: dict, semi_epochs: int, tau: float) -> dict[str, object]:
    """The report of the state ``saved`` (read from ``path``) with ``semi_epochs``, scored."""
    from audit_quality import score

    from labelclean.fgcm.audit import run_audit
    from labelclean.fgcm.semi import semi_epilogue

    state, run = copy.deepcopy(saved["final"]), copy.deepcopy(saved["run"])
    run.config = dataclasses.replace(run.config, semi_epochs=0)
    start = time.perf_counter()
    result = run_audit(run.dataset, run.config, state=state, run=run)  # the clustering's report
    run.config = dataclasses.replace(run.config, semi_epochs=semi_epochs)
    result = semi_epilogue(result, state, run, tau=tau)
    seconds = time.perf_counter() - start
    semi = result.metadata.get("semi") or {}
    return {
        "state": path.stem,
        "semi epochs": semi_epochs,
        "tau": tau,
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
    args = parser.parse_args()
    limit_threads()
    rows = []
    for path in args.states:
        with open(path, "rb") as fh:
            saved = pickle.load(fh)  # once per state; each replay works on a copy
        for epochs, tau in itertools.product(args.semi_epochs, args.semi_tau):
            if epochs == 0 and tau != args.semi_tau[0]:
                continue  # no epilogue: the threshold changes nothing
            rows.append(replay(path, saved, epochs, tau))
            print({k: round(v, 4) if isinstance(v, float) else v for k, v in rows[-1].items()})
    print(markdown_table(rows, list(rows[0])))


if __name__ == "__main__":
    main()
