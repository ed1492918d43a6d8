"""Image augmentation for a whole batch at once, on the training device.

Small-data ViTs need strong augmentation, and a per-image Python loop on the GPU costs more than
the model (an earlier H100 run of a first recipe was bound by such overhead). Here every
op takes (B, 3, H, W) floats in [0, 1] plus per-image parameters, so one call is a handful of
batched kernels with static shapes, which `torch.compile` fuses.

TrivialAugment (Muller & Hutter 2021): each image gets one op drawn at random from the list below
with a random strength. All ops run on the whole batch; `torch.where` keeps each image's own op,
the others see the identity (cheap at 32x32, and no data-dependent shapes for the compiler).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# ----------------------------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------------------------


def hflip(images: Tensor, flip: Tensor) -> Tensor:
    """Mirror the images where `flip` (B,) is True."""
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def random_crop(images: Tensor, padding: int) -> Tensor:
    """Pad each side with zeros, then cut a random window of the original size per image: the
    classic CIFAR shift of up to `padding` pixels, done as one gather."""
    if padding <= 0:
        return images
    b, c, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (b,), device=images.device)
    dx = torch.randint(0, 2 * padding + 1, (b,), device=images.device)
    rows = (dy[:, None] + torch.arange(h, device=images.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, None, :]
    batch = torch.arange(b, device=images.device)[:, None, None, None]
    channel = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


def affine(images: Tensor, theta: Tensor) -> Tensor:
    """Warp each image by its (B, 2, 3) matrix (output -> input, in [-1, 1] coordinates); what
    falls outside is black. The identity matrix returns the image unchanged."""
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# ----------------------------------------------------------------------------------------------
# Colour (PIL's ImageEnhance and ImageOps, batched; factors and strengths are (B,) tensors)
# ----------------------------------------------------------------------------------------------


def _per_image(values: Tensor) -> Tensor:
    return values[:, None, None, None]


def _blend(images: Tensor, degenerate: Tensor, factor: Tensor) -> Tensor:
    """ImageEnhance: factor 0 gives `degenerate`, 1 the image, >1 extrapolates away from it."""
    return (degenerate + _per_image(factor) * (images - degenerate)).clamp(0.0, 1.0)


def grayscale(images: Tensor) -> Tensor:
    """ITU-R 601 luma, (B, 1, H, W)."""
    r, g, b = images.unbind(1)
    return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def adjust_brightness(images: Tensor, factor: Tensor) -> Tensor:
    return _blend(images, torch.zeros_like(images), factor)


def adjust_saturation(images: Tensor, factor: Tensor) -> Tensor:
    return _blend(images, grayscale(images).expand_as(images), factor)


def adjust_contrast(images: Tensor, factor: Tensor) -> Tensor:
    mean = grayscale(images).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(images, mean.expand_as(images), factor)


def adjust_sharpness(images: Tensor, factor: Tensor) -> Tensor:
    """Blend with PIL's smoothing filter (centre weight 5, neighbours 1); borders stay as they are."""
    kernel = torch.ones(3, 3, device=images.device, dtype=images.dtype)
    kernel[1, 1] = 5.0
    kernel = (kernel / kernel.sum()).expand(images.size(1), 1, 3, 3)
    smooth = F.conv2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), kernel, groups=images.size(1))
    border = torch.ones_like(images[:1, :1], dtype=torch.bool)
    border[..., 1:-1, 1:-1] = False
    return _blend(images, torch.where(border, images, smooth), factor)


def posterize(images: Tensor, bits: Tensor) -> Tensor:
    """Keep the top `bits` (1..8) bits of each 8-bit value."""
    step = _per_image(2.0 ** (8 - bits.to(images.dtype)))
    return torch.floor(torch.round(images * 255) / step) * step / 255


def solarize(images: Tensor, threshold: Tensor) -> Tensor:
    """Invert every value at or above `threshold` (in [0, 1]; above 1 changes nothing)."""
    return torch.where(images >= _per_image(threshold), 1.0 - images, images)


def autocontrast(images: Tensor) -> Tensor:
    """Stretch each channel of each image to the full range (flat channels stay as they are)."""
    low = images.amin(dim=(2, 3), keepdim=True)
    high = images.amax(dim=(2, 3), keepdim=True)
    span = high - low
    return torch.where(span > 0, (images - low) / span.clamp_min(1e-6), images)


def equalize(images: Tensor) -> Tensor:
    """Histogram equalisation per channel, PIL's rule: levels are spread in steps of
    (pixels - count of the top level) / 255; a channel with one level stays as it is."""
    b, c, h, w = images.shape
    levels = torch.round(images * 255).long().clamp(0, 255).flatten(2)  # (B, C, HW)
    hist = torch.zeros(b, c, 256, device=images.device, dtype=torch.float32)
    hist.scatter_add_(2, levels, torch.ones_like(levels, dtype=torch.float32))
    top_count = hist.gather(2, levels.amax(-1, keepdim=True))
    step = torch.floor((h * w - top_count) / 255)
    below = hist.cumsum(-1) - hist  # pixels strictly below each level
    lut = torch.floor((torch.floor(step / 2) + below) / step.clamp_min(1)).clamp(max=255) / 255
    out = lut.gather(2, levels).view(b, c, h, w).to(images.dtype)
    return torch.where(step.view(b, c, 1, 1) > 0, out, images)


