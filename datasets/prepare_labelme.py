#!/usr/bin/env python
"""LabelMe json annotations -> COCO dataset (e.g. the BioImLab Q-banded spreads, class-agnostic).

    python datasets/prepare_labelme.py --src <folder of LabelMe json> --out $DETECTRON2_DATASETS/bioimlab
        [--seed 0] [--split 0.7,0.15,0.15] [--case-regex RE] [--complete-min 40]
        [--ignore-label NAME ...] [--allow-outside-src] [--invert] [--max-lines N]

    # the BioImLab set (120 spreads, 768x576, images embedded, every polygon labelled "chr"):
    python datasets/prepare_labelme.py --src ../shared/data/bioimlab --out datasets/bioimlab

Reads every ``*.json`` directly in ``--src`` (one LabelMe file per spread; the image from its
``imageData``, else from ``imagePath`` relative to the json, never outside ``--src`` unless
``--allow-outside-src``). ``polygon`` and ``rectangle`` shapes become COCO annotations (tight box +
polygon ``segmentation``); labels naming a class (``1``, ``chr7``, ``X``) get it, labels naming a
chromosome without identity (``chr``, ``chromosome``) get the class-agnostic category
``chromosome`` (core class 25); other labels are skipped and counted (``--ignore-label`` silences
known ones such as ``nucleus``). Each image records ``annotation_complete`` (at least
``--complete-min`` chromosomes) and ``annotation_kind`` (agnostic / classes / mixed). The split is
by file (or by the case id of ``--case-regex``), from ``numpy.random.default_rng(seed)``. Images are
written as 8-bit gray PNG in their stored polarity (BioImLab's Q-banded spreads: bright chromosomes
on dark); ``--invert`` writes them dark on light.

Every bad file and bad shape is skipped and named (file, ``shapes[i]``, reason) in the summary at
the end and in ``<out>/prepare_report.json``; one bad file never stops the conversion. Exit status
0 when at least one image converted, 2 when none (or on a usage error), with one ``error:`` line.
The rules in full: :mod:`deepacc.data.labelme`.

Output: ``<out>/<split>/<stem>.png``, ``<out>/annotations/{train,val,test}.json``,
``<out>/prepare_report.json``; registered as ``bioimlab_{train,val,test}`` under
``$DETECTRON2_DATASETS/bioimlab``.
"""
import argparse
import sys

from deepacc.data.labelme import COMPLETE_MIN, LabelMeError, convert_folder, summary_lines


def build_parser():
    p = argparse.ArgumentParser(prog="prepare_labelme", description=__doc__.split("\n\n")[0])
    p.add_argument("--src", required=True, help="folder holding the LabelMe *.json files (one per spread)")
    p.add_argument("--out", required=True, help="output dataset folder (e.g. $DETECTRON2_DATASETS/bioimlab)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split's shuffle (default: 0)")
    p.add_argument("--split", default="0.7,0.15,0.15",
                   help="train,val,test fractions of the files (or cases) (default: 0.7,0.15,0.15)")
    p.add_argument("--case-regex", default=None,
                   help="regular expression whose group 1 is the case id in a json's file stem: split by case "
                   "instead of by file (default: by file)")
    p.add_argument("--complete-min", type=int, default=COMPLETE_MIN,
                   help=f"an image with fewer chromosome annotations is recorded as annotation_complete false "
                   f"(partly annotated) (default: {COMPLETE_MIN})")
    p.add_argument("--ignore-label", action="append", default=[], metavar="NAME",
                   help="repeatable: a label known to be no chromosome (e.g. nucleus); its shapes are counted as "
                   "ignored instead of listed as problems")
    p.add_argument("--allow-outside-src", action="store_true",
                   help="accept imagePath values that lead outside --src (../images/x.jpg, absolute paths)")
    p.add_argument("--invert", action="store_true",
                   help="write the images inverted (255 - gray): fluorescence spreads (bright chromosomes on dark) "
                   "become dark on light like G-band images (default: as stored)")
    p.add_argument("--max-lines", type=int, default=0,
                   help="print at most this many problem lines (default: 0 = all; all are in the report)")
    return p


def main(argv=None):
    a = build_parser().parse_args(argv)
    try:
        report = convert_folder(a.src, a.out, seed=a.seed, fractions=a.split, case_regex=a.case_regex,
                                complete_min=a.complete_min, ignore_labels=a.ignore_label,
                                allow_outside_src=a.allow_outside_src, invert=a.invert)
    except LabelMeError as e:
        if e.report is not None:  # no image converted: the problems first, then the one error line
            print("\n".join(summary_lines(e.report, a.max_lines)))
        print(f"prepare_labelme: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the output folder or the report cannot be written
        print(f"prepare_labelme: error: {e}", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(report, a.max_lines)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
