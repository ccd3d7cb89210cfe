"""Slicer glue of DeepSim Registration (Qt-free): MRML nodes <-> deepsim images and transforms,
and the registration run in a child process. Nothing here imports torch."""
