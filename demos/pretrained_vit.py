"""The Image tab's second model: timm's ImageNet-pretrained ViT-Tiny, which needs the Hugging Face
hub once to fetch its weights (22 MB).

`pretrained_unavailable()` says in one sentence why the tab cannot offer it (weights not cached and
the hub unreachable), or None when it can; `pretrained_model()` loads it once per process and raises
`PretrainedUnavailable` when it cannot be had. The network check is quick and honours
HF_HUB_OFFLINE, so an offline Space never waits on it.
"""

from __future__ import annotations

import os
import socket
import threading

import torch

from demos.common import UserError

IMAGENET_SHAPE = (12, 3)  # layers, heads of models.vision.PRETRAINED_VIT, for the selectors
# models.vision.PRETRAINED_VIT, named here too: importing models.vision imports timm (~2 s), which
# the layout must not wait for (tests/test_hub.py checks that the two agree)
PRETRAINED_VIT = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
HUB = ("huggingface.co", 443)


class PretrainedUnavailable(UserError):
    """The pretrained model's weights are neither cached nor downloadable; the message says why."""


_pretrained: dict[str, torch.nn.Module] = {}
_pretrained_lock = threading.Lock()


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers at all (False at once when HF_HUB_OFFLINE is set)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    try:
        socket.create_connection(HUB, timeout=timeout).close()
        return True
    except OSError:
        return False


def weights_cached(name: str) -> bool:
    """Whether timm's weights for `name` are already in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(f"timm/{name}", "model.safetensors"), str)


def pretrained_unavailable(timeout: float = 1.0) -> str | None:
    """Why the ImageNet model cannot be offered here (one sentence), or None when it can: its
    weights are cached, or the hub answers. The tab offers only models that can work."""
    try:
        if weights_cached(PRETRAINED_VIT) or hub_reachable(timeout):
            return None
    except Exception:  # noqa: BLE001 - a broken cache or hub client: treat as unavailable
        pass
    return (
        "timm's ImageNet-pretrained ViT is not offered here: its weights (22 MB) are not on this machine "
        "and the Hugging Face hub cannot be reached to fetch them."
    )


def pretrained_model():
    """timm's ImageNet ViT-Tiny, loaded once; PretrainedUnavailable when it cannot be had."""
    from models.vision import PRETRAINED_VIT, pretrained_imagenet_vit

    with _pretrained_lock:
        if PRETRAINED_VIT not in _pretrained:
            if not weights_cached(PRETRAINED_VIT) and not hub_reachable():
                raise PretrainedUnavailable(
                    "The ImageNet-pretrained ViT needs the network once, to fetch its weights (22 MB) from the "
                    "Hugging Face hub, and this machine cannot reach it. Choose our CIFAR-10 model, which "
                    "works offline."
                )
            try:
                _pretrained[PRETRAINED_VIT] = pretrained_imagenet_vit(PRETRAINED_VIT)
            except Exception as err:  # the hub's and timm's errors are many; the person needs one sentence
                raise PretrainedUnavailable(
                    f"Could not load the ImageNet-pretrained ViT from the Hugging Face hub ({type(err).__name__}). "
                    "Our CIFAR-10 model works offline."
                ) from err
        return _pretrained[PRETRAINED_VIT]
