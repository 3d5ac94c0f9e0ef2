#!/usr/bin/env python
"""Regenerate ``deepacc/resources/cytobands_hg38.tsv`` from the UCSC hg38 cytoBand table.

Input: UCSC Genome Browser hg38 ``cytoBand.txt`` (tab-separated: chrom, chromStart, chromEnd,
name, gieStain), e.g. downloaded from
https://hgdownload.soe.ucsc.edu/goldenPath/hg38/database/cytoBand.txt.gz (gunzip first).

Output: one row per band of chromosomes 1..22, X, Y with the band's start/end as a fraction of
the chromosome length and its stain (gneg, gpos25..gpos100, acen, gvar, stalk); the chromosome's
length in bp is repeated on each row. This compact table is all the synthetic generator needs.

    python datasets/make_band_table.py /path/to/hg38_cytoBand.tsv \
        --out projects/DeepACC/deepacc/resources/cytobands_hg38.tsv
"""
import argparse
import os
import sys
from collections import defaultdict

NAMES = [str(i) for i in range(1, 23)] + ["X", "Y"]
STAINS = {"gneg", "gpos25", "gpos50", "gpos75", "gpos100", "acen", "gvar", "stalk"}
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "projects", "DeepACC",
                           "deepacc", "resources", "cytobands_hg38.tsv")


def build(src: str) -> str:
    bands = defaultdict(list)
    with open(src, "r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 5:
                sys.exit(f"{src}:{lineno}: expected 5 tab-separated columns, got {len(parts)}")
            chrom, start, end, band, stain = parts[:5]
            name = chrom[3:] if chrom.startswith("chr") else chrom
            if name not in NAMES:
                continue  # chrM, unplaced contigs
            if stain not in STAINS:
                sys.exit(f"{src}:{lineno}: unknown stain {stain!r}")
            bands[name].append((int(start), int(end), band, stain))
    missing = [n for n in NAMES if n not in bands]
    if missing:
        sys.exit(f"{src}: no bands for chromosome(s) {', '.join(missing)}")
    lines = [
        "# Cytogenetic bands of the human chromosomes 1..22, X, Y.",
        "# Source: UCSC Genome Browser, hg38 cytoBand table (cytoBand.txt; GRCh38 assembly).",
        "# Derived by datasets/make_band_table.py: band start/end as a fraction of the chromosome length.",
        "# Columns: chrom  length_bp  band  start_frac  end_frac  stain",
        "chrom\tlength_bp\tband\tstart_frac\tend_frac\tstain",
    ]
    for name in NAMES:
        rows = sorted(bands[name])
        length = rows[-1][1]
        for start, end, band, stain in rows:
            lines.append(f"{name}\t{length}\t{band}\t{start / length:.6f}\t{end / length:.6f}\t{stain}")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="UCSC hg38 cytoBand table (tsv)")
    p.add_argument("--out", default=DEFAULT_OUT, help="output tsv (default: the package resource)")
    a = p.parse_args(argv)
    text = build(a.src)
    from deepacc.fileio import atomic_write

    atomic_write(a.out, text.encode("utf-8"))
    print(f"wrote {a.out} ({text.count(chr(10)) - 5} bands)")


if __name__ == "__main__":
    main()
