"""MetaphaseEvaluator across 2 processes (gloo, CPU) gives the single-process results."""
import contextlib
import io
import json
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from deepacc.evaluation import MetaphaseEvaluator


def make_data(n=10, seed=11):
    rng = np.random.default_rng(seed)
    dicts, preds = [], []
    for i in range(n):
        g = int(rng.integers(3, 20))
        cls = rng.integers(0, 24, g)
        x0, y0 = rng.uniform(0, 300, g), rng.uniform(0, 300, g)
        boxes = np.stack([x0, y0, x0 + rng.uniform(8, 30, g), y0 + rng.uniform(15, 60, g)], 1)
        dicts.append({"file_name": f"/d/{i}.png", "image_id": i, "height": 400, "width": 400,
                      "karyotype": "46,XY",
                      "annotations": [{"bbox": b.tolist(), "bbox_mode": 0, "category_id": int(c)}
                                      for b, c in zip(boxes, cls)]})
        n_d = int(rng.integers(0, 30))
        src = rng.integers(0, g, n_d)
        db = boxes[src] + rng.normal(0, 3, (n_d, 4))
        dc = np.where(rng.uniform(size=n_d) < 0.7, cls[src], rng.integers(0, 24, n_d))
        ds = rng.uniform(0.05, 1, n_d)
        top1 = {"boxes": db, "scores": ds, "classes": dc}
        inst = {"boxes": np.concatenate([db, db]), "scores": np.concatenate([ds, ds / 3]),
                "classes": np.concatenate([dc, (dc + 1) % 24])}
        preds.append({"image_id": i, "instances": inst, "instances_top1": top1})
    return dicts, preds


def _canon(res):
    return json.loads(json.dumps(res, sort_keys=True, default=str))


def _worker(rank, world, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        dicts, preds = make_data()
        ev = MetaphaseEvaluator(dicts, output_dir=os.path.join(out_dir, "eval"), distributed=True)
        ev.reset()
        # strided shard as a distributed sampler gives it; image 0 is also seen by rank 1 (padding)
        shard = preds[rank::world] + ([preds[0]] if rank == 1 else [])
        ev.process(shard)
        with contextlib.redirect_stdout(io.StringIO()):
            res = ev.evaluate()
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(_canon(res), f)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_two_gloo_processes_equal_one_process(tmp_path):
    dicts, preds = make_data()
    ev = MetaphaseEvaluator(dicts, distributed=True)  # no process group: acts locally
    ev.process(preds)
    with contextlib.redirect_stdout(io.StringIO()):
        ref = _canon(ev.evaluate())
    assert ref["num_images"] == 10 and 0 < ref["Acc"] < 100

    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r1 == {}
    assert r0 == ref
    assert (tmp_path / "eval" / "metrics_deepacc.json").exists()
