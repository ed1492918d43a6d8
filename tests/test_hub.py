"""Ready for the Hugging Face Hub: what a Space installs and uploads, the Space's header, models
that save and load through huggingface_hub (and timm), their model cards, and the app's tools
over the API and MCP. Offline: nothing here talks to the Hub."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import urllib.request
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
import tomllib
import torch
import yaml

from models.checkpoint import ARCHITECTURES, _resolve, load_model, read_config
from models.hub import HubMixin, timm_vit

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINTS = ROOT / "checkpoints"
SHIPPED = sorted(p.name for p in CHECKPOINTS.iterdir() if (p / "config.json").exists())


def requirement_names(path: Path) -> dict[str, str]:
    """{normalised distribution name: the line} for a requirements file (without -r includes)."""
    lines = [line.strip() for line in path.read_text().splitlines()]
    return {_name(line): line for line in lines if line and not line.startswith(("#", "-"))}


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def front_matter(path: Path) -> dict:
    text = path.read_text()
    assert text.startswith("---\n"), f"{path} has no YAML header"
    return yaml.safe_load(text.split("---\n", 2)[1])


# ----------------------------------------------------------------------------------------------
# Requirements
# ----------------------------------------------------------------------------------------------


def test_pyproject_declares_the_same_requirements_as_the_files():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = requirement_names(ROOT / "requirements.txt")
    dev = requirement_names(ROOT / "requirements-dev.txt")
    assert project["dependencies"] == list(runtime.values())
    assert project["optional-dependencies"]["dev"] == list(dev.values())
    assert (ROOT / "requirements-dev.txt").read_text().count("-r requirements.txt") == 1


def _imported_modules(paths: list[Path]) -> set[str]:
    found = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found


def test_runtime_requirements_hold_what_the_app_imports_and_no_development_tools():
    # the app's code: app.py, the tabs, the models, and the one bench module a tab imports
    code = [ROOT / "app.py", ROOT / "bench" / "attention.py", *ROOT.glob("demos/*.py"), *ROOT.glob("models/*.py")]
    ours = {"app", "demos", "models", "bench", "training", "tests", "scripts"}
    modules = _imported_modules(code) - ours - set(sys.stdlib_module_names)
    owners = packages_distributions()
    runtime = requirement_names(ROOT / "requirements.txt")
    missing = {}
    for module in sorted(modules):
        dists = {d.lower().replace("_", "-") for d in owners.get(module, [module])}
        if not dists & set(runtime):
            missing[module] = sorted(dists)
    assert not missing, f"imported by the app but not in requirements.txt: {missing}"
    for tool in ("lightning", "pytest", "playwright", "ruff", "sacrebleu"):
        assert tool not in runtime, f"{tool} is for development: requirements-dev.txt"
        assert tool in requirement_names(ROOT / "requirements-dev.txt")
    assert "gradio" in runtime and "[mcp]" in runtime["gradio"]  # launch(mcp_server=True) needs the extra


# ----------------------------------------------------------------------------------------------
# The Space: header, files, binaries
# ----------------------------------------------------------------------------------------------


def test_space_header_matches_the_app():
    import gradio

    from models.vision import PRETRAINED_VIT

    header = front_matter(ROOT / "README.md")
    assert header["sdk"] == "gradio" and header["sdk_version"] == gradio.__version__
    assert (ROOT / header["app_file"]).exists()
    assert header["suggested_hardware"] == "cpu-basic"
    # the versions this app was tested on (3.11 here, 3.12 on the training GPU image)
    assert header["python_version"] in ("3.11", "3.12")
    assert f"timm/{PRETRAINED_VIT}" in header["models"]
    # code MIT, weights on their data's terms (Multi30k: non-commercial), spelled out in LICENSE.md
    assert header["license"] == "other" and (ROOT / header["license_link"]).exists()
    assert "non-commercial" in (ROOT / header["license_link"]).read_text()
    assert "bentrevett/multi30k" in header["datasets"]
    assert "zerogpu" not in json.dumps(header).lower()


def test_space_upload_leaves_out_every_folder_git_ignores():
    """What git ignores (environments, data, runs, caches) never goes to the Space either: each
    folder named in .gitignore, with a file inside it, is filtered out of the upload."""
    from huggingface_hub.utils import filter_repo_objects

    from scripts.push_space import IGNORE

    folders = [
        line.strip().rstrip("/").replace("*", "some")
        for line in (ROOT / ".gitignore").read_text().splitlines()
        if line.strip().endswith("/") and not line.startswith("#")
    ]
    assert ".venv-gpu-image" in folders and "data" in folders
    probes = [f"{folder}/inner/file.py" for folder in folders]
    assert list(filter_repo_objects(probes, ignore_patterns=IGNORE)) == []


def test_space_upload_takes_the_app_and_leaves_out_environments_data_and_runs():
    from scripts.push_space import space_files

    files = space_files()
    for needed in ("app.py", "README.md", "requirements.txt", "bench/attention.py", "demos/tools.py"):
        assert needed in files
    for task in SHIPPED:
        for name in ("config.json", "model.safetensors", "README.md"):
            assert f"checkpoints/{task}/{name}" in files
    for left_out in (".venv/", "data/", "runs/", ".git/", "tests/", "__pycache__/", "lightning_logs/"):
        assert not [f for f in files if f.startswith(left_out) or f"/{left_out}" in f], left_out
    assert not [f for f in files if f.endswith(".pyc")]
    total = sum((ROOT / f).stat().st_size for f in files)
    assert total < 50 * 2**20, f"{total / 2**20:.1f} MiB is a lot for a Space of small models"


def _tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [name for name in out.decode().split("\0") if name and (ROOT / name).is_file()]


def _is_binary(path: Path) -> bool:
    head = path.read_bytes()[:8192]
    if b"\0" in head:
        return True
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        return error.start < len(head) - 4  # a multi-byte character cut at the edge is still text
    return False


def test_gitattributes_send_every_tracked_binary_through_lfs():
    files = _tracked_files()
    binaries = [f for f in files if _is_binary(ROOT / f)]
    assert any(f.endswith(".safetensors") for f in binaries) and any(f.endswith(".png") for f in binaries)
    out = subprocess.run(
        ["git", "check-attr", "filter", "--", *binaries], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    plain = [line.split(":")[0] for line in out.splitlines() if not line.endswith(": filter: lfs")]
    assert not plain, f"binary files without an LFS rule in .gitattributes: {plain}"
    big_text = [f for f in files if f not in binaries and (ROOT / f).stat().st_size > 10 * 2**20]
    assert not big_text, f"text files over the Hub's 10 MB plain-git limit: {big_text}"


# ----------------------------------------------------------------------------------------------
# Models through huggingface_hub
# ----------------------------------------------------------------------------------------------


def _tiny(architecture: str) -> torch.nn.Module:
    """A small model of each architecture, its weights rounded to fp16 (what checkpoints store)."""
    model_cls, config_cls = _resolve(architecture)
    sizes = {
        "gpt": dict(vocab_size=11, context_len=16, n_layers=2, n_heads=2, d_model=16, d_ff=32),
        "encoder_decoder": dict(
            vocab_size=30, max_len=16, n_encoder_layers=2, n_decoder_layers=2, n_heads=2, d_model=16, d_ff=32
        ),
        "encoder_classifier": dict(input_dim=5, max_len=20, n_layers=2, n_heads=2, d_model=16, d_ff=32),
        "vit": dict(patch_size=8, embed_dim=16, depth=2, num_heads=2),
        "audio_transformer": dict(d_model=16, n_layers=2, n_heads=2, d_ff=32),
        "bert": dict(vocab_size=40, max_len=16, n_layers=2, n_heads=2, d_model=16, d_ff=32),
    }
    torch.manual_seed(0)
    model = model_cls(config_cls(**sizes.get(architecture, {}))).eval()
    state = model.state_dict()
    model.load_state_dict({k: v.half().float() if v.is_floating_point() else v for k, v in state.items()})
    return model


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_every_model_round_trips_through_save_and_from_pretrained(architecture, tmp_path):
    model = _tiny(architecture)
    assert isinstance(model, HubMixin), f"{type(model).__name__} needs HubMixin among its bases"
    model.save_pretrained(tmp_path)
    assert {"config.json", "model.safetensors", "README.md"} <= {p.name for p in tmp_path.iterdir()}
    assert read_config(tmp_path)["architecture"] == architecture  # our checkpoint format, not the mixin's
    loaded = type(model).from_pretrained(tmp_path)
    assert type(loaded) is type(model) and not loaded.training
    assert loaded.config == model.config
    expected, got = model.state_dict(), loaded.state_dict()
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name
    card = (tmp_path / "README.md").read_text()
    assert type(model).__name__ in card and "transformer-playground" in card


def test_a_round_trip_predicts_as_before(tmp_path):
    model = _tiny("gpt")
    model.save_pretrained(tmp_path)
    ids = torch.randint(0, 11, (2, 9))
    assert torch.equal(type(model).from_pretrained(tmp_path)(ids).logits, model(ids).logits)


@pytest.mark.parametrize("task", SHIPPED)
def test_shipped_checkpoints_load_with_from_pretrained(task):
    folder = CHECKPOINTS / task
    reference = load_model(folder)  # the app's loader
    model = type(reference).from_pretrained(folder)
    for name, tensor in reference.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    has_tokenizer = (folder / "vocab.json").exists() or (folder / "tokenizer.json").exists()
    assert (model.tokenizer is not None) == has_tokenizer


def test_from_pretrained_refuses_a_folder_of_another_model():
    from models.transformer import GPT

    with pytest.raises(TypeError, match="not a GPT"):
        GPT.from_pretrained(CHECKPOINTS / "vision")


def test_timm_builds_our_vit_from_its_folder():
    folder = CHECKPOINTS / "vision"
    ours = load_model(folder)
    vit = timm_vit(folder)
    assert type(vit).__name__ == "VisionTransformer"
    assert vit.pretrained_cfg["label_names"] == ours.config.class_names
    images = torch.randn(3, 3, ours.config.img_size, ours.config.img_size)
    with torch.no_grad():
        torch.testing.assert_close(vit(images), ours(images).logits)


@pytest.mark.parametrize("task", SHIPPED)
def test_each_checkpoint_has_a_model_card(task):
    from huggingface_hub import ModelCard

    path = CHECKPOINTS / task / "README.md"
    card = ModelCard.load(path)
    data = card.data.to_dict()
    assert data["license"] and data["datasets"] and data["library_name"] == "pytorch"
    info = read_config(CHECKPOINTS / task)
    training = info["meta"]["training"]
    for section in ("## What it is", "## Data", "## Results", "## Limits", "## Licence", "## Use"):
        assert section in card.text, f"{path}: no {section!r}"
    assert training["date"] in card.text and "CPU" in card.text
    assert f"{info['architecture']!r}" in card.text or info["architecture"] in card.text
    if "multi30k" in " ".join(data["datasets"]).lower():
        assert data["license"] == "other" and "non-commercial" in card.text.lower()


# ----------------------------------------------------------------------------------------------
# The app's tools: API endpoints and MCP
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(app_server):
    return app_server


def _schema(server) -> dict[str, dict]:
    with urllib.request.urlopen(server.url + "gradio_api/mcp/schema", timeout=60) as response:
        return {tool["name"]: tool for tool in json.load(response)}


@pytest.mark.slow
def test_mcp_lists_the_tools_and_only_the_tools(server):
    from demos import tools

    schema = _schema(server)
    assert set(schema) == {fn.__name__ for fn in tools.tools()}
    for name, tool in schema.items():
        assert len(tool["description"]) > 60, name
        properties = tool["inputSchema"]["properties"]
        assert properties and all(p.get("description") for p in properties.values()), name


@pytest.mark.slow
def test_tools_answer_through_gradio_client_as_the_tabs_do(server, tmp_path):
    from gradio_client import Client, handle_file

    from demos import audio, generation, translation, vision

    client = Client(server.url, verbose=False)
    text = "A man is riding a bike."
    got = client.predict(text, "English", "German", 4, api_name="/translate_text")
    assert got == translation.translate(text, "en", "de", 4).text and got.strip()

    chars = client.predict("ROMEO:\nBut soft", 1.0, api_name="/next_characters")
    expected = dict(generation.next_token_distribution("ROMEO:\nBut soft", 1.0))
    assert list(chars) == list(expected)
    assert all(abs(chars[c] - expected[c]) < 1e-6 for c in chars)
    assert 0 < sum(chars.values()) <= 1 + 1e-6

    picture = vision.example_paths()[0]
    labels = client.predict(handle_file(picture), api_name="/classify_picture")
    assert labels == pytest.approx(vision.classify_image(picture).top5)

    clip, _ = audio.examples()[0]
    digits = client.predict(handle_file(clip), api_name="/classify_spoken_digit")
    assert digits == pytest.approx(audio.classify_audio(clip).top3)
    assert set(digits) <= {str(d) for d in range(10)} | set(read_config(CHECKPOINTS / "audio")["config"]["class_names"])

    with pytest.raises(Exception, match="nothing to translate"):
        client.predict("   ", "English", "German", 4, api_name="/translate_text")

    if (CHECKPOINTS / "mlm" / "config.json").exists():
        from demos import fill_mask

        sentence = "A man is [MASK] a bike."
        filled = client.predict(sentence, 3, api_name="/fill_in_blanks")
        expected = fill_mask.as_json(fill_mask.fill_mask(sentence, 3))
        assert filled["filled"] == expected["filled"] and "[MASK]" not in filled["filled"]
        assert [[c["token"] for c in blank] for blank in filled["blanks"]] == [
            [c["token"] for c in blank] for blank in expected["blanks"]
        ]
        assert len(filled["blanks"]) == 1 and len(filled["blanks"][0]) == 3


def test_every_example_shows_its_result_in_one_click():
    """Clicking an example fills the inputs (Gradio's load_example event) and then runs the same
    handler, on the same inputs, as the tab's own button, in the shared queue."""
    import app
    from demos.common import CORES

    demo = app.build_app()
    loads = [i for i, f in demo.fns.items() if (f.api_name or "").startswith("load_example")]
    assert len(loads) >= 4  # Generate, Translate, Image, Audio (and Fill-Mask with its model)
    buttons = {f.fn: f for f in demo.fns.values() if f.api_name and not f.api_name.startswith("load_example")}
    for load in loads:
        runs = [f for f in demo.fns.values() if f.trigger_after == load]
        assert len(runs) == 1, demo.fns[load].api_name
        run = runs[0]
        assert run.concurrency_id == CORES and run.api_visibility == "private"
        assert run.fn in buttons, f"{run.name} is not what the tab's button runs"
        assert [c._id for c in run.inputs] == [c._id for c in buttons[run.fn].inputs]


def test_the_page_is_built_without_timm():
    """Start-up stays short (bench/startup.py): laying out the tabs reads configs, it does not
    import timm (~2 s) or load the ViT; they load after the page answers (app.py)."""
    import os

    from demos import pretrained_vit
    from models.vision import PRETRAINED_VIT

    assert pretrained_vit.PRETRAINED_VIT == PRETRAINED_VIT
    code = "import sys, app; app.build_app(); print('timm' in sys.modules)"
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "False", "building the page imported timm"


def test_the_concept_guide_points_at_code_that_exists():
    """docs/concepts.md names places as `file: name, name` (or `Class.method`): every file must
    exist and define every name, so the guide cannot drift from the code unnoticed."""
    text = (ROOT / "docs" / "concepts.md").read_text()
    places = re.findall(r"`([\w/]+\.py): ([\w., ]+)`", text)
    assert len(places) > 40
    for path, names in places:
        source = (ROOT / path).read_text()
        for name in (n.strip() for n in names.split(",")):
            for part in name.split("."):
                assert re.search(rf"(def|class) {part}\b|^{part} = |self\.{part} = ", source, re.M), f"{path}: {name}"
    for path in re.findall(r"`((?:models|demos|training|bench|tests)/[\w/]+\.py)`", text):
        assert (ROOT / path).exists(), path
