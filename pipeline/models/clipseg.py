"""CLIPSeg (Lüddecke & Ecker, CVPR 2022) as a text-prompted segmentation model, from Hugging Face ``transformers``.

CLIPSeg is a frozen CLIP (a ViT image encoder and a text transformer) plus a small decoder: the text prompt's
embedding modulates (FiLM) the decoder, which reads the activations of three ViT layers. :class:`CLIPSegSegmenter`
runs it as ``forward(image) -> logits`` at the input's resolution, one logit channel per class prompt, so training
and evaluation code treat it like the other backbones.

It calls the library's modules itself instead of ``CLIPSegForImageSegmentation.forward``, which wraps both CLIP
encoders in ``torch.no_grad()``: adapters inside them (the Telescopic-adapter paper, arXiv 2512.13855) would never
receive a gradient there.

Weights come only from a local Hugging Face snapshot folder that the user downloaded (``checkpoint=DIR``, e.g.
``CIDAS/clipseg-rd64-refined``); nothing downloads at run time. ``config=`` builds random weights instead (tests,
parameter counts); :func:`rd64_refined_config` is that checkpoint's architecture.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.utils import convert_to_dst_type
from torch import nn
from transformers import AutoTokenizer, CLIPSegConfig, CLIPSegForImageSegmentation

from pipeline.errors import PipelineError
from pipeline.peft.spec import BlockSite, PeftSpec, TokenGrid, TokenSequence

IMAGE_SIZE = 352  # CLIPSeg's processor resizes every image to 352² (its training resolution)
# CIDAS/clipseg-rd64-refined's preprocessor_config.json (ImageNet statistics, not CLIP's); a snapshot's own file wins
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)
WEIGHTS_FILES = ("model.safetensors", "pytorch_model.bin")
ATTENTION = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj")
BRANCHES = ("self_attn", "mlp")  # the two residual branches of a CLIP encoder layer


def rd64_refined_config() -> CLIPSegConfig:
    """The architecture of ``CIDAS/clipseg-rd64-refined`` (the Telescopic-adapter paper's model), without download.

    ``CLIPSegConfig()``'s defaults are CLIP ViT-B/32 with the plain decoder; the refined checkpoint is ViT-B/16
    (patch 16) with the two-step transposed-convolution decoder. Everything else (12+12 layers, widths 768/512,
    projection 512, reduce_dim 64, extract layers 3, 6, 9) is the default.
    """
    return CLIPSegConfig(vision_config={"patch_size": 16}, use_complex_transposed_convolution=True)


def refinement_cnn() -> nn.Sequential:
    """The paper's 2-layer CNN on the decoder's logit map: 3×3 conv to 4 channels, BatchNorm, SiLU, 1×1 conv back
    (48 parameters). It gates the logits (``z + sigmoid(cnn(z)) · z``), sharpening boundaries."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.SiLU(), nn.Conv2d(4, 1, 1, bias=False)
    )


class CharacterTokenizer:
    """Token ids for a model built from a config (random weights): one id per character between BOS and EOS.

    Only for ``config=`` builds, which have no vocabulary: its ids mean nothing to real CLIP weights, whose BPE
    tokenizer is read from the snapshot folder. EOS is the largest id, as CLIP's text model expects when it pools
    at the largest id; ids avoid the config's BOS/EOS/padding ids.
    """

    def __init__(self, config) -> None:
        self.bos, self.eos, self.pad = config.bos_token_id, config.eos_token_id, config.pad_token_id
        self.vocab_size = config.vocab_size
        self.max_length = config.max_position_embeddings
        if self.eos != self.vocab_size - 1:
            raise PipelineError(f"CharacterTokenizer needs eos_token_id = vocab_size - 1, got {self.eos}")

    def _ids(self, text: str) -> list[int]:
        special = {self.bos, self.eos, self.pad}
        usable = [i for i in range(self.vocab_size) if i not in special]
        body = [usable[ord(c) % len(usable)] for c in text][: self.max_length - 2]
        return [self.bos, *body, self.eos]

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        rows = [self._ids(text) for text in texts]
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        return {"input_ids": ids, "attention_mask": mask}


