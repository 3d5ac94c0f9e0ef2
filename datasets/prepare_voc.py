#!/usr/bin/env python
"""Pascal VOC XML chromosome annotations -> COCO dataset (e.g. the Cell Image Library "24 chromosomes" set).

    python datasets/prepare_voc.py --src /path/to/voc --out $DETECTRON2_DATASETS/voc_chromosomes
        [--images-dir JPEGImages] [--ann-dir Annotations] [--splits-dir ImageSets/Main] [--seed 0]
        [--split 0.7,0.15,0.15] [--split-by auto|case|image] [--case-regex RE]
        [--unknown error|skip] [--strays object|image] [--copy-images]

Layout: ``<src>/<ann-dir>/*.xml`` (one per image) and the images in ``<src>/<images-dir>/`` (the
standard VOC layout ``Annotations/`` + ``JPEGImages/``); when ``<src>/<ann-dir>`` does not exist and
``<src>`` itself holds ``*.xml`` files, a **flat folder** of image + XML pairs is read instead. An
image is found by the XML's ``<filename>`` (its base name) or by the XML's stem with any of
:data:`IMAGE_EXTS` (JPEG, PNG, TIFF, BMP; RGB or grayscale: the readers convert to gray), in the
images folder, then next to the XML.

Class names (``<object><name>``, case and surrounding blanks ignored):

* the Cell Image Library (CIL / Taichung) naming, Denver group letter + number: ``A1`` .. ``A3``,
  ``B4``, ``B5``, ``C6`` .. ``C12``, ``D13`` .. ``D15``, ``E16`` .. ``E18``, ``F19``, ``F20``,
  ``G21``, ``G22`` (also ``CX`` / ``GY``), and ``X``, ``Y``. The letter must be the number's Denver
  group; a letter that is not (``B7``) is a **problem**: the whole image is skipped (a spread with
  one chromosome left out would teach the detector that this chromosome is background) and reported
  as ``<xml>: object 12 'B7': letter B does not match chromosome 7's Denver group C`` (objects are
  numbered from 1 in file order);
* every name ``deepacc.karyotype.canonical_name`` reads (``1``..``22``, ``X``, ``Y``, ``chr7``,
  ``23``/``24``, ``clase7``);
* **strays**: numbers that are no chromosome class (``0``, ``25``, ``clase25``, ``chr25``, as the
  ``clase25`` = unknown of other sets). They are no chromosome of the 24 classes: the object is
  dropped and the image kept (``--strays image`` skips the image instead); each name is counted and
  named with its files in the summary and the report;
* any other name (``banana``, ``A25``) is **unknown**: ``--unknown error`` (default) stops before
  anything is written, naming every file and name (it may be a naming this script does not know,
  which should not silently drop objects); ``--unknown skip`` skips those images and reports them.

Other problems of one image also skip it and are reported: XML that does not parse, an object
without a numeric ``<bndbox>``, a box that is no chromosome (:func:`box_problem`: a coordinate
``nan`` / ``inf``, ``xmax < xmin`` or ``ymax < ymin``, a box outside the image or reaching farther
beyond its border than :data:`OUTSIDE_TOLERANCE` of its larger side), a ``<size>`` that is not a
finite number >= 0 (``<width>inf</width>``), an image file that cannot be read, and an entry named
``*.xml`` that is not a file (a folder, a dangling link). An image not found is reported
and skipped too, unless no image is found at all (then the conversion stops: wrong ``--images-dir``).
One bad file never stops the conversion. There is no limit on the number of objects per image (45,
46, 47 or more chromosomes).

Coordinates: VOC boxes are 1-based and inclusive; they are converted to 0-based pixel-edge XYXY
(``x0 = xmin - 1``, ``x1 = xmax``) and clipped to the image (boxes reaching less than
:data:`OUTSIDE_TOLERANCE` beyond it).

Splits: ``<splits-dir>/{train,val,test}.txt`` when present (one image id per line; ``--splits-dir
none`` ignores them), else by groups of images: ``--split-by case`` groups the images by the case
id that ``--case-regex`` (group 1) takes from the XML's file stem (the image's); the default regex
takes a leading token that holds a digit and is followed by ``_``, ``-``, ``.`` or a blank
(``K001_3`` -> ``K001``, ``97000426.10`` -> ``97000426``; ``img0`` and ``metaphase_001`` carry
none). ``--split-by image`` makes every image its own group. ``--split-by auto`` (default) groups
by case id where the stem carries one and keeps images without one as their own group; with fewer
groups than splits to fill (e.g. one case id for all: a date prefix) it falls back to one group per
image, with a note in the summary and the report. The groups are ordered by a seeded hash of their
id (``sha256("<seed>:<id>")``: adding or removing images does not reorder the others), and whole
groups go to val, then test, until each holds its ``--split`` fraction of the images; the rest is
train. One case therefore never lands in two splits (except in that fallback, or where split lists
say so: cases found in several splits are listed in the report).

Images are referenced in place (``file_name`` relative to ``--out``), or copied with ``--copy-images``.
Output: ``<out>/annotations/{train,val,test}.json`` and ``<out>/prepare_report.json`` (counts,
split rule, every skipped image with its reason, strays and unknown names with their files).
"""
import argparse
import hashlib
import json
import math
import os
import re
import sys
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict

