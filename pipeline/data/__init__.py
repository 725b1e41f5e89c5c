"""Clinical data in and out: readers (DICOM series via SimpleITK, DICOM-SEG, NIfTI, NRRD, PNG/JPG), MSD-style
datalists, reproducible few-shot splits, MONAI preprocessing presets, 3D-to-2D slicing, and prediction writers.

Submodules are imported on use so that ``python -m pipeline --help`` stays fast.
"""
