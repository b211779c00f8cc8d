"""Crowd votes through the CLI: corrupt --annotators, check, audit, report, evaluate, export."""

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from labelclean.cli import app
from labelclean.report.annotators import ANNOTATORS_SCHEMA, annotators_path, read_annotators
from labelclean.report.parquet import CROWD_SCHEMA, read_report

runner = CliRunner()
FAST = ["--epochs", "6", "--warmup", "3", "--no-hflip", "--quiet"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def crowd(tmp_path_factory):
    """300 digits, a simulated crowd of 3 votes per image, and a crowd audit of it."""
    from labelclean.data.digits import write_digits

    folder = tmp_path_factory.mktemp("crowd")
    images, labels = write_digits(folder / "img", layout="csv", n_per_class=30)
    votes = folder / "votes.csv"
    r = invoke("corrupt", labels, "--annotators", 3, "--workers", 12, "--spammers", 0.2,
               "--seed", 1, "--out", votes, "--truth-out", folder / "truth.csv")
    assert r.exit_code == 0, r.output
    out = folder / "report.parquet"
    r = invoke("audit", images, votes, "--out", out, *FAST)
    assert r.exit_code == 0, r.output
    return {"images": images, "labels": labels, "votes": votes, "truth": folder / "truth.csv",
            "out": out, "audit_output": r.output, "folder": folder}


def test_corrupt_annotators_writes_one_row_per_vote(crowd):
    frame = pd.read_csv(crowd["votes"], dtype=str)
    assert frame.columns.tolist() == ["path", "annotator", "label"]
    assert len(frame) == 900 and frame.groupby("path")["annotator"].nunique().eq(3).all()
    assert frame["annotator"].nunique() <= 12 and frame["annotator"].str.match(r"w\d\d").all()
    truth = pd.read_csv(crowd["truth"], dtype=str)
    assert truth.columns.tolist() == ["path", "label"] and len(truth) == 300


def test_corrupt_annotators_prints_the_crowd_and_is_reproducible(crowd, tmp_path):
    r = invoke("corrupt", crowd["labels"], "--annotators", 3, "--workers", 12, "--spammers", 0.2,
               "--seed", 1, "--out", tmp_path / "v.csv")
    assert r.exit_code == 0, r.output
    assert "900 votes (3 per image) by 12 workers (2 spammers)" in r.stdout
    assert "majority vote is right on" in r.stdout
    again = pd.read_csv(tmp_path / "v.csv", dtype=str)
    assert again.columns.tolist() == ["path", "annotator", "label", "true_label"]
    assert (again.drop(columns="true_label") == pd.read_csv(crowd["votes"], dtype=str)).all().all()


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--annotators", 13, "--workers", 12], "--annotators 13"),
     (["--annotators", 3, "--spammers", 1.5], "--spammers 1.5"),
     (["--annotators", 3, "--noise", "asymmetric", "--map", '{"0": "1"}'], "--map applies")],
)
def test_corrupt_annotators_bad_options(crowd, tmp_path, extra, message):
    r = invoke("corrupt", crowd["labels"], "--out", tmp_path / "v.csv", *extra)
    assert r.exit_code == 1 and message in r.output and not (tmp_path / "v.csv").exists()


def test_corrupt_refuses_a_vote_file_as_clean_labels(crowd, tmp_path):
    r = invoke("corrupt", crowd["votes"], "--images", crowd["images"], "--annotators", 2,
               "--out", tmp_path / "v.csv")
    assert r.exit_code == 1 and "already holds votes" in r.output


def test_check_reads_votes(crowd):
    r = invoke("check", crowd["images"], crowd["votes"], "-q")
    assert r.exit_code == 0, r.output
    assert "300 images in 10 classes" in r.stdout and "900 votes by" in r.stdout


