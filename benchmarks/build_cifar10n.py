"""Build the benchmarks' cifar10-dev/ folder from the public CIFAR-10 and CIFAR-10N files.

Inputs (download them yourself; this script never touches the network):

    CIFAR        torchvision's CIFAR-10 download: the root you passed to
                 ``torchvision.datasets.CIFAR10(root, download=True)`` or its
                 ``cifar-10-batches-py/`` folder (data_batch_1..5, test_batch, batches.meta)
    HUMAN        CIFAR-10N's ``CIFAR-10_human.pt`` (or ``.npy``): the human labels of all
                 50,000 training images (``worse_label``, ``aggre_label``, ``random_label1..3``)
    --side-info  CIFAR-10N's ``side_info_cifar10N.csv`` (which worker gave which label), for
                 crowd.csv; without it crowd.csv is not written

Output: ``OUT/cifar10-dev/`` laid out like the shared dev set (see benchmarks/README.md):
``train/NNNNN.jpg`` for training images 0..N-1 (the number is the index in the training
set), ``train.csv`` (clean labels), ``labels_worst.csv``, ``labels_rand1.csv``,
``labels_aggre.csv``, ``crowd.csv`` (``path,annotator,label``, three votes per image) and the
first ``--test-per-class`` test images of each class as ``test/<class>_NNNN.jpg`` with
``test.csv``. It is built in a temporary folder beside it and renamed into place, and never
replaces an existing one.

Run by hand:  python benchmarks/build_cifar10n.py ~/data ~/CIFAR-10_human.pt ../shared/data \\
                  --side-info ~/side_info_cifar10N.csv [--train 10000] [--test-per-class 200]
Then:         python benchmarks/audit_quality.py --data ../shared/data ...
"""

from __future__ import annotations

import argparse
import pickle
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

#: CIFAR-10N's label arrays -> the dev set's file names.
HUMAN_FILES = {
    "worse_label": "labels_worst.csv",
    "random_label1": "labels_rand1.csv",
    "aggre_label": "labels_aggre.csv",
}


class BuildError(Exception):
    """An input is missing or does not match the others (one line for the user)."""


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise BuildError(f"{path}: missing (is this torchvision's cifar-10-batches-py folder?)")
    with path.open("rb") as f:
        return pickle.load(f, encoding="bytes")


def _key(batch: dict, name: str) -> object:
    return batch[name.encode()] if name.encode() in batch else batch[name]


