"""The Python pieces the MONAI bundles in ``bundles/`` instantiate.

Data from a dataset folder, the up-front argument check, adapter-only and resume checkpoints, per-case metrics,
prediction writers, the task's channel count and DDP wiring: one module each, so a bundle config stays a readable
list of MONAI components, and every choice that depends on a setting is a named, tested function here rather than
a conditional in a ``$`` expression (those build paths, join lists and call the engines).
"""
