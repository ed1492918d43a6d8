"""The GPU recipes are run once, on a lent machine, so they are checked here first: every config
loads into its task's dataclass, the vision optimizer keeps positions and the CLS token out of
weight decay, and (slow) each recipe trains a few steps on the CPU exactly as written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from training.common import TrainingConfig, configure_adamw, load_config, no_weight_decay_names

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "training" / "configs"
DATA = Path(os.environ.get("PLAYGROUND_DATA", ROOT / "data"))


def _decay_of(optimizer: torch.optim.Optimizer) -> dict[int, float]:
    return {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}


def test_vit_positions_and_cls_token_are_not_decayed():
    from models.vision import VisionClassifier, ViTConfig

    model = VisionClassifier(ViTConfig(embed_dim=32, depth=1, num_heads=2))
    config = TrainingConfig(weight_decay=0.05)
    decay = _decay_of(configure_adamw(model, config)["optimizer"])
    named = dict(model.named_parameters())
    assert {"vit.pos_embed", "vit.cls_token"} <= no_weight_decay_names(model)
    assert decay[id(named["vit.pos_embed"])] == 0.0 and named["vit.pos_embed"].dim() == 3
    assert decay[id(named["vit.cls_token"])] == 0.0
    assert decay[id(named["vit.blocks.0.attn.qkv.weight"])] == 0.05  # matrices still decay
    assert decay[id(named["vit.blocks.0.attn.qkv.bias"])] == 0.0
    assert len(decay) == sum(1 for p in model.parameters() if p.requires_grad)  # each parameter once


def test_modules_without_the_method_keep_the_old_rule():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    decay = _decay_of(configure_adamw(model, TrainingConfig(weight_decay=0.1))["optimizer"])
    assert no_weight_decay_names(model) == set()
    assert [decay[id(p)] for p in model.parameters()] == [0.1, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("task", ["generation", "translation", "vision", "audio"])
def test_gpu_config_loads(task):
    import importlib

    module = importlib.import_module(f"training.{task}")
    config = load_config(module.Config, CONFIGS / f"{task}-gpu.yaml")
    assert config.precision == "bf16-mixed" and config.max_time_s


def _compiled_calls(task: str) -> list[tuple[str, object, tuple]]:
    """What each task's training compiles (training/<task>.py's `compiled(...)` calls), built from
    its GPU recipe's model section at a smaller width, with inputs of the training step's shapes."""
    import importlib

    module = importlib.import_module(f"training.{task}")
    config = load_config(module.Config, CONFIGS / f"{task}-gpu.yaml")
    torch.manual_seed(0)
    if task == "generation":
        from models.transformer import GPT

        config.model.update(n_layers=2, d_model=64, n_heads=2, d_ff=128)
        model = GPT(module.gpt_config(config, 65)).train()
        return [("GPT.forward", model.forward, (torch.randint(0, 65, (2, 32)),))]
    if task == "translation":
        from models.transformer import EncoderDecoder, EncoderDecoderConfig

        model = EncoderDecoder(EncoderDecoderConfig(**config.model)).train()
        src, tgt = torch.randint(4, 100, (2, 12)), torch.randint(4, 100, (2, 9))
        return [("EncoderDecoder.forward", model.forward, (src, tgt))]
    if task == "mlm":
        from models.attention import padding_mask
        from models.bert import Bert, BertConfig

        model = Bert(BertConfig(**config.model)).train()
        x, ids = torch.randn(2, 12, model.config.d_model), torch.randint(5, 100, (2, 12))
        return [("Bert.encoder", model.encoder, (x, padding_mask(ids != model.config.pad_id), False))]
    if task == "audio":
        from models.audio import AudioConfig, AudioTransformer

        model = AudioTransformer(AudioConfig(**config.model)).train()
        spec, frames = model.spectrogram(torch.randn(2, 8000), torch.tensor([8000, 6000]))
        return [("AudioTransformer.classify", model.classify, (spec, frames))]
    from models.vision import VisionClassifier, ViTConfig
    from training.image_augment import BatchAugment

    model = VisionClassifier(ViTConfig(**config.model)).train()
    augment = BatchAugment(config.crop_padding, config.flip, config.augment_magnitude, config.augment_prob)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    return [("VisionTransformer", model.vit, (torch.randn(4, 3, 32, 32),)), ("BatchAugment", augment, (images,))]


@pytest.mark.parametrize("task", ["generation", "translation", "mlm", "audio", "vision"])
def test_what_training_compiles_traces_as_one_graph(task):
    """A graph break inside a compiled training forward splits it into pieces that run between
    Python frames, or sends the whole frame back to eager: the step gets slower and the compile
    longer, and only a GPU run would show it. A RoPE check of `torch.is_inference_mode_enabled()`,
    which torch.compile cannot trace, once broke every attention layer of the generation GPT."""
    for name, fn, args in _compiled_calls(task):
        torch._dynamo.reset()
        explained = torch._dynamo.explain(fn)(*args)
        reasons = [b.reason.splitlines()[0] for b in explained.break_reasons]
        assert explained.graph_break_count == 0 and explained.graph_count == 1, (name, reasons)


def test_vision_gpu_recipe_fits_the_parameter_budget():
    from models.vision import VisionClassifier, ViTConfig
    from training.vision import Config

    config = load_config(Config, CONFIGS / "vision-gpu.yaml")
    model = VisionClassifier(ViTConfig(**config.model))
    assert sum(p.numel() for p in model.parameters()) <= 7_000_000


def test_gpu_jobs_script_parses_and_refuses_an_unknown_job(tmp_path):
    script = ROOT / "scripts" / "gpu_jobs.sh"
    for checked in (script, ROOT / "scripts" / "gpu_image_check.sh"):  # the second runs the first's dry runs
        assert subprocess.run(["bash", "-n", str(checked)], capture_output=True).returncode == 0, checked
    done = subprocess.run(
        ["bash", str(script), "nonsense"], env={**os.environ, "OUT": str(tmp_path)}, capture_output=True, text=True
    )
    assert done.returncode == 2 and "unknown job nonsense" in done.stdout + done.stderr
    for config in ("vision-gpu.yaml", "generation-gpu.yaml", "audio-gpu.yaml", "translation-gpu.yaml", "mlm-gpu.yaml"):
        assert config in script.read_text() and (CONFIGS / config).exists()


# The dry run: the GPU recipe, a few steps on the CPU, with everything the GPU would do except
# bf16 and compile (bf16 matmuls crawl on this CPU and torch.compile would take minutes), and with
# smaller batches and validation sets: those only size the work (the GPU has memory to spare),
# and at full size three steps took up to 4 minutes of CI here. A typo in a config or a key the
# code does not know fails here. scripts/gpu_jobs.sh's DRY=1 runs the full sizes before a GPU
# call; the README's retraining section gives the same commands with the full validation.
DRY_RUN = {
    "generation": ["max_steps=3", "max_time_s=null", "val_every=3", "precision=32-true", "compile=false",
                   "batch_size=4", "val_windows=32"],
    "translation": ["max_steps=3", "max_time_s=null", "val_every=3", "precision=32-true", "max_tokens=1024",
                    "val_limit=32"],
    "vision": ["max_steps=3", "max_time_s=null", "val_every=3", "precision=32-true", "compile=false",
               "batch_size=32", "val_size=128"],
    "audio": ["max_steps=3", "max_time_s=null", "val_every=3", "precision=32-true", "compile=false",
              "num_workers=0", "batch_size=16"],
}  # fmt: skip


# the four dry runs share one Python process (each in its own would import torch, Lightning and
# timm again: ~18 s apiece here); each still goes through the CLI's argument parsing and main()
DRY_RUNNER = """
import json, sys
from training import train
for task, argv in json.loads(sys.argv[1]).items():
    print("DRY RUN", task, json.dumps(train.main(argv)), flush=True)
