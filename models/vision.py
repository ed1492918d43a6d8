"""Vision Transformer (Dosovitskiy et al. 2021) for 32x32 images: timm's `VisionTransformer`, sized
for CIFAR-10, behind this project's interface (`Output(logits, attentions)`, a config dataclass).

An image is cut into patch_size x patch_size patches; each becomes one token, a CLS token is
prepended, and its final state is classified. `need_weights=True` returns every block's attention
weights, which timm's fused kernel never materialises: for that one call the fused path is
switched off and each block's softmax output is caught by a hook (timm's AttentionExtract sees
nothing while fused attention is on).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import InitVar, dataclass, field

import numpy as np
import torch
from PIL import Image, ImageOps
from timm.layers import PatchEmbed
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from models.analysis import attention_rollout
from models.attention_data import Attention, ModelAttention, stack_layers
from models.hub import HubMixin
from models.transformer import Output

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR10_MEAN = [0.4914, 0.4822, 0.4465]
CIFAR10_STD = [0.2470, 0.2435, 0.2616]

# one attention-map call at a time: the fused switch and the hooks live on a shared model
# (module level, not an attribute: a lock cannot be deep-copied, and the EMA copies the model)
_WEIGHTS_LOCK = threading.Lock()


@dataclass
class ViTConfig:
    """Named as every config of this project names a transformer's size (d_model, n_layers,
    n_heads); `timm_size()` gives timm's names for the same numbers."""

    img_size: int = 32
    patch_size: int = 4  # 4 -> an 8x8 grid of 64 patch tokens (+ CLS)
    d_model: int = 192
    n_layers: int = 6
    n_heads: int = 3
    mlp_ratio: float = 2.0
    num_classes: int = 10
    drop_path: float = 0.0  # stochastic depth (training only)
    stem: str = "patch"  # "patch": one linear map per patch (ViT); "conv": early convolutions, same grid
    class_names: list[str] = field(default_factory=lambda: list(CIFAR10_CLASSES))
    mean: list[float] = field(default_factory=lambda: list(CIFAR10_MEAN))
    std: list[float] = field(default_factory=lambda: list(CIFAR10_STD))
    # timm's names, which configs and checkpoints written before 2026-11-26 use:
    # still accepted, mapped to ours here and nowhere else
    embed_dim: InitVar[int | None] = None
    depth: InitVar[int | None] = None
    num_heads: InitVar[int | None] = None

    def __post_init__(self, embed_dim: int | None, depth: int | None, num_heads: int | None) -> None:
        self.d_model = self.d_model if embed_dim is None else embed_dim
        self.n_layers = self.n_layers if depth is None else depth
        self.n_heads = self.n_heads if num_heads is None else num_heads

    def timm_size(self) -> dict[str, int]:
        """The size in timm's words (VisionTransformer's keyword arguments)."""
        return {"embed_dim": self.d_model, "depth": self.n_layers, "num_heads": self.n_heads}

    @property
    def grid_size(self) -> int:
        return self.img_size // self.patch_size


