"""Ideogram-based synthetic G-banded metaphase spreads.

Each chromosome is drawn from the real hg38 band table shipped with the package
(:mod:`deepacc.data.bands`): relative length, centromere position and G-band stain pattern. It is
rendered as two chromatids (capsules with rounded telomeres) that narrow at the primary
constriction (centromere) and at the stalks of the acrocentric chromosomes (13, 14, 15, 21, 22),
which leaves the satellites as separate knobs. Chromosomes are smoothly bent, rotated and placed in
a roughly elliptic spread where they may touch and, at a per-image rate, overlap (darkest-pixel
blending). Interphase nuclei and debris are added, then the per-image **batch effects**.

Batch effects are per-image parameters drawn uniformly from the ranges of a **named distribution**
(:data:`BATCH_DISTRIBUTIONS`; ``"default"`` for training data, ``"shifted"`` for a test set from a
different lab/batch). Parameters (all recorded in ``info["batch_params"]``):

=================  =========================================================================
``condensation``   0 = long, thin (prometaphase-like) ... 1 = short, thick (late metaphase);
                   chromosome 1 is ``120 -> 60`` px long and ``9 -> 15`` px wide at 1600x1200
``band_sharpness`` 1 = crisp bands ... 0 = neighbouring bands merged (low resolution)
``contrast``       weight of the G-band pattern against the chromosome's base darkness
``stain``          darkness of a chromosome's darkest band relative to the background
``background``     background gray level (0..255) before illumination
``illumination``   amplitude of the smooth uneven-illumination field (fraction of background)
``gamma``          gamma applied to the normalised image (>1 darkens mid-tones)
``blur``           Gaussian blur sigma in px at 1600x1200 (scaled with the image)
``noise``          sigma of additive Gaussian noise (gray levels)
``overlap_rate``   fraction of chromosomes allowed to overlap an already placed one
``density``        fraction of the spread ellipse covered by chromosome pixels
``nuclei``         number of interphase nuclei (integer range)
``debris``         number of debris specks (integer range)
=================  =========================================================================

``realism`` (``None`` by default: the images described above, unchanged) adds a real slide's
appearance on top of the finished spread with :func:`deepacc.data.slide.apply_slide`: slide texture,
vignetting and tilted illumination, further unannotated interphase nuclei (textured, with
chromocentres, never touching a chromosome), debris, a little pixel noise, optionally RGB output
(BGR order) and JPEG artefacts. It draws from the same Generator only after the spread is complete,
so the layout, boxes and classes are those of ``realism=None``. ``realism=True`` uses the slide
preset ``"synthetic"`` (the background level stays the batch distribution's, and less
illumination, noise, nuclei and debris are added than the composer's ``"default"``, because the
generator already draws them).

Geometry scales with ``sqrt(width * height / (1600 * 1200))`` so a 640x480 spread looks like a
downscaled 1600x1200 one. Boxes are tight around each chromosome's rendered mask (pixels whose
chromosome darkness exceeds :data:`MASK_THRESHOLD`, before blur/noise), in XYXY pixel-edge
coordinates (a box ``[x0, y0, x1, y1]`` covers pixel columns ``x0 .. x1-1``).
"""
from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Optional, Tuple

import cv2
import numpy as np

from ..fileio import write_image
from ..karyotype import ACROCENTRIC, CLASS_NAMES, parse_karyotype
from .bands import load_ideograms
from .compose import crop_to_mask, place_patch, rotate_patch, spread_ellipse
from .render import low_freq_field, nucleus

__all__ = [
    "BATCH_DISTRIBUTIONS",
    "DEFAULT_KARYOTYPE_MIX",
    "MASK_THRESHOLD",
    "register_batch_distribution",
    "sample_batch_params",
    "generate_spread",
    "generate_dataset",
]

#: Chromosome darkness (0..1) above which a pixel belongs to the chromosome's mask / box.
MASK_THRESHOLD = 0.12
_REF_AREA = 1600.0 * 1200.0

