"""Train a robust model from an audit report, then predict new images in Python.

Shows: ``labelclean.finetune`` (the paper's mixed semi-training: the audit's kept and
relabeled images as labeled data, the rest as unlabeled data; ``labelclean finetune`` on the
command line), then the exported model loaded with ``labelclean.load_model`` and used on
images by hand: resized and normalised the way the export's ``config.json`` says.
``labelclean predict model/ IMAGES`` does the same for a whole folder.

Run:  python examples/finetune_predict.py REPORT.parquet [--epochs 30] [--out model/]
      (make a report first, e.g. python examples/audit_api.py)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import labelclean
from labelclean.data.augment import normalize
from labelclean.data.images import decode_image, resize_square


def predict(model: torch.nn.Module, config: dict, paths: list[Path]) -> list[tuple[str, float]]:
    """(class, confidence) per image file, preprocessed as the model was trained."""
    size, norm = int(config["image_size"]), config["normalization"]
    batch = torch.stack([torch.from_numpy(resize_square(decode_image(p), size)) for p in paths])
    with torch.inference_mode():
        probs = model(normalize(batch, norm["mean"], norm["std"])).softmax(1)
    conf, pred = probs.max(1)
    return [(config["class_names"][int(k)], float(c)) for k, c in zip(pred, conf)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("report", type=Path, help="report.parquet from an audit")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("model"), help="model folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args()

    trained = labelclean.finetune(
        args.report,
        args.out,
        epochs=args.epochs,
        overwrite=args.overwrite,
        on_epoch=lambda line: print(f"epoch {line['epoch']}: loss {line['loss_x']:.3f}"),
    )
    print(f"trained on {trained.n_labeled} labeled + {trained.n_unlabeled} unlabeled images")

    model, config = labelclean.load_model(args.out)  # eval mode, CPU, no pickles read
    print(
        f"{config['architecture']}, {config['num_classes']} classes, "
        f"{config['image_size']} px input"
    )
    report = labelclean.read_report(args.report)
    sample = report.frame.head(8)  # a few of the audited images, as if they were new
    paths = [report.image_root / p for p in sample["path"]]
    for (label, conf), given, clean in zip(
        predict(model, config, paths), sample["given_label"], sample["clean_label"]
    ):
        print(f"predicted {label} ({conf:.2f}); given {given}, audit's label {clean}")


if __name__ == "__main__":
    try:
        main()
    except labelclean.LabelcleanError as err:
        raise SystemExit(f"error: {err}") from None
