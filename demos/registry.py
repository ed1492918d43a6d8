"""The one list of the app's models and tabs: the tab bar, the Attention Maps choices, the
background loader and the tests all read it.

Adding a model takes one module per layer and ONE line here:

    models/<name>.py   the network, with `attention(...) -> models.attention_data.ModelAttention`
    demos/<name>.py    the tab: TITLE, TASK, build(), a plain inference function, and
                       `attention_of(value, **options) -> demos.common.AttentionView`, which runs
                       that same inference function (so Attention Maps sees what the tab sees)
    MODELS below       Model("<task>", "<name in Attention Maps>", "demos.<name>", "<input>", ("<kind>", ...)),

e.g. the encoder-only fill-mask BERT (models/bert.py, demos/fill_mask.py) came in as:

    Model("mlm", "fill-mask BERT (encoder self)", "demos.fill_mask", TEXT, ("encoder self",), "A man is [MASK] a bike"),

`input` picks the widget Attention Maps shows (TEXT, TEXT_TO_LANGUAGE, IMAGE or AUDIO); the
kinds are the keys of the `maps` its `attention_of` returns, the first is the default. A tab
without a model of its own (the Attention Lab) goes in TOOLS.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

TEXT, TEXT_TO_LANGUAGE, IMAGE, AUDIO = "text", "text to a language", "image", "audio"
INPUTS = (TEXT, TEXT_TO_LANGUAGE, IMAGE, AUDIO)


@dataclass(frozen=True)
class Model:
    """One model of the app, described once."""

    task: str  # its folder in checkpoints/, and its name in the API (`/attention_map`'s model)
    title: str  # how Attention Maps describes it
    tab: str  # the module of its tab (TITLE, TASK, build(), attention_of)
    input: str  # one of INPUTS: what Attention Maps asks for
    attention_kinds: tuple[str, ...]  # what its attention_of returns; the first is the default
    example: str = ""  # a text Attention Maps starts with (TEXT inputs)
    # served with its weight matrices in float16, as shipped (models.checkpoint.Float16Linear): worth
    # it where one-token decoding reads every matrix per token; the outputs do not change
    float16_matrices: bool = False

    def module(self) -> ModuleType:
        return importlib.import_module(self.tab)


# The order is the tab bar's order.
MODELS: tuple[Model, ...] = (
    Model(
        "generation",
        "Shakespeare GPT (causal self-attention)",
        "demos.generation",
        TEXT,
        ("causal self",),
        "ROMEO:\nBut soft, what light through yonder window breaks?",
        float16_matrices=True,
    ),
    Model(
        "translation",
        "translation encoder-decoder",
        "demos.translation",
        TEXT_TO_LANGUAGE,
        ("encoder self", "decoder self", "cross"),
        "A little girl is climbing into a wooden playhouse.",
    ),
    Model("mlm", "fill-mask BERT (encoder self)", "demos.fill_mask", TEXT, ("encoder self",), "A man is [MASK] a bike"),
    Model("vision", "CIFAR-10 ViT", "demos.vision", IMAGE, ("CLS to patches", "rollout")),
    Model("audio", "spoken-digit transformer", "demos.audio", AUDIO, ("CLS to frames", "rollout")),
)

# Tabs after the models' own: they look into the models above.
TOOLS: tuple[str, ...] = ("demos.attention_maps", "demos.attention_lab", "demos.forward_pass", "demos.train_live")

for _model in MODELS:
    if _model.input not in INPUTS:
        raise ValueError(f"{_model.task}: input must be one of {INPUTS}, not {_model.input!r}")


def tasks() -> list[str]:
    """Every model's task name, in tab order."""
    return [m.task for m in MODELS]


def model(task: str) -> Model:
    """The entry of `task`; KeyError names the known ones."""
    for m in MODELS:
        if m.task == task:
            return m
    raise KeyError(f"unknown model {task!r}; known: {', '.join(tasks())}")


def tab_modules() -> list[ModuleType]:
    """The tab modules in tab-bar order: the models' tabs, then the tools."""
    return [m.module() for m in MODELS] + [importlib.import_module(name) for name in TOOLS]