#: Named batch-effect distributions: parameter -> (low, high), drawn uniformly per image.
BATCH_DISTRIBUTIONS: Dict[str, Dict[str, Tuple[float, float]]] = {
    "default": {
        "condensation": (0.0, 1.0),
        "band_sharpness": (0.55, 1.0),
        "contrast": (0.55, 0.9),
        "stain": (0.72, 0.88),
        "background": (215.0, 242.0),
        "illumination": (0.0, 0.12),
        "gamma": (0.85, 1.15),
        "blur": (0.5, 1.1),
        "noise": (1.5, 5.0),
        "overlap_rate": (0.04, 0.15),
        "density": (0.07, 0.14),
        "nuclei": (0, 2),
        "debris": (0, 25),
    },
    # A different lab: short, thick, blurrier, low-contrast, darker and noisier images with
    # stronger uneven illumination and more clutter.
    "shifted": {
        "condensation": (0.65, 1.0),
        "band_sharpness": (0.25, 0.6),
        "contrast": (0.3, 0.55),
        "stain": (0.6, 0.75),
        "background": (165.0, 205.0),
        "illumination": (0.12, 0.3),
        "gamma": (1.15, 1.5),
        "blur": (1.1, 1.9),
        "noise": (5.0, 10.0),
        "overlap_rate": (0.1, 0.25),
        "density": (0.12, 0.22),
        "nuclei": (1, 4),
        "debris": (15, 60),
    },
}
_INT_PARAMS = ("nuclei", "debris")

#: Karyotype mix used when ``generate_dataset(karyotypes=None)``: (karyotype, weight).
DEFAULT_KARYOTYPE_MIX: Tuple[Tuple[str, float], ...] = (
    ("46,XX", 0.45), ("46,XY", 0.45),
    ("47,XY,+21", 0.015), ("47,XX,+21", 0.015), ("47,XY,+18", 0.01), ("47,XX,+13", 0.01),
    ("45,X", 0.015), ("47,XXY", 0.015), ("47,XXX", 0.005), ("47,XYY", 0.005), ("45,XY,-21", 0.01),
)


def register_batch_distribution(name: str, ranges: Dict[str, Tuple[float, float]]) -> None:
    """Add a named batch distribution (missing parameters fall back to ``"default"``)."""
    unknown = set(ranges) - set(BATCH_DISTRIBUTIONS["default"])
    if unknown:
        raise KeyError(f"unknown batch parameter(s) {sorted(unknown)}; known: {sorted(BATCH_DISTRIBUTIONS['default'])}")
    BATCH_DISTRIBUTIONS[name] = {**BATCH_DISTRIBUTIONS["default"], **ranges}


def sample_batch_params(rng: np.random.Generator, batch: str = "default") -> Dict[str, float]:
    """Draw one image's batch-effect parameters from the named distribution."""
    if batch not in BATCH_DISTRIBUTIONS:
        raise KeyError(f"unknown batch distribution {batch!r}; known: {sorted(BATCH_DISTRIBUTIONS)}")
    out: Dict[str, float] = {}
    for k, (lo, hi) in BATCH_DISTRIBUTIONS[batch].items():
        if k in _INT_PARAMS:
            out[k] = int(rng.integers(int(lo), int(hi) + 1))
        else:
            out[k] = float(lo + (hi - lo) * rng.random())
    return out


# ----------------------------------------------------------------------------------------------
# one chromosome


