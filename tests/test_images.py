import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from labelclean.data import images as images_mod
from labelclean.data.images import decode_image, infer_image_size, load_dataset, write_rejected_csv
from labelclean.data.manifest import read_manifest
from labelclean.errors import ConfigError, ImageError


def _dataset(tmp_path, files: dict, labels=None):
    root = tmp_path / "img"
    root.mkdir(exist_ok=True)
    rows = []
    for i, (name, content) in enumerate(files.items()):
        p = root / name
        if isinstance(content, Image.Image):
            content.save(p)
        else:
            p.write_bytes(content)
        rows.append(f"{name},{labels[i] if labels else ('a' if i % 2 else 'b')}")
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\n" + "\n".join(rows) + "\n")
    return root, csv


def _color(c, size=(8, 8), mode="RGB"):
    return Image.new(mode, size, c)


def test_each_row_keeps_its_own_pixels(tmp_path):
    files = {f"{i}.png": _color((i * 20, 0, 0)) for i in range(6)}
    root, csv = _dataset(tmp_path, files)
    ds = load_dataset(root, csv, image_size=8)
    assert ds.cache.images.shape == (6, 3, 8, 8)
    assert ds.cache.images[:, 0, 0, 0].tolist() == [i * 20 for i in range(6)]


@pytest.mark.parametrize(
    "content,reason",
    [
        (b"", "empty"),
        (b"<!DOCTYPE html><html><body>404</body></html>", "not_an_image"),
        (b"hello, not an image at all", "not_an_image"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n", "format_not_allowed"),
    ],
)
def test_bad_files_are_named_with_file_line_and_reason(tmp_path, content, reason):
    files = {"good1.png": _color(1), "bad.png": content, "good2.png": _color(2)}
    root, csv = _dataset(tmp_path, files)
    with pytest.raises(ImageError, match=rf"labels.csv line 3: bad.png: {reason}"):
        load_dataset(root, csv, image_size=8)


def test_truncated_jpeg_is_caught_by_the_full_decode(tmp_path):
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buf, "JPEG")
    root, csv = _dataset(tmp_path, {"ok.png": _color(1), "cut.jpg": buf.getvalue()[:600]})
    with pytest.raises(ImageError, match="cut.jpg: (truncated|unreadable)"):
        load_dataset(root, csv, image_size=8)


def test_missing_file(tmp_path):
    root, csv = _dataset(tmp_path, {"ok.png": _color(1), "x.png": _color(2)})
    (root / "x.png").unlink()
    with pytest.raises(ImageError, match="x.png: missing"):
        load_dataset(root, csv, image_size=8)


def test_decompression_bomb_is_refused(tmp_path):
    root, csv = _dataset(tmp_path, {"ok.png": _color(1), "big.png": _color(3, size=(300, 300))})
    with pytest.raises(ImageError, match="big.png: too_many_pixels"):
        load_dataset(root, csv, image_size=8, max_pixels=10_000)


def test_skip_drops_bad_rows_writes_rejected_and_respects_the_fraction(tmp_path):
    files = {f"{i}.png": _color((i * 30, 0, 0)) for i in range(8)}
    files["3.png"] = b"junk"
    root, csv = _dataset(tmp_path, files)
    ds = load_dataset(root, csv, image_size=8, on_bad_image="skip", max_bad_fraction=0.2)
    assert len(ds.manifest) == 7 and ds.manifest.rows.tolist() == [0, 1, 2, 4, 5, 6, 7]
    assert ds.cache.images[:, 0, 0, 0].tolist() == [0, 30, 60, 120, 150, 180, 210]
    out = write_rejected_csv(tmp_path / "rejected.csv", ds, overwrite=False)
    # the manifest line, as the messages say it (header = line 1), not the 0-based data row
    assert pd.read_csv(out).to_dict("records") == [{"line": 5, "path": "3.png", "reason": "not_an_image", "detail": "not a recognised image"}]
    with pytest.raises(ImageError, match="above --max-bad-fraction"):
        load_dataset(root, csv, image_size=8, on_bad_image="skip", max_bad_fraction=0.1)


def test_error_lists_at_most_twenty_rows(tmp_path):
    files = {f"{i}.png": b"junk" for i in range(25)}
    files["ok.png"] = _color(1)
    root, csv = _dataset(tmp_path, files)
    with pytest.raises(ImageError) as err:
        load_dataset(root, csv, image_size=8)
    assert "25 bad image(s)" in str(err.value) and "and 5 more" in str(err.value)


def test_modes_convert_correctly(tmp_path):
    gray = _color(100, mode="L")
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([255, 0, 0] * 256)
    pal.info["transparency"] = 0  # fully transparent -> composited on white
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red
    deep = Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16))  # half of 16-bit range
    for name, img, expected in [("g.png", gray, (100, 100, 100)), ("p.png", pal, (255, 255, 255)),
                                ("c.jpg", cmyk, (255, 0, 0)), ("d.png", deep, (128, 128, 128))]:
        p = tmp_path / name
        img.save(p, **({"transparency": 0} if name == "p.png" else {}))
        rgb = np.asarray(decode_image(p))
        assert rgb.shape == (8, 8, 3)
        assert np.abs(rgb[0, 0].astype(int) - expected).max() <= 3, (name, rgb[0, 0])


def test_exif_rotation_is_applied(tmp_path):
    img = Image.new("RGB", (4, 2), (0, 0, 0))
    img.putpixel((0, 0), (255, 255, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(tmp_path / "r.jpg", exif=exif, quality=100)
    out = decode_image(tmp_path / "r.jpg")
    assert out.size == (2, 4)
    assert np.asarray(out)[0, 1].mean() > 200  # the white corner moved to the top right


def test_animated_gif_gives_frame_zero(tmp_path):
    frames = [_color((255, 0, 0)), _color((0, 0, 255))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    assert np.asarray(decode_image(tmp_path / "a.gif"))[0, 0].tolist()[0] > 200


def test_cache_is_reused_without_decoding(tmp_path, monkeypatch):
    root, csv = _dataset(tmp_path, {f"{i}.png": _color((i, 0, 0)) for i in range(4)})
    first = load_dataset(root, csv, image_size=8)

    def boom(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(images_mod, "decode_image", boom)
    second = load_dataset(root, csv, image_size=8)
    assert np.array_equal(first.cache.images, second.cache.images)
    assert first.cache.key == second.cache.key


def test_memory_budget_gives_a_memmap(tmp_path):
    root, csv = _dataset(tmp_path, {f"{i}.png": _color((i, 0, 0)) for i in range(4)})
    ds = load_dataset(root, csv, image_size=8, memory_budget=10)
    assert isinstance(ds.cache.images, np.memmap)


def test_inferred_size_and_resize_to_square(tmp_path):
    root, csv = _dataset(tmp_path, {f"{i}.png": _color((i, 0, 0), size=(40, 30)) for i in range(4)})
    assert infer_image_size(read_manifest(root, csv)) == 32
    ds = load_dataset(root, csv)
    assert ds.cache.images.shape == (4, 3, 32, 32)


def test_option_errors_name_the_flag(tmp_path):
    root, csv = _dataset(tmp_path, {"a.png": _color(1), "b.png": _color(2)})
    with pytest.raises(ConfigError, match="--on-bad-image"):
        load_dataset(root, csv, on_bad_image="ignore")
    with pytest.raises(ConfigError, match="--image-size"):
        load_dataset(root, csv, image_size=2)
