"""Training and benchmark data: synthetic and anatomical pair sources, the training loop, evaluation.

Not part of the runtime (the Slicer extension ships without it); installed with the ``train``
extra. Runtime modules never import from here.
"""
