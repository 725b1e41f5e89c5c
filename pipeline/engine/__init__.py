"""The Python pieces the MONAI bundles in ``bundles/`` instantiate.

Data from a dataset folder, the up-front argument check, adapter-only and resume checkpoints, per-case metrics,
prediction writers and DDP wiring: one module each, so a bundle config stays a readable list of MONAI components
and no logic hides in its ``$`` expressions beyond wiring.
"""