from deepacc.data.coco import write_coco_json
from deepacc.data.images import ImageError, image_size
from deepacc.fileio import atomic_write, copy_file
from deepacc.karyotype import CLASS_NAMES, GROUP_OF, canonical_name

SPLITS = ("train", "val", "test")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
#: Leading case id of an image's file stem: a token holding a digit, then ``_``, ``-``, ``.`` or a blank.
CASE_REGEX = r"^([^_\-. ]*\d[^_\-. ]*)[_\-. ]"
#: Files named per stray name / unknown name in the report (the count is always complete).
MAX_FILES_NAMED = 20
#: A box coordinate farther beyond the image border than this fraction of its larger side is a wrong
#: coordinate (the image is skipped); boxes reaching less far beyond the border are clipped (VOC
#: tools let a box be dragged past the border; a quarter of the image is far more than that).
OUTSIDE_TOLERANCE = 0.25

_DENVER_NAME = re.compile(r"([a-g])\s*[-_]?\s*(\d{1,2}|x|y)")
_STRAY_NAME = re.compile(r"(?:clase|class|chromosome|chr)?[\s_-]*(\d+)")


class VOCError(ValueError):
    pass


class ClassNameError(ValueError):
    """A ``<object><name>`` that is not one of the 24 classes; ``kind``: ``wrong_letter``, ``stray`` or ``unknown``."""

    def __init__(self, kind, reason):
        self.kind = kind
        self.reason = reason
        super().__init__(reason)


def parse_class_name(name):
    """Canonical class name (``'1'``..``'22'``, ``'X'``, ``'Y'``) of a VOC ``<object><name>``.

    Reads the CIL naming (Denver group letter + number: ``A1``, ``c7``, ``G21``; the letter must be
    the number's group) and every name :func:`deepacc.karyotype.canonical_name` reads. Raises
    :class:`ClassNameError` (kind ``wrong_letter``, ``stray`` or ``unknown``) for anything else.
    """
    key = str(name).strip().lower()
    m = _DENVER_NAME.fullmatch(key)
    if m is not None:
        letter, num = m.group(1).upper(), m.group(2).upper()
        cls = num if num in ("X", "Y") else str(int(num))
        if cls in GROUP_OF:
            if GROUP_OF[cls] != letter:
                raise ClassNameError("wrong_letter", f"letter {letter} does not match chromosome {cls}'s "
                                                     f"Denver group {GROUP_OF[cls]}")
            return cls
    try:
        return canonical_name(key)
    except KeyError:
        pass
    if _STRAY_NAME.fullmatch(key):
        raise ClassNameError("stray", "not one of the 24 chromosome classes (stray)")
    raise ClassNameError("unknown", "unknown chromosome class")