def test_audit_report_has_the_crowd_columns_and_the_annotators_beside_it(crowd):
    assert "annotators: " in crowd["audit_output"] and "report.annotators.parquet" in crowd["audit_output"]
    rep = read_report(crowd["out"])
    assert pq.read_schema(crowd["out"]).remove_metadata().equals(CROWD_SCHEMA)
    f = rep.frame
    assert f.columns.tolist() == CROWD_SCHEMA.names and len(f) == 300
    assert (f["n_votes"] == 3).all() and f["n_votes"].dtype == np.int32
    votes = f["votes"][0]
    assert len(votes) == 3 and set(votes[0]) == {"annotator", "label", "p_right"}
    assert all(0 <= v["p_right"] <= 1 for vs in f["votes"] for v in vs)
    shares = [np.mean([v["label"] == g for v in vs]) for vs, g in zip(f["votes"], f["given_label"])]
    assert np.allclose(f["agreement"], shares)
    assert (f.loc[f.action == "keep", "clean_label"] == f.loc[f.action == "keep", "given_label"]).all()
    assert f.loc[f.action == "unlabel", "clean_label"].isna().all()
    assert rep.metadata["crowd"]["n_votes"] == 900 and "network_weight" in rep.metadata["crowd"]
    side = annotators_path(crowd["out"])
    assert side.name == "report.annotators.parquet"
    network = crowd["out"].parent / "report.network.safetensors"  # finetune starts from it
    assert network.is_file() and rep.metadata["network"]["file"] == network.name
    assert pq.read_schema(side).remove_metadata().equals(ANNOTATORS_SCHEMA)
    table = read_annotators(crowd["out"], rep.metadata)
    assert table["estimated_accuracy"].is_monotonic_decreasing and table["n_votes"].sum() == 900


def test_the_crowd_audit_beats_the_majority_vote(crowd):
    r = invoke("evaluate", crowd["out"], "--truth", crowd["truth"], "--json")
    assert r.exit_code == 0, r.output
    scores = json.loads(r.stdout)["crowd"]
    assert scores["final_accuracy"] > scores["majority_accuracy"] + 0.05, scores
    assert scores["consensus_accuracy"] > scores["majority_accuracy"], scores
    assert scores["annotator_rank_correlation"] > 0.5 and scores["n_annotators"] <= 12
    tables = invoke("evaluate", crowd["out"], "--truth", crowd["truth"])
    assert "consensus accuracy" in tables.stdout and "annotator rank correlation" in tables.stdout


def test_report_shows_the_annotators_and_the_split_images(crowd):
    r = invoke("report", crowd["out"])
    assert r.exit_code == 0, r.output
    assert "Annotators" in r.stdout and "most trusted first" in r.stdout
    assert "where the crowd split" in r.stdout


def test_export_writes_the_final_labels(crowd, tmp_path):
    r = invoke("export", crowd["out"], "--out", tmp_path / "final.csv")
    assert r.exit_code == 0, r.output
    final = pd.read_csv(tmp_path / "final.csv", dtype=str)
    frame = read_report(crowd["out"]).frame
    assert final["label"].fillna("").tolist() == frame["clean_label"].fillna("").tolist()


def test_a_stale_annotators_table_of_another_audit_is_refused(crowd, tmp_path):
    import shutil

    shutil.copy(crowd["out"], tmp_path / "report.parquet")
    other = pa.Table.from_pandas(pd.read_parquet(annotators_path(crowd["out"])), preserve_index=False)
    pq.write_table(other.replace_schema_metadata(
        {b"labelclean_annotators": json.dumps({"manifest_fingerprint": "other"}).encode()}),
        tmp_path / "report.annotators.parquet")
    r = invoke("report", tmp_path / "report.parquet")
    assert r.exit_code == 1 and "belongs to another audit" in r.output


def test_annotators_table_is_never_written_over_a_file_labelclean_did_not_write(crowd, tmp_path):
    out = tmp_path / "r.parquet"
    mine = annotators_path(out)
    mine.write_text("my notes")
    for extra in ([], ["--overwrite"]):
        r = invoke("audit", crowd["images"], crowd["votes"], "--out", out, *FAST, *extra)
        assert r.exit_code == 1 and "r.annotators.parquet" in r.output, r.output
        assert mine.read_text() == "my notes" and not out.exists()
    mine.unlink()
    mine.mkdir()
    r = invoke("audit", crowd["images"], crowd["votes"], "--out", out, *FAST)
    assert r.exit_code == 1 and "is a folder" in r.output