def _smooth1d(x: np.ndarray, sigma: float) -> np.ndarray:
    if sigma < 0.3:
        return x
    r = int(math.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    return np.convolve(np.pad(x, r, mode="edge"), k, mode="valid")


def _render_chromosome(rng: np.random.Generator, name: str, length: float, width: float,
                       p: Dict[str, float]) -> np.ndarray:
    """Darkness map (float32, 0..1) of one straight-frame, bent chromosome (long axis = rows)."""
    ideo = load_ideograms()[name]
    # sister chromatids: axis distance sep0, radius r0, total width sep0 + 2 r0 = width; a small
    # gap factor gives one body with a faint groove, a large one two distinct chromatids
    gap = 0.55 + 0.4 * float(rng.random())
    sep0 = gap * width / 2.0
    r0 = (width - sep0) / 2.0
    bend = float(rng.normal(0.0, 0.10)) * length  # parabolic bend amplitude (px)
    wiggle = float(rng.normal(0.0, 0.02)) * length
    pad = r0 + 3.0
    H = int(math.ceil(length + 2 * pad))
    Wt = int(math.ceil(width + 2 * pad + abs(bend) + abs(wiggle) * 2))
    yy = np.arange(H, dtype=np.float32) + 0.5 - pad
    yc = np.clip(yy, 0.0, length)
    f = yc / max(length, 1e-6)
    # band pattern along the axis (row profile), blurred according to band resolution
    sigma_band = (0.25 + (1.0 - p["band_sharpness"]) * 1.6 + 0.5 * p["condensation"]) * (width / 10.0)
    # each band's darkness varies a little from cell to cell
    jitter = np.clip(ideo.darkness + rng.normal(0.0, 0.07, ideo.darkness.shape), 0.0, 1.0).astype(np.float32)
    idx = np.minimum(np.searchsorted(ideo.ends, f, side="right"), len(ideo.ends) - 1)
    band = _smooth1d(jitter[idx], sigma_band)
    # chromatid radius and separation along the axis: primary constriction, stalks
    cen = ideo.centromere
    cw = max(1.0, 0.55 * r0) / max(length, 1e-6)
    constr = np.exp(-0.5 * ((f - cen) / cw) ** 2)
    rad = r0 * (1.0 - 0.42 * constr)
    sep = sep0 * (1.0 - 0.75 * constr)
    if name in ACROCENTRIC and ideo.stalks:
        st = np.zeros_like(f)
        for a, b in ideo.stalks:
            st = np.maximum(st, ((f >= a) & (f <= b)).astype(np.float32))
        st = _smooth1d(st, 0.4)
        rad = rad * (1.0 - 0.7 * st)
        sep = sep * (1.0 - 0.8 * st)
        band = band * (1.0 - 0.6 * st)
        sat = f < max(b for _, b in ideo.stalks)  # satellites: small and paler than the arm
        band = np.where(sat, band * 0.5, band)
        rad = np.where(sat, rad * 0.8, rad)
    # slight random chromatid splay near the telomeres
    splay = 1.0 + 0.25 * float(rng.random()) * (np.abs(f - 0.5) * 2) ** 3
    sep = sep * splay
    centre = Wt / 2.0 + bend * ((f - 0.5) ** 2 - 1.0 / 12) * 4.0 + wiggle * np.sin(2 * np.pi * f + rng.random() * 6.28)
    dy = (yy - yc)[:, None]  # nonzero beyond the telomeres: rounded caps
    xs = (np.arange(Wt, dtype=np.float32) + 0.5)[None, :]
    lo = 0.3 + 0.45 * (1.0 - p["contrast"])  # darkness of the palest (gneg) bands
    tone = (lo + (1.0 - lo) * band)[:, None]
    out = np.zeros((H, Wt), np.float32)
    for side in (-1.0, 1.0):
        cx = (centre + side * sep / 2.0)[:, None]
        d = np.sqrt((xs - cx) ** 2 + dy * dy)
        r = rad[:, None]
        cover = np.clip((r - d) + 0.5, 0.0, 1.0)
        mass = np.sqrt(np.clip(1.0 - (d / np.maximum(r, 1e-3)) ** 2, 0.0, 1.0))
        np.maximum(out, cover * tone * (0.75 + 0.25 * mass), out=out)
    # chromatin texture: a smooth random modulation of about +-12 %
    tex = low_freq_field(rng, H, Wt, (max(2, int(Wt / 5)), max(3, int(H / 5))))
    out *= 1.0 + 0.12 * tex
    np.clip(out, 0.0, 1.0, out=out)
    return out


def _crop_to_mask(patch: np.ndarray):
    return crop_to_mask(patch, patch > MASK_THRESHOLD)


# ----------------------------------------------------------------------------------------------
# spread


def _karyotype_list(karyotype: str) -> List[str]:
    counts = parse_karyotype(karyotype)
    return [n for n in CLASS_NAMES for _ in range(counts[n])]


def generate_spread(rng: np.random.Generator, width: int = 1600, height: int = 1200, karyotype: str = "46,XY",
                    batch: str = "default", return_masks: bool = False, realism=None,
                    scale: Optional[float] = None):
    """Render one synthetic metaphase spread.

    Returns ``(image, annotations, info)``: ``image`` (H, W) uint8, dark chromosomes on light
    background; ``annotations`` in the dataset-dict format (``bbox`` XYXY, ``bbox_mode`` 0,
    ``category_id`` 0..23, ``iscrowd`` 0), one per chromosome; ``info`` with ``karyotype``,
    ``batch`` (distribution name) and ``batch_params``. With ``return_masks=True`` ``info["masks"]``
    holds ``(x0, y0, bool mask)`` per annotation (the rendered chromosome pixels).

    ``realism``: ``None`` (default, today's images), ``True``, a preset name or a dict of
    :mod:`deepacc.data.slide` parameters: adds the slide appearance (``info["realism_params"]``
    holds its drawn parameters); with ``rgb`` the image is ``(H, W, 3)`` uint8 in BGR order.

    ``scale``: the chromosomes' pixel size relative to a 1600x1200 spread (1.0: chromosome 1 is
    60-120 px long). ``None`` (default) scales them with the image, ``sqrt(width * height / 1600 /
    1200)``, so a smaller image shows the same spread at a lower resolution; a larger value shows a
    magnified part of a slide (chromosomes keep their resolution on a small image).
    """
    if width < 64 or height < 48:
        raise ValueError(f"spread size {width}x{height} too small (min 64x48)")
    if scale is not None and not (0.05 <= float(scale) <= 4.0):
        raise ValueError(f"chromosome scale {scale} out of range [0.05, 4]")
    spec = None
    if realism is not None:
        from .slide import resolve_realism

        spec = resolve_realism(realism, preset="synthetic")
    p = sample_batch_params(rng, batch)
    scale = math.sqrt(width * height / _REF_AREA) if scale is None else float(scale)
    names = _karyotype_list(karyotype)
    c = p["condensation"]
    len1 = (120.0 - 60.0 * c) * scale
    wid = (9.0 + 6.0 * c) * scale
    ideos = load_ideograms()
    L1bp = ideos["1"].length_bp

    dark = np.zeros((height, width), np.float32)
    occ = np.zeros((height, width), bool)

    # spread ellipse
    patches = []
    total_area = 0.0
    for name in names:
        L = len1 * (ideos[name].length_bp / L1bp) ** 0.9 * (0.94 + 0.12 * rng.random())
        w = wid * (0.93 + 0.14 * rng.random())
        if name in ("Y",):
            w *= 0.9
        img = _render_chromosome(rng, name, L, w, p)
        rot = _crop_to_mask(rotate_patch(img, float(rng.uniform(0, 360))))
        if rot is None:
            continue
        patches.append((name, rot[0], rot[1]))
        total_area += float(rot[1].sum())
    order = rng.permutation(len(patches))
    cx, cy, rx, ry = spread_ellipse(rng, total_area, p["density"], width, height)

    # interphase nuclei, mostly outside the spread
    for _ in range(int(p["nuclei"])):
        nuc = nucleus(rng, len1 * (0.55 + 0.4 * rng.random()))
        for _try in range(10):
            ang = rng.random() * 2 * np.pi
            d = 1.05 + 0.8 * rng.random()
            nx, ny = cx + d * rx * math.cos(ang), cy + d * ry * math.sin(ang)
            if -0.2 * width < nx < 1.2 * width and -0.2 * height < ny < 1.2 * height:
                break
        h, w = nuc.shape
        x0, y0 = int(nx - w / 2), int(ny - h / 2)
        xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + w, width), min(y0 + h, height)
        if xb > xa and yb > ya:
            sub = nuc[ya - y0:yb - y0, xa - x0:xb - x0]
            np.maximum(dark[ya:yb, xa:xb], sub, out=dark[ya:yb, xa:xb])
            occ[ya:yb, xa:xb] |= sub > MASK_THRESHOLD

    anns, masks = [], []
    chrom = np.zeros((height, width), bool) if spec is not None else None
    for i in order:
        name, patch, m = patches[i]
        h, w = m.shape
        allow = 0.35 if rng.random() < p["overlap_rate"] else 0.0
        pos = place_patch(rng, m, (cx, cy, rx, ry), occ, allow)
        if pos is None:
            continue
        px, py = pos
        np.maximum(dark[py:py + h, px:px + w], patch, out=dark[py:py + h, px:px + w])
        occ[py:py + h, px:px + w] |= m
        anns.append({"bbox": [float(px), float(py), float(px + w), float(py + h)], "bbox_mode": 0,
                     "category_id": CLASS_NAMES.index(name), "iscrowd": 0})
        if return_masks:
            masks.append((px, py, m))
        if chrom is not None:
            chrom[py:py + h, px:px + w] |= m

    # debris: small dark specks and blobs (not annotated)
    for _ in range(int(p["debris"])):
        r = max(0.6, (0.8 + 3.0 * rng.random() ** 2) * scale * 1.5)
        x, y = rng.random() * width, rng.random() * height
        val = float(0.25 + 0.6 * rng.random())
        ax = (int(round(r * 16)), int(round(r * (0.5 + 0.5 * rng.random()) * 16)))
        cv2.ellipse(dark, (int(x * 16), int(y * 16)), ax, float(rng.uniform(0, 180)), 0, 360, val, -1,
                    lineType=cv2.LINE_AA, shift=4)

    # image formation and batch effects
    illum = low_freq_field(rng, height, width, (4, 3))
    illum *= np.float32(p["illumination"] * p["background"])
    illum += np.float32(p["background"])
    dark *= np.float32(-p["stain"])
    dark += np.float32(1.0)
    img = cv2.multiply(illum, dark)
    bs = p["blur"] * scale
    if bs > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), bs)
    # gamma through a lookup table on the 8-bit image, then sensor noise
    lut = (255.0 * (np.arange(256) / 255.0) ** p["gamma"]).astype(np.float32)
    img8 = np.clip(img, 0, 255).astype(np.uint8) if img.min() < 0 or img.max() > 255 else img.astype(np.uint8)
    # OpenCV's generator (seeded from ``rng``) is ~4x faster than numpy's for a full frame
    cv2.setRNGSeed(int(rng.integers(0, 2**31 - 1)))
    noise = np.empty((height, width), np.float32)
    cv2.randn(noise, 0.0, float(p["noise"]))
    noise += lut[img8]
    noise += np.float32(0.5)
    np.clip(noise, 0, 255, out=noise)
    image = noise.astype(np.uint8)

    info: Dict[str, Any] = {"karyotype": karyotype, "batch": batch,
                            "batch_params": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in p.items()}}
    if spec is not None:
        from .slide import apply_slide

        image, sinfo = apply_slide(image, [a["bbox"] for a in anns], rng, spec, mask=chrom)
        info["realism_params"] = {**sinfo["params"], "nuclei_placed": len(sinfo["nuclei"]),
                                  "debris_placed": sinfo["debris"]}
    if return_masks:
        info["masks"] = masks
    return image, anns, info


