"""The Hugging Face Hub for every model here: `save_pretrained`, `from_pretrained`, `push_to_hub`.

Each model class lists `HubMixin` among its bases. The mixin reads and writes this project's own
checkpoint folder (models/checkpoint.py: config.json with architecture, config and meta, fp16
model.safetensors), so a folder in checkpoints/, a folder written by `save_pretrained` and a model
repository on the Hub are the same thing:

    model = GPT.from_pretrained("checkpoints/generation")      # or "user/repo" on the Hub
    model.tokenizer                                             # the folder's tokenizer, if it has one
    model.save_pretrained("out/generation")                     # config.json, model.safetensors, README.md
    model.push_to_hub("user/playground-generation")

`push_checkpoint` uploads a whole checkpoint folder (tokenizer, model card, training log too), and
`timm_vit` builds our ViT checkpoint as a plain timm model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from huggingface_hub import PyTorchModelHubMixin, snapshot_download

from models.checkpoint import load_model, read_config, save_checkpoint

CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ model_class }} from Transformer Playground

A small transformer written in plain PyTorch for Transformer Playground, saved with
`save_pretrained`. Load it with `{{ model_class }}.from_pretrained(...)` from the project's `models`
package. The shipped checkpoints' own cards say what data they saw and how well they do.
"""


class HubMixin(
    PyTorchModelHubMixin,
    library_name="pytorch",
    tags=["transformer-playground"],
    model_card_template=CARD_TEMPLATE,
):
    """save_pretrained / from_pretrained / push_to_hub in the checkpoint format of models/checkpoint.py."""

    def _save_pretrained(self, save_directory: Path) -> None:
        save_checkpoint(save_directory, self, meta=getattr(self, "meta", None))

    def generate_model_card(self, *args, **kwargs):
        return super().generate_model_card(*args, model_class=type(self).__name__, **kwargs)

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        map_location: str = "cpu",
        **model_kwargs: Any,
    ):
        # model_kwargs holds config.json's "config" (the mixin passes it on); load_model reads it itself
        folder = hub_folder(model_id, revision, cache_dir, token, force_download, local_files_only)
        model = load_model(folder, device=map_location)
        if not isinstance(model, cls):
            raise TypeError(f"{model_id} holds a {type(model).__name__}, not a {cls.__name__}")
        model.tokenizer = _tokenizer(folder)
        return model


def hub_folder(
    repo_id: str,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    token: str | bool | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
) -> str:
    """A model repository's files in the local Hub cache (downloaded on first use)."""
    if os.path.isdir(repo_id):
        return repo_id
    return snapshot_download(
        repo_id,
        revision=revision,
        cache_dir=cache_dir,
        token=token,
        force_download=force_download,
        local_files_only=local_files_only,
    )


def _tokenizer(folder: str | Path):
    from models.tokenizers import load_tokenizer

    try:
        return load_tokenizer(folder)
    except FileNotFoundError:
        return None


def push_checkpoint(folder: str | Path, repo_id: str, private: bool | None = None, token: str | None = None) -> str:
    """Upload a checkpoint folder as it is (weights, config, tokenizer, README.md model card,
    training log) to the model repository `repo_id`, creating it if needed. Returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    return api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=str(folder), commit_message="Upload model")


def timm_vit(folder: str | Path):
    """Our ViT checkpoint (architecture "vit") as a plain `timm` VisionTransformer with its weights.

    The folder's config.json is this project's, not timm's, and our weights sit under a `vit.`
    prefix, so timm cannot read the folder by itself; this builds the same network with
    `timm.create_model` and hands it the weights through `pretrained_cfg_overlay` (a state_dict,
    with the classes, input size and normalisation of the checkpoint)."""
    import timm
    from safetensors.torch import load_file

    folder = Path(hub_folder(str(folder)))
    info = read_config(folder)
    if info["architecture"] != "vit":
        raise ValueError(f"{folder} holds a {info['architecture']!r} model, not a ViT")
    from models.vision import ViTConfig

    c = info["config"]
    state = {k.removeprefix("vit."): v.float() for k, v in load_file(str(folder / "model.safetensors")).items()}
    kwargs: dict[str, Any] = {}
    if c.get("stem", "patch") == "conv":
        from models.vision import ConvStem

        kwargs["embed_layer"] = ConvStem
    return timm.create_model(
        "vit_tiny_patch16_224",  # the family; every size below is overridden from our config
        pretrained=True,
        pretrained_cfg_overlay=dict(
            state_dict=state,
            num_classes=c["num_classes"],
            input_size=(3, c["img_size"], c["img_size"]),
            mean=tuple(c["mean"]),
            std=tuple(c["std"]),
            label_names=c["class_names"],
        ),
        img_size=c["img_size"],
        patch_size=c["patch_size"],
        **ViTConfig(**c).timm_size(),  # our size names (or the older timm ones) in timm's words
        mlp_ratio=c["mlp_ratio"],
        num_classes=c["num_classes"],
        **kwargs,
    ).eval()
