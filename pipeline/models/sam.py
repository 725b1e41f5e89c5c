"""The SAM family as segmentation models: SAM ViT-B/L/H, MedSAM ViT-B and (in :mod:`.litemedsam`) LiteMedSAM.

All of them are an image encoder, a prompt encoder and a mask decoder. :class:`SamSegmenter` turns the three into
one ``forward(image, boxes=None) -> logits`` at the input's resolution, doing the preprocessing the weights were
trained with, so that training and evaluation code never has to know which family member it holds.

Two ways to segment:

* ``prompt="box"`` (MedSAM protocol): one box per image, in the image's own pixel coordinates; one binary mask
  (one logit channel) per image, from the decoder's single-mask token.
* ``prompt="none"`` (SAMed-style, prompt-free, multi-class): no sparse prompt; the decoder gets one mask token and
  hypernetwork MLP per class (background included) and returns ``num_classes`` logit channels for a softmax.
  The IoU head is unused in this mode. How this head starts decides whether a few-shot run learns at all: see
  :func:`class_tokens` and :class:`ClassPrior`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.utils import convert_to_dst_type
from segment_anything import sam_model_registry
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from torch import nn

from pipeline.errors import PipelineError
from pipeline.models.feature_cache import EncoderStep, FeatureCache, run_encoder
from pipeline.models.pretrained import load_into
from pipeline.peft.spec import BlockSite, ChannelsLast, PeftSpec

Prompt = Literal["box", "none"]
PROMPTS = ("box", "none")
_SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
_SAM_PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class SamInput:
    """How a family member's weights expect their input; applied inside :meth:`SamSegmenter.forward`.

    ``resize="longest"`` scales the longest side to ``image_size`` and pads bottom/right with zeros (SAM,
    LiteMedSAM); ``"square"`` stretches to ``image_size``² (MedSAM ViT-B). ``intensity="unit"`` min-max scales each
    image to [0, 1] (MedSAM, LiteMedSAM); ``"imagenet"`` min-max scales to [0, 255] and normalises with SAM's pixel
    mean and std (SAM was trained on 8-bit photos; medical intensities have no fixed range, hence the min-max).
    """

    image_size: int
    resize: Literal["longest", "square"]
    intensity: Literal["unit", "imagenet"]


@dataclass(frozen=True)
class _Geometry:
    height: int
    width: int
    resized: tuple[int, int]
    scale_xy: tuple[float, float]


def _check_prompt(prompt: str, num_classes: int) -> None:
    if prompt not in PROMPTS:
        raise PipelineError(f"prompt must be one of {PROMPTS}, got {prompt!r}")
    if prompt == "box" and num_classes != 1:
        raise PipelineError(
            f"prompt='box' segments one object per box (num_classes=1); got num_classes={num_classes}. "
            "Use prompt='none' for multi-class segmentation"
        )
    if prompt == "none" and num_classes < 2:
        raise PipelineError(f"prompt='none' needs num_classes >= 2 (background included), got {num_classes}")


# Most pixels of a medical image are background (Kvasir-SEG's polyps cover 16 % of a frame on average,
# MSD hippocampus labels a few % of a volume): the prompt-free head starts by predicting that.
BACKGROUND_PRIOR = 0.9


def class_tokens(decoder: nn.Module, count: int) -> None:
    """Give ``decoder`` ``count`` mask tokens and hypernetwork MLPs, all copies of its pretrained single-mask
    token (token 0) and its MLP.

    Copying token ``k mod 4`` instead (each class from another pretrained output) looks like a richer start but
    is a broken one: without a prompt, LiteMedSAM's token 0 gives logits near -15 everywhere and token 1 near 0, so
    the softmax starts by calling every pixel foreground with a margin of ~15 (DiceCE ~14 on Kvasir). The head
    then spends its first 50+ steps undoing that offset, predicting nothing in between (validation Dice 0).
    Identical copies start every class at the same logits, so the start is set by :class:`ClassPrior` alone.
    """
    pretrained = decoder.mask_tokens.weight.detach()
    tokens = nn.Embedding(count, pretrained.shape[1])
    with torch.no_grad():
        tokens.weight.copy_(pretrained[0].expand(count, -1))
    decoder.mask_tokens = tokens
    decoder.output_hypernetworks_mlps = nn.ModuleList(
        copy.deepcopy(decoder.output_hypernetworks_mlps[0]) for _ in range(count)
    )
    decoder.num_mask_tokens = count
    decoder.num_multimask_outputs = count - 1


class ClassPrior(nn.Module):
    """A learnable logit offset per class, initialised to the log of the class priors: background
    :data:`BACKGROUND_PRIOR`, the rest shared evenly by the foreground classes.

    With :func:`class_tokens`' identical classes, the initial softmax is exactly these priors at every pixel: a
    calibrated "all background" start with a loss of ~1 instead of ~14, from which the foreground tokens learn
    where they differ (RetinaNet's prior initialisation of its classification bias, for the same reason).
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        foreground = (1 - BACKGROUND_PRIOR) / (num_classes - 1)
        priors = torch.tensor([BACKGROUND_PRIOR] + [foreground] * (num_classes - 1))
        self.bias = nn.Parameter(priors.log())

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return logits + self.bias.view(1, -1, *([1] * (logits.dim() - 2)))


def vit_encoder_steps(encoder: ImageEncoderViT, path: str = "image_encoder") -> tuple[EncoderStep, ...]:
    """segment-anything's ``ImageEncoderViT.forward`` as steps: patch embedding (+ absolute position), blocks, neck."""

    def embed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        vit = model.get_submodule(path)
        x = vit.patch_embed(x)
        return x if vit.pos_embed is None else x + vit.pos_embed

    def neck(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model.get_submodule(f"{path}.neck")(x.permute(0, 3, 1, 2))

    owns = (f"{path}.patch_embed",) + ((f"{path}.pos_embed",) if encoder.pos_embed is not None else ())
    blocks = tuple(EncoderStep.module(f"{path}.blocks.{i}") for i in range(len(encoder.blocks)))
    return (EncoderStep(owns, embed), *blocks, EncoderStep((f"{path}.neck",), neck))


class SamSegmenter(nn.Module):
    """Image encoder + prompt encoder + mask decoder, run as a segmentation model.

    ``sites`` are the encoder's adapter sites, computed once at construction (the injector later replaces those
    modules, so nothing here inspects block classes afterwards). The mask decoder is the task head; the prompt
    encoder stays frozen under every adapter method.

    ``encoder_steps`` is the image encoder's forward split into steps (:class:`EncoderStep`), which is how it is
    always run: the leading steps that own no trainable tensor form the frozen prefix that ``feature_cache`` (a
    :class:`~pipeline.models.feature_cache.FeatureCache`, off when ``None``) computes once per distinct input.
    """

    def __init__(
        self,
        name: str,
        image_encoder: nn.Module,
        prompt_encoder: nn.Module,
        mask_decoder: nn.Module,
        sites: tuple[BlockSite, ...],
        encoder_steps: tuple[EncoderStep, ...],
        preprocessing: SamInput,
        prompt: Prompt = "box",
        num_classes: int = 1,
    ):
        super().__init__()
        _check_prompt(prompt, num_classes)
        self.name = name
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.sites = sites
        self.encoder_steps = encoder_steps
        self.feature_cache: FeatureCache | None = None
        self.preprocessing = preprocessing
        self.prompt = prompt
        self.num_classes = num_classes
        if prompt == "none":
            class_tokens(self.mask_decoder, num_classes)
            self.class_prior = ClassPrior(num_classes)
        self.prompt_encoder.requires_grad_(False)
        mean = torch.tensor(_SAM_PIXEL_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(_SAM_PIXEL_STD).view(1, 3, 1, 1)
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)

    def peft_spec(self) -> PeftSpec:
        """The mask decoder is the head, less its IoU-prediction MLP: no loss reads the predicted IoU, so that MLP
        would be trainable yet never receive a gradient (DDP rejects such parameters)."""
        head = tuple(f"mask_decoder.{name}" for name, _ in self.mask_decoder.named_children()
                     if name != "iou_prediction_head")
        if self.prompt == "none":
            head += ("class_prior",)
        return PeftSpec(name=self.name, blocks=self.sites, head=head)

    def prepare(self, image: torch.Tensor) -> tuple[torch.Tensor, _Geometry]:
        """The encoder's input for ``image`` ``(B, 1|3, H, W)`` (any intensity range), and how it was resized."""
        if image.dim() != 4 or image.shape[1] not in (1, 3):
            raise PipelineError(f"{self.name} takes images of shape (B, 1 or 3, H, W), got {tuple(image.shape)}")
        size = self.preprocessing.image_size
        height, width = image.shape[-2:]
        image = image.float().expand(-1, 3, -1, -1)
        if self.preprocessing.resize == "longest":
            scale = size / max(height, width)
            resized = (int(height * scale + 0.5), int(width * scale + 0.5))
            if scale < 1:  # cv2.INTER_AREA in MedSAM's LiteMedSAM inference: area averaging when shrinking
                image = F.interpolate(image, size=resized, mode="area")
            else:
                image = F.interpolate(image, size=resized, mode="bilinear", align_corners=False)
            scale_xy = (scale, scale)
        else:
            resized = (size, size)
            image = F.interpolate(image, size=resized, mode="bicubic", align_corners=False, antialias=True)
            scale_xy = (size / width, size / height)
        low = image.amin(dim=(1, 2, 3), keepdim=True)
        high = image.amax(dim=(1, 2, 3), keepdim=True)
        image = (image - low) / (high - low).clamp(min=1e-8)
        if self.preprocessing.intensity == "imagenet":
            image = (image * 255.0 - self.pixel_mean) / self.pixel_std
        image = F.pad(image, (0, size - resized[1], 0, size - resized[0]))
        return image, _Geometry(height, width, resized, scale_xy)

    def _prompt_embeddings(self, boxes: torch.Tensor | None, geometry: _Geometry, batch: int):
        """Sparse and dense prompt embeddings, one per box: ``batch · K`` rows for ``(B, K, 4)`` boxes."""
        if self.prompt == "none":
            if boxes is not None:
                raise PipelineError(f"{self.name} was built prompt-free (prompt='none'); do not pass boxes")
            sparse, dense = self.prompt_encoder(points=None, boxes=None, masks=None)
            return sparse.expand(batch, -1, -1), dense.expand(batch, -1, -1, -1)
        if boxes is None or boxes.shape[0] != batch or boxes.shape[-1] != 4 or boxes.dim() not in (2, 3):
            shape = None if boxes is None else tuple(boxes.shape)
            raise PipelineError(
                f"{self.name} is box-prompted: give boxes of shape ({batch}, 4) or ({batch}, K, 4), got {shape}"
            )
        scale_x, scale_y = geometry.scale_xy
        boxes = boxes.float().to(self.pixel_mean.device).reshape(-1, 4)
        scaled = boxes * boxes.new_tensor([scale_x, scale_y, scale_x, scale_y])
        return self.prompt_encoder(points=None, boxes=scaled[:, None, :], masks=None)

    def _decode(self, embeddings: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """segment-anything's ``MaskDecoder.predict_masks`` for prompts already paired with their image embedding.

        The library repeats every image embedding once per prompt of the *whole* batch (it was written for one
        image with many prompts), so a batch of B images would pair each image with all B prompts. Here row ``i``
        of ``embeddings`` goes with row ``i`` of the prompts, and the whole batch is one decoder call. Box mode
        reads only the single-mask token, as ``multimask_output=False`` does.
        """
        decoder = self.mask_decoder
        tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
        tokens = torch.cat([tokens.unsqueeze(0).expand(sparse.shape[0], -1, -1), sparse], dim=1)
        src = embeddings + dense
        position = self.prompt_encoder.get_dense_pe().expand(src.shape[0], -1, -1, -1)
        batch, channels, height, width = src.shape
        hidden, src = decoder.transformer(src, position, tokens)
        mask_tokens = hidden[:, 1 : 1 + decoder.num_mask_tokens]
        upscaled = decoder.output_upscaling(src.transpose(1, 2).reshape(batch, channels, height, width))
        count = 1 if self.prompt == "box" else decoder.num_mask_tokens
        hyper = torch.stack([decoder.output_hypernetworks_mlps[i](mask_tokens[:, i]) for i in range(count)], dim=1)
        batch, channels, height, width = upscaled.shape
        return (hyper @ upscaled.flatten(2)).view(batch, count, height, width)

    def restore(self, masks: torch.Tensor, geometry: _Geometry) -> torch.Tensor:
        """Decoder masks back to the input's resolution: undo the padding, then the resize."""
        size = self.preprocessing.image_size
        if self.preprocessing.resize == "longest":
            if masks.shape[-2:] != (size, size):
                masks = F.interpolate(masks, size=(size, size), mode="bilinear", align_corners=False)
            masks = masks[..., : geometry.resized[0], : geometry.resized[1]]
        return F.interpolate(masks, size=(geometry.height, geometry.width), mode="bilinear", align_corners=False)

    def encode(self, encoder_input: torch.Tensor) -> torch.Tensor:
        """The image embeddings of a prepared batch, through the feature cache when one is set."""
        return run_encoder(self, self.encoder_steps, encoder_input, self.feature_cache)

    def forward(self, image: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(B, 1, H, W)`` for one box per image, ``(B, K, H, W)`` for ``(B, K, 4)`` boxes (channel ``k``
        is box ``k``'s object: one encoder pass per image, one decoder call for all boxes), and
        ``(B, num_classes, H, W)`` prompt-free."""
        # MetaTensor's per-operation metadata handling would run inside every layer: the network works on the plain
        # tensor and only its output takes the input's metadata back
        encoder_input, geometry = self.prepare(image.as_tensor() if isinstance(image, MetaTensor) else image)
        embeddings = self.encode(encoder_input)
        sparse, dense = self._prompt_embeddings(boxes, geometry, image.shape[0])
        per_image = sparse.shape[0] // image.shape[0]
        masks = self._decode(embeddings.repeat_interleave(per_image, dim=0), sparse, dense)
        if self.prompt == "box":
            masks = masks.view(image.shape[0], per_image, *masks.shape[-2:])
        else:
            masks = self.class_prior(masks)  # a constant per channel: the same before or after the resize
        logits = self.restore(masks, geometry)
        # a MONAI MetaTensor in, one out: its transform trace is what Invertd maps the prediction back with
        return convert_to_dst_type(logits, dst=image)[0] if isinstance(image, MetaTensor) else logits


@dataclass(frozen=True)
class SamViTSize:
    """A SAM ViT's dimensions. The official ones come from segment-anything's registry; tests build small ones."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    image_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    prompt_embed_dim: int = 256
    decoder_mlp_dim: int = 2048
    decoder_heads: int = 8


# variant -> (segment-anything registry key, input convention of its weights)
SAM_VARIANTS: dict[str, tuple[str, Literal["longest", "square"], Literal["unit", "imagenet"]]] = {
    "sam_vit_b": ("vit_b", "longest", "imagenet"),
    "sam_vit_l": ("vit_l", "longest", "imagenet"),
    "sam_vit_h": ("vit_h", "longest", "imagenet"),
    "medsam_vit_b": ("vit_b", "square", "unit"),
}


def _small_sam(size: SamViTSize) -> Sam:
    embedding = size.image_size // size.patch_size
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=size.depth,
            embed_dim=size.embed_dim,
            img_size=size.image_size,
            mlp_ratio=4,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            num_heads=size.num_heads,
            patch_size=size.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=size.global_attn_indexes,
            window_size=size.window_size,
            out_chans=size.prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=size.prompt_embed_dim,
            image_embedding_size=(embedding, embedding),
            input_image_size=(size.image_size, size.image_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=2,
                embedding_dim=size.prompt_embed_dim,
                mlp_dim=size.decoder_mlp_dim,
                num_heads=size.decoder_heads,
            ),
            transformer_dim=size.prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=size.prompt_embed_dim,
        ),
    )


def build_sam_vit(
    variant: str,
    checkpoint: str | Path | None = None,
    num_classes: int = 1,
    spatial_dims: int = 2,
    prompt: Prompt = "box",
    size: SamViTSize | None = None,
) -> SamSegmenter:
    """SAM ViT-B/L/H or MedSAM ViT-B, with the official ``.pth`` weights at ``checkpoint`` when given.

    Without ``size`` the official architecture is built by segment-anything's registry; ``checkpoint=None`` then
    leaves random weights (from-scratch runs and parameter counts). ``size`` builds a custom (small) SAM ViT.
    """
    if variant not in SAM_VARIANTS:
        raise PipelineError(f"unknown SAM variant {variant!r}; choose from {', '.join(SAM_VARIANTS)}")
    if spatial_dims != 2:
        raise PipelineError(f"{variant} is a 2D model; got spatial_dims={spatial_dims}")
    _check_prompt(prompt, num_classes)
    registry_key, resize, intensity = SAM_VARIANTS[variant]
    sam = sam_model_registry[registry_key]() if size is None else _small_sam(size)
    name = variant if size is None else f"{variant}_custom"
    if checkpoint is not None:
        load_into(sam, checkpoint, architecture=name)
    encoder = sam.image_encoder
    sites = tuple(
        BlockSite(path=f"image_encoder.blocks.{index}", channels=encoder.patch_embed.proj.out_channels,
                  layout=ChannelsLast(spatial_dims=2))
        for index in range(len(encoder.blocks))
    )
    model = SamSegmenter(
        name=name,
        image_encoder=encoder,
        prompt_encoder=sam.prompt_encoder,
        mask_decoder=sam.mask_decoder,
        sites=sites,
        encoder_steps=vit_encoder_steps(encoder),
        preprocessing=SamInput(image_size=encoder.img_size, resize=resize, intensity=intensity),
        prompt=prompt,
        num_classes=num_classes,
    )
    return model.eval()