def read_cifar(folder: Path) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CIFAR-10's python pickles -> (class names, train images, labels, test images, labels).

    Images are ``[N, 32, 32, 3]`` uint8; labels class indices, in the files' order.
    """
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    names = [n.decode() if isinstance(n, bytes) else n
             for n in _key(_unpickle(folder / "batches.meta"), "label_names")]
    parts = [_unpickle(folder / f"data_batch_{i}") for i in range(1, 6)]
    test = _unpickle(folder / "test_batch")

    def images(batches: list[dict]) -> np.ndarray:
        flat = np.concatenate([np.asarray(_key(b, "data"), dtype=np.uint8) for b in batches])
        return flat.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)

    def labels(batches: list[dict]) -> np.ndarray:
        return np.concatenate([np.asarray(_key(b, "labels"), dtype=np.int64) for b in batches])

    return names, images(parts), labels(parts), images([test]), labels([test])


def read_human(path: Path, n_train: int) -> dict[str, np.ndarray]:
    """CIFAR-10N's label file (``.pt`` as published, or ``.npy``) -> its label arrays.

    Both formats are pickles: load only the file of the CIFAR-10N release.
    """
    if not path.is_file():
        raise BuildError(f"{path}: missing (CIFAR-10N's CIFAR-10_human.pt)")
    if path.suffix == ".npy":
        raw = np.load(path, allow_pickle=True).item()
    else:
        import torch

        raw = torch.load(path, map_location="cpu", weights_only=False)
    missing = [k for k in (*HUMAN_FILES, "random_label2", "random_label3") if k not in raw]
    if missing:
        raise BuildError(f"{path}: no {', '.join(missing)} (is it CIFAR-10_human.pt?)")
    out = {k: np.asarray(v, dtype=np.int64).reshape(-1) for k, v in raw.items() if "label" in k}
    bad = [k for k, v in out.items() if len(v) != n_train]
    if bad:
        raise BuildError(f"{path}: {bad[0]} has {len(out[bad[0]])} labels, CIFAR-10 has {n_train}")
    return out


def crowd_votes(side_info: Path, human: dict[str, np.ndarray], n: int) -> pd.DataFrame:
    """One row per (image, worker) for images 0..n-1: worker k of an image batch gave
    ``random_label{k}``; annotators are ``w<worker id>``."""
    if not side_info.is_file():
        raise BuildError(f"{side_info}: missing (CIFAR-10N's side_info_cifar10N.csv)")
    info = pd.read_csv(side_info)
    need = ["Image-batch"] + [f"Worker{k}-id" for k in (1, 2, 3)]
    if any(c not in info for c in need):
        raise BuildError(f"{side_info}: expected the columns {', '.join(need)}")
    try:
        ranges = info["Image-batch"].astype(str).str.split("--", expand=True).astype(int)
        ids = info[need[1:]].to_numpy(dtype=np.int64)
    except (ValueError, KeyError) as e:
        raise BuildError(f"{side_info}: Image-batch must read 'first--last' ({e})") from None
    workers = np.full((len(human["random_label1"]), 3), -1, dtype=np.int64)
    for (first, last), worker_ids in zip(ranges.to_numpy(), ids):
        workers[first : last + 1] = worker_ids
    if (workers[:n] < 0).any():
        raise BuildError(f"{side_info}: no workers for image {int(np.argmax(workers[:n, 0] < 0))}")
    votes = np.stack([human[f"random_label{k}"][:n] for k in (1, 2, 3)], axis=1)
    return pd.DataFrame({
        "path": np.repeat([f"train/{i:05d}.jpg" for i in range(n)], 3),
        "annotator": [f"w{w}" for w in workers[:n].reshape(-1)],
        "label": votes.reshape(-1),
    })


def _write_images(folder: Path, names: list[str], images: np.ndarray) -> None:
    from PIL import Image

    for name, image in zip(names, images):
        Image.fromarray(image).save(folder / name, quality=95)


def build(cifar: Path, human_path: Path, out: Path, *, side_info: Path | None = None,
          n_train: int = 10_000, test_per_class: int = 200) -> Path:
    """Write ``out/cifar10-dev`` (see the module docstring); return its path."""
    target = out / "cifar10-dev"
    if target.exists():
        raise BuildError(f"{target} exists: remove it or pick another OUT")
    classes, train_x, train_y, test_x, test_y = read_cifar(cifar)
    human = read_human(human_path, len(train_y))
    if "clean_label" in human and not np.array_equal(human["clean_label"], train_y):
        raise BuildError(f"{human_path}: its clean_label disagrees with {cifar}'s training labels")
    n = min(n_train, len(train_y))
    names = np.asarray(classes, dtype=object)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".cifar10-dev-", dir=out))
    try:
        (tmp / "train").mkdir()
        (tmp / "test").mkdir()
        paths = [f"train/{i:05d}.jpg" for i in range(n)]
        _write_images(tmp, paths, train_x[:n])
        pd.DataFrame({"path": paths, "label": names[train_y[:n]]}).to_csv(tmp / "train.csv", index=False)
        for key, file in HUMAN_FILES.items():
            pd.DataFrame({"path": paths, "label": names[human[key][:n]]}).to_csv(tmp / file, index=False)
        if side_info is not None:
            crowd = crowd_votes(side_info, human, n)
            crowd["label"] = names[crowd["label"].to_numpy()]
            crowd.to_csv(tmp / "crowd.csv", index=False)
        test_paths, test_labels, picked = [], [], []
        for c, cls in enumerate(classes):
            for j, i in enumerate(np.flatnonzero(test_y == c)[:test_per_class]):
                test_paths.append(f"test/{cls}_{j:04d}.jpg")
                test_labels.append(cls)
                picked.append(i)
        _write_images(tmp, test_paths, test_x[np.asarray(picked, dtype=np.int64)])
        pd.DataFrame({"path": test_paths, "label": test_labels}).to_csv(tmp / "test.csv", index=False)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("cifar", type=Path, help="torchvision's CIFAR-10 root or cifar-10-batches-py/")
    parser.add_argument("human", type=Path, help="CIFAR-10N's CIFAR-10_human.pt (or .npy)")
    parser.add_argument("out", type=Path, help="writes OUT/cifar10-dev/; pass OUT as --data later")
    parser.add_argument("--side-info", type=Path, default=None,
                        help="CIFAR-10N's side_info_cifar10N.csv: also write crowd.csv")
    parser.add_argument("--train", type=int, default=10_000, help="first N training images [10000]")
    parser.add_argument("--test-per-class", type=int, default=200,
                        help="first N test images of each class [200]")
    args = parser.parse_args(argv)
    if args.train < 1 or args.test_per_class < 0:
        parser.error("--train must be >= 1 and --test-per-class >= 0")
    try:
        target = build(args.cifar, args.human, args.out, side_info=args.side_info,
                       n_train=args.train, test_per_class=args.test_per_class)
    except (BuildError, pickle.UnpicklingError, OSError, ValueError) as e:
        sys.exit(f"error: {e}")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