def test_annotators_table_may_not_replace_the_votes(crowd, tmp_path):
    votes = tmp_path / "r.annotators.parquet"
    pd.read_csv(crowd["votes"], dtype=str).to_parquet(votes)
    r = invoke("audit", crowd["images"], votes, "--out", tmp_path / "r.parquet", *FAST, "--overwrite")
    assert r.exit_code == 1 and "would replace the input" in r.output
    assert len(pd.read_parquet(votes)) == 900


def test_overwrite_replaces_both_files_of_an_earlier_crowd_audit(crowd, tmp_path):
    import shutil

    out = tmp_path / "report.parquet"
    shutil.copy(crowd["out"], out)
    shutil.copy(annotators_path(crowd["out"]), annotators_path(out))
    r = invoke("audit", crowd["images"], crowd["votes"], "--out", out, *FAST)
    assert r.exit_code == 1 and "already exists" in r.output
    r = invoke("audit", crowd["images"], crowd["votes"], "--out", out, *FAST, "--epochs", 4, "--overwrite")
    assert r.exit_code == 0, r.output
    assert read_report(out).metadata["epochs"] == 4
    assert read_annotators(out, read_report(out).metadata) is not None


def test_wide_votes_through_the_cli(crowd, tmp_path):
    long = pd.read_csv(crowd["votes"], dtype=str)
    long["slot"] = long.groupby("path").cumcount().map({0: "a1", 1: "a2", 2: "a3"})
    wide = long.pivot(index="path", columns="slot", values="label").reset_index()
    wide.loc[0, "a3"] = ""  # a missing vote
    wide.to_csv(tmp_path / "wide.csv", index=False)
    r = invoke("check", crowd["images"], tmp_path / "wide.csv", "--label-column", "a1",
               "--label-column", "a2", "--label-column", "a3", "-q")
    assert r.exit_code == 0, r.output
    assert "899 votes by 3 annotators" in r.stdout


def test_accepting_every_proposal_gives_the_crowd_audits_final_labels(crowd, tmp_path):
    """A real crowd audit: every decision `accept`, in the review's file or as Label Studio's
    submitted pre-annotations, gives the audit's final labels (clean, or its guess where it
    unlabeled) and so its cleaned accuracy, whatever the network's own guesses."""
    from labelclean.interop.label_studio import export_tasks
    from labelclean.review.decisions import report_fingerprint

    rep = read_report(crowd["out"])
    f = rep.frame
    final = dict(zip(f["path"], np.where(f["clean_label"].notna(), f["clean_label"], f["pseudo_label"])))
    kept = f["action"] == "keep"
    assert (kept & (f["pseudo_label"] != f["clean_label"])).any()  # where the two differ
    accept = tmp_path / "d.csv"
    accept.write_text("path,decision\n" + "".join(f"{p},accept\n" for p in f["path"]))
    tasks = export_tasks(rep, document_root=rep.image_root.parent,
                         fingerprint=report_fingerprint(crowd["out"]))
    for t in tasks:
        t["annotations"] = [{"result": t["predictions"][0]["result"], "updated_at": "2024-01-01"}]
    studio = tmp_path / "export.json"
    studio.write_text(json.dumps(tasks))
    truth = pd.read_csv(crowd["truth"], dtype=str).set_index("path")["label"]
    for decisions in (accept, studio):
        out = tmp_path / f"{decisions.stem}.final.csv"
        r = invoke("apply", crowd["out"], decisions, "--out", out)
        assert r.exit_code == 0, r.output
        got = pd.read_csv(out, dtype=str, keep_default_na=False)
        assert dict(zip(got["path"], got["label"])) == final
    r = invoke("evaluate", crowd["out"], "--truth", crowd["truth"], "--json")
    assert r.exit_code == 0, r.output
    right = np.mean([final[p] == truth[p] for p in f["path"]])
    assert abs(right - json.loads(r.stdout)["cleaned_accuracy"]) < 1e-9
