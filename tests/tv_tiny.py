"""A tiny data root and config for end-to-end tests of the torchvision engine (seconds on CPU)."""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK_CONFIG = os.path.join(REPO, "configs", "quick", "DeepACC_R18_synth_cpu.yaml")

# Overrides that shrink the quick config to a toy: small images, narrow FPN and box head, few proposals.
TINY_OPTS = [
    "MODEL.WEIGHTS", "", "MODEL.RESNETS.NORM", "GN", "MODEL.FPN.NORM", "GN", "MODEL.BACKBONE.FREEZE_AT", "0",
    "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "64",
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "200", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "100",
    "MODEL.RPN.PRE_NMS_TOPK_TEST", "100", "MODEL.RPN.POST_NMS_TOPK_TEST", "50",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32", "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "32",
    "INPUT.MIN_SIZE_TRAIN", "(144,)", "INPUT.MAX_SIZE_TRAIN", "192",
    "INPUT.MIN_SIZE_TEST", "144", "INPUT.MAX_SIZE_TEST", "192",
    "DATALOADER.NUM_WORKERS", "0", "SOLVER.WARMUP_ITERS", "2", "SOLVER.STEPS", "()",
]


def make_tiny_root(root: str) -> str:
    """Write a 6-train / 2-val synthetic ``deepacc_synth_quick`` of 192x144 spreads under ``root``."""
    from deepacc.data.synthetic import generate_dataset

    target = os.path.join(root, "deepacc_synth_quick")
    if not os.path.exists(os.path.join(target, "annotations", "val.json")):
        generate_dataset(target, 6, seed=11, width=192, height=144, split="train", progress=False)
        generate_dataset(target, 2, seed=12, width=192, height=144, split="val", progress=False,
                         first_image_id=100)
    return root


def train_net(args, data_root, timeout=600, **popen):
    """Run train_net.py in a subprocess on the tiny data root."""
    env = dict(os.environ, DETECTRON2_DATASETS=data_root, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, os.path.join(REPO, "train_net.py"), "--engine", "torchvision"] + list(args)
    if popen:
        return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
