"""deepsim: learned image registration with the DeepSim semantic similarity (2D and 3D).

Czolbe, Krause, Feragen: "Semantic similarity metrics for learned image registration", MIDL 2021.
Submodules are imported on use, so ``import deepsim`` is cheap and needs no torch.
"""

__version__ = "0.1.0"