"""


@pytest.mark.slow
def test_gpu_recipes_dry_run_on_cpu(tmp_path):
    if not DATA.is_dir():
        pytest.skip(f"needs the datasets in {DATA} (or $PLAYGROUND_DATA)")
    runs = {
        task: [
            task, "--config", str(CONFIGS / f"{task}-gpu.yaml"), "--data-dir", str(DATA),
            "--accelerator", "cpu", "--devices", "1", "--out", str(tmp_path / task / "ckpt"),
            "--log-dir", str(tmp_path / task / "runs"), "--set", *overrides,
        ]
        for task, overrides in DRY_RUN.items()
    }  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", DRY_RUNNER, json.dumps(runs)], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip
    finished = dict(line.split(" ", 3)[2:] for line in done.stdout.splitlines() if line.startswith("DRY RUN "))
    assert done.returncode == 0, f"ran: {sorted(finished)}\n{done.stderr[-3000:]}"
    assert sorted(finished) == sorted(DRY_RUN)
    for task, summary in finished.items():
        assert json.loads(summary)["steps"] == 3 and (tmp_path / task / "ckpt" / "model.safetensors").exists(), task


def test_host_probe_reports_this_machine(capsys):
    """bench/host.py, the stepcheck job's first line: figures that are real timings of this machine."""
    from bench import host

    report = host.main(["--loop", "200000"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == report
    assert report["cores"] == os.cpu_count() and report["cpu"]
    assert 0 < report["python_loop_s"] < 60 and report["python_loop_iterations"] == 200_000
    cpu = report["ops"]["cpu"]
    assert 0 < cpu["issue_us"] < 10_000 and 0 < cpu["issue_and_wait_us"] < 10_000
    assert "cuda" not in report["ops"]  # the GPU is timed only when asked for


def _check_output(
    path: Path, step_ms: float | None, loss: float | None, finished: bool = True, start_s: float = 30.0
) -> Path:
    """What a step check leaves: training's log lines, then (if it finished) its summary line;
    `start_s` is what came before the timed training (imports, data, the first step's compile)."""
    lines = ["Epoch 0: 100%| 300/300", "{not the summary}"]
    if finished:
        last = {"step": 300, "val/loss": loss} if loss is not None else None
        train_s = 300 * (step_ms or 0) / 1000
        run = {"task": "vision", "steps": 300, "step_ms": step_ms, "last_validation": last}
        lines.append(json.dumps(run | {"train_wall_s": train_s, "process_wall_s": start_s + train_s}))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("candidate", "taken"),
    [
        ((20.0, 1.50), True),  # 37 -> 20 ms, same loss: CUDA graphs go into the long run
        ((35.0, 1.50), False),  # 5% faster: not worth a mode the long run has not used
        ((20.0, float("nan")), False),  # faster but broken
        ((20.0, 1.80), False),  # faster but the loss moved: something computes differently
        ((None, 1.50), False),  # too few steps to time
        (None, False),  # crashed or ran out of time: no summary
    ],
)
def test_compile_choice_keeps_cuda_graphs_only_when_they_finish_faster_with_the_same_loss(tmp_path, candidate, taken):
    from scripts import compile_choice

    baseline = _check_output(tmp_path / "base.out", 37.0, 1.50)
    if candidate is None:
        cand = _check_output(tmp_path / "cand.out", None, None, finished=False)
    else:
        cand = _check_output(tmp_path / "cand.out", *candidate)
    choice = tmp_path / "choices" / "vision.sets"
    argv = [
        "--baseline",
        str(baseline),
        "--candidate",
        str(cand),
        "compile_mode=reduce-overhead",
        "--write",
        str(choice),
    ]
    assert (compile_choice.main(argv) == ["compile_mode=reduce-overhead"]) is taken
    assert choice.read_text() == ("compile_mode=reduce-overhead\n" if taken else "")


@pytest.mark.parametrize(
    ("compiled_ms", "graphs_ms", "eager_ms", "chosen"),
    [
        # run 1's shape: 39 ms a step after ~20 s of compile; eager skips the compile and loses less
        # over 700 steps (15 + 31.5 s against 35 + 27.3 s), CUDA graphs less again per step but not enough
        (39.0, 30.0, 45.0, "compile=false"),
        # the step check fixed the step: 10 ms compiled pays for its compile (42 s against 46.5 s)
        (10.0, 9.5, 45.0, None),
        # CUDA graphs at 5 ms: 40 + 3.5 s against 35 + 7 s, not 10% better; eager 46.5 s: as written
        (10.0, 5.0, 45.0, None),
        # CUDA graphs at 2 ms with the compile of a slow step left: 40 + 1.4 s against 35 + 27.3 s
        (39.0, 2.0, 45.0, "compile_mode=reduce-overhead"),
    ],
)
def test_compile_choice_to_a_step_counts_the_compile(tmp_path, compiled_ms, graphs_ms, eager_ms, chosen):
    """Generation's target counts from process start: the compile is paid for by the steps it speeds
    up before step 700, or eager wins. The best qualifying candidate is taken."""
    from scripts import compile_choice

    base = _check_output(tmp_path / "base.out", compiled_ms, 1.50, start_s=35.0)
    graphs = _check_output(tmp_path / "graphs.out", graphs_ms, 1.50, start_s=40.0)
    eager = _check_output(tmp_path / "eager.out", eager_ms, 1.51, start_s=15.0)
    choice = tmp_path / "generation.sets"
    argv = ["--baseline", str(base), "--to-steps", "700", "--write", str(choice)]
    argv += ["--candidate", str(graphs), "compile_mode=reduce-overhead", "--candidate", str(eager), "compile=false"]
    assert compile_choice.main(argv) == (None if chosen is None else [chosen])
    assert choice.read_text() == ("" if chosen is None else chosen + "\n")


def _run_train_function(tmp_path: Path, env: str, *train_args: str) -> subprocess.CompletedProcess:
    """gpu_jobs.sh's `train` in a dry run (DRY=1) with `python -m training.train` replaced by an echo
    of its arguments ("ARGS ..."), so what the job would run is checked in milliseconds."""
    script = (ROOT / "scripts" / "gpu_jobs.sh").read_text()
    train = script[script.index("train() {") : script.index("score() {")]
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    (fake / "python").write_text(
        f'#!/bin/sh\n[ "$1" = -c ] && exec {sys.executable} "$@"\necho "ARGS $*"\n'
        'echo "CACHES $TORCHINDUCTOR_CACHE_DIR $TRITON_CACHE_DIR"\n'
    )
    (fake / "python").chmod(0o755)
    (tmp_path / "ckpt" / "vision").mkdir(parents=True, exist_ok=True)
    driver = f"""set -euo pipefail
DRY=1 checkpoints={tmp_path}/ckpt work={tmp_path} DATA=data OUT={tmp_path} profile=1
CHOICES={tmp_path}/choices CALL_S= RESERVE_S=150 job_start=$(date +%s) skipped=()
dry_sets=(max_steps=3 compile=false)
{env}
{train}
train {" ".join(train_args)}
echo "SKIPPED ${{skipped[*]}}"
"""
    path = f"{fake}:{os.environ['PATH']}"
    done = subprocess.run(
        ["bash", "-c", driver], cwd=ROOT, env={**os.environ, "PATH": path}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done


def _train_args(done: subprocess.CompletedProcess) -> str | None:
    return next((line for line in done.stdout.splitlines() if line.startswith("ARGS ")), None)


def test_gpu_jobs_train_with_what_the_step_check_chose(tmp_path):
    """The vision job reads the choice the step check left on the machine and trains with it: the
    dry run's command line carries the chosen setting after the dry run's own."""
    (tmp_path / "choices").mkdir()
    (tmp_path / "choices" / "vision.sets").write_text("compile_mode=reduce-overhead\n")
    done = _run_train_function(tmp_path, "", "vision", "vision-gpu.yaml", "val_size=500")
    args = _train_args(done)
    assert args.endswith("--set max_steps=3 compile=false val_size=500 compile_mode=reduce-overhead"), args
    assert "chosen by the step check" in done.stdout
    assert "max_time_s=" not in args  # no CALL_S: the recipe's own budget
    # a cold compile, whatever the step check left in the machine's default cache
    caches = next(line for line in done.stdout.splitlines() if line.startswith("CACHES ")).split()[1:]
    assert caches == [f"{tmp_path}/compile-cache/vision", f"{tmp_path}/compile-cache/vision/triton"]
    assert not Path(caches[0]).exists()  # nothing there before the run


def test_gpu_jobs_train_only_for_the_time_the_call_has_left(tmp_path):
    """CALL_S: vision-gpu.yaml trains 400 s; a call with 400 s left keeps 150 for the rest, so it
    trains ~250 s; with 200 s left (50 s of training) it does not start at all."""
    done = _run_train_function(tmp_path, "CALL_S=400", "vision", "vision-gpu.yaml")
    budget = re.search(r"max_time_s=(\d+)$", _train_args(done))
    assert budget and 245 <= int(budget.group(1)) <= 250, done.stdout
    done = _run_train_function(tmp_path, "CALL_S=200", "vision", "vision-gpu.yaml")
    assert _train_args(done) is None and "too little to train" in done.stdout and "SKIPPED vision" in done.stdout
    done = _run_train_function(tmp_path, "CALL_S=900", "vision", "vision-gpu.yaml")
    assert "max_time_s=" not in _train_args(done)  # time enough: the recipe as written
