"""One image reader for every engine: any supported file -> ``(H, W) uint8`` grayscale.

Conversion rules (identical for training, evaluation and inference, both engines):

* Formats: TIFF, PNG, JPEG and BMP (decided by the file's content, not its extension). Multi-page
  TIFFs: the first page is used.
* 8-bit grayscale (``L``): returned as stored.
* 1-bit (``1``): black 0, white 255.
* Palette (``P``/``PA``): looked up through the palette (with transparency composited on white),
  then converted to gray as RGB.
* RGB: ITU-R BT.601 luma ``L = 0.299 R + 0.587 G + 0.114 B`` (Pillow's ``convert("L")``).
* RGBA / LA: alpha-composited over a **white** background, then converted as RGB / gray.
* 16-bit and 32-bit integer or float images (``I;16``, ``I``, ``F``, 16-bit RGB): rescaled linearly
  by **the image's own min/max** to 0..255 (``round((v - min) * 255 / (max - min))``), because
  microscope cameras store 10-14 bit data in 16-bit containers and a full-range scaling would
  make them nearly black. A constant image maps to 0 when its value is 0, else to 255.
* Polarity is never changed here: chromosomes stay as stored. The model's inputs are brought to
  dark-on-light right after this reader, by ``INPUT.POLARITY`` (default ``"auto"``: bright-on-dark
  fluorescence images such as Q-band or DAPI are recognised and inverted, ``255 - x``; G-band images
  pass bit-identical), in both engines' mappers and the predictors:
  :func:`deepacc.data.polarity.apply_polarity`.

Size limit: images with more than :data:`MAX_IMAGE_PIXELS` pixels (read from the header, before
anything is decoded; the environment variable ``DEEPACC_MAX_IMAGE_PIXELS`` overrides it) are refused
by every reader here, whatever Pillow's own limit is. 16- and 32-bit images are converted block by
block: reading one takes about its decoded size plus the 8-bit output (a 100-megapixel 16-bit TIFF
about 0.35 GB at its peak, 3.45 GB before), never whole-image float64 copies.

Problems raise :class:`ImageError` whose message names the file and the reason
(``missing file``, ``corrupt or truncated``, ``unsupported format``, ``image is W x H = N pixels,
more than the maximum``); no other exception escapes :func:`read_image` / :func:`image_size`.
"""
from __future__ import annotations

import os
import warnings
from typing import Optional, Tuple

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

__all__ = ["ImageError", "read_image", "image_size", "SUPPORTED_FORMATS", "MAX_IMAGE_PIXELS", "MAX_PIXELS_ENV",
           "max_image_pixels"]

#: Pillow format names accepted by :func:`read_image`.
SUPPORTED_FORMATS = ("TIFF", "PNG", "JPEG", "MPO", "BMP")

#: Largest image accepted (width x height). Microscope cameras give a few to about 20 megapixels;
#: a header claiming more than 100 MP is almost surely corrupt or hostile (a "decompression bomb":
#: a few bytes that claim 100000 x 100000 pixels, which would take 10 GB to decode), and training
#: would run out of memory on it anyway (100 MP is 100 MB as 8-bit gray, several times that as the
#: model's float input). Change the module attribute to accept larger images; every reader here
#: reads it at call time.
MAX_IMAGE_PIXELS = 100_000_000