class ConvStem(PatchEmbed):
    """Early convolutions (Xiao et al. 2021, "Early Convolutions Help Transformers See Better"):
    a 3x3 conv, then one stride-2 3x3 conv per halving down to the patch grid, then a 1x1
    projection. Tokens keep the patch grid (one per patch_size x patch_size cell, so the attention
    maps read the same), but each token now sees its neighbourhood: the locality prior that a
    ViT trained on only 50k images lacks. It replaces PatchEmbed's `proj`; the rest is timm's."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        halvings = int(math.log2(self.patch_size[0]))
        if 2**halvings != self.patch_size[0] or self.patch_size[0] != self.patch_size[1]:
            raise ValueError(f"the conv stem needs a square power-of-two patch size, not {self.patch_size}")
        embed_dim, in_chans = self.proj.out_channels, self.proj.in_channels
        widths = [embed_dim // 2**i for i in range(halvings, -1, -1)]  # e.g. 64, 128, 256
        layers: list[nn.Module] = []
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            layers += [nn.Conv2d(in_chans, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.GELU()]
            in_chans = width
        self.proj = nn.Sequential(*layers, nn.Conv2d(in_chans, embed_dim, 1))


STEMS = {"patch": PatchEmbed, "conv": ConvStem}


class VisionClassifier(nn.Module, HubMixin):
    """Patches -> linear embedding + CLS + learned positions -> pre-norm blocks -> head(CLS)."""

    architecture = "vit"

    def __init__(self, config: ViTConfig, vit: VisionTransformer | None = None) -> None:
        """Builds timm's VisionTransformer from `config`, or wraps `vit`, an already built one
        that `config` describes (see `pretrained_imagenet_vit`)."""
        super().__init__()
        self.config = c = config
        if len(c.class_names) != c.num_classes:
            raise ValueError(f"{len(c.class_names)} class names for {c.num_classes} classes")
        if c.stem not in STEMS:
            raise ValueError(f"unknown stem {c.stem!r}; known: {sorted(STEMS)}")
        self.vit = vit or VisionTransformer(
            img_size=c.img_size,
            patch_size=c.patch_size,
            num_classes=c.num_classes,
            **c.timm_size(),
            mlp_ratio=c.mlp_ratio,
            drop_path_rate=c.drop_path,
            global_pool="token",
            embed_layer=STEMS[c.stem],
        )
        self.register_buffer("mean", torch.tensor(c.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(c.std).view(1, 3, 1, 1), persistent=False)

    def normalize(self, images: Tensor) -> Tensor:
        """Pixels in [0, 1] (B, 3, H, W) -> the standardised input the model was trained on."""
        return (images - self.mean) / self.std

    def forward(self, images: Tensor, need_weights: bool = False) -> Output:
        """images: normalised (B, 3, img_size, img_size) -> logits (B, classes) and, on request,
        per block {"self": (B, heads, 1+N, 1+N)} with token 0 = CLS and N = grid_size**2."""
        if not need_weights:
            return Output(self.vit(images))
        with _WEIGHTS_LOCK, _capture_attention(self.vit) as weights:
            logits = self.vit(images)
        return Output(logits, [{"self": w} for w in weights])

    def preprocess(self, image: Image.Image) -> Tensor:
        """A PIL image of any mode and size -> normalised (1, 3, img_size, img_size)."""
        return preprocess(image, self.config)

    @torch.no_grad()
    def attention(self, images: Tensor) -> ModelAttention:
        """One normalised image (1, 3, img_size, img_size) -> logits and its "self" attention:
        position 0 is CLS, then the patches in raster order on the grid."""
        out = self(images, need_weights=True)
        return self.attention_from(out.logits, [a["self"] for a in out.attentions])

    def attention_from(self, logits: Tensor, weights: list[Tensor]) -> ModelAttention:
        """`attention`'s result from a pass already made: logits and each block's weights
        (B, heads, 1+N, 1+N) (models.confidence.read_picture records them with its features)."""
        g = self.config.grid_size
        labels = ["CLS"] + [f"patch r{r} c{c}" for r in range(g) for c in range(g)]
        stacked = stack_layers([{"self": w} for w in weights], "self")
        return ModelAttention(logits, {"self": Attention("self", stacked, labels, labels, cls=True, grid=(g, g))})

    def rollout(self, attentions: list[dict[str, Tensor]]) -> Tensor:
        """Attention rollout from CLS to each patch for a batch: (B, grid, grid), summing to 1 over
        patches (one image: `attention(images)["self"].cls_rollout()` gives the same)."""
        flow = attention_rollout([a["self"] for a in attentions])[:, 0, 1:]  # CLS row, patch columns
        flow = flow / flow.sum(-1, keepdim=True)
        g = self.config.grid_size
        return flow.reshape(-1, g, g)


# timm's ViT-Tiny, pretrained on ImageNet-21k and fine-tuned on ImageNet-1k (AugReg, Steiner et al.
# 2021): 5.7M parameters, 22 MB of weights on the Hugging Face hub, 224x224 input as 14x14 patches.
PRETRAINED_VIT = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"


def pretrained_imagenet_vit(name: str = PRETRAINED_VIT, weights: bool = True) -> VisionClassifier:
    """A timm ImageNet ViT behind this module's interface, so the Image tab shows its rollout and
    per-head maps as it does ours. `weights=True` fetches them from the Hugging Face hub (or its
    local cache); `weights=False` gives the same architecture, untrained (for tests offline)."""
    import timm
    from timm.data import ImageNetInfo

    vit = timm.create_model(name, pretrained=weights)
    data = vit.pretrained_cfg
    info = ImageNetInfo()
    config = ViTConfig(
        img_size=data["input_size"][-1],
        patch_size=vit.patch_embed.patch_size[0],
        d_model=vit.embed_dim,
        n_layers=len(vit.blocks),
        n_heads=vit.blocks[0].attn.num_heads,
        mlp_ratio=vit.blocks[0].mlp.fc1.out_features / vit.embed_dim,
        num_classes=vit.num_classes,
        # WordNet descriptions list synonyms ("tabby, tabby cat"): the first names the class
        class_names=[info.index_to_description(i).split(",")[0] for i in range(vit.num_classes)],
        mean=list(data["mean"]),
        std=list(data["std"]),
    )
    return VisionClassifier(config, vit=vit).eval()


@contextmanager
def _capture_attention(vit: VisionTransformer) -> Iterator[list[Tensor]]:
    """Within the block, every attention module runs unfused and its softmax output (the input of
    `attn_drop`, so dropout never touches what we report) is appended to the yielded list."""
    captured: list[Tensor] = []
    modules = [block.attn for block in vit.blocks]
    before = [m.fused_attn for m in modules]
    hooks = [m.attn_drop.register_forward_hook(lambda _m, args, _out: captured.append(args[0])) for m in modules]
    for m in modules:
        m.fused_attn = False
    try:
        yield captured
    finally:
        for m, fused in zip(modules, before, strict=True):
            m.fused_attn = fused
        for h in hooks:
            h.remove()


# ----------------------------------------------------------------------------------------------
# Preprocessing: any PIL image -> what the model saw
# ----------------------------------------------------------------------------------------------


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB. Transparency is laid over white (not the hidden colour under
    it), and 16/32-bit or float greyscale is scaled to 0..255 instead of clipped."""
    if image.getexif().get(0x0112, 1) != 1:  # phone photos store their rotation in EXIF
        image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        pixels = np.asarray(image, dtype=np.float32)
        peak = float(pixels.max()) if pixels.size else 0.0
        scale = 1.0 if peak <= 1.0 else 255.0 if peak <= 255 else 65535.0 if peak <= 65535 else peak
        image = Image.fromarray(np.clip(pixels / scale * 255.0, 0, 255).astype(np.uint8), mode="L")
    if (image.mode == "P" and "transparency" in image.info) or image.mode in ("LA", "La", "PA", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image if image.mode == "RGB" else image.convert("RGB")


def center_square(image: Image.Image, size: int, resample: Image.Resampling = Image.Resampling.BICUBIC) -> Image.Image:
    """Crop the central square (CIFAR objects are centred; squashing would distort them) and
    resize it to size x size. `reducing_gap` first shrinks big images by fast integer steps."""
    w, h = image.size
    side = min(w, h)
    box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
    return image.resize((size, size), resample, box=box, reducing_gap=2.0)


def image_tensor(image: Image.Image, config: ViTConfig) -> Tensor:
    """An RGB image already at img_size x img_size -> normalised (1, 3, img_size, img_size)."""
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    x = torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0)
    mean = torch.tensor(config.mean).view(1, 3, 1, 1)
    std = torch.tensor(config.std).view(1, 3, 1, 1)
    return (x - mean) / std


def preprocess(image: Image.Image, config: ViTConfig) -> Tensor:
    """Any PIL image -> normalised float tensor (1, 3, img_size, img_size)."""
    return image_tensor(center_square(to_rgb(image), config.img_size), config)
