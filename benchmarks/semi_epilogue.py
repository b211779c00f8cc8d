"""The audit's semi-supervised epilogue (``--semi-epochs``) on saved trainings, side by side.

``audit_quality.py --save-dir DIR`` keeps each training's final state (``SETTING-TRAINING.pkl``).
This script runs today's end of the audit on such a state once per ``--semi-epochs`` value:
the final clustering, then that many epochs of finetune's mixed semi-training whose network
guesses the unlabeled rows (0 = the report of the clustering alone). Every row of a state
shares its training, so the rows differ only by the epilogue.

Run by hand:  python benchmarks/semi_epilogue.py S/worst-default.pkl S/rand1-default.pkl
Figures go to benchmarks/RESULTS.md, section "The audit's semi-supervised epilogue".
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import pickle
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import limit_threads, markdown_table  # noqa: E402


def replay(path: Path, saved: dict, semi_epochs: int) -> dict[str, object]:
    """The report of the state ``saved`` (read from ``path``) with ``semi_epochs``, scored."""
    from audit_quality import score

    from labelclean.fgcm.audit import run_audit

    state, run = copy.deepcopy(saved["final"]), copy.deepcopy(saved["run"])
    run.config = dataclasses.replace(run.config, semi_epochs=semi_epochs)
    start = time.perf_counter()
    result = run_audit(run.dataset, run.config, state=state, run=run)
    seconds = time.perf_counter() - start
    semi = result.metadata.get("semi") or {}
    return {
        "state": path.stem,
        "semi epochs": semi_epochs,
        **score(result.to_pandas(), saved["truth"]),
        "guesses changed": semi.get("changed", 0),
        "pair rows kept": semi.get("kept_systematic_pair", 0),
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("states", nargs="+", type=Path, help="SETTING-TRAINING.pkl files")
    parser.add_argument("--semi-epochs", nargs="+", type=int, default=[0, 5])
    args = parser.parse_args()
    limit_threads()
    rows = []
    for path in args.states:
        with open(path, "rb") as fh:
            saved = pickle.load(fh)  # once per state; each replay works on a copy
        for epochs in args.semi_epochs:
            rows.append(replay(path, saved, epochs))
            print({k: round(v, 4) if isinstance(v, float) else v for k, v in rows[-1].items()})
    print(markdown_table(rows, list(rows[0])))


if __name__ == "__main__":
    main()
