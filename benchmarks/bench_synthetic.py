#!/usr/bin/env python
"""Speed of the synthetic generator: spreads per second on one core (rendering only, and with PNG writing).

    python benchmarks/bench_synthetic.py [-n 30] [--sizes 1600x1200,640x480] [--batches default,shifted]
"""
import argparse
import os
import tempfile
import time

import cv2
import numpy as np

from deepacc.data.synthetic import generate_dataset, generate_spread


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=30)
    p.add_argument("--sizes", default="1600x1200,640x480")
    p.add_argument("--batches", default="default,shifted")
    a = p.parse_args()
    cv2.setNumThreads(1)
    rows = []
    for size in a.sizes.split(","):
        w, h = (int(v) for v in size.split("x"))
        for batch in a.batches.split(","):
            rng = np.random.default_rng(0)
            generate_spread(rng, w, h, batch=batch)  # warm-up (band table, caches)
            t, c = time.perf_counter(), time.process_time()
            for _ in range(a.n):
                generate_spread(rng, w, h, batch=batch)
            render = a.n / (time.perf_counter() - t)
            render_cpu = a.n / (time.process_time() - c)
            with tempfile.TemporaryDirectory() as tmp:
                t, c = time.perf_counter(), time.process_time()
                generate_dataset(tmp, a.n, seed=0, width=w, height=h, batch=batch, progress=False)
                full = a.n / (time.perf_counter() - t)
                full_cpu = a.n / (time.process_time() - c)
            rows.append((size, batch, render, render_cpu, full, full_cpu))
    print(f"synthetic generator, 1 process, cv2 threads = 1, {a.n} spreads per row (cpu: {os.cpu_count()} cores visible)")
    print("spreads/s = per wall-clock second; spreads/CPU-s = per second of this process's CPU time (one core;"
          " unaffected by other load on the machine)")
    print(f"| {'size':9s} | {'batch':8s} | {'render /s':>9s} | {'render /CPU-s':>13s} | {'+PNG+json /s':>12s} "
          f"| {'+PNG+json /CPU-s':>16s} |")
    print(f"|{'-' * 11}|{'-' * 10}|{'-' * 11}|{'-' * 15}|{'-' * 14}|{'-' * 18}|")
    for size, batch, r, rc, f, fc in rows:
        print(f"| {size:9s} | {batch:8s} | {r:9.1f} | {rc:13.1f} | {f:12.1f} | {fc:16.1f} |")


if __name__ == "__main__":
    main()
