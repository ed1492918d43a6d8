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


def _check_output(path: Path, step_ms: float | None, loss: float | None, finished: bool = True) -> Path:
    """What a step check leaves: training's log lines, then (if it finished) its summary line."""
    lines = ["Epoch 0: 100%| 300/300", "{not the summary}"]
    if finished:
        last = {"step": 300, "val/loss": loss} if loss is not None else None
        lines.append(json.dumps({"task": "vision", "steps": 300, "step_ms": step_ms, "last_validation": last}))
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
    assert compile_choice.main(argv) is taken
    assert choice.read_text() == ("compile_mode=reduce-overhead\n" if taken else "")


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
