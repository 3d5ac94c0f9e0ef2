"""Shared helpers of the data tests (no tests here)."""
import importlib.util
import os

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = "/work/shared/data"


def load_script(name):
    """Import ``datasets/<name>.py`` as a module."""
    path = os.path.join(REPO, "datasets", name + ".py")
    spec = importlib.util.spec_from_file_location(f"_ds_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def assert_box_tight(image, bbox, dark_below, min_side_hits=1):
    """All four edges of the box touch a pixel darker than ``dark_below``, and the box lies in the image."""
    H, W = image.shape
    x0, y0, x1, y1 = (int(round(v)) for v in bbox)
    assert 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H, (bbox, image.shape)
    sub = image[y0:y1, x0:x1] < dark_below
    assert sub[0].sum() >= min_side_hits and sub[-1].sum() >= min_side_hits, bbox
    assert sub[:, 0].sum() >= min_side_hits and sub[:, -1].sum() >= min_side_hits, bbox


def write_png_claiming_size(path, width, height):
    """A tiny valid PNG whose IHDR header (CRC fixed) claims ``width`` x ``height`` pixels."""
    import io
    import struct
    import zlib

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    with open(path, "wb") as f:
        f.write(bytes(data))
    return path
