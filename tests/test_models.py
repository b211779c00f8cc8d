import pytest
import torch
from safetensors.torch import save_file

from labelclean.errors import ConfigError
from labelclean.models import (
    AirCNN,
    create_model,
    default_model_name,
    fit_data_init,
    load_weights,
    map_state_dict,
)


@pytest.mark.parametrize(
    "name,size",
    [
        ("small_cnn", 8),
        ("small_cnn", 32),
        ("preact_resnet18", 32),
        ("air_cnn", 16),
        ("air_cnn", 32),
        ("air_cnn", 64),
    ],
)
def test_builtin_models_output_one_logit_per_class(name, size):
    model = create_model(name, 7)
    assert model(torch.randn(2, 3, size, size)).shape == (2, 7)


def test_timm_model_by_name():
    model = create_model("resnet10t", 4)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 4)


def test_unknown_model_names_the_flag():
    with pytest.raises(ConfigError, match="--model"):
        create_model("no_such_net", 3)


def test_default_model_depends_on_size_and_device():
    assert default_model_name(32, torch.device("cpu")) == "air_cnn"
    assert default_model_name(8, torch.device("cpu")) == "small_cnn"  # air_cnn needs 16 px
    assert default_model_name(32, torch.device("cuda")) == "preact_resnet18"
    assert default_model_name(224, torch.device("cpu")) == "resnet18"


def test_air_cnn_is_deterministic_and_channels_last_gives_the_same_logits():
    torch.manual_seed(0)
    a = create_model("air_cnn", 10).eval()
    torch.manual_seed(0)
    b = create_model("air_cnn", 10).eval()
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(a(x), b(x))
    b = b.to(memory_format=torch.channels_last)
    assert torch.allclose(a(x), b(x.to(memory_format=torch.channels_last)), atol=1e-5)
    assert a.forward_features(x).shape == (4, a.num_features)


def test_air_cnn_stem_whitens_the_patches_it_was_fitted_on():
    torch.manual_seed(0)
    mix = torch.randn(3, 3)  # correlated colour channels, smoothed in space
    images = torch.einsum("ij,bjhw->bihw", mix, torch.randn(64, 3, 16, 16))
    images = torch.nn.functional.avg_pool2d(images, 3, 1, 1)
    model = AirCNN(5)
    assert fit_data_init(model, images)
    w = model.stem.weight
    half = w.shape[0] // 2
    assert torch.equal(w[half:], -w[:half]) and torch.count_nonzero(model.stem.bias) == 0
    with torch.no_grad():
        out = torch.nn.functional.conv2d(images, w[:half]).permute(0, 2, 3, 1).reshape(-1, half)
    cov = torch.cov(out.T)
    top = cov[:8, :8]  # the well-conditioned directions come out white
    assert torch.allclose(top, torch.eye(8), atol=0.05)
    assert not fit_data_init(create_model("small_cnn", 5), images)


def _same_weights(a, b, skip=()):
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa if k not in skip)


def test_exact_keys_and_head_of_other_shape_skipped(tmp_path):
    src = create_model("small_cnn", 10)
    save_file(src.state_dict(), str(tmp_path / "w.safetensors"))
    dst = create_model("small_cnn", 3)
    assert load_weights(dst, tmp_path / "w.safetensors") == "exact keys"
    assert _same_weights(src, dst, skip={"fc.weight", "fc.bias"})
    assert dst.fc.weight.shape == (3, 128)


def test_prefixed_keys_are_stripped(tmp_path):
    src = create_model("small_cnn", 5)
    state = {f"module._orig_mod.{k}": v for k, v in src.state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "w.pt")
    dst = create_model("small_cnn", 5)
    assert load_weights(dst, tmp_path / "w.pt") == "prefix-stripped keys"
    assert _same_weights(src, dst)


def test_positional_mapping_when_every_shape_matches():
    src = create_model("small_cnn", 5).state_dict()
    renamed = {f"layer{i}": v for i, v in enumerate(src.values())}
    target = create_model("small_cnn", 5).state_dict()
    mapped, how, skipped = map_state_dict(renamed, target)
    assert how == "positional" and not skipped
    assert all(torch.equal(mapped[k], v) for k, v in zip(target, src.values()))


def test_unrelated_checkpoint_is_refused(tmp_path):
    torch.save(create_model("preact_resnet18", 5).state_dict(), tmp_path / "w.pt")
    with pytest.raises(ConfigError, match="--weights"):
        load_weights(create_model("small_cnn", 5), tmp_path / "w.pt")


class Evil:
    pass


def test_pickled_objects_are_never_loaded(tmp_path):
    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ConfigError, match="labelclean never unpickles") as err:
        load_weights(create_model("small_cnn", 5), tmp_path / "evil.pt")
    assert "weights_only=False" not in str(err.value)  # not torch's advice to unpickle


def test_missing_weights_file():
    with pytest.raises(ConfigError, match="no such file"):
        load_weights(create_model("small_cnn", 5), "nope.safetensors")
