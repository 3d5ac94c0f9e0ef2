"""read_image: one conversion for every format / mode; clear errors naming the file."""
import numpy as np
import pytest
from PIL import Image

from deepacc.data.images import ImageError, image_size, read_image


def _gray(h=20, w=30):
    a = np.full((h, w), 230, np.uint8)
    a[5:15, 8:12] = 40  # a dark "chromosome"
    return a


@pytest.mark.parametrize("ext", ["png", "tif", "bmp"])
def test_gray8_lossless_formats_roundtrip(tmp_path, ext):
    a = _gray()
    p = tmp_path / f"g.{ext}"
    Image.fromarray(a).save(p)
    out = read_image(p)
    assert out.dtype == np.uint8 and out.shape == a.shape
    np.testing.assert_array_equal(out, a)
    assert image_size(p) == a.shape


def test_jpeg_close(tmp_path):
    a = _gray()
    p = tmp_path / "g.jpg"
    Image.fromarray(a).save(p, quality=95)
    out = read_image(p)
    assert out.shape == a.shape and np.abs(out.astype(int) - a).mean() < 6


def test_rgb_uses_bt601_luma(tmp_path):
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    p = tmp_path / "c.png"
    Image.fromarray(rgb).save(p)
    out = read_image(p)
    assert out.shape == (4, 5)
    assert abs(int(out[0, 0]) - round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)) <= 1


def test_rgba_composited_on_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)  # black, fully transparent ...
    rgba[0, 0] = (0, 0, 0, 255)  # ... except one opaque black pixel
    rgba[1, 1] = (0, 0, 0, 128)  # half transparent black -> mid gray
    p = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(p)
    out = read_image(p)
    assert out[0, 0] == 0 and out[3, 3] == 255
    assert 120 <= out[1, 1] <= 135


def test_palette_and_palette_transparency(tmp_path):
    a = _gray()
    p = tmp_path / "p.png"
    Image.fromarray(a).convert("P").save(p)
    np.testing.assert_array_equal(read_image(p), a)
    im = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), "P")
    im.putpalette([0, 0, 0, 10, 10, 10] + [0] * 762)
    p2 = tmp_path / "pt.png"
    im.save(p2, transparency=0)  # index 0 transparent -> white
    out = read_image(p2)
    assert out[0, 0] == 255 and out[0, 1] == 10


def test_16bit_rescaled_by_own_min_max(tmp_path):
    a = np.full((10, 10), 1000, np.uint16)
    a[2:5, 2:5] = 3000
    a[0, 0] = 500
    p = tmp_path / "s.tif"
    Image.fromarray(a).save(p)
    out = read_image(p)
    assert out.dtype == np.uint8
    assert out[0, 0] == 0 and out[3, 3] == 255
    assert out[9, 9] == round((1000 - 500) * 255 / 2500)
    p2 = tmp_path / "s.png"
    Image.fromarray(a).save(p2)
    np.testing.assert_array_equal(read_image(p2), out)


def test_missing_file_names_file(tmp_path):
    p = tmp_path / "nope.png"
    with pytest.raises(ImageError) as e:
        read_image(p)
    assert str(p) in str(e.value) and "missing" in str(e.value)


def test_truncated_png_names_file(tmp_path):
    p = tmp_path / "t.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200), dtype=np.uint8)).save(p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError) as e:
        read_image(p)
    assert str(p) in str(e.value) and ("truncated" in str(e.value) or "corrupt" in str(e.value))


def test_garbage_and_unsupported_format(tmp_path):
    p = tmp_path / "g.png"
    p.write_bytes(b"this is not an image at all")
    with pytest.raises(ImageError) as e:
        read_image(p)
    assert str(p) in str(e.value)
    g = tmp_path / "x.gif"
    Image.fromarray(_gray()).save(g)
    with pytest.raises(ImageError) as e:
        read_image(g)
    assert str(g) in str(e.value) and "unsupported" in str(e.value)


