#!/usr/bin/env python
"""DeepACC training and evaluation script (Detectron2's ``train_net.py`` command line).

Runs on Detectron2 when it is importable, otherwise on the torchvision engine (``--engine`` forces
one), with the same YAML configs and flags::

    python train_net.py --config-file configs/DeepACC_R101_FPN_2x.yaml --num-gpus 8
    python train_net.py --config-file configs/DeepACC_R101_FPN_2x.yaml --eval-only MODEL.WEIGHTS model.pth
    python train_net.py --config-file configs/DeepACC_R101_FPN_2x.yaml --resume
"""
from deepacc.tools.train import main

if __name__ == "__main__":
    main()
