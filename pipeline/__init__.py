"""Few-shot medical image segmentation by parameter-efficient adaptation of pretrained backbones, on MONAI."""

from pipeline.errors import PipelineError

__version__ = "0.1.0"

__all__ = ["PipelineError", "__version__"]
