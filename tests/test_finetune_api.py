"""labelclean.finetune() and labelclean.predict(): the library verbs behind the CLI (issue 18.2)."""

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import labelclean
from labelclean.cli import app
from labelclean.errors import CheckpointError, ConfigError, ReportError

runner = CliRunner()


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A 2-epoch audit of 200 digits, written by the Python API."""
    from labelclean.data.digits import write_digits

    tmp = tmp_path_factory.mktemp("ft")
    images, labels = write_digits(tmp / "d", layout="csv", n_per_class=20)
    result = labelclean.audit(images, labels, epochs=2, model="small_cnn", hflip=False)
    return images, labels, result.write(tmp / "r.parquet")


def test_finetune_exports_a_model_that_predict_loads(report, tmp_path):
    images, labels, path = report
    epochs, notes = [], []
    result = labelclean.finetune(path, tmp_path / "m", epochs=2, mu=1, batch_size=32,
                                 on_epoch=epochs.append, log=notes.append)
    assert [line["epoch"] for line in epochs] == [1, 2] and result.history == epochs
    assert any("labeled and" in n for n in notes)
    assert result.n_labeled + result.n_unlabeled == 200
    model, cfg = labelclean.load_model(tmp_path / "m")
    assert cfg["class_names"] == [str(i) for i in range(10)] and cfg["finetune"]["epochs"] == 2
    x = torch.randn(2, 3, cfg["image_size"], cfg["image_size"])
    with torch.no_grad():
        assert torch.allclose(model(x), result.model.eval()(x), atol=1e-5)
    assert not (tmp_path / "m.work").exists()  # checkpoints go once the model is written
    pred = runner.invoke(app, ["predict", str(tmp_path / "m"), str(images), str(labels),
                               "--out", str(tmp_path / "p.csv"), "--quiet"])
    assert pred.exit_code == 0, pred.output
    cli = pd.read_csv(tmp_path / "p.csv")
    found = labelclean.predict(tmp_path / "m", images, labels)  # what the CLI wrote
    assert len(cli) == 200 and found.frame["prediction"].astype(int).tolist() == cli["prediction"].tolist()
    assert found.accuracy == pytest.approx(cli["correct"].mean()) and not found.rejections


def test_bad_input_raises_the_library_errors(report, tmp_path):
    _, _, path = report
    with pytest.raises(ConfigError, match="--epochs 0"):  # options first, before any reading
        labelclean.finetune(tmp_path / "missing.parquet", tmp_path / "m", epochs=0)
    with pytest.raises(ReportError):
        labelclean.finetune(tmp_path / "missing.parquet", tmp_path / "m")
    with pytest.raises(ConfigError, match="--image-root"):
        labelclean.finetune(path, tmp_path / "m", image_root=tmp_path / "nowhere")
    with pytest.raises(TypeError, match="config= or individual options"):
        labelclean.finetune(path, tmp_path / "m", config=labelclean.FinetuneConfig(), epochs=1)
    with pytest.raises(CheckpointError, match="--resume"):
        labelclean.finetune(path, tmp_path / "m", epochs=1, resume=True)
    assert not (tmp_path / "m").exists()


def test_interrupted_keeps_the_checkpoints_and_exports_nothing(report, tmp_path):
    from labelclean.api import FinetuneInterrupted

    _, _, path = report
    first = tmp_path / "m.work" / "checkpoint-00001.pt"

    def stop_in_epoch_2():
        return first.exists()

    with pytest.raises(FinetuneInterrupted) as stopped:
        labelclean.finetune(path, tmp_path / "m", epochs=3, mu=1, batch_size=32,
                            should_stop=stop_in_epoch_2)
    assert stopped.value.work_dir == tmp_path / "m.work" and not (tmp_path / "m").exists()
    assert [p.name for p in (tmp_path / "m.work").glob("checkpoint-*.pt")] == ["checkpoint-00001.pt"]
    with pytest.raises(CheckpointError, match="pass --resume"):
        labelclean.finetune(path, tmp_path / "m", epochs=3, mu=1, batch_size=32)
    with pytest.raises(CheckpointError, match="epochs: 3 -> 2"):
        labelclean.finetune(path, tmp_path / "m", epochs=2, mu=1, batch_size=32, resume=True)
    result = labelclean.finetune(path, tmp_path / "m", epochs=3, mu=1, batch_size=32, resume=True)
    assert [line["epoch"] for line in result.history] == [1, 2, 3]
    assert (tmp_path / "m" / "model.safetensors").is_file() and not (tmp_path / "m.work").exists()


def test_finetune_says_how_many_kept_labels_it_trains_as_unlabeled(report, tmp_path):
    """Labels the report kept only because little of the data is wrong train as unlabeled."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from labelclean.report.parquet import read_report, write_report

    _, _, path = report
    table = pq.read_table(path)
    keep = [i for i, a in enumerate(table.column("action").to_pylist()) if a == "keep"][:3]
    guard = [("partly_disputed" if i in keep else g) for i, g in enumerate(table.column("guard").to_pylist())]
    table = table.set_column(table.schema.get_field_index("guard"), "guard", pa.array(guard, pa.string()))
    edited = write_report(tmp_path / "r.parquet", table, read_report(path).metadata, overwrite=False)
    notes = []
    result = labelclean.finetune(edited, tmp_path / "m", epochs=1, mu=1, batch_size=32, log=notes.append)
    guessed = sum(g in ("partly_disputed", "semi_agrees") for g in guard)  # + the epilogue's
    assert guessed >= 3
    assert any(f"({guessed} of them kept by the report only as a guess)" in n for n in notes), notes
    plain = sum(a in ("keep", "relabel") for a in table.column("action").to_pylist())
    assert result.n_labeled == plain - guessed