# Never silently decode half an image.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageError(OSError):
    """An image file is missing, corrupt/truncated or in an unsupported format."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __str__(self) -> str:  # OSError's default str would add errno noise
        return f"{self.path}: {self.reason}"


#: Environment variable that overrides :data:`MAX_IMAGE_PIXELS` (a positive integer; for command-line use).
MAX_PIXELS_ENV = "DEEPACC_MAX_IMAGE_PIXELS"


def max_image_pixels(path: str = "") -> int:
    """The pixel limit in force: ``$DEEPACC_MAX_IMAGE_PIXELS`` when set, else :data:`MAX_IMAGE_PIXELS`
    (read at each call). A value that is not a positive integer is an :class:`ImageError` naming it."""
    v = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not v:
        return MAX_IMAGE_PIXELS
    try:
        n = int(v.replace("_", ""))
    except ValueError:
        n = 0
    if n < 1:
        raise ImageError(path, f"{MAX_PIXELS_ENV}={v!r} is not a positive integer (the largest image accepted, "
                               f"in pixels; unset it for the default {MAX_IMAGE_PIXELS})")
    return n


def _limit_name() -> str:
    if os.environ.get(MAX_PIXELS_ENV, "").strip():
        return f"the environment variable {MAX_PIXELS_ENV}"
    return f"deepacc.data.images.MAX_IMAGE_PIXELS; raise it with the environment variable {MAX_PIXELS_ENV}=<pixels>"


def _too_large(path: str, w: int, h: int) -> ImageError:
    return ImageError(path, f"image is {w} x {h} = {w * h} pixels, more than the maximum {max_image_pixels(path)} "
                            f"({_limit_name()})")


def _unchecked_header_size(path: str) -> Optional[Tuple[int, int]]:
    """``(W, H)`` from the header through Pillow's format plugins, without Pillow's
    decompression-bomb check (used only to name the size of a file Pillow refused)."""
    try:
        Image.init()
        with open(path, "rb") as fp:
            prefix = fp.read(16)
            for fmt in SUPPORTED_FORMATS:
                factory, accept = Image.OPEN.get(fmt, (None, None))
                ok = accept(prefix) if accept else True
                if factory is None or isinstance(ok, str) or not ok:
                    continue
                fp.seek(0)
                try:
                    w, h = factory(fp, path).size
                    return int(w), int(h)
                except Exception:
                    continue
    except Exception:
        pass
    return None


def _open(path) -> Image.Image:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ImageError(path, "missing file (no such file)")
    if os.path.isdir(path):
        raise ImageError(path, "missing file (path is a directory)")
    try:
        with warnings.catch_warnings():
            # Pillow warns above its own limit; ours (MAX_IMAGE_PIXELS) is checked below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError as e:
        size = _unchecked_header_size(path)
        if size is not None and size[0] * size[1] <= max_image_pixels(path):
            # within our limit, raised above Pillow's own (2 x PIL.Image.MAX_IMAGE_PIXELS): ours decides
            pil_limit = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                return _open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = pil_limit
        if size is not None:
            raise _too_large(path, *size) from None
        raise ImageError(path, f"image is larger than the maximum {max_image_pixels(path)} pixels "
                               f"({_limit_name()}; Pillow: {e})") from None
    except UnidentifiedImageError:
        raise ImageError(path, "unsupported format or corrupt file (not a readable TIFF/PNG/JPEG/BMP image)") from None
    except OSError as e:
        raise ImageError(path, f"corrupt or unreadable file ({e})") from None
    except Exception as e:  # Pillow's plugins may raise anything on a malformed header
        raise ImageError(path, f"corrupt or unreadable file ({type(e).__name__}: {e})") from None
    if img.format not in SUPPORTED_FORMATS:
        fmt = img.format
        img.close()
        raise ImageError(path, f"unsupported format {fmt} (supported: TIFF, PNG, JPEG, BMP)")
    w, h = img.size
    if w * h > max_image_pixels(path):
        img.close()
        raise _too_large(path, int(w), int(h))
    return img


def image_size(path) -> Tuple[int, int]:
    """``(height, width)`` from the file header only (fast; does not detect truncation)."""
    img = _open(path)
    try:
        w, h = img.size
    finally:
        img.close()
    return int(h), int(w)


#: Pixels converted at a time by :func:`_minmax_to_uint8` (bounds its temporaries to a few MB).
_BLOCK_PIXELS = 1 << 20
#: Integer images whose value range is at most this wide are converted through a lookup table.
_LUT_MAX_RANGE = 1 << 20


class _Pixels:
    """Rows of an array, or of a Pillow image without copying it whole (``np.asarray`` of a 16-bit
    image makes two transient copies of it); ``block(s)`` is the ``(rows, W[, C])`` array of row slice ``s``."""

    def __init__(self, src):
        if isinstance(src, Image.Image):
            self.img, w, h = src, src.size[0], src.size[1]
            self.shape = (h, w)
            self.kind = "f" if src.mode == "F" else "i"
            self.itemsize = 4
        else:
            self.img, self.a = None, np.asarray(src)
            self.shape, self.kind, self.itemsize = self.a.shape, self.a.dtype.kind, self.a.dtype.itemsize

    def block(self, s: slice) -> np.ndarray:
        if self.img is None:
            return self.a[s]
        h, w = self.shape
        return np.asarray(self.img.crop((0, s.start, w, min(s.stop, h))))

    def slices(self):
        row = max(1, int(np.prod(self.shape[1:], dtype=np.int64)))
        rows = max(1, _BLOCK_PIXELS // row)
        for r in range(0, self.shape[0], rows):
            yield slice(r, min(r + rows, self.shape[0]))


def _minmax_to_uint8(src) -> np.ndarray:
    """``round((v - min) * 255 / (max - min))`` over the finite values (others map to 0) of an array
    or a Pillow image, computed in float64 exactly as on the whole array at once but block by block
    (a 100-megapixel 16-bit image takes its 100 MB of output plus a few MB, instead of 3.4 GB of
    whole-image float64 temporaries); integer images of a narrow range (16-bit) go through a lookup
    table of the same values."""
    px = _Pixels(src)
    out = np.empty(px.shape, np.uint8)
    if out.size == 0:
        return out
    if px.kind in "ui":
        lo = hi = None
        for s in px.slices():
            b = px.block(s)
            bl, bh = int(b.min()), int(b.max())
            lo, hi = (bl, bh) if lo is None else (min(lo, bl), max(hi, bh))
        if hi <= lo:
            out.fill(0 if hi == 0 else 255)
            return out
        scale = 255.0 / (float(hi) - float(lo))
        if hi - lo <= _LUT_MAX_RANGE and px.itemsize <= 4:  # values exact in float64: the same results
            lut = np.clip(np.rint(np.arange(hi - lo + 1, dtype=np.float64) * scale), 0, 255).astype(np.uint8)
            for s in px.slices():
                b = px.block(s)
                out[s] = lut[b - b.dtype.type(lo)]  # in [0, hi - lo]: no overflow in the block's own type
            return out
        for s in px.slices():
            out[s] = np.clip(np.rint((px.block(s).astype(np.float64) - float(lo)) * scale), 0, 255).astype(np.uint8)
        return out
    lo = hi = None
    for s in px.slices():  # min / max of the finite values
        b = px.block(s).astype(np.float64)
        b = b[np.isfinite(b)]
        if b.size:
            bl, bh = float(b.min()), float(b.max())
            lo, hi = (bl, bh) if lo is None else (min(lo, bl), max(hi, bh))
    if lo is None:
        out.fill(0)
        return out
    if hi <= lo:
        out.fill(0 if hi == 0 else 255)
        return out
    scale = 255.0 / (hi - lo)
    for s in px.slices():
        b = px.block(s).astype(np.float64)
        b[~np.isfinite(b)] = np.nan
        v = np.nan_to_num((b - lo) * scale, copy=False, nan=0.0)
        out[s] = np.clip(np.rint(v), 0, 255).astype(np.uint8)
    return out


def _composite_on_white(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _to_gray(img: Image.Image, path: str) -> np.ndarray:
    mode = img.mode
    if mode == "L":
        return np.asarray(img, dtype=np.uint8).copy()
    if mode == "1":
        return np.asarray(img.convert("L"), dtype=np.uint8).copy()
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in img.info
        rgb = _composite_on_white(img) if has_alpha else img.convert("RGB")
        return np.asarray(rgb.convert("L"), dtype=np.uint8).copy()
    if mode in ("RGBA", "LA", "RGBa", "La"):
        return np.asarray(_composite_on_white(img).convert("L"), dtype=np.uint8).copy()
    if mode in ("RGB", "CMYK", "YCbCr", "LAB", "HSV"):
        return np.asarray(img.convert("RGB").convert("L"), dtype=np.uint8).copy()
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _minmax_to_uint8(img)  # block by block, never the whole image as float64
    raise ImageError(path, f"unsupported pixel mode {mode!r}")


def _read_with_opencv(path: str) -> np.ndarray:
    """Fallback for files Pillow cannot decode (e.g. 16-bit RGB TIFF)."""
    import cv2

    try:
        a = cv2.imread(path, cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    except cv2.error as e:  # e.g. OpenCV's own size limit, a corrupt header
        raise ImageError(path, f"corrupt or unreadable file (OpenCV: {str(e).strip()})") from None
    if a is None:
        raise ImageError(path, "unsupported format or corrupt file (not a readable TIFF/PNG/JPEG/BMP image)")
    if a.shape[0] * a.shape[1] > max_image_pixels(path):  # the header was checked; the decoded size decides
        raise _too_large(path, int(a.shape[1]), int(a.shape[0]))
    if a.ndim == 3:
        if a.shape[2] == 4:
            alpha = a[..., 3:4].astype(np.float64) / (65535.0 if a.dtype == np.uint16 else 255.0)
            top = 65535.0 if a.dtype == np.uint16 else 255.0
            rgb = a[..., :3].astype(np.float64) * alpha + top * (1 - alpha)
        else:
            rgb = a[..., :3].astype(np.float64)
        a = rgb[..., 2] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 0] * 0.114  # OpenCV stores BGR
        if rgb.max() <= 255 and a.dtype != np.uint16:
            return np.clip(np.rint(a), 0, 255).astype(np.uint8)
        return _minmax_to_uint8(a)
    if a.dtype == np.uint8:
        return a
    return _minmax_to_uint8(a)


def read_image(path) -> np.ndarray:
    """Read an image file as ``(H, W) uint8`` grayscale (rules in the module docstring).

    Raises :class:`ImageError` naming the file and the reason (and nothing else).
    """
    path = os.fspath(path)
    img = _open(path)
    try:
        try:
            img.seek(0)
            img.load()
        except (OSError, SyntaxError, ValueError) as e:
            msg = str(e)
            if "truncated" in msg or "broken" in msg or "not enough" in msg or "image file" in msg:
                raise ImageError(path, f"corrupt or truncated file ({msg})") from None
            if img.format == "TIFF":
                # Pillow cannot decode some valid TIFF layouts (16-bit RGB, some compressions).
                return _read_with_opencv(path)
            raise ImageError(path, f"corrupt or truncated file ({msg})") from None
        except MemoryError:
            raise ImageError(path, f"not enough memory to decode the {img.size[0]} x {img.size[1]} image") from None
        except Exception as e:  # a malformed file can make a decoder fail in any way
            raise ImageError(path, f"corrupt or truncated file ({type(e).__name__}: {e})") from None
        try:
            out = _to_gray(img, path)
        except ImageError:
            raise
        except Exception as e:
            raise ImageError(path, f"cannot convert the {img.mode} image to grayscale "
                                   f"({type(e).__name__}: {e})") from None
    finally:
        img.close()
    if out.ndim != 2 or out.size == 0:
        raise ImageError(path, f"unexpected decoded shape {out.shape}")
    return np.ascontiguousarray(out)