# ---------------------------------------------------------------- size limit (MAX_IMAGE_PIXELS)


def test_huge_png_header_named_by_every_reader(tmp_path):
    from test_data_helpers import write_png_claiming_size

    from deepacc.data import images

    p = write_png_claiming_size(tmp_path / "bomb.png", 100000, 100000)
    expect = (f"{p}: image is 100000 x 100000 = 10000000000 pixels, more than the maximum "
              f"{images.MAX_IMAGE_PIXELS} (deepacc.data.images.MAX_IMAGE_PIXELS; raise it with the environment "
              f"variable DEEPACC_MAX_IMAGE_PIXELS=<pixels>)")
    for reader in (image_size, read_image):
        with pytest.raises(ImageError) as e:
            reader(p)
        assert str(e.value) == expect


def test_size_limit_is_ours_not_pillows(tmp_path, monkeypatch):
    import warnings

    from deepacc.data import images

    p = tmp_path / "g.tif"
    Image.fromarray(_gray(20, 30)).save(p)  # 600 pixels
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 1000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 400)  # Pillow warns above 400: silenced, ours decides
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image(p).shape == (20, 30)
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 500)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow refuses (DecompressionBombError): size still named
    for reader in (image_size, read_image):
        with pytest.raises(ImageError, match=r"image is 30 x 20 = 600 pixels, more than the maximum 500 "):
            reader(p)


def test_opencv_path_errors_are_image_errors(tmp_path, monkeypatch):
    import cv2
    from PIL import TiffImagePlugin

    from deepacc.data import images

    a = np.full((6, 8), 1000, np.uint16)
    a[2, 3] = 3000
    p = tmp_path / "g16.tif"
    cv2.imwrite(str(p), a)

    def cannot_decode(self):
        raise OSError("decoder error -9")

    monkeypatch.setattr(TiffImagePlugin.TiffImageFile, "load", cannot_decode)  # forces the OpenCV fallback
    out = read_image(p)
    assert out.shape == (6, 8) and out[2, 3] == 255 and out[0, 0] == 0
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 40)
    with pytest.raises(ImageError, match="g16.tif: image is 8 x 6 = 48 pixels, more than the maximum 40"):
        read_image(p)
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 10**8)

    def boom(*args, **kwargs):
        raise cv2.error("OpenCV(x) imread: (-215:Assertion failed) pixels <= CV_IO_MAX_IMAGE_PIXELS")

    monkeypatch.setattr(cv2, "imread", boom)
    with pytest.raises(ImageError, match=r"g16\.tif: corrupt or unreadable file \(OpenCV: .*CV_IO_MAX_IMAGE_PIXELS"):
        read_image(p)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
@pytest.mark.parametrize("ext,kw", [("tif", {}), ("tif", {"compression": "tiff_lzw"}), ("jpg", {}), ("bmp", {})])
def test_truncated_files_named_never_other_errors(tmp_path, ext, kw):
    p = tmp_path / f"t.{ext}"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (120, 160), dtype=np.uint8)).save(p, **kw)
    data = p.read_bytes()
    for frac in (0.05, 0.5, 0.95):
        p.write_bytes(data[: int(len(data) * frac)])
        with pytest.raises(ImageError) as e:
            read_image(p)
        assert str(e.value).startswith(f"{p}: ")


def test_our_size_limit_decides_over_pillows(tmp_path, monkeypatch):
    """An image within MAX_IMAGE_PIXELS reads even above Pillow's own bomb limit; above ours it is named."""
    from PIL import Image

    import deepacc.data.images as images

    path = tmp_path / "big.png"
    Image.fromarray(np.full((100, 120), 7, np.uint8)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow refuses > 2000 pixels
    assert images.read_image(str(path)).shape == (100, 120)
    assert Image.MAX_IMAGE_PIXELS == 1000  # restored
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 5000)
    with pytest.raises(images.ImageError, match="120 x 100 = 12000 pixels, more than the maximum 5000"):
        images.read_image(str(path))
