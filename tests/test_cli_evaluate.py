"""`labelclean corrupt` and `labelclean evaluate`: files written, figures printed, exit codes."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from labelclean.cli import app
from labelclean.report.parquet import build_report_table, write_report

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def labels_csv(tmp_path):
    rows = pd.DataFrame(
        {"path": [f"./img/{i}.png" for i in range(200)], "label": ["x", "y", "z", "w"] * 50}
    )
    rows.to_csv(tmp_path / "labels.csv", index=False)
    return tmp_path / "labels.csv"


def test_corrupt_csv_writes_true_label_column_and_prints_the_rate(tmp_path, labels_csv):
    r = invoke(
        "corrupt", labels_csv, "--rate", "0.3", "--seed", "1", "--out", tmp_path / "noisy.csv"
    )
    assert r.exit_code == 0, r.output
    assert "60 labels flipped (30.0%" in r.stdout and "truth:" in r.stdout
    noisy = pd.read_csv(tmp_path / "noisy.csv")
    assert noisy.columns.tolist() == ["path", "label", "true_label"]
    assert noisy["path"][0] == "img/0.png"  # normalised like the manifest reader
    assert (noisy.label != noisy.true_label).sum() == 60
    assert (noisy.true_label == ["x", "y", "z", "w"] * 50).all()
    again = invoke(
        "corrupt", labels_csv, "--rate", "0.3", "--seed", "1", "--out", tmp_path / "n2.csv"
    )
    assert again.exit_code == 0 and (pd.read_csv(tmp_path / "n2.csv") == noisy).all().all()


def test_corrupt_refuses_existing_outputs_unless_overwrite(tmp_path, labels_csv):
    out = tmp_path / "noisy.csv"
    out.write_text("keep me")
    r = invoke("corrupt", labels_csv, "--out", out)
    assert r.exit_code == 1 and "already exists" in r.stderr and "--overwrite" in r.stderr
    assert out.read_text() == "keep me"
    assert invoke("corrupt", labels_csv, "--out", out, "--overwrite").exit_code == 0
    assert len(pd.read_csv(out)) == 200


def test_corrupt_truth_out_and_parquet_by_suffix(tmp_path, labels_csv):
    r = invoke(
        "corrupt",
        labels_csv,
        "--rate",
        "0.5",
        "--out",
        tmp_path / "noisy.parquet",
        "--truth-out",
        tmp_path / "truth.csv",
    )
    assert r.exit_code == 0, r.output
    noisy, truth = pd.read_parquet(tmp_path / "noisy.parquet"), pd.read_csv(tmp_path / "truth.csv")
    assert noisy.columns.tolist() == ["path", "label"] and truth.columns.tolist() == [
        "path",
        "label",
    ]
    assert (noisy.label != truth.label).sum() == 100


def test_corrupt_reads_an_image_folder_and_parquet_with_other_columns(tmp_path):
    for cls in ("cat", "dog"):
        (tmp_path / "tree" / cls).mkdir(parents=True)
        for i in range(10):
            (tmp_path / "tree" / cls / f"{i}.png").write_bytes(b"")  # corrupt never decodes images
    r = invoke("corrupt", tmp_path / "tree", "--rate", "0.2", "--out", tmp_path / "a.csv")
    assert r.exit_code == 0, r.output
    out = pd.read_csv(tmp_path / "a.csv")
    assert out["path"][0] == "cat/0.png" and (out.label != out.true_label).sum() == 4
    pd.DataFrame({"file": [f"{i}.jpg" for i in range(10)], "cls": ["a", "b"] * 5}).to_parquet(
        tmp_path / "m.parquet"
    )
    r = invoke(
        "corrupt",
        tmp_path / "m.parquet",
        "--path-column",
        "file",
        "--label-column",
        "cls",
        "--images",
        tmp_path / "tree",
        "--rate",
        "0.2",
        "--out",
        tmp_path / "b.csv",
    )
    assert r.exit_code == 0, r.output
    assert (pd.read_csv(tmp_path / "b.csv").pipe(lambda f: f.label != f.true_label)).sum() == 2
    r = invoke("corrupt", tmp_path / "m.parquet", "--out", tmp_path / "c.csv")
    assert r.exit_code == 1 and "missing column(s) path, label" in r.stderr


def test_corrupt_asymmetric_map_inline_file_and_default(tmp_path, labels_csv):
    r = invoke(
        "corrupt",
        labels_csv,
        "--noise",
        "asymmetric",
        "--rate",
        "0.4",
        "--map",
        '{"x": "y"}',
        "--out",
        tmp_path / "a.csv",
    )
    assert r.exit_code == 0, r.output
    assert "x -> y: 20 of 50" in r.stdout
    a = pd.read_csv(tmp_path / "a.csv")
    assert set(zip(a.true_label[a.label != a.true_label], a.label[a.label != a.true_label])) == {
        ("x", "y")
    }
    (tmp_path / "map.json").write_text('{"w": "z", "z": "w"}')
    r = invoke(
        "corrupt",
        labels_csv,
        "--noise",
        "asymmetric",
        "--map",
        tmp_path / "map.json",
        "--rate",
        "0.2",
        "--out",
        tmp_path / "b.csv",
    )
    assert r.exit_code == 0 and "w -> z: 10 of 50" in r.stdout and "z -> w: 10 of 50" in r.stdout
    r = invoke(
        "corrupt", labels_csv, "--noise", "asymmetric", "--rate", "0.2", "--out", tmp_path / "c.csv"
    )
    assert (
        r.exit_code == 0 and "w -> x: 10 of 50" in r.stdout
    )  # next class (classes sorted: w x y z)


@pytest.mark.parametrize(
    "args, code, flag",
    [
        (["--rate", "1"], 1, "--rate"),
        (["--rate", "-0.2"], 1, "--rate"),
        (["--noise", "pairflip"], 2, "--noise"),
        (
            ["--noise", "asymmetric", "--map", '{"x": "lion"}'],
            1,
            "--map names unknown classes: lion",
        ),
        (["--noise", "asymmetric", "--map", "{oops"], 1, "--map: not valid JSON"),
        (["--noise", "asymmetric", "--map", "nofile.json"], 1, "--map 'nofile.json': neither"),
        (["--noise", "asymmetric", "--map", '["x"]'], 1, "--map: expected a JSON object"),
        (["--map", '{"x": "y"}'], 1, "--map applies to --noise asymmetric"),
    ],
)
def test_corrupt_validation_names_the_option(tmp_path, labels_csv, args, code, flag):
    r = invoke("corrupt", labels_csv, "--out", tmp_path / "n.csv", *args)
    assert r.exit_code == code, r.output
    assert flag in r.stderr
    assert not (tmp_path / "n.csv").exists()


def test_corrupt_rejects_unknown_output_format(tmp_path, labels_csv):
    r = invoke("corrupt", labels_csv, "--out", tmp_path / "n.json")
    assert r.exit_code == 1 and "--out" in r.stderr and ".parquet" in r.stderr
    assert list(tmp_path.glob("n.json*")) == []


def _metadata(tmp_path, names, epochs):
    """The report metadata evaluate needs (no audit ran)."""
    return {
        "tool_version": "0.1.0",
        "image_root": str(tmp_path),
        "class_names": names,
        "config": {},
        "seed": 0,
        "epochs": epochs,
        "device": "cpu",
        "mode": "train",
        "wall_time_s": 0.1,
    }


def write_hand_report(tmp_path):
    """The hand-built report of test_evaluate (detection P = R = .75, label P .75, R .6)."""
    names = ["a", "b", "c"]
    code = {n: i for i, n in enumerate(names)}
    given, clean, pseudo = list("aaabbaacbc"), list("aaab-bbcb-"), list("aaabbbbcba")
    action = ["keep"] * 4 + ["unlabel", "relabel", "relabel", "keep", "keep", "unlabel"]
    table = build_report_table(
        {
            "index": np.arange(10),
            "path": [f"img/{i}.png" for i in range(10)],
            "given_label": [code[g] for g in given],
            "cluster": ["CS", "CS", "CH", "CH", "NHI", "NS", "NS", "CS", "CH", "NHR"],
            "action": action,
            "clean_label": [code.get(c, -1) for c in clean],
            "pseudo_label": [code[p] for p in pseudo],
            "conf_given": np.full(10, 0.5),
            "conf_pseudo": np.full(10, 0.6),
            "cluster_prob": np.full(10, 0.9),
            "admitted_epoch": np.where(np.array(action) == "unlabel", -1, 1),
            "trace_given": np.zeros((10, 2)),
            "trace_pseudo": np.zeros((10, 2)),
        },
        class_names=names,
    )
    path = write_report(tmp_path / "report.parquet", table, _metadata(tmp_path, names, 2), overwrite=False)
    truth = pd.DataFrame(
        {
            "path": [f"./img/{i}.png" for i in range(10)],
            "label": given,
            "true_label": list("aaabbbccca"),
        }
    )
    truth.to_csv(tmp_path / "truth.csv", index=False)
    return path, tmp_path / "truth.csv"


def test_evaluate_json_gives_the_hand_counted_figures(tmp_path):
    report, truth = write_hand_report(tmp_path)
    r = invoke("evaluate", report, "--truth", truth, "--json")  # true_label column picked by itself
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)
    assert (m["detection_precision"], m["detection_recall"], m["detection_f1"]) == (
        0.75,
        0.75,
        0.75,
    )
    assert (
        m["label_precision"],
        m["label_recall"],
        m["relabel_accuracy"],
        m["cleaned_accuracy"],
    ) == (0.75, 0.6, 0.5, 0.8)
    assert m["given_precision"] == 0.6 and m["clusters"]["NS"]["noise_rate"] == 1.0
    # the "label" column is the given labels: scored against themselves nothing is noisy
    r = invoke("evaluate", report, "--truth", truth, "--truth-label-column", "label", "--json")
    m = json.loads(r.stdout)
    assert m["noisy"] == 0 and m["detection_recall"] is None and m["detection_precision"] == 0.0


def test_evaluate_prints_tables(tmp_path):
    report, truth = write_hand_report(tmp_path)
    r = runner.invoke(app, ["evaluate", str(report), "--truth", str(truth)], env={"COLUMNS": "160"})
    assert r.exit_code == 0, r.output
    out = r.stdout
    for text in (
        "detection precision",
        "0.750",
        "label recall",
        "0.600",
        "cleaned accuracy",
        "0.800",
        "per cluster",
        "per class",
        "(unlabeled)",
        "relabels",
        "keep 6, relabel 2, unlabel 2",
    ):
        assert text in out, text
    assert "n/a" not in out


def test_evaluate_errors_name_the_files(tmp_path):
    report, truth = write_hand_report(tmp_path)
    r = invoke("evaluate", tmp_path / "nope.parquet", "--truth", truth)
    assert r.exit_code == 1 and "nope.parquet: no such report" in r.stderr
    r = invoke("evaluate", truth, "--truth", truth)
    assert r.exit_code == 1 and "truth.csv: not a Parquet file" in r.stderr
    pd.DataFrame({"path": ["img/0.png", "img/99.png"], "label": ["a", "b"]}).to_csv(
        tmp_path / "t.csv", index=False
    )
    r = invoke("evaluate", report, "--truth", tmp_path / "t.csv")
    assert r.exit_code == 1
    assert "no truth for 9 report row(s): img/1.png" in r.stderr and "img/99.png" in r.stderr
    r = invoke("evaluate", report, "--truth", truth, "--truth-label-column", "gold")
    assert (
        r.exit_code == 1 and "no column 'gold'" in r.stderr and "--truth-label-column" in r.stderr
    )
    assert invoke("evaluate", report).exit_code == 2  # --truth is required: a usage error


def test_corrupt_then_evaluate_round_trip(tmp_path, labels_csv):
    """corrupt's output is evaluate's truth: a report that keeps every noisy label finds nothing."""
    assert (
        invoke("corrupt", labels_csv, "--rate", "0.25", "--out", tmp_path / "noisy.csv").exit_code
        == 0
    )
    noisy = pd.read_csv(tmp_path / "noisy.csv")
    names = ["w", "x", "y", "z"]
    codes = noisy["label"].map({n: i for i, n in enumerate(names)}).to_numpy()
    n = len(noisy)
    table = build_report_table(
        {
            "index": np.arange(n),
            "path": noisy["path"].tolist(),
            "given_label": codes,
            "cluster": np.full(n, "CS"),
            "action": np.full(n, "keep"),
            "clean_label": codes,
            "pseudo_label": codes,
            "conf_given": np.ones(n),
            "conf_pseudo": np.ones(n),
            "cluster_prob": np.ones(n),
            "admitted_epoch": np.zeros(n),
            "trace_given": np.ones((n, 1)),
            "trace_pseudo": np.ones((n, 1)),
        },
        class_names=names,
    )
    write_report(tmp_path / "r.parquet", table, _metadata(tmp_path, names, 1), overwrite=False)
    m = json.loads(
        invoke(
            "evaluate", tmp_path / "r.parquet", "--truth", tmp_path / "noisy.csv", "--json"
        ).stdout
    )
    assert m["noisy"] == 50 and m["given_precision"] == 0.75 and m["label_precision"] == 0.75
    assert m["detection_recall"] == 0.0 and m["detection_precision"] is None
