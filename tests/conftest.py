import os

import pytest
import torch

# One thread per process keeps parallel test runs from oversubscribing the two cores.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own decoded-image cache, never the user's ~/.cache."""
    monkeypatch.setenv("LABELCLEAN_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def _digits_dir(tmp_path_factory):
    from labelclean.data.digits import write_digits

    return write_digits(tmp_path_factory.mktemp("digits"), layout="csv")


@pytest.fixture
def digits_csv(_digits_dir):
    """All 1,797 digits as PNGs + labels.csv (written once per session; do not modify)."""
    return _digits_dir


@pytest.fixture
def small_digits_csv(tmp_path):
    """30 digits per class (300 images) as PNGs + labels.csv, in the test's own folder."""
    from labelclean.data.digits import write_digits

    return write_digits(tmp_path / "small", layout="csv", n_per_class=30)


@pytest.fixture
def digits_folder(tmp_path):
    """20 digits per class in the one-folder-per-class layout."""
    from labelclean.data.digits import write_digits

    return write_digits(tmp_path / "folder", layout="folder", n_per_class=20)[0]


@pytest.fixture(scope="session")
def backbone_weights(tmp_path_factory):
    """``backbone_weights(name)``: a weights file for a --frozen audit of a tiny backbone.

    --frozen refuses a backbone without weights; this file holds the seed-0 backbone that
    ``backbone_module(name)`` builds, so the embeddings are the ones tests had before.
    """
    from labelclean.fgcm.frozen import backbone_module

    folder = tmp_path_factory.mktemp("weights")

    def write(name):
        path = folder / f"{name}.pt"
        if not path.exists():
            torch.save(backbone_module(name).state_dict(), path)
        return path

    return write


os.environ.setdefault("PYTHONHASHSEED", "0")
