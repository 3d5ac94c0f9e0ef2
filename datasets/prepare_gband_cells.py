#!/usr/bin/env python
"""Compose metaphase images from real G-banded single-chromosome crops -> COCO dataset.

    python datasets/prepare_gband_cells.py --src /path/to/gband_cells --out $DETECTRON2_DATASETS/gband_cells
        [--size 1280x960] [--seed 0] [--split 0.7,0.15,0.15] [--limit N] [--workers W]

Input layout: ``<src>/<case>.<cell>.tiff/claseK/claseK_i_<case>.<cell>.tiff`` (8-bit grayscale, dark
chromosome on white), ``K`` = 1..22, 23 = X, 24 = Y. Folders with any other class (``clase25`` =
unknown) are skipped and counted.

One image per real cell: every crop of the cell is rotated by a random angle and placed in an
elliptic spread on a white canvas, where chromosomes may touch and a fraction overlap
(darkest-pixel blending: ``min`` of the gray values). The mask of a crop is its pixels darker than
``255 - MASK_DARKNESS`` after removing specks smaller than 5 % of the largest component; boxes are
tight around the placed mask. The crops' own staining is kept untouched, so each image carries its
cell's real batch effect. The ``karyotype`` stored per image is the one of the crops present
(derived from the class folders), e.g. ``46,XY`` or ``45,XX,-7`` when a crop is missing.

Splits are by **case** (the first number of the cell folder, e.g. 97002023): cases are shuffled with
``--seed`` and cut by ``--split`` fractions (at least one case per split), so no case appears in two
splits and the assignment does not depend on ``--limit``. ``--limit N`` keeps N cells in total
(~70/15/15, at least one per split) for quick runs.

Case 426 is known to hold labelling errors: cells whose case id is ``426`` or ends with ``426`` are
excluded by default (``--keep-case-426`` keeps them); the number excluded is printed and written to
``<out>/prepare_report.json``.

Output: ``<out>/<split>/<case>.<cell>.png`` and ``<out>/annotations/<split>.json``.

``--aneuploid`` also writes ``val_aneuploid`` and ``test_aneuploid``: every cell of the split once
more, with one numerical abnormality in turn from :data:`ANEUPLOIDIES` (47,+21; 45,-7; 45,X;
47,XXY; 47,+18; 47,+13; 45,-21; 47,XYY). A gained chromosome is a crop of that class from another
cell of the same split, of the same case when there is one (same staining); a lost one is a crop of
the cell left out; sex changes drop the Y (or one X) or add an X (a Y to a female cell for XXY).
The layout is composed anew (its own random stream). They score how a method treats aneuploid
spreads (e.g. whether the karyotype assignment keeps a trisomy).

``--realistic`` gives every image a real slide's appearance after composing it
(:func:`deepacc.data.slide.apply_slide`, preset ``default``): background level and texture,
vignetting and a tilted illumination, a faint halo around the objects, unannotated interphase
nuclei near the spread (never touching a chromosome, covering at most 10 % of any box), debris
specks and pixel noise. Finer flags (only
with ``--realistic``): ``--jpeg LO,HI`` JPEG artefacts at a quality drawn from LO..HI, ``--rgb``
RGB images with a brownish/grayish G-band colour cast, ``--nuclei LO,HI`` nuclei per image,
``--debris LO,HI`` specks per megapixel. The layout and the boxes are those of the run without
``--realistic`` (the appearance has its own random stream per cell); the spec and every image's
drawn parameters are stored in the json's ``info`` (``realism``, ``realism_params``). Without
these flags the output is unchanged.

Spreads that look real (:mod:`deepacc.data.augment_spread`; each flag off by default, and without
them the images and the json are byte-identical to a run before the flags existed):

* ``--overlap-rate LO,HI`` fraction of the chromosomes allowed to overlap another (per image;
  default 0.04,0.15), ``--overlap-allow F`` how much of such a chromosome may lie over others
  (default 0.35), ``--touch P`` probability that a chromosome is put against an already placed one
  (slid out from a border point of the placed ones until it touches, or overlaps by at most a drawn
  part of the allowance), ``--blend multiply`` overlaps as stacked absorbers (a crossing is darker
  than either chromosome; default ``max``, the darkest pixel);
* ``--bend LO,HI`` bend a fraction ``--bend-rate`` (default 0.5) of the crops by an angle drawn
  from LO..HI degrees (a circular arc over 30 - 100 % of the length, centred at 25 - 75 % of it;
  the mask and the box follow the bent crop);
* ``--density LO,HI`` chromosome area / spread area per image (default 0.08,0.14);
* ``--contrast LO,HI`` scale of the darkness, ``--gamma LO,HI``, ``--blur LO,HI`` (Gaussian sigma,
  px) per image, on the composed image, chromosomes included (before ``--realistic``);
* ``--nuclei-touch P`` (with ``--realistic``) a nucleus lies against the spread with probability P,
  partly under chromosomes (at most 20 % of its area, at most 50 % of any box; one that finds no
  such place lies away from them as usual), never annotated;
* ``--bright-on-dark P`` renders a fraction P of the images fluorescence-like: bright chromosomes on
  a dark background (level 4 - 30, brightest chromosome pixels 170 - 250; nuclei turn bright too),
  recorded per image as ``polarity`` (``bright_on_dark`` / ``dark_on_light``).

``--real-like`` turns on the combination measured against real spreads (BioImLab Q-band and ADIR
DAPI: ``python datasets/make_realistic_figure.py --measure 20``, docs/data.md): ``--realistic
--nuclei-touch 0.2 --density 0.10,0.30 --overlap-rate 0.04,0.22 --overlap-allow 0.35 --touch 0.12
--blend multiply --bend 15,70 --bend-rate 0.4 --contrast 0.6,1.05 --gamma 0.7,1.2 --blur 0.6,3.2
--bright-on-dark 0.2``; flags given with it override its values. Each kind of draw has its own
random stream per cell (bends, touching placement, photometric values, polarity; :func:`_stream`),
density and overlap rate are the layout's existing draws with other ranges, so the case split and
the cells of each split never change. With any of these flags the json's ``info`` holds ``spread``
(the spec) and ``spread_params`` (per image: density, overlap rate, bent and touching-placed
counts, contrast, gamma, blur, polarity and levels), every image entry ``polarity`` (with
``--bright-on-dark``), and every annotation ``occlusion_order`` (placement index: a later
chromosome lies on top) and ``occluded_fraction`` (part of its mask under later chromosomes). A
box is always the box of the chromosome's full mask.
"""
import argparse
import json
import os
import re
import sys
import zlib
from collections import Counter, defaultdict