# ----------------------------------------------------------------------------------------------
# datasets


def _pick_karyotypes(rng: np.random.Generator, n: int, karyotypes) -> List[str]:
    if karyotypes is None:
        ks, w = zip(*DEFAULT_KARYOTYPE_MIX)
        w = np.asarray(w, float) / sum(w)
        return [ks[i] for i in rng.choice(len(ks), size=n, p=w)]
    if isinstance(karyotypes, str):
        karyotypes = [karyotypes]
    if isinstance(karyotypes, dict):
        ks, w = list(karyotypes), np.asarray(list(karyotypes.values()), float)
        return [ks[i] for i in rng.choice(len(ks), size=n, p=w / w.sum())]
    ks = list(karyotypes)
    for k in ks:
        parse_karyotype(k)
    return [ks[i % len(ks)] for i in range(n)]


def _work(args):
    seed_seq, idx, width, height, karyotype, batch, img_path, realism, scale = args
    rng = np.random.default_rng(seed_seq)
    image, anns, info = generate_spread(rng, width, height, karyotype, batch, realism=realism, scale=scale)
    write_image(img_path, image, [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY,
                                  cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY])
    return idx, anns, info


def generate_dataset(out_dir: str, num_images: int, seed: int = 0, width: int = 1600, height: int = 1200,
                     batch: str = "default", karyotypes=None, workers: int = 1, progress: bool = True,
                     split: str = "train", first_image_id: int = 1, realism=None,
                     scale: Optional[float] = None) -> str:
    """Generate ``num_images`` spreads as PNG + COCO json; returns the json path.

    Layout: ``<out_dir>/<split>/<NNNNNN>.png`` and ``<out_dir>/annotations/<split>.json`` with
    ``file_name`` relative to ``out_dir`` (the data-root convention of ``datasets/``).
    ``karyotypes``: ``None`` (mix of normal XX/XY and ~10 % aneuploidies, see
    :data:`DEFAULT_KARYOTYPE_MIX`), one string, a list (cycled) or a ``{karyotype: weight}`` dict.
    Deterministic: the same arguments give byte-identical files (independent of ``workers``).
    ``realism`` (see :func:`generate_spread`; ``None`` = unchanged output) is stored, resolved, in the
    json's ``info`` with each image's drawn parameters (``realism``, ``realism_params``).
    ``scale``: the chromosomes' pixel size (see :func:`generate_spread`; ``None``: with the image).
    """
    from .coco import write_coco_json

    if num_images < 0:
        raise ValueError("num_images must be >= 0")
    if batch not in BATCH_DISTRIBUTIONS:
        raise KeyError(f"unknown batch distribution {batch!r}; known: {sorted(BATCH_DISTRIBUTIONS)}")
    spec = None
    if realism is not None:
        from .slide import resolve_realism

        spec = resolve_realism(realism, preset="synthetic")
    out_dir = os.path.abspath(out_dir)
    root_ss = np.random.SeedSequence([int(seed), 0x5EED])
    kary_rng = np.random.default_rng(root_ss.spawn(1)[0])
    kts = _pick_karyotypes(kary_rng, num_images, karyotypes)
    children = np.random.SeedSequence([int(seed), 0x1AA6E]).spawn(num_images)
    jobs = [(children[i], i, width, height, kts[i], batch, os.path.join(out_dir, split, f"{i + first_image_id:06d}.png"),
             spec, scale) for i in range(num_images)]
    results: List[Any] = [None] * num_images
    bar = None
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=num_images, desc=f"synth {split}", unit="img")
        except ImportError:  # pragma: no cover
            bar = None
    if workers > 1 and num_images > 1:
        import multiprocessing as mp

        with mp.get_context("spawn" if os.name == "nt" else "fork").Pool(workers) as pool:
            for idx, anns, info in pool.imap_unordered(_work, jobs, chunksize=max(1, num_images // (workers * 8))):
                results[idx] = (anns, info)
                if bar:
                    bar.update(1)
    else:
        for j in jobs:
            idx, anns, info = _work(j)
            results[idx] = (anns, info)
            if bar:
                bar.update(1)
    if bar:
        bar.close()
    dicts = []
    for i, (anns, info) in enumerate(results):
        dicts.append({"file_name": jobs[i][6], "height": height, "width": width, "image_id": i + first_image_id,
                      "annotations": anns, "karyotype": info["karyotype"], "case_id": f"synth{seed}_{split}_{i:06d}"})
    meta = {"description": "DeepACC synthetic G-band metaphase spreads (ideogram-based, hg38 bands)",
            "seed": int(seed), "batch": batch, "width": width, "height": height, "split": split,
            "batch_params": [r[1]["batch_params"] for r in results]}
    if scale is not None:
        meta["scale"] = float(scale)
    if spec is not None:
        meta.update(realism=spec, realism_params=[r[1]["realism_params"] for r in results])
    return write_coco_json(dicts, os.path.join(out_dir, "annotations", f"{split}.json"), out_dir, info=meta)
