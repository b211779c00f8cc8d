import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from labelclean.cli import app
from labelclean.errors import ConfigError, ReportError
from labelclean.evaluate import CIFAR10_CLASSES, cleaning_metrics, corrupt_labels, read_truth

runner = CliRunner()


def test_symmetric_hits_the_rate_and_never_keeps_the_true_label():
    given = np.repeat(np.arange(10), 500)
    noisy = corrupt_labels(given, [str(i) for i in range(10)], noise="symmetric", rate=0.4, seed=1)
    flipped = noisy != given
    assert flipped.mean() == pytest.approx(0.4, abs=1e-9)
    # flips are uniform over the 9 other classes: each offset gets about 1/9
    offsets = np.bincount((noisy[flipped] - given[flipped]) % 10, minlength=10)[1:]
    assert offsets.min() > 0.7 * offsets.mean() and offsets.max() < 1.3 * offsets.mean()


def test_asymmetric_follows_the_paper_pairs_for_cifar_names():
    names = list(CIFAR10_CLASSES)
    given = np.repeat(np.arange(10), 100)
    noisy = corrupt_labels(given, names, noise="asymmetric", rate=0.4, seed=0)
    pairs = {(names[g], names[n]) for g, n in zip(given, noisy) if g != n}
    assert pairs == {("truck", "automobile"), ("bird", "airplane"), ("deer", "horse"), ("cat", "dog"), ("dog", "cat")}
    assert (noisy[given == names.index("truck")] != names.index("truck")).mean() == pytest.approx(0.4)


def test_asymmetric_custom_map_and_next_class():
    given = np.repeat(np.arange(3), 10)
    noisy = corrupt_labels(given, ["a", "b", "c"], noise="asymmetric", rate=0.5, mapping={"a": "c"})
    assert set(noisy[given == 0]) == {0, 2} and (noisy[given != 0] == given[given != 0]).all()
    nxt = corrupt_labels(given, ["a", "b", "c"], noise="asymmetric", rate=1 - 1e-9, seed=0)
    assert ((given + 1) % 3 == nxt).all()
    with pytest.raises(ConfigError, match="unknown classes: zebra"):
        corrupt_labels(given, ["a", "b", "c"], noise="asymmetric", rate=0.5, mapping={"a": "zebra"})
    with pytest.raises(ConfigError, match="--rate"):
        corrupt_labels(given, ["a", "b", "c"], noise="symmetric", rate=1.5)


def _hand_report():
    # 10 samples; truth t, given g; noisy rows are 6..9.
    t = list("aaaaabbbbb")
    g = list("aaaaabbaab")  # rows 7, 8 noisy (b->a); plus row 6 noisy? no: g[6]='b' == t[6]
    g[5] = "a"  # row 5 noisy too: noisy rows = 5, 7, 8
    action = ["keep", "keep", "keep", "keep", "unlabel", "relabel", "keep", "relabel", "unlabel", "keep"]
    clean = ["a", "a", "a", "a", None, "b", "b", "a", None, "b"]  # row 7 relabeled wrongly to a
    pseudo = ["a", "a", "a", "a", "a", "b", "b", "a", "b", "b"]
    frame = pd.DataFrame({"path": [f"{i}.png" for i in range(10)], "given_label": g, "action": action,
                          "clean_label": clean, "pseudo_label": pseudo, "cluster": ["CS"] * 5 + ["NS"] * 5})
    return frame, np.array(t, dtype=object)


def test_metrics_on_a_hand_built_report():
    frame, truth = _hand_report()
    m = cleaning_metrics(frame, truth)
    # flagged rows 4, 5, 7, 8; noisy rows 5, 7, 8 -> P = 3/4, R = 3/3
    assert m["detection_precision"] == pytest.approx(0.75) and m["detection_recall"] == 1.0
    assert m["detection_f1"] == pytest.approx(2 * 0.75 / 1.75)
    # labeled rows: 0,1,2,3,5,6,7,9 (8); correct clean: all but row 7 -> 7/8; recall 7/10
    assert m["label_precision"] == pytest.approx(7 / 8) and m["label_recall"] == pytest.approx(0.7)
    assert m["relabel_accuracy"] == pytest.approx(0.5)  # row 5 right, row 7 wrong
    # cleaned: clean or pseudo for unlabeled (row 4 -> a right, row 8 -> b right); wrong: row 7
    assert m["cleaned_accuracy"] == pytest.approx(0.9)
    assert m["given_precision"] == pytest.approx(0.7)
    assert m["clusters"]["NS"]["noise_rate"] == pytest.approx(0.6)


def test_truth_is_matched_by_normalised_path_and_mismatches_are_named(tmp_path):
    frame, truth = _hand_report()
    p = tmp_path / "truth.csv"
    pd.DataFrame({"path": [f"./{i}.png" for i in range(10)][::-1], "label": truth[::-1]}).to_csv(p, index=False)
    assert (read_truth(p, frame) == truth).all()
    pd.DataFrame({"path": ["0.png", "x.png"], "label": ["a", "b"]}).to_csv(p, index=False)
    with pytest.raises(ReportError, match="no truth for 9 report row"):
        read_truth(p, frame)


def test_cli_corrupt_then_evaluate(tmp_path):
    rows = pd.DataFrame({"path": [f"{i}.png" for i in range(100)], "label": ["x", "y"] * 50})
    rows.to_csv(tmp_path / "labels.csv", index=False)
    r = runner.invoke(app, ["corrupt", str(tmp_path / "labels.csv"), "--rate", "0.2", "--out", str(tmp_path / "noisy.csv"), "--truth-out", str(tmp_path / "truth.csv")])
    assert r.exit_code == 0, r.output
    noisy, truth = pd.read_csv(tmp_path / "noisy.csv"), pd.read_csv(tmp_path / "truth.csv")
    assert (noisy.label != truth.label).mean() == pytest.approx(0.2)
    again = runner.invoke(app, ["corrupt", str(tmp_path / "labels.csv"), "--out", str(tmp_path / "noisy.csv")])
    assert again.exit_code == 1 and "already exists" in again.output
    bad = runner.invoke(app, ["corrupt", str(tmp_path / "labels.csv"), "--noise", "pairwise", "--out", str(tmp_path / "n2.csv")])
    assert bad.exit_code == 1 and "--noise" in bad.output


def test_cli_evaluate_json_on_a_real_audit(tmp_path):
    from labelclean.demo import run_demo

    result = run_demo(tmp_path / "demo", epochs=4, warmup=2)
    r = runner.invoke(app, ["evaluate", str(result.report), "--truth", str(result.truth_csv), "--json"])
    assert r.exit_code == 0, r.output
    m = json.loads(r.output)
    assert m["n"] == 1797 and 0 <= m["label_precision"] <= 1
    missing = runner.invoke(app, ["evaluate", str(tmp_path / "nope.parquet"), "--truth", str(result.truth_csv)])
    assert missing.exit_code == 1 and "nope.parquet" in missing.output
