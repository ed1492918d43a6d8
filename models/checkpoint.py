"""One checkpoint format for every model: a folder with

    model.safetensors   weights (fp16/bf16 to ship, no pickle)
    config.json         {"architecture": ..., "config": {...dataclass fields...}, "meta": {...}}
    tokenizer files     vocab.json (characters) or tokenizer.json (Hugging Face `tokenizers`)

`load_model(folder)` turns such a folder into a ready float32 model in eval mode;
`keep_linears_in_float16(model)` then serves its matrices as they were shipped (see there).
"""

from __future__ import annotations

import importlib
import inspect
import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# architecture name -> (module, model class, config dataclass); imported lazily (timm is slow)
ARCHITECTURES: dict[str, tuple[str, str, str]] = {
    "gpt": ("models.transformer", "GPT", "GPTConfig"),
    "encoder_decoder": ("models.transformer", "EncoderDecoder", "EncoderDecoderConfig"),
    "encoder_classifier": ("models.transformer", "EncoderClassifier", "EncoderClassifierConfig"),
    "vit": ("models.vision", "VisionClassifier", "ViTConfig"),
    "audio_transformer": ("models.audio", "AudioTransformer", "AudioConfig"),
    "bert": ("models.bert", "Bert", "BertConfig"),
}


def _resolve(architecture: str):
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; known: {sorted(ARCHITECTURES)}")
    module_name, model_name, config_name = ARCHITECTURES[architecture]
    module = importlib.import_module(module_name)
    return getattr(module, model_name), getattr(module, config_name)


def build_model(architecture: str, config: dict | object) -> nn.Module:
    """Build a fresh model from its architecture name and config (dataclass or dict)."""
    model_cls, config_cls = _resolve(architecture)
    if isinstance(config, dict):
        known = set(inspect.signature(config_cls).parameters)  # fields and init-only (older) names
        config = config_cls(**{k: v for k, v in config.items() if k in known})
    return model_cls(config)


def save_checkpoint(
    folder: str | Path, model: nn.Module, meta: dict | None = None, dtype: torch.dtype = torch.float16
) -> Path:
    """Write model.safetensors (in `dtype`) and config.json into `folder`."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {}
    seen: dict[int, str] = {}
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen:  # tied weights are stored once
            continue
        seen[tensor.data_ptr()] = name
        t = tensor.detach().cpu()
        state[name] = (t.to(dtype) if t.is_floating_point() else t).contiguous()
    save_file(state, str(folder / "model.safetensors"))
    config = {"architecture": model.architecture, "config": asdict(model.config), "meta": meta or {}}
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return folder


def read_config(folder: str | Path) -> dict:
    return json.loads((Path(folder) / "config.json").read_text())


def load_model(folder: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """config.json + model.safetensors -> the model in float32, eval mode, with `.meta` attached."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"no checkpoint in {folder} (config.json is missing)")
    info = read_config(folder)
    model = build_model(info["architecture"], info["config"])
    state = {
        k: v.float() if v.is_floating_point() else v for k, v in load_file(str(folder / "model.safetensors")).items()
    }
    missing, unexpected = model.load_state_dict(state, strict=False)
    # tied weights were saved once; anything else missing is a real mismatch
    tied = {name for name in missing if _is_tied(model, name, state)}
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"checkpoint {folder} does not fit: missing {set(missing) - tied}, unexpected {unexpected}")
    model.meta = info.get("meta", {})
    return model.to(device).eval()


def _is_tied(model: nn.Module, name: str, state: dict) -> bool:
    """True if parameter `name` shares storage with a parameter that the file holds."""
    params = dict(model.named_parameters(remove_duplicate=False))
    if name not in params:
        return False
    return any(params[name] is params[other] for other in state if other in params)


class Float16Linear(nn.Module):
    """y = x W^T + b with W kept in float16 and upcast for each product.

    Decoding one token multiplies one row by every weight matrix, so the step costs what reading
    the weights costs; once they outgrow the CPU's cache that read comes from memory, and float16
    halves it. The math stays float32: a matrix that came from a float16 checkpoint holds exactly
    the same numbers either way, so the outputs are those of the float32 model bit for bit.
    `weight` is a float16 buffer under the Linear's own name, so state dicts stay interchangeable.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight", linear.weight.detach().to(torch.float16))
        self.bias = linear.bias

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight.to(x.dtype), self.bias)


def keep_linears_in_float16(model: nn.Module) -> nn.Module:
    """Swap the model's nn.Linear layers for Float16Linear in place where that changes no number:
    the matrix holds float16 values already (it came from a float16 checkpoint) and no other module
    shares it (a head tied to the embedding stays as it is). Returns the model."""
    uses = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Linear and uses[id(child.weight)] == 1 and _float16_exact(child.weight):
                setattr(module, name, Float16Linear(child))
    return model


def _float16_exact(weight: Tensor) -> bool:
    return weight.dtype == torch.float32 and torch.equal(weight.detach().half().float(), weight.detach())
