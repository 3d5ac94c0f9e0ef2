#!/usr/bin/env python
"""Generate the synthetic datasets of the catalog (1600x1200 G-band spreads from the hg38 ideograms).

    python datasets/prepare_synthetic.py [--root $DETECTRON2_DATASETS] [--train 1000 --val 100 --test 200]
        [--shift-test 200] [--workers 4]

Writes
    <root>/deepacc_synth/{train,val,test}/*.png + annotations/{train,val,test}.json   (batch "default")
    <root>/deepacc_synth_shift/test/*.png + annotations/test.json                     (batch "shifted")
Seeds are fixed per split (train 0, val 1, test 2, shift test 3; --seed adds an offset), so the
output is reproducible byte for byte.

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


def _range(text, name, integer=False):
    try:
        lo, hi = (int(v) if integer else float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name}: expected LO,HI, got {text!r}") from None
    if lo > hi or lo < 0:
        raise argparse.ArgumentTypeError(f"{name}: expected 0 <= LO <= HI, got {text!r}")
    return (lo, hi)


def realism_spec(a, parser):
    """The realism of the ``--realistic`` flags (``None`` when off), on the ``synthetic`` preset."""
    fine = {"jpeg": a.jpeg, "rgb": a.rgb or None, "nuclei": a.nuclei, "debris": a.debris}
    given = [k for k, v in fine.items() if v is not None]
    if not a.realistic:
        if given:
            parser.error(f"--{', --'.join(given)} need(s) --realistic")
        return None
    from deepacc.data.slide import resolve_realism

    try:
        return resolve_realism({k: v for k, v in fine.items() if v is not None}, preset="synthetic")
    except ValueError as e:
        parser.error(str(e))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=os.environ.get("DETECTRON2_DATASETS", "datasets"),
                   help="data root the datasets are written under (default: $DETECTRON2_DATASETS or datasets)")
    p.add_argument("--train", type=int, default=1000, help="number of training spreads (default: 1000; 0 skips)")
    p.add_argument("--val", type=int, default=100, help="number of validation spreads (default: 100; 0 skips)")
    p.add_argument("--test", type=int, default=200, help="number of test spreads (default: 200; 0 skips)")
    p.add_argument("--shift-test", type=int, default=200,
                   help="number of test spreads of the shifted batch, deepacc_synth_shift (default: 200; 0 skips)")
    p.add_argument("--width", type=int, default=1600, help="image width in pixels (default: 1600)")
    p.add_argument("--height", type=int, default=1200, help="image height in pixels (default: 1200)")
    p.add_argument("--seed", type=int, default=0, help="offset added to the per-split seeds")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1) // 2),
                   help="parallel processes (default: half the CPU cores; the output does not depend on it)")
    p.add_argument("--realistic", action="store_true",
                   help="real slide appearance: texture, vignetting, halo, unannotated nuclei, debris, noise "
                        "(deepacc.data.slide preset 'synthetic'; boxes unchanged)")
    p.add_argument("--jpeg", type=lambda t: _range(t, "--jpeg", True), default=None, metavar="LO,HI",
                   help="with --realistic: JPEG artefacts at a quality drawn from LO..HI (e.g. 60,95)")
    p.add_argument("--rgb", action="store_true", help="with --realistic: RGB images with a G-band colour cast")
    p.add_argument("--nuclei", type=lambda t: _range(t, "--nuclei", True), default=None, metavar="LO,HI",
                   help="with --realistic: interphase nuclei added per image (default 0,1)")
    p.add_argument("--debris", type=lambda t: _range(t, "--debris"), default=None, metavar="LO,HI",
                   help="with --realistic: debris specks added per megapixel (default 0,5)")
    a = p.parse_args(argv)
    realism = realism_spec(a, p)
    jobs = [("deepacc_synth", "train", a.train, 0, "default"), ("deepacc_synth", "val", a.val, 1, "default"),
            ("deepacc_synth", "test", a.test, 2, "default"), ("deepacc_synth_shift", "test", a.shift_test, 3, "shifted")]
    for d, split, n, seed, batch in jobs:
        if n <= 0:
            continue
        kw = {"realism": realism} if realism is not None else {}
        out = generate_dataset(os.path.join(a.root, d), n, seed=a.seed + seed, width=a.width, height=a.height,
                               batch=batch, workers=a.workers, split=split, **kw)
        print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