import cv2
import numpy as np

from deepacc.data.augment_spread import (REAL_LIKE_REALISM, add_spread_arguments, bend_patch, occlusion,
                                         place_touching, render_bright_on_dark, spread_from_args,
                                         vary_photometric)
from deepacc.data.coco import dicts_to_coco, write_coco_json
from deepacc.data.compose import crop_to_mask, place_patch, rotate_patch, spread_ellipse
from deepacc.data.images import ImageError, read_image
from deepacc.data.slide import add_realism_arguments, realism_from_args
from deepacc.data.splits import limit_per_split
from deepacc.fileio import atomic_write, write_image
from deepacc.karyotype import CLASS_NAMES, format_karyotype

MASK_DARKNESS = 25
CELL_RE = re.compile(r"^([^./]+)\.(\d+)\.tiff?$", re.IGNORECASE)
CLASS_RE = re.compile(r"^clase(\d+)$", re.IGNORECASE)
SPLITS = ("train", "val", "test")
#: Numerical abnormalities of the ``*_aneuploid`` splits, applied to the cells in turn.
ANEUPLOIDIES = ("+21", "-7", "45,X", "XXY", "+18", "+13", "-21", "XYY")


def scan(src):
    """``(cells, report)``; cells: list of dicts {name, case, crops: [(path, class name)]}."""
    cells, report = [], Counter()
    if not os.path.isdir(src):
        raise FileNotFoundError(f"{src}: source folder not found")
    for cell in sorted(os.listdir(src)):
        m = CELL_RE.match(cell)
        cdir = os.path.join(src, cell)
        if not m or not os.path.isdir(cdir):
            report["ignored_entries"] += 1
            continue
        crops = []
        for cls in sorted(os.listdir(cdir)):
            km = CLASS_RE.match(cls)
            files = sorted(f for f in os.listdir(os.path.join(cdir, cls)) if f.lower().endswith((".tif", ".tiff"))) \
                if os.path.isdir(os.path.join(cdir, cls)) else []
            k = int(km.group(1)) if km else -1
            if not 1 <= k <= 24:
                report["skipped_unknown_class_crops"] += len(files)
                report[f"skipped_{cls}"] += len(files)
                continue
            crops += [(os.path.join(cdir, cls, f), CLASS_NAMES[k - 1]) for f in files]
        cells.append({"name": cell[: -len(".tiff")] if cell.lower().endswith(".tiff") else cell[:-4],
                      "case": m.group(1), "crops": crops})
    return cells, report


