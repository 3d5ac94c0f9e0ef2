"""DeepACC: detect and classify all 24 human chromosome classes on whole metaphase images.

``deepacc.modeling``, ``deepacc.evaluation``, ``deepacc.data`` and ``deepacc.karyotype`` form the
framework-free core (torch + torchvision.ops). ``deepacc.tv`` and ``deepacc.d2`` are the two thin
engines built on torchvision and Detectron2.
"""
__version__ = "0.1.0"