def parse_voc_xml(path):
    """``(filename, width or None, height or None, [(name as written, xmin, ymin, xmax, ymax)])``.

    Names are returned as written (see :func:`parse_class_name`); raises :class:`VOCError` for XML
    that does not parse or an object without a numeric ``<bndbox>``.
    """
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise VOCError(f"{path}: not valid XML ({e})") from None
    except OSError as e:
        raise VOCError(f"{path}: cannot read the file ({e.strerror or e})") from None
    fn = (root.findtext("filename") or "").strip()
    size = root.find("size")
    w, h = (_xml_size(path, size, k) for k in ("width", "height"))
    objs = []
    for i, o in enumerate(root.iter("object"), 1):
        name = o.findtext("name") or ""
        b = o.find("bndbox")
        if b is None:
            raise VOCError(f"{path}: object {i} {name.strip()!r} without <bndbox>")
        try:
            vals = [float(b.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
        except (TypeError, ValueError):
            raise VOCError(f"{path}: <bndbox> of object {i} {name.strip()!r} needs numeric xmin, ymin, xmax, "
                           f"ymax") from None
        objs.append((name, *vals))
    return fn, w, h, objs


def _xml_size(path, size, key):
    """``<size><width>`` / ``<height>`` as an int, ``None`` when absent, empty, not a number or 0 (what
    some tools write for "unknown"; the image's own size is used); :class:`VOCError` when it is not
    finite or negative (a damaged file: every number in it is suspect)."""
    text = size.findtext(key) if size is not None else None
    if not text or not text.strip():
        return None
    try:
        v = float(text)
    except ValueError:
        return None
    if not math.isfinite(v) or v < 0:
        raise VOCError(f"{path}: <size><{key}> {text.strip()!r} is not a finite number >= 0")
    return int(v) or None


def box_problem(xmin, ymin, xmax, ymax, width=None, height=None):
    """Why a VOC box (1-based, inclusive) cannot be a chromosome, or ``None``: a coordinate that is not
    a finite number, ``xmax < xmin`` or ``ymax < ymin`` (a negative width or height), and on a
    ``width`` x ``height`` image a box that lies outside it or a coordinate farther beyond its border
    than :data:`OUTSIDE_TOLERANCE` of its larger side (a wrong coordinate system)."""
    vals = dict(xmin=xmin, ymin=ymin, xmax=xmax, ymax=ymax)
    for k, v in vals.items():
        if not math.isfinite(v):
            return f"{k} {v} is not a finite number"
    if xmax < xmin or ymax < ymin:
        return (f"negative width or height (xmin {xmin:g}, ymin {ymin:g}, xmax {xmax:g}, ymax {ymax:g}: "
                f"xmax >= xmin and ymax >= ymin needed)")
    if width is None or height is None:
        return None
    box = f"[{xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}]"
    if xmax <= 0 or ymax <= 0 or xmin - 1 >= width or ymin - 1 >= height:
        return f"box {box} lies outside the {width}x{height} image"
    tol = OUTSIDE_TOLERANCE * max(width, height)
    if xmin - 1 < -tol or ymin - 1 < -tol or xmax > width + tol or ymax > height + tol:
        return (f"box {box} reaches farther beyond the {width}x{height} image than {OUTSIDE_TOLERANCE:.0%} of its "
                f"larger side (a wrong coordinate system?)")
    return None


def _find_image(dirs, stem, fn):
    base = os.path.basename(fn.replace("\\", "/")) if fn else ""
    for d in dirs:
        cands = [os.path.join(d, base)] if base else []
        cands += [os.path.join(d, stem + e) for ext in IMAGE_EXTS for e in (ext, ext.upper())]
        for c in cands:
            if os.path.isfile(c):
                return c
    return None


def case_id_of(stem, case_regex=CASE_REGEX):
    """Case id that ``case_regex`` (its group 1, else the whole match) takes from a file stem, or None."""
    m = re.search(case_regex, stem)
    if m is None:
        return None
    cid = m.group(1) if m.re.groups else m.group(0)
    return cid or None


def _hash_order(keys, seed):
    return sorted(keys, key=lambda k: (hashlib.sha256(f"{seed}:{k}".encode("utf-8")).hexdigest(), k))


def assign_groups(sizes, seed, fractions):
    """Split of each group (``{group id: number of images}``): groups in seeded hash order go to val,
    then test, until each holds its fraction of the images; the rest to train."""
    total = sum(sizes.values())
    n_val, n_test = int(round(fractions[1] * total)), int(round(fractions[2] * total))
    have = Counter()
    split_of = {}
    for g in _hash_order(sizes, seed):
        s = "val" if have["val"] < n_val else "test" if have["test"] < n_test else "train"
        split_of[g] = s
        have[s] += sizes[g]
    return split_of


def _resolve_layout(src, images_dir, ann_dir):
    ann_path = os.path.join(src, ann_dir)
    if os.path.isdir(ann_path):
        return "voc", ann_path, [os.path.join(src, images_dir), ann_path]
    if os.path.isdir(src) and any(f.lower().endswith(".xml") for f in os.listdir(src)):
        return "flat", src, [src]
    raise FileNotFoundError(f"{ann_path}: annotation folder not found (and no *.xml files directly in {src} "
                            f"for a flat folder of image + XML pairs)")


def run(src, out, images_dir="JPEGImages", ann_dir="Annotations", splits_dir="ImageSets/Main", seed=0,
        fractions=(0.7, 0.15, 0.15), copy_images=False, split_by="auto", case_regex=CASE_REGEX,
        unknown="error", strays="object"):
    """Convert; returns ``(paths, stats, report)``: the json of each split, a Counter of counts and the
    report also written to ``<out>/prepare_report.json``."""
    if split_by not in ("auto", "case", "image"):
        raise ValueError(f"split_by must be 'auto', 'case' or 'image', got {split_by!r}")
    if unknown not in ("error", "skip"):
        raise ValueError(f"unknown must be 'error' or 'skip', got {unknown!r}")
    if strays not in ("object", "image"):
        raise ValueError(f"strays must be 'object' or 'image', got {strays!r}")
    re.compile(case_regex)
    layout, ann_path, image_dirs = _resolve_layout(src, images_dir, ann_dir)
    out = os.path.abspath(out)
    stats = Counter()
    skipped = []  # {"xml", "image", "reason"}, one per skipped image
    stray_names = defaultdict(lambda: {"objects": 0, "files": []})
    unknown_names = defaultdict(lambda: {"objects": 0, "files": []})
    unknown_errors = []
    n_objects = []
    recs = {}
    first_missing, found_image = None, False

    def note(table, name, xml):
        e = table[name]
        e["objects"] += 1
        if xml not in e["files"] and len(e["files"]) < MAX_FILES_NAMED:
            e["files"].append(xml)

    def skip(xml, stem, reason, key):
        skipped.append({"xml": xml, "image": stem, "reason": reason})
        stats[key] += 1

    for f in sorted(os.listdir(ann_path)):
        if not f.lower().endswith(".xml"):
            continue
        stats["xml_files"] += 1
        stem, xml = f[:-4], os.path.join(ann_path, f)
        if not os.path.isfile(xml):  # a folder or a dangling link named *.xml: named, never a traceback
            what = ("a folder" if os.path.isdir(xml) else "a dangling symbolic link" if os.path.islink(xml)
                    else "not a regular file")
            skip(xml, stem, f"{xml}: is {what}, not an XML annotation file", "skipped_not_a_file")
            continue
        try:
            fn, w, h, objs = parse_voc_xml(xml)
        except VOCError as e:
            skip(xml, stem, str(e), "skipped_images_bad_xml")
            continue
        except Exception as e:  # a safety net: one file never stops the conversion
            skip(xml, stem, f"{xml}: internal error, please report it ({type(e).__name__}: {e})",
                 "skipped_images_bad_xml")
            continue
        stats["objects_in_xml"] += len(objs)
        names, problems, image_strays, image_unknown = [], [], [], []
        bad_boxes = []
        for i, (raw, *box) in enumerate(objs, 1):
            name = raw.strip()
            try:
                names.append((parse_class_name(name), *box, i, name))
                why = box_problem(*box)
                if why:
                    bad_boxes.append(f"object {i} {name!r}: {why}")
                    stats["bad_box_objects"] += 1
            except ClassNameError as e:
                what = f"object {i} {name!r}: {e.reason}"
                if e.kind == "wrong_letter":
                    problems.append(what)
                    stats["wrong_letter_objects"] += 1
                elif e.kind == "stray":
                    image_strays.append(what)
                    note(stray_names, name, xml)
                    stats["stray_objects"] += 1
                else:
                    image_unknown.append(
                        (what, f"{xml}: unknown chromosome class {name!r} in <object><name> (object {i})"))
                    note(unknown_names, name, xml)
                    stats["unknown_name_objects"] += 1
        if image_unknown and unknown == "error":
            unknown_errors.append([u[1] for u in image_unknown])
            continue
        reasons = (problems + bad_boxes + [u[0] for u in image_unknown]
                   + (image_strays if strays == "image" else []))
        if reasons:
            key = ("skipped_images_wrong_letter" if problems else "skipped_images_bad_box" if bad_boxes
                   else "skipped_images_unknown_name" if image_unknown else "skipped_images_with_strays")
            skip(xml, stem, f"{xml}: " + "; ".join(reasons), key)
            continue
        img = _find_image(image_dirs, stem, fn)
        if img is None:
            skip(xml, stem, f"{xml}: image {fn or stem} not found in {' or '.join(image_dirs)}",
                 "skipped_images_not_found")
            first_missing = first_missing or skipped[-1]["reason"]
            continue
        found_image = True
        try:
            ih, iw = image_size(img)
        except ImageError as e:
            skip(xml, stem, f"{xml}: {e}", "skipped_images_unreadable")
            continue
        if (w, h) != (None, None) and (w, h) != (iw, ih):
            stats["xml_size_differs_from_image"] += 1
        outside = [f"object {i} {raw!r}: {why}" for _, *box, i, raw in names for why in [box_problem(*box, iw, ih)]
                   if why]
        if outside:  # the whole image: a spread with a chromosome left out teaches it is background
            stats["bad_box_objects"] += len(outside)
            skip(xml, stem, f"{xml}: " + "; ".join(outside), "skipped_images_bad_box")
            continue
        anns = []
        for name, x0, y0, x1, y1, _, _ in names:
            x0, y0 = max(0.0, x0 - 1), max(0.0, y0 - 1)
            x1, y1 = min(float(iw), x1), min(float(ih), y1)
            if x1 <= x0 or y1 <= y0:  # not reached: box_problem names such boxes (kept as a safety net)
                stats["dropped_empty_boxes"] += 1
                continue
            anns.append({"bbox": [x0, y0, x1, y1], "bbox_mode": 0, "category_id": CLASS_NAMES.index(name), "iscrowd": 0})
        if not anns:
            stats["dropped_images_without_boxes"] += 1
            continue
        n_objects.append(len(anns))
        recs[stem] = {"file_name": os.path.abspath(img), "height": ih, "width": iw, "annotations": anns}
    if unknown_errors:  # one list per image
        n = sum(len(u) for u in unknown_errors)
        names = ", ".join(f"{k!r} x{e['objects']}" for k, e in sorted(unknown_names.items()))
        raise VOCError(unknown_errors[0][0] + (f" (and {n - 1} more object(s))" if n > 1 else "")
                       + f"; unknown names: {names} in {len(unknown_errors)} file(s). Use --unknown skip "
                       f"(convert(unknown='skip')) to skip these images and list them in the report")
    if first_missing and not found_image:
        raise VOCError(f"{first_missing} (no image of any XML found: check --images-dir)")

    # case ids and splits
    cases = {k: case_id_of(k, case_regex) for k in recs}
    if split_by == "case":
        missing = sorted(k for k, c in cases.items() if c is None)
        if missing:
            raise VOCError(f"--split-by case: {len(missing)} image(s) carry no case id by --case-regex '{case_regex}', "
                           f"e.g. {', '.join(missing[:5])}")
    n_with_case = sum(1 for k in recs if cases[k] is not None)
    split_of, rule_note = {}, None
    sd = os.path.join(src, splits_dir) if splits_dir and splits_dir.lower() != "none" else None
    if sd and all(os.path.exists(os.path.join(sd, f"{s}.txt")) for s in ("train", "val")):
        for s in SPLITS:
            p = os.path.join(sd, f"{s}.txt")
            if os.path.exists(p):
                with open(p) as fh:
                    for line in fh:
                        if line.strip():
                            split_of[line.split()[0]] = s
        rule = f"lists {sd}/{{train,val,test}}.txt"
    else:
        group_of = {k: k for k in recs} if split_by == "image" else {k: cases[k] or k for k in recs}
        n_splits = sum(1 for fr in fractions if fr > 0)
        if split_by == "auto" and len(set(group_of.values())) < min(n_splits, len(recs)):
            rule_note = (f"only {len(set(group_of.values()))} case(s) for {n_splits} splits: split per image instead "
                         f"(use --split-by case to keep cases apart anyway)")
            group_of = {k: k for k in recs}
        sizes = Counter(group_of.values())
        by_group = assign_groups(sizes, seed, fractions)
        split_of = {k: by_group[g] for k, g in group_of.items()}
        if split_by == "image" or rule_note or n_with_case == 0:
            rule = f"per image, seeded hash order (seed {seed})"
        else:
            rule = (f"by case id (--case-regex '{case_regex}' on the file stem; images without one: their own group), "
                    f"seeded hash order (seed {seed})")
    # a case in several splits (possible only with split lists)
    case_splits = defaultdict(set)
    for k, c in cases.items():
        if c is not None and k in split_of:
            case_splits[c].add(split_of[k])
    mixed_cases = sorted(c for c, ss in case_splits.items() if len(ss) > 1)

    if copy_images:
        for k in sorted(recs):
            if k in split_of:
                dst = os.path.join(out, "images", os.path.basename(recs[k]["file_name"]))
                copy_file(recs[k]["file_name"], dst)  # creates the folder
                recs[k]["file_name"] = dst
    for k, r in recs.items():
        r["case_id"] = cases[k] or k
    paths, split_report = {}, {}
    for s in SPLITS:
        rs = [recs[k] for k in sorted(recs) if split_of.get(k) == s]
        for i, r in enumerate(rs, 1):
            r["image_id"] = i
        paths[s] = write_coco_json(rs, os.path.join(out, "annotations", f"{s}.json"), out,
                                   info={"description": f"converted from VOC XML {os.path.abspath(src)}", "split": s})
        stats[f"{s}_images"] = len(rs)
        split_report[s] = {"images": len(rs), "cases": len({r["case_id"] for r in rs}),
                           "chromosomes": sum(len(r["annotations"]) for r in rs)}
    stats["unassigned_images"] = sum(1 for k in recs if k not in split_of)
    stats["images_written"] = sum(stats[f"{s}_images"] for s in SPLITS)
    stats["skipped_images"] = len(skipped)
    report = {
        "source": os.path.abspath(src), "layout": layout, "annotations": os.path.abspath(ann_path),
        "image_dirs": [os.path.abspath(d) for d in image_dirs], "seed": seed, "fractions": list(fractions),
        "split_by": split_by, "split_rule": rule, "split_note": rule_note, "unknown": unknown, "strays": strays,
        "counts": dict(sorted(stats.items())),
        "objects_per_image": ({"min": min(n_objects), "max": max(n_objects),
                               "mean": round(sum(n_objects) / len(n_objects), 2)} if n_objects else None),
        "splits": split_report,
        "cases_in_several_splits": mixed_cases,
        "skipped_images": skipped,
        "stray_names": {n: dict(e) for n, e in sorted(stray_names.items())},
        "unknown_names": {n: dict(e) for n, e in sorted(unknown_names.items())},
    }
    atomic_write(os.path.join(out, "prepare_report.json"), json.dumps(report, indent=1).encode("utf-8"))
    return paths, stats, report


def convert(src, out, images_dir="JPEGImages", ann_dir="Annotations", splits_dir="ImageSets/Main", seed=0,
            fractions=(0.7, 0.15, 0.15), copy_images=False, split_by="auto", case_regex=CASE_REGEX,
            unknown="error", strays="object"):
    """Convert; returns ``(paths, stats)`` (see :func:`run`, which also returns the report)."""
    paths, stats, _ = run(src, out, images_dir, ann_dir, splits_dir, seed, fractions, copy_images, split_by,
                          case_regex, unknown, strays)
    return paths, stats


def print_summary(paths, stats, report, out, max_lines=20, file=sys.stdout):
    """The end-of-run summary: splits, skipped images with their reasons, strays, unknown names."""
    for s, pth in paths.items():
        sp = report["splits"][s]
        print(f"{s:5s}: {sp['images']:4d} images, {sp['cases']:4d} cases, {sp['chromosomes']:6d} chromosomes -> {pth}",
              file=file)
    print(f"split: {report['split_rule']}", file=file)
    if report["split_note"]:
        print(f"note: {report['split_note']}", file=file)
    if report["cases_in_several_splits"]:
        cs = report["cases_in_several_splits"]
        print(f"warning: {len(cs)} case(s) in several splits of the split lists: {', '.join(cs[:10])}", file=file)
    if report["objects_per_image"]:
        o = report["objects_per_image"]
        print(f"chromosomes per image: min {o['min']}, mean {o['mean']}, max {o['max']}", file=file)
    sk = report["skipped_images"]
    if sk:
        print(f"skipped {len(sk)} image(s):", file=file)
        for e in sk[:max_lines]:
            print(f"  {e['reason']}", file=file)
        if len(sk) > max_lines:
            print(f"  ... and {len(sk) - max_lines} more", file=file)
    for key, what in (("stray_names", "stray names (not one of the 24 classes; "
                       + ("images skipped" if report["strays"] == "image" else "objects dropped, images kept") + ")"),
                      ("unknown_names", "unknown names (images skipped)")):
        if report[key]:
            print(f"{what}:", file=file)
            for n, e in report[key].items():
                files = ", ".join(os.path.basename(f) for f in e["files"])
                more = " ..." if len(e["files"]) >= MAX_FILES_NAMED else ""
                print(f"  {n!r}: {e['objects']} object(s) in {files}{more}", file=file)
    print(f"report: {os.path.join(out, 'prepare_report.json')}", file=file)
    print(json.dumps(dict(sorted(stats.items()))), file=file)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", required=True,
                   help="folder of the VOC data set: Annotations/ + JPEGImages/ (+ ImageSets/Main/), or a flat "
                   "folder of image + XML pairs")
    p.add_argument("--out", required=True, help="output dataset folder (e.g. $DETECTRON2_DATASETS/voc_chromosomes)")
    p.add_argument("--images-dir", default="JPEGImages", help="image folder, relative to --src (default: JPEGImages)")
    p.add_argument("--ann-dir", default="Annotations",
                   help="folder of the XML annotations, relative to --src; when it does not exist, the *.xml files "
                   "directly in --src are read, with their images next to them (default: Annotations)")
    p.add_argument("--splits-dir", default="ImageSets/Main",
                   help="folder of the split lists {train,val,test}.txt, relative to --src; without train.txt "
                   "and val.txt there (or with 'none'), a split by --split-by (default: ImageSets/Main)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split's hash order (default: 0)")
    p.add_argument("--split", default="0.7,0.15,0.15",
                   help="train,val,test fractions of the images (default: 0.7,0.15,0.15)")
    p.add_argument("--split-by", choices=("auto", "case", "image"), default="auto",
                   help="split groups: 'case' by the case id of --case-regex (every image must carry one), "
                   "'image' one group per image, 'auto' the case id where the file name carries one, else the "
                   "image (default: auto)")
    p.add_argument("--case-regex", default=CASE_REGEX,
                   help="regular expression whose group 1 is the case id in an image's file stem (default: a "
                   "leading token with a digit, followed by _ - . or a blank)")
    p.add_argument("--unknown", choices=("error", "skip"), default="error",
                   help="class names that are neither a chromosome nor a stray number: 'error' stops and names "
                   "them all, 'skip' skips their images and reports them (default: error)")
    p.add_argument("--strays", choices=("object", "image"), default="object",
                   help="stray names (0, 25, clase25: no chromosome class): drop the 'object' and keep the image, "
                   "or skip the whole 'image' (default: object); both are reported")
    p.add_argument("--copy-images", action="store_true",
                   help="copy the images to <out>/images (default: reference them in place)")
    a = p.parse_args(argv)
    try:
        fractions = [float(v) for v in a.split.split(",")]
        if len(fractions) != 3 or min(fractions) < 0:
            raise ValueError
    except ValueError:
        print(f"prepare_voc: error: --split needs three non-negative fractions train,val,test, got {a.split!r}",
              file=sys.stderr)
        return 2
    try:
        re.compile(a.case_regex)
    except re.error as e:
        print(f"prepare_voc: error: --case-regex {a.case_regex!r}: {e}", file=sys.stderr)
        return 2
    try:
        paths, stats, report = run(a.src, a.out, a.images_dir, a.ann_dir, a.splits_dir, a.seed, fractions,
                                   a.copy_images, a.split_by, a.case_regex, a.unknown, a.strays)
    except (VOCError, FileNotFoundError) as e:
        print(f"prepare_voc: error: {e}", file=sys.stderr)
        return 1
    print_summary(paths, stats, report, os.path.abspath(a.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