def assign_splits(cases, seed, fractions):
    cases = sorted(set(cases))
    order = [cases[i] for i in np.random.default_rng(seed).permutation(len(cases))]
    n = len(order)
    n_val = max(1, int(round(fractions[1] * n))) if n >= 3 else 0
    n_test = max(1, int(round(fractions[2] * n))) if n >= 3 else 0
    out = {}
    for i, c in enumerate(order):
        out[c] = "val" if i < n_val else "test" if i < n_val + n_test else "train"
    return out


def _cell_rng(seed, name):
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _realism_rng(seed, name):
    return np.random.default_rng([seed, zlib.crc32(name.encode()), 0x511DE])


#: Random streams of the --real-like variations, one per kind of draw (see :func:`_stream`).
STREAMS = {"bend": 0xBE4D, "touch": 0x70C4, "photometric": 0xC0A7, "polarity": 0x1A7E}


def _stream(seed, name, kind):
    """The random stream of one kind of --real-like draw for one cell: each kind has its own, so
    turning one variation on or off changes no other draw (and no draw of the plain layout)."""
    return np.random.default_rng([seed, zlib.crc32(name.encode()), STREAMS[kind]])


def compose_cell(cell, width, height, seed=0, density=(0.08, 0.14), overlap_rate=(0.04, 0.15), realism=None,
                 return_info=False, spread=None, return_masks=False):
    """Compose one cell's crops into a spread: ``(image uint8, annotations, problems)``.

    ``realism`` (a spec for :func:`deepacc.data.slide.apply_slide`, ``None`` = plain white canvas)
    adds a slide's appearance from its own random stream, so the layout and the boxes do not depend
    on it. ``return_info=True`` appends the appearance step's info (``{}`` without realism).

    ``spread`` (a spec of :func:`deepacc.data.augment_spread.resolve_spread`, ``None`` = today's
    composition) varies the layout and the look (bends, touching placement, density, overlap,
    contrast / gamma / blur, bright-on-dark); each kind of variation draws from its own stream
    (:func:`_stream`). With it, the info holds ``"spread"`` (this image's drawn parameters) and every
    annotation ``occlusion_order`` (placement index; later = on top) and ``occluded_fraction`` (its
    mask's fraction under later chromosomes). ``return_masks=True`` adds ``"masks"``: ``(x, y,
    mask)`` per annotation (for measuring).
    """
    sp = spread or {}
    rng = _cell_rng(seed, cell["name"])
    brng = _stream(seed, cell["name"], "bend") if sp.get("bend") else None
    pieces, problems = [], []
    n_bent = 0
    for path, name in cell["crops"]:
        try:
            a = read_image(path)
        except ImageError as e:
            problems.append(str(e))
            continue
        up = 255 - a
        angle = float(rng.uniform(0, 360))
        if brng is not None:  # five draws per crop, whether it is bent or not
            u, ang, pos, ext, side = brng.random(5)
            if u < sp["bend_rate"]:
                deg = sp["bend"][0] + (sp["bend"][1] - sp["bend"][0]) * float(ang)
                up = bend_patch(up, deg if side < 0.5 else -deg, center=0.25 + 0.5 * float(pos),
                                extent=0.3 + 0.7 * float(ext), threshold=MASK_DARKNESS)
                n_bent += 1
        dark = rotate_patch(up, angle, border=0)
        mask = dark > MASK_DARKNESS
        n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        if n <= 1:
            problems.append(f"{path}: no chromosome pixels (crop is blank)")
            continue
        areas = stats[1:, cv2.CC_STAT_AREA]
        keep = np.zeros(n, bool)
        keep[1:] = areas >= max(5, 0.05 * areas.max())
        mask = keep[lab]
        dark = np.where(mask | (cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0), dark, 0).astype(np.uint8)
        cr = crop_to_mask(dark, mask)
        pieces.append((name, cr[0], cr[1]))
    canvas = np.zeros((height, width), np.uint8)
    occ = np.zeros((height, width), bool)
    anns = []
    extra = {"masks": []} if return_masks else {}
    if not pieces:
        return (255 - canvas, anns, problems, dict(extra)) if return_info else (255 - canvas, anns, problems)
    dens = float(rng.uniform(*sp.get("density", density)))
    orate = float(rng.uniform(*sp.get("overlap_rate", overlap_rate)))
    allow_ov = sp.get("overlap_allow", 0.35)
    ell = spread_ellipse(rng, float(sum(m.sum() for _, _, m in pieces)), dens, width, height)
    trng = _stream(seed, cell["name"], "touch") if sp.get("touch") else None
    multiply = sp.get("blend") == "multiply"
    placed, n_touch = [], 0
    for i in rng.permutation(len(pieces)):
        name, d, m = pieces[i]
        allow = allow_ov if rng.random() < orate else 0.0
        pos = None
        if trng is not None and trng.random() < sp["touch"]:
            pos = place_touching(trng, m, occ, allow)
            n_touch += pos is not None
        if pos is None:
            pos = place_patch(rng, m, ell, occ, allow)
        if pos is None:
            problems.append(f"{cell['name']}: a chromosome {name} crop ({m.shape[1]}x{m.shape[0]}) does not fit "
                            f"in {width}x{height}; skipped")
            continue
        x, y = pos
        h, w = m.shape
        # a dilated rim of the crop is pasted too (antialiased edge), the box follows the mask
        if multiply:  # stacked absorbers: transmissions multiply
            c = canvas[y:y + h, x:x + w].astype(np.uint16)
            canvas[y:y + h, x:x + w] = (c + d - (c * d + 127) // 255).astype(np.uint8)
        else:
            np.maximum(canvas[y:y + h, x:x + w], d, out=canvas[y:y + h, x:x + w])
        occ[y:y + h, x:x + w] |= m
        anns.append({"bbox": [float(x), float(y), float(x + w), float(y + h)], "bbox_mode": 0,
                     "category_id": CLASS_NAMES.index(name), "iscrowd": 0})
        placed.append((x, y, m))
    if return_masks:
        extra["masks"] = placed
    image = 255 - canvas
    if spread is not None:
        for a, (order, frac) in zip(anns, occlusion(placed, (height, width))):
            a["occlusion_order"] = order
            a["occluded_fraction"] = round(frac, 4)
        prng = _stream(seed, cell["name"], "photometric")
        con, gam, blr = prng.random(3)  # three draws, whichever are used
        params = {"density": round(dens, 4), "overlap_rate": round(orate, 4), "bent": n_bent,
                  "touching_placed": n_touch}
        photo = {}
        for key, u in (("contrast", con), ("gamma", gam), ("blur", blr)):
            if key in sp:
                photo[key] = sp[key][0] + (sp[key][1] - sp[key][0]) * float(u)
                params[key] = round(photo[key], 4)
        if photo:
            image = vary_photometric(image, **photo)
        extra["spread"] = params
    if realism is not None:
        from deepacc.data.slide import apply_slide

        image, info = apply_slide(image, [a["bbox"] for a in anns], _realism_rng(seed, cell["name"]), realism,
                                  mask=occ, white=255)
    else:
        info = {}
    if spread is not None and "bright_on_dark" in sp:
        qrng = _stream(seed, cell["name"], "polarity")
        u, lo, hi = qrng.random(3)
        if u < sp["bright_on_dark"]:
            dl = sp["dark_level"][0] + (sp["dark_level"][1] - sp["dark_level"][0]) * float(lo)
            bl = sp["bright_level"][0] + (sp["bright_level"][1] - sp["bright_level"][0]) * float(hi)
            image = render_bright_on_dark(image, occ, dl, bl)
            extra["spread"].update(polarity="bright_on_dark", dark_level=round(dl, 2), bright_level=round(bl, 2))
        else:
            extra["spread"]["polarity"] = "dark_on_light"
    if not return_info:
        return image, anns, problems
    return image, anns, problems, {**info, **extra}


def make_aneuploid(cells, seed=0):
    """One altered copy of each cell (see :data:`ANEUPLOIDIES`); cells without what a change needs
    (no crop to drop, no donor) take the next change in the list."""
    rng = np.random.default_rng([seed, 4242])
    by_class = defaultdict(list)  # class -> [(case, path)]
    for c in cells:
        for path, name in c["crops"]:
            by_class[name].append((c["case"], c["name"], path))
    out = []
    for i, cell in enumerate(cells):
        names = [n for _, n in cell["crops"]]
        male = "Y" in names
        for j in range(len(ANEUPLOIDIES)):
            change = ANEUPLOIDIES[(i + j) % len(ANEUPLOIDIES)]
            add, drop = [], None
            if change.startswith("+"):
                add = [change[1:]]
            elif change.startswith("-"):
                drop = change[1:]
            elif change == "45,X":
                drop = "Y" if male else "X"
            elif change == "XXY":
                add = ["X"] if male else ["Y"]
            elif change == "XYY":
                add = ["Y"] if male else []
            if drop is not None and drop not in names:
                continue
            donors = []
            for cls in add:
                pool = [d for d in by_class[cls] if d[1] != cell["name"]]
                same = [d for d in pool if d[0] == cell["case"]]
                pool = same or pool
                if not pool:
                    break
                donors.append((pool[int(rng.integers(len(pool)))][2], cls))
            if len(donors) != len(add) or not (add or drop):
                continue
            crops = list(cell["crops"])
            if drop is not None:
                k = max(idx for idx, (_, n) in enumerate(crops) if n == drop)
                crops.pop(k)
            out.append({"name": cell["name"] + "_aneuploid", "case": cell["case"], "crops": crops + donors})
            break
    return out


def _job(args):
    cell, out, split, w, h, seed = args[:6]
    realism = args[6] if len(args) > 6 else None
    spread = args[7] if len(args) > 7 else None
    img, anns, problems, info = compose_cell(cell, w, h, seed, realism=realism, return_info=True, spread=spread)
    fn = os.path.join(out, split, cell["name"] + ".png")
    write_image(fn, img, [cv2.IMWRITE_PNG_COMPRESSION, 1])  # creates the folder
    counts = Counter(CLASS_NAMES[a["category_id"]] for a in anns)
    rec = {"file_name": fn, "height": h, "width": w, "annotations": anns, "case_id": cell["case"],
           "karyotype": format_karyotype({n: counts.get(n, 0) for n in CLASS_NAMES})}
    if realism is not None and info:  # (no info for a cell without usable crops: dropped)
        rec["realism_params"] = {**info["params"], "nuclei_placed": len(info["nuclei"]),
                                 "debris_placed": info["debris"]}
        if realism.get("nucleus_touch") is not None:
            rec["realism_params"]["nuclei_touching"] = sum(1 for n in info["nuclei"] if n.get("touching"))
    if spread is not None and "spread" in info:
        rec["spread_params"] = info["spread"]
        if "polarity" in info["spread"]:
            rec["polarity"] = info["spread"]["polarity"]
    return rec, problems


def _write_json(recs, json_file, image_root, info):
    """``write_coco_json``, plus the per-image ``polarity`` and the per-annotation occlusion fields
    of the --real-like variations when the records carry them (same formatting)."""
    if not any("polarity" in r or any("occlusion_order" in a for a in r["annotations"]) for r in recs):
        return write_coco_json(recs, json_file, image_root, info=info)
    data = dicts_to_coco(recs, image_root, info)
    coco_anns = iter(data["annotations"])
    for im, r in zip(data["images"], recs):
        if "polarity" in r:
            im["polarity"] = r["polarity"]
        for a in r["annotations"]:
            ca = next(coco_anns)
            for k in ("occlusion_order", "occluded_fraction"):
                if k in a:
                    ca[k] = a[k]
    atomic_write(json_file, (json.dumps(data, separators=(",", ":"), sort_keys=False) + "\n").encode("utf-8"))
    return json_file




def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", required=True,
                   help="folder of the single-chromosome crops (<case>.<cell>.tiff/claseK/*.tiff)")
    p.add_argument("--out", required=True, help="output dataset folder (e.g. $DETECTRON2_DATASETS/gband_cells)")
    p.add_argument("--size", default="1280x960", help="WIDTHxHEIGHT of the composed images (default: 1280x960)")
    p.add_argument("--seed", type=int, default=0, help="seed of the case split and of the layouts (default: 0)")
    p.add_argument("--split", default="0.7,0.15,0.15", help="train,val,test fractions of the cases")
    p.add_argument("--limit", type=int, default=0, help="keep only N cells (quick runs)")
    p.add_argument("--keep-case-426", action="store_true", help="keep case 426 (known labelling errors)")
    p.add_argument("--workers", type=int, default=1, help="parallel processes composing images")
    p.add_argument("--aneuploid", action="store_true",
                   help="also write val_aneuploid and test_aneuploid: each cell with one numerical abnormality")
    p.add_argument("--only", default="", help="comma-separated splits to write (default: all); e.g. "
                   "'val_aneuploid,test_aneuploid' adds those to a prepared folder without rewriting the others")
    add_realism_arguments(p, preset="default")
    add_spread_arguments(p)
    return p