class CLIPSegSegmenter(nn.Module):
    """CLIPSeg's vision encoder, text encoder and decoder, plus the refinement CNN, run as a segmentation model.

    One text prompt per foreground class. ``num_classes=1``: one logit channel (sigmoid), as the box-prompted
    models give. ``num_classes=K+1`` with K prompts: channel 0 is background with a constant logit 0 and channel k
    is prompt k's logit, so a softmax over the channels reduces to CLIPSeg's own per-prompt sigmoid when K=1 and a
    pixel is background exactly when no prompt's logit is positive (CLIPSeg's multi-prompt usage: argmax over the
    prompts' maps, thresholded).

    Prompts are tokenized once at construction (non-persistent buffers, so adapter checkpoints do not carry them)
    and encoded at every forward, because the text encoder may hold adapters.
    """

    def __init__(self, name: str, clipseg: CLIPSegForImageSegmentation, tokens: dict[str, torch.Tensor],
                 num_classes: int, image_size: int = IMAGE_SIZE, mean: Sequence[float] = IMAGE_MEAN,
                 std: Sequence[float] = IMAGE_STD, train_decoder: bool = False):
        super().__init__()
        prompts = tokens["input_ids"].shape[0]
        if num_classes != (1 if prompts == 1 else prompts + 1):
            raise PipelineError(
                f"clipseg: {prompts} prompt(s) give num_classes={1 if prompts == 1 else prompts + 1} "
                f"(one sigmoid channel for one prompt, else background + one per prompt), got num_classes={num_classes}"
            )
        self.name = name
        self.clip = clipseg.clip
        self.decoder = clipseg.decoder
        self.refine = refinement_cnn()
        self.extract_layers = tuple(clipseg.config.extract_layers)
        self.num_classes = num_classes
        self.image_size = image_size
        self.train_decoder = train_decoder
        self.register_buffer("input_ids", tokens["input_ids"], persistent=False)
        self.register_buffer("text_mask", tokens["attention_mask"], persistent=False)
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    # --- adapter sites ----------------------------------------------------------------------------------------
    def peft_spec(self) -> PeftSpec:
        """Vision layers up to the deepest one the decoder reads (those after it never reach the output), every
        text layer, and the conditional embedding (the text projection's output, which FiLM feeds to the decoder).

        The head is the refinement CNN, plus the decoder with ``train_decoder=True``. The paper keeps the decoder
        frozen (its 613k trainable parameters are adapters and CNN only), so that is the default here.
        The ``telescopic`` recipe is the paper's: vision layers 1–9 (1-based; telescoping 8→32), text layers 7–9
        (width 16) and the conditional adapter (width 8), each adapter on the attention and MLP outputs before
        their residual adds.
        """
        vision, text = self.clip.vision_model, self.clip.text_model
        depth = max(self.extract_layers) + 1
        vision_sites = tuple(
            BlockSite(f"clip.vision_model.encoder.layers.{i}", vision.config.hidden_size, TokenGrid(prefix=1),
                      attention=ATTENTION, group="vision", branches=BRANCHES)
            for i in range(depth)
        )
        text_depth = len(text.encoder.layers)
        text_sites = tuple(
            BlockSite(f"clip.text_model.encoder.layers.{i}", text.config.hidden_size, TokenSequence(),
                      attention=ATTENTION, group="text", branches=BRANCHES)
            for i in range(text_depth)
        )
        conditional = BlockSite("clip.text_projection", self.clip.text_projection.out_features, TokenSequence(),
                                attention=(), group="conditional")
        # paper: vision 1-9 of the 10 the decoder reads, text 7-9 of 12; scaled to other depths as the same spans
        recipe = [
            *range(depth - 1),
            *(len(vision_sites) + i for i in range(text_depth // 2, 3 * text_depth // 4)),
            len(vision_sites) + text_depth,
        ]
        head = ("decoder", "refine") if self.train_decoder else ("refine",)
        return PeftSpec(name=self.name, blocks=(*vision_sites, *text_sites, conditional), head=head,
                        recipes={"telescopic": {"layers": recipe, "placement": "branch"}})

    # --- forward ----------------------------------------------------------------------------------------------
    def prepare(self, image: torch.Tensor) -> torch.Tensor:
        """CLIPSeg's input for ``image`` ``(B, 1|3, H, W)`` of any intensity range: resized to ``image_size``²
        (bilinear, antialiased like the processor's PIL resize), min-max scaled to [0, 1], mean/std normalised."""
        if image.dim() != 4 or image.shape[1] not in (1, 3):
            raise PipelineError(f"{self.name} takes images of shape (B, 1 or 3, H, W), got {tuple(image.shape)}")
        size = (self.image_size, self.image_size)
        pixels = F.interpolate(image.float().expand(-1, 3, -1, -1), size=size, mode="bilinear",
                               align_corners=False, antialias=True)
        low = pixels.amin(dim=(1, 2, 3), keepdim=True)
        high = pixels.amax(dim=(1, 2, 3), keepdim=True)
        pixels = (pixels - low) / (high - low).clamp(min=1e-8)
        return (pixels - self.pixel_mean) / self.pixel_std

    def vision_activations(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        """The outputs of the ViT layers the decoder reads (``extract_layers``); later layers are not run."""
        vision = self.clip.vision_model
        hidden = vision.pre_layrnorm(vision.embeddings(pixels, interpolate_pos_encoding=True))
        activations = []
        for index in range(max(self.extract_layers) + 1):
            hidden = vision.encoder.layers[index](hidden, None)
            if index in self.extract_layers:
                activations.append(hidden)
        return activations

    def conditional_embeddings(self) -> torch.Tensor:
        """One embedding per prompt ``(K, projection_dim)``: the text model's pooled output, projected."""
        pooled = self.clip.text_model(input_ids=self.input_ids, attention_mask=self.text_mask).pooler_output
        return self.clip.text_projection(pooled)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes, H, W)`` at the input's resolution."""
        batch, height, width = image.shape[0], *image.shape[-2:]
        activations = self.vision_activations(self.prepare(image))
        conditional = self.conditional_embeddings()
        prompts = conditional.shape[0]
        # every image with every prompt: row b·K + k is image b with prompt k
        activations = [a.repeat_interleave(prompts, dim=0) for a in activations]
        logits = self.decoder(activations, conditional.repeat(batch, 1)).logits
        logits = logits.reshape(batch * prompts, 1, *logits.shape[-2:])
        logits = logits + torch.sigmoid(self.refine(logits)) * logits
        logits = logits.reshape(batch, prompts, *logits.shape[-2:])
        if self.num_classes > 1:
            logits = torch.cat([torch.zeros_like(logits[:, :1]), logits], dim=1)
        logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        # a MONAI MetaTensor in, one out: its transform trace is what Invertd maps the prediction back with
        return convert_to_dst_type(logits, dst=image)[0] if isinstance(image, MetaTensor) else logits


def _snapshot_problem(path: Path) -> str | None:
    """What is missing from a Hugging Face snapshot folder of CLIPSeg, or ``None`` when all files are there."""
    if not path.is_dir():
        return "it is not a directory"
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    if not any((path / name).is_file() for name in WEIGHTS_FILES):
        missing.append(f"weights ({' or '.join(WEIGHTS_FILES)})")
    if not ((path / "tokenizer.json").is_file() or all((path / n).is_file() for n in ("vocab.json", "merges.txt"))):
        missing.append("tokenizer (tokenizer.json, or vocab.json + merges.txt)")
    return f"missing {', '.join(missing)}" if missing else None


def check_source(checkpoint: str | Path | None, config: CLIPSegConfig | None) -> None:
    """Raise :class:`PipelineError` unless exactly one of ``checkpoint`` (a complete local snapshot folder) and
    ``config`` is given; bundles call it before building anything."""
    if (checkpoint is None) == (config is None):
        raise PipelineError("clipseg needs exactly one of checkpoint= (a local Hugging Face snapshot folder of "
                            "CLIPSeg, e.g. CIDAS/clipseg-rd64-refined) and config= (random weights)")
    problem = None if checkpoint is None else _snapshot_problem(Path(checkpoint))
    if problem is not None:
        raise PipelineError(
            f"clipseg checkpoint {checkpoint} is not a CLIPSeg snapshot folder: {problem} (download it yourself, "
            "e.g. `hf download CIDAS/clipseg-rd64-refined --local-dir DIR`)"
        )


def _load_snapshot(path: Path) -> tuple[CLIPSegForImageSegmentation, object, tuple, tuple]:
    """Model, tokenizer and normalisation from a checked snapshot folder; a failure is one line naming it."""
    try:
        model, info = CLIPSegForImageSegmentation.from_pretrained(path, local_files_only=True,
                                                                  output_loading_info=True)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, RuntimeError, KeyError) as error:
        first = (str(error).strip().splitlines() or [""])[0]
        reason = f"{type(error).__name__}: {first}"
        raise PipelineError(f"clipseg checkpoint {path} could not be loaded ({reason})") from None
    gaps = [f"{key.replace('_', ' ')}: {', '.join(map(str, info[key][:5]))}"
            for key in ("missing_keys", "mismatched_keys") if info.get(key)]
    if gaps:
        raise PipelineError(f"clipseg checkpoint {path} does not fit CLIPSegForImageSegmentation: {'; '.join(gaps)}")
    mean, std = IMAGE_MEAN, IMAGE_STD
    processor = path / "preprocessor_config.json"
    if processor.is_file():
        settings = json.loads(processor.read_text())
        mean, std = tuple(settings.get("image_mean", mean)), tuple(settings.get("image_std", std))
    return model, tokenizer, mean, std


def build_clipseg(
    checkpoint: str | Path | None = None,
    num_classes: int = 1,
    prompts: str | Sequence[str] | None = None,
    spatial_dims: int = 2,
    config: CLIPSegConfig | None = None,
    image_size: int = IMAGE_SIZE,
    train_decoder: bool = False,
) -> CLIPSegSegmenter:
    """CLIPSeg from the local snapshot folder ``checkpoint`` (weights, config and tokenizer), or with random
    weights from ``config`` (tokenized by :class:`CharacterTokenizer`).

    ``prompts``: one text per foreground class (a string is one class), e.g. the dataset's class names;
    ``num_classes`` is 1 for one prompt (sigmoid channel) or prompts + 1 (background first, softmax).
    """
    if spatial_dims != 2:
        raise PipelineError(f"clipseg is a 2D model; got spatial_dims={spatial_dims}")
    check_source(checkpoint, config)
    prompts = [prompts] if isinstance(prompts, str) else list(prompts or [])
    if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise PipelineError(f"clipseg needs one non-empty text prompt per class (e.g. the class names), got {prompts}")
    if config is not None:
        clipseg = CLIPSegForImageSegmentation(config)
        tokenizer, mean, std, name = CharacterTokenizer(config.text_config), IMAGE_MEAN, IMAGE_STD, "clipseg_custom"
        tokens = tokenizer(prompts)
    else:
        clipseg, tokenizer, mean, std = _load_snapshot(Path(checkpoint))
        limit = clipseg.config.text_config.max_position_embeddings
        encoded = tokenizer(prompts, padding=True, truncation=True, max_length=limit, return_tensors="pt")
        tokens, name = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}, "clipseg"
    model = CLIPSegSegmenter(name, clipseg, tokens, num_classes=num_classes, image_size=image_size, mean=mean,
                             std=std, train_decoder=train_decoder)
    return model.eval()