# ----------------------------------------------------------------------------------------------
# TrivialAugment over a batch
# ----------------------------------------------------------------------------------------------

OPS = (
    "identity",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
    "rotate",
    "brightness",
    "saturation",
    "contrast",
    "sharpness",
    "posterize",
    "solarize",
    "autocontrast",
    "equalize",
)
GEOMETRIC = OPS[1:6]

# strength 1 of each op (RandAugment's usual ranges; translate is a share of the image size)
MAX_SHEAR, MAX_TRANSLATE, MAX_ROTATE_DEG, MAX_ENHANCE, MAX_POSTERIZE_BITS = 0.3, 0.3, 30.0, 0.9, 4


def trivial_augment_matrices(op: Tensor, strength: Tensor) -> Tensor:
    """(B, 2, 3) affine matrices: each image's geometric op, or the identity."""
    b = op.size(0)
    theta = torch.zeros(b, 2, 3, device=strength.device, dtype=strength.dtype)
    theta[:, 0, 0] = 1.0
    theta[:, 1, 1] = 1.0
    angle = strength * math.radians(MAX_ROTATE_DEG)
    is_op = {name: op == OPS.index(name) for name in GEOMETRIC}
    zero = torch.zeros_like(strength)
    theta[:, 0, 1] = torch.where(is_op["shear_x"], strength * MAX_SHEAR, zero)
    theta[:, 1, 0] = torch.where(is_op["shear_y"], strength * MAX_SHEAR, zero)
    theta[:, 0, 2] = torch.where(is_op["translate_x"], strength * MAX_TRANSLATE * 2, zero)  # [-1, 1] spans 2
    theta[:, 1, 2] = torch.where(is_op["translate_y"], strength * MAX_TRANSLATE * 2, zero)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotate = is_op["rotate"]
    theta[:, 0, 0] = torch.where(rotate, cos, theta[:, 0, 0])
    theta[:, 0, 1] = torch.where(rotate, -sin, theta[:, 0, 1])
    theta[:, 1, 0] = torch.where(rotate, sin, theta[:, 1, 0])
    theta[:, 1, 1] = torch.where(rotate, cos, theta[:, 1, 1])
    return theta


def trivial_augment(images: Tensor, magnitude: float, prob: float = 1.0) -> Tensor:
    """One random op per image with strength ~ U(0, magnitude) and a random sign; images not
    drawn (1 - prob of them) and those that drew "identity" pass unchanged."""
    b = images.size(0)
    device = images.device
    op = torch.randint(0, len(OPS), (b,), device=device)
    op = torch.where(torch.rand(b, device=device) < prob, op, torch.zeros_like(op))
    level = torch.rand(b, device=device, dtype=images.dtype) * magnitude  # in [0, magnitude]
    sign = torch.where(torch.rand(b, device=device) < 0.5, -1.0, 1.0).to(images.dtype)
    x = affine(images, trivial_augment_matrices(op, level * sign))
    factor = 1.0 + sign * level * MAX_ENHANCE
    colour = {
        "brightness": lambda t: adjust_brightness(t, factor),
        "saturation": lambda t: adjust_saturation(t, factor),
        "contrast": lambda t: adjust_contrast(t, factor),
        "sharpness": lambda t: adjust_sharpness(t, factor),
        "posterize": lambda t: posterize(t, 8 - torch.round(level * MAX_POSTERIZE_BITS)),
        "solarize": lambda t: solarize(t, 1.0 - level + 1.0 / 255),
        "autocontrast": autocontrast,
        "equalize": equalize,
    }
    for name, fn in colour.items():
        x = torch.where(_per_image(op == OPS.index(name)), fn(x), x)
    return x


class BatchAugment(nn.Module):
    """uint8 (B, 3, H, W) -> augmented floats in [0, 1]: TrivialAugment, random crop, flip.

    A module so that `torch.compile` can take it whole; it draws its own random numbers."""

    def __init__(self, padding: int = 4, flip: bool = True, magnitude: float = 0.0, prob: float = 1.0) -> None:
        super().__init__()
        self.padding, self.flip, self.magnitude, self.prob = padding, flip, magnitude, prob

    def forward(self, images: Tensor) -> Tensor:
        x = images.float() / 255.0
        if self.magnitude > 0 and self.prob > 0:
            x = trivial_augment(x, self.magnitude, self.prob)
        x = random_crop(x, self.padding)
        if self.flip:
            x = hflip(x, torch.rand(x.size(0), device=x.device) < 0.5)
        return x