def specs_from_args(a, p):
    """``(realism spec or None, spread spec or None)`` of the parsed flags (usage errors through ``p``)."""
    spread = spread_from_args(a, p)
    if a.real_like and not a.realistic:
        a.realistic = True  # --real-like includes the slide appearance
    realism = realism_from_args(a, p, preset="default")
    if a.nuclei_touch is not None and realism is None:
        p.error("--nuclei-touch needs --realistic (or --real-like)")
    if realism is not None and (a.real_like or a.nuclei_touch is not None):
        from deepacc.data.slide import resolve_realism

        touch = a.nuclei_touch if a.nuclei_touch is not None else REAL_LIKE_REALISM["nucleus_touch"]
        realism = resolve_realism({**realism, "nucleus_touch": touch})
    return realism, spread


def main(argv=None):
    p = build_parser()
    a = p.parse_args(argv)
    realism, spread = specs_from_args(a, p)
    w, h = (int(v) for v in a.size.lower().split("x"))
    fr = [float(v) for v in a.split.split(",")]
    cells, report = scan(a.src)
    if not a.keep_case_426:
        bad = [c for c in cells if c["case"] == "426" or c["case"].endswith("426")]
        report["excluded_case_426_cells"] = len(bad)
        cells = [c for c in cells if c not in bad]
    split_of = assign_splits([c["case"] for c in cells], a.seed, fr)
    by_split = defaultdict(list)
    for c in cells:
        by_split[split_of[c["case"]]].append(c)
    by_split = limit_per_split(by_split, a.limit, fr)
    splits = list(SPLITS)
    if a.aneuploid:
        for s in ("val", "test"):
            by_split[s + "_aneuploid"] = make_aneuploid(by_split.get(s, []), a.seed)
            splits.append(s + "_aneuploid")
    if a.only:
        only = [x.strip() for x in a.only.split(",") if x.strip()]
        unknown = [x for x in only if x not in splits]
        if unknown:
            p.error(f"--only: unknown split(s) {', '.join(unknown)}; known: {', '.join(splits)} "
                    "(the *_aneuploid splits need --aneuploid)")
        splits = only
    tail = (realism, spread) if spread is not None else (realism,) if realism is not None else ()
    jobs = [(c, os.path.abspath(a.out), s, w, h, a.seed) + tail for s in splits for c in by_split.get(s, [])]
    if a.workers > 1:
        import multiprocessing as mp

        with mp.Pool(a.workers) as pool:
            results = pool.map(_job, jobs, chunksize=4)
    else:
        results = [_job(j) for j in jobs]
    recs = defaultdict(list)
    n_problems = 0
    for (c, _, s, *_), (rec, problems) in zip(jobs, results):
        for pr in problems:
            print("warning:", pr, file=sys.stderr)
        n_problems += len(problems)
        if not rec["annotations"]:
            print(f"warning: {c['name']}: no usable crops, image dropped", file=sys.stderr)
            continue
        rec["image_id"] = len(recs[s]) + 1
        recs[s].append(rec)
    summary = {"source": os.path.abspath(a.src), "seed": a.seed, "size": [w, h], **dict(report),
               "crop_problems": n_problems, "splits": {}}
    if realism is not None:
        summary["realism"] = realism
    if spread is not None:
        summary["spread"] = spread
    for s in splits:
        info = {"description": "DeepACC composed metaphases from real G-band crops", "split": s, "seed": a.seed}
        if realism is not None:
            info.update(realism=realism, realism_params=[r.pop("realism_params") for r in recs[s]])
        if spread is not None:
            info.update(spread=spread, spread_params=[r.pop("spread_params") for r in recs[s]])
        js = _write_json(recs[s], os.path.join(a.out, "annotations", f"{s}.json"), os.path.abspath(a.out), info)
        cases = sorted({r["case_id"] for r in recs[s]})
        summary["splits"][s] = {"images": len(recs[s]), "cases": len(cases),
                                "chromosomes": sum(len(r["annotations"]) for r in recs[s])}
        print(f"{s:5s}: {len(recs[s]):4d} images, {len(cases):3d} cases -> {js}")
    report_path = os.path.join(a.out, "prepare_report.json")
    if a.only and os.path.isfile(report_path):  # keep the other splits' entries
        with open(report_path) as f:
            old = json.load(f)
        summary["splits"] = {**old.get("splits", {}), **summary["splits"]}
    atomic_write(report_path, json.dumps(summary, indent=1).encode("utf-8"))
    print(json.dumps({k: v for k, v in summary.items() if k != "splits"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
