#!/usr/bin/env python
"""Generate the synthetic datasets of the catalog (1600x1200 G-band spreads from the hg38 ideograms).

    python datasets/prepare_synthetic.py [--root $DETECTRON2_DATASETS] [--train 1000 --val 100 --test 200]
        [--shift-test 200] [--aneuploid-test 80] [--workers 4]

Writes
    <root>/deepacc_synth/{train,val,test}/*.png + annotations/{train,val,test}.json   (batch "default")
    <root>/deepacc_synth_shift/test/*.png + annotations/test.json                     (batch "shifted")
    <root>/deepacc_synth_aneuploid/test/*.png + annotations/test.json                 (batch "default")
The aneuploid test set cycles through 47,XY,+21; 45,X; 47,XXY; 45,XY,-7 (the karyotypes a
karyotype-consistent assignment must not turn euploid; docs/assignment.md). Seeds are fixed per
split (train 0, val 1, test 2, shift test 3, aneuploid test 4; --seed adds an offset), so the output
is reproducible byte for byte.

``--realistic`` adds a real slide's appearance to every spread (``generate_dataset(realism=...)``,
slide preset ``synthetic`` of :mod:`deepacc.data.slide`: slide texture, vignetting, a halo around the
spread, unannotated interphase nuclei, debris, a little noise); ``--jpeg LO,HI``, ``--rgb``,
``--nuclei LO,HI``, ``--debris LO,HI`` refine it (only with ``--realistic``). Boxes and classes are
those of the run without it. The folders keep their names: give ``--root`` another data root to
keep both versions. Without these flags the output is unchanged.
"""
import argparse
import os
import sys

from deepacc.data.synthetic import generate_dataset
from deepacc.data.slide import add_realism_arguments, realism_from_args

#: The karyotypes of the aneuploid test set, in turn.
ANEUPLOID_TEST_KARYOTYPES = ("47,XY,+21", "45,X", "47,XXY", "45,XY,-7")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=os.environ.get("DETECTRON2_DATASETS", "datasets"),
                   help="data root the datasets are written under (default: $DETECTRON2_DATASETS or datasets)")
    p.add_argument("--train", type=int, default=1000, help="number of training spreads (default: 1000; 0 skips)")
    p.add_argument("--val", type=int, default=100, help="number of validation spreads (default: 100; 0 skips)")
    p.add_argument("--test", type=int, default=200, help="number of test spreads (default: 200; 0 skips)")
    p.add_argument("--shift-test", type=int, default=200,
                   help="number of test spreads of the shifted batch, deepacc_synth_shift (default: 200; 0 skips)")
    p.add_argument("--aneuploid-test", type=int, default=80,
                   help="number of aneuploid test spreads, deepacc_synth_aneuploid (default: 80; 0 skips)")
    p.add_argument("--width", type=int, default=1600, help="image width in pixels (default: 1600)")
    p.add_argument("--height", type=int, default=1200, help="image height in pixels (default: 1200)")
    p.add_argument("--seed", type=int, default=0, help="offset added to the per-split seeds")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1) // 2),
                   help="parallel processes (default: half the CPU cores; the output does not depend on it)")
    add_realism_arguments(p, preset="synthetic")
    a = p.parse_args(argv)
    realism = realism_from_args(a, p, preset="synthetic")
    jobs = [("deepacc_synth", "train", a.train, 0, "default"), ("deepacc_synth", "val", a.val, 1, "default"),
            ("deepacc_synth", "test", a.test, 2, "default"), ("deepacc_synth_shift", "test", a.shift_test, 3, "shifted"),
            ("deepacc_synth_aneuploid", "test", a.aneuploid_test, 4, "default")]
    for d, split, n, seed, batch in jobs:
        if n <= 0:
            continue
        kw = {"realism": realism} if realism is not None else {}
        if d == "deepacc_synth_aneuploid":
            kw["karyotypes"] = list(ANEUPLOID_TEST_KARYOTYPES)
        out = generate_dataset(os.path.join(a.root, d), n, seed=a.seed + seed, width=a.width, height=a.height,
                               batch=batch, workers=a.workers, split=split, **kw)
        print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
