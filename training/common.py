"""What every task's training shares: configs from YAML, data location, optimizer and schedule,
an EMA of the weights (`WeightEMA`), `compile: true` (`compiled`), metric names
(`TimedModule.log_training` / `log_validation`), the checkpoint a run exports (`export`) and a
wall-clock log of validation metrics. No Gradio here (the GPU image has none)."""

from __future__ import annotations

import copy
import json
import os
import statistics
import time
import urllib.request
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import lightning as L
import torch
import yaml
from torch import Tensor, nn

from models.checkpoint import load_model, save_checkpoint
from models.schedules import warmup_cosine
from models.tokenizers import CharTokenizer, load_tokenizer, save_tokenizer
from training.muon import MuonWithAdamW, hidden_matrices

TASKS = ("generation", "translation", "vision", "audio", "mlm")


@dataclass
class TrainingConfig:
    """Fields every task has; each task subclasses it and adds its own (model size, data, ...)."""

    model: dict[str, Any] = field(default_factory=dict)  # the model config dataclass's fields
    seed: int = 1337
    batch_size: int = 64
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.99)
    warmup_steps: int = 100
    max_steps: int = 1000
    max_time_s: float | None = None  # training time budget after the first step (TrainingClock)
    grad_clip: float = 1.0
    precision: str = "32-true"  # "bf16-mixed" on the GPU
    compile: bool = False  # torch.compile what the task hands to `compiled` (training speed only)
    # torch.compile's mode when compile is on: null (the default), "reduce-overhead" (CUDA graphs:
    # one launch replays a whole graph, for steps bound by kernel launches) or "max-autotune"
    compile_mode: str | None = None
    val_every: int = 250  # steps between validations
    label_smoothing: float = 0.0
    ema_decay: float = 0.0  # EMA of the weights (0 = off), for tasks that keep one (vision, translation, audio)
    optimizer: str = "adamw"  # "muon": Muon for hidden weight matrices, AdamW (lr) for the rest
    muon_lr: float = 0.02
    muon_momentum: float = 0.95
    # a checkpoint folder to start from instead of random weights (a longer run of a shipped model,
    # or fine-tuning); same model config and tokenizer, while the optimizer and schedule start afresh
    init_from: str | None = None


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load, except that a key written twice in one mapping is an error: plain YAML
    keeps the last one silently, so a stray `model:` line would drop half a recipe."""

    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
        repeated = sorted({str(k) for k in keys if keys.count(k) > 1})
        if repeated:
            raise yaml.constructor.ConstructorError(
                None, None, f"key written twice: {', '.join(repeated)}", node.start_mark
            )
        return super().construct_mapping(node, deep=deep)


def read_config(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """One YAML config's values. `extends: other.yaml` (a file beside it) starts from that file's
    values and replaces the keys this one writes (a nested mapping such as `model` key by key), so
    a run that changes two settings of a recipe writes only those two."""
    path = Path(path).resolve()
    if path in _seen:
        raise ValueError(f"config extends itself: {' -> '.join(p.name for p in (*_seen, path))}")
    values = yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
    base = values.pop("extends", None)
    return _merged(read_config(path.parent / base, (*_seen, path)), values) if base else values


def _merged(base: dict, changes: dict) -> dict:
    merged = dict(base)
    for key, value in changes.items():
        both_mappings = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merged(merged[key], value) if both_mappings else value
    return merged


def load_config(config_cls: type, path: str | Path | None, overrides: list[str] = ()):
    """YAML file (with what it extends) + `key=value` overrides (values parsed as YAML) -> config dataclass."""
    values = read_config(path) if path else {}
    for item in overrides:
        key, _, raw = item.partition("=")
        target = values
        *parents, leaf = key.split(".")
        for p in parents:
            target = target.setdefault(p, {})
        target[leaf] = yaml.safe_load(raw)
    known = {f.name for f in fields(config_cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown config keys for {config_cls.__name__}: {sorted(unknown)}")
    if "betas" in values:
        values["betas"] = tuple(values["betas"])
    return config_cls(**values)


def resolve_data_dir(data_dir: str | Path | None) -> Path | None:
    """--data-dir, else $PLAYGROUND_DATA, else None (the task then downloads the public source)."""
    data_dir = data_dir or os.environ.get("PLAYGROUND_DATA")
    return Path(data_dir) if data_dir else None


def download_cache() -> Path:
    """Where public datasets land when no --data-dir holds them."""
    return Path(os.environ.get("PLAYGROUND_CACHE", Path.home() / ".cache" / "transformer-playground"))


def download(url: str, dest: Path) -> Path:
    """Fetch `url` to `dest` once (users have internet; tests never get here)."""
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        print(f"downloading {url}")
        tmp = dest.with_suffix(dest.suffix + ".part")
        urllib.request.urlretrieve(url, tmp)
        tmp.rename(dest)
    return dest


class TrainingClock(L.Callback):
    """The run's time budget, `max_time_s`: the one mechanism that every task's schedule and stop use.

    On a shared or unknown machine the step time is not known in advance, yet a run must end inside
    its budget with a low learning rate. So training progress is `max(steps / max_steps, elapsed /
    max_time_s)`, the cosine follows it, and training stops when either runs out. The clock starts
    after the first step, so compile time is not counted as training. Under DDP every process takes
    rank 0's reading (every `every` steps), so learning rates and the stop agree across ranks.
    A LightningModule hands it to the Trainer from `configure_callbacks`."""

    MARK_EVERY = 50  # steps between the time marks that `step_ms` reads

    def __init__(self, max_steps: int, max_time_s: float | None, every: int = 10):
        self.max_steps, self.max_time_s, self.every = max_steps, max_time_s, every
        self.start: float | None = None  # time.monotonic() after the first step
        self.time_progress = 0.0
        self.marks: list[float] = []  # time.monotonic() at every MARK_EVERY-th step
        self._marked_step: int | None = None

    def step_ms(self) -> float | None:
        """Milliseconds per optimizer step in steady state: the median over windows of
        MARK_EVERY steps, so a window with a validation or a profiler in it does not count
        (the mean since the first step would); None before two marks."""
        windows = [b - a for a, b in zip(self.marks, self.marks[1:], strict=False)]
        if not windows:
            return None
        return 1e3 * statistics.median(windows) / self.MARK_EVERY

    def elapsed(self) -> float:
        return 0.0 if self.start is None else time.monotonic() - self.start

    def progress(self, step: int) -> float:
        """Share of training done after `step` optimizer steps, in [0, 1]."""
        return min(1.0, max(step / max(1, self.max_steps), self.time_progress))

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args) -> None:
        if self.start is None:
            self.start = time.monotonic()
            return
        if trainer.global_step % self.MARK_EVERY == 0 and trainer.global_step != self._marked_step:
            self.marks.append(time.monotonic())
            self._marked_step = trainer.global_step
        if not self.max_time_s:
            return
        if trainer.world_size > 1:
            if trainer.global_step % self.every:
                return
            elapsed = float(trainer.strategy.broadcast(self.elapsed(), src=0))
        else:
            elapsed = self.elapsed()
        self.time_progress = min(1.0, elapsed / self.max_time_s)
        if self.time_progress >= 1.0:
            trainer.should_stop = True


def no_weight_decay_names(module: torch.nn.Module) -> set[str]:
    """Full names of the parameters that any submodule asks to keep out of weight decay through a
    `no_weight_decay()` method (names relative to that submodule, as timm's models give them)."""
    names = set()
    for prefix, sub in module.named_modules():
        ask = getattr(sub, "no_weight_decay", None)
        if callable(ask):
            names |= {f"{prefix}.{name}" if prefix else name for name in ask()}
    return names


def configure_adamw(module: L.LightningModule, config: TrainingConfig, clock: TrainingClock | None = None):
    """AdamW with decay on matrices only (not biases and norms), and a per-step linear warmup, then
    a cosine down to `min_lr_ratio` over the clock's progress (steps or time, whichever is further
    along; steps alone without a clock). Parameters that a submodule's `no_weight_decay()` names
    (timm's convention: a ViT's `pos_embed` and `cls_token`) are not decayed either: decay would
    pull learned positions and the CLS token towards zero. With `optimizer: muon` the hidden weight
    matrices (training.muon.hidden_matrices) take Muon at `muon_lr` instead, without weight decay,
    under the same schedule. Returns what `configure_optimizers` returns."""
    if config.optimizer not in ("adamw", "muon"):
        raise ValueError(f"unknown optimizer {config.optimizer!r}: choose adamw or muon")
    excluded = no_weight_decay_names(module)
    matrices = hidden_matrices(module) if config.optimizer == "muon" else []
    muon_ids = {id(p) for p in matrices}
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if p.requires_grad and id(p) not in muon_ids:
            (decay if p.dim() >= 2 and name not in excluded else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # One kernel for the whole update on the GPU; but Lightning refuses to clip the gradients of an
    # optimizer that unscales them itself (fused AdamW under mixed precision), so with clipping the
    # update is foreach (a few kernels over all tensors at once).
    fused = torch.cuda.is_available() and not config.grad_clip
    if matrices:  # Muon on the hidden matrices (training/muon.py), AdamW on everything else
        optimizer = MuonWithAdamW(
            matrices, groups, config.muon_lr, config.muon_momentum, config.lr, config.betas, fused=fused
        )
    else:
        optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, fused=fused)
    total = config.max_steps

    def multiplier(step: int) -> float:
        if clock is not None and step >= config.warmup_steps:
            step = max(step, int(total * clock.progress(step)))
        return warmup_cosine(step, config.warmup_steps, total, config.min_lr_ratio)

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


Compilable = TypeVar("Compilable", nn.Module, Callable)


def compiled(target: Compilable, config: TrainingConfig, **options) -> Compilable:
    """The one place where `compile: true` takes effect; `target` itself when it is false.

    A module is compiled in place (`nn.Module.compile`): it stays the same object, so its
    state_dict keys, and the exported checkpoint's, carry no `_orig_mod.` prefix. A bound method
    (`model.forward`, `model.classify`) comes back compiled while the module keeps its plain one,
    so a task can run the compiled path in training and the eager one elsewhere (no recompile for
    eval mode). `options` go to torch.compile (e.g. dynamic=True for batches of varying shape), and
    the config's `compile_mode` as its mode unless `options` name one."""
    if not config.compile:
        return target
    if config.compile_mode:
        options.setdefault("mode", config.compile_mode)
    if isinstance(target, nn.Module):
        target.compile(**options)
        return target
    return torch.compile(target, **options)


class WeightEMA(nn.Module):
    """Exponential moving average of a model's weights (Polyak averaging), the model that gets
    validated and shipped. The decay warms up as min(decay, (1 + step) / (10 + step)) so that
    early on the average follows the fast-moving weights. One fused lerp per step (timm's
    ModelEmaV3 walks two state_dicts per step: measurable at ~10 ms steps)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__()
        self.module = copy.deepcopy(model).requires_grad_(False)  # Lightning sets its train/eval mode
        self.decay = decay

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(list(self.module.parameters()), list(model.parameters()), 1.0 - decay)
        for ours, theirs in zip(self.module.buffers(), model.buffers(), strict=True):  # BatchNorm statistics
            if ours.is_floating_point():
                ours.lerp_(theirs, 1.0 - decay)
            else:
                ours.copy_(theirs)


class TimedModule(L.LightningModule):
    """What every task's LightningModule shares: its config, the TrainingClock (handed to the
    Trainer by `configure_callbacks`), AdamW with the clock's warmup + cosine schedule, and the
    metric names: `train/loss` every step, `val/<name>` per validation, and `train/lr` with each
    validation. A task's plain model is `self.model`; a task that keeps an EMA of its weights sets
    `self.ema` (`keep_ema`), which is then what validation and export see (`eval_model`)."""

    def __init__(self, config: TrainingConfig) -> None:
        super().__init__()
        self.config = config
        self.clock = TrainingClock(config.max_steps, config.max_time_s)
        self.ema: WeightEMA | None = None

    def keep_ema(self) -> None:
        """Start the EMA of `self.model` if the config asks for one; call it before compiling the
        model in place, so that the copy stays eager (validating it then never recompiles)."""
        if self.config.ema_decay > 0:
            self.ema = WeightEMA(self.model, self.config.ema_decay)

    @property
    def eval_model(self) -> nn.Module:
        """The model that validation, export and the demos see: the EMA when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def on_fit_start(self) -> None:
        if self.config.ema_decay > 0 and self.ema is None:
            task = type(self).__name__
            raise ValueError(f"ema_decay: {task} keeps no EMA of its weights (vision, translation and audio do)")

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        if self.config.compile and self.config.compile_mode == "reduce-overhead":
            # CUDA graphs replay into the same output buffers every step: say where a step begins,
            # so the graphs know the last step's outputs are done with (cudagraph trees)
            torch.compiler.cudagraph_mark_step_begin()

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update(self.model, step=self.global_step)

    def configure_callbacks(self) -> list[L.Callback]:
        return [self.clock]

    def configure_optimizers(self):
        return configure_adamw(self, self.config, self.clock)

    @property
    def export_model(self) -> nn.Module:
        """The plain nn.Module that `export` writes (the EMA copy when there is one)."""
        return self.eval_model

    def log_training(self, loss: Tensor, batch_size: int | None = None) -> None:
        """`train/loss` of this step; not on the progress bar, which would sync the GPU every step."""
        self.log("train/loss", loss, batch_size=batch_size)

    def log_validation(self, batch_size: int | None = None, **metrics: Tensor) -> None:
        """`val/<name>` for each metric: the mean over the whole validation set (each batch weighted
        by `batch_size`: examples, tokens, masked tokens) and, under DDP, over every process."""
        for name, value in metrics.items():
            self.log(
                f"val/{name}",
                value,
                batch_size=batch_size,
                on_step=False,
                on_epoch=True,
                sync_dist=True,
                prog_bar=name == "loss",
            )

    def on_validation_epoch_end(self) -> None:
        if self.trainer.optimizers:  # not when only validating
            self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], sync_dist=True)


def export(module: TimedModule, folder: str | Path, meta: dict) -> Path:
    """Every task's checkpoint, written one way: `module.export_model` (the plain module, never a
    compiled wrapper) as fp16 model.safetensors, config.json with `meta`, and the module's
    tokenizer (vocab.json or tokenizer.json) when it has one."""
    model = module.export_model
    model = getattr(model, "_orig_mod", model)  # a torch.compile(module) wrapper: save what it wraps
    folder = save_checkpoint(folder, model, meta, dtype=torch.float16)
    tokenizer = getattr(module, "tokenizer", None)
    if tokenizer is not None:
        save_tokenizer(tokenizer, folder)
    return folder


# model-config fields that change training only: the weights of one setting serve every other
TRAINING_ONLY = frozenset({"dropout", "drop_path"})


def start_from_checkpoint(module: TimedModule, folder: str | Path) -> None:
    """Load a checkpoint folder's weights into `module.model` (and its EMA copy), refusing a
    checkpoint of another shape or with another tokenizer: its token ids would mean other words.
    Only the regularisers that act in training alone (`TRAINING_ONLY`: dropout, stochastic depth)
    may differ, so a run can continue a model that has begun to memorise with more dropout."""
    folder = Path(folder)
    trained = load_model(folder)
    model = module.model

    def shape(config) -> dict:
        return {k: v for k, v in asdict(config).items() if k not in TRAINING_ONLY}

    if trained.architecture != model.architecture or shape(trained.config) != shape(model.config):
        raise ValueError(f"init_from: {folder} holds another model than this config builds")
    tokenizer = getattr(module, "tokenizer", None)
    if tokenizer is not None and _tokenizer_text(load_tokenizer(folder)) != _tokenizer_text(tokenizer):
        raise ValueError(f"init_from: {folder} has another tokenizer than this config builds")
    model.load_state_dict(trained.state_dict())
    if module.ema is not None:
        module.ema.module.load_state_dict(model.state_dict())


def _tokenizer_text(tokenizer) -> str:
    return json.dumps(tokenizer.chars) if isinstance(tokenizer, CharTokenizer) else tokenizer.to_str()


def process_start_time() -> float:
    """When this process started (Linux /proc), so "time to target" includes imports and compile."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(
            float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime")
        )
        return boot + start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, StopIteration, IndexError, ValueError):
        return time.time()


class WallClockLog(L.Callback):
    """After each validation, append {step, wall_s, metrics...} to a JSON-lines log (emptied when a
    run starts, so the file holds this run alone), and remember the first wall time at which
    `target_metric` reached `target_value` (lower is better). `validated_step` is the step of the
    last validation, on every process."""

    def __init__(self, path: Path, target_metric: str | None = None, target_value: float | None = None):
        self.path, self.target_metric, self.target_value = Path(path), target_metric, target_value
        self.start = process_start_time()
        self.reached_at: float | None = None
        self.history: list[dict] = []
        self.validated_step: int | None = None

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.is_global_zero:  # each run's log is its own, not appended to the last run's
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("")

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.validated_step = trainer.global_step
        if not trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        row = {"step": trainer.global_step, "wall_s": round(time.time() - self.start, 2), **metrics}
        self.history.append(row)
        value = metrics.get(self.target_metric) if self.target_metric else None
        if value is not None and self.reached_at is None and value <= self.target_value:
            self.reached_at = row["wall_s"]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")


class StepProfile(L.Callback):
    """Where a step's time goes, measured inside a real run (`train --profile`): `steps` optimizer
    steps from `first` on (after compile and warm-up) under torch.profiler, then `path` gets the
    wall time per step, the time the device was busy per step (kernels), and the ops that cost
    most, by device time and by CPU time; on CUDA also every call in those steps that made the host
    wait for the device, by source line. A device busy for far less than the wall time means the
    step is bound by the host (Python, launches, a synchronising call), not by the arithmetic."""

    def __init__(self, path: Path, first: int = 300, steps: int = 20):
        self.path, self.first, self.steps = Path(path), first, steps
        self.profiler: torch.profiler.profile | None = None
        self.syncs: warnings.catch_warnings | None = None  # on CUDA: records synchronising calls
        self.sync_warnings: list[warnings.WarningMessage] = []
        self.started_at = 0.0
        self.done = False

    def _sync(self, module: L.LightningModule) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, *args) -> None:
        if self.done or self.profiler is not None or trainer.global_step < self.first:
            return
        activities = [torch.profiler.ProfilerActivity.CPU]
        if module.device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self._sync(module)
        if module.device.type == "cuda":
            self._start_sync_warnings()
        self.profiler = torch.profiler.profile(activities=activities)
        self.profiler.__enter__()
        self.started_at, self.first = time.perf_counter(), trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args) -> None:
        if self.profiler is not None and trainer.global_step >= self.first + self.steps:
            self._finish(trainer, module)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.profiler is not None:  # the run ended inside the window: report the steps it made
            self._finish(trainer, module)

    def _finish(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        syncs = self._stop_sync_warnings()
        self._sync(module)
        steps = max(1, trainer.global_step - self.first)
        wall = (time.perf_counter() - self.started_at) / steps
        self.profiler.__exit__(None, None, None)
        table = self.profiler.key_averages()
        device = module.device.type == "cuda"
        busy = sum(e.self_device_time_total for e in table) / 1e3 / steps if device else None
        lines = [
            f"steps {self.first}..{self.first + steps - 1} on {module.device}",
            f"wall per step: {wall * 1e3:.2f} ms (profiler running)",
        ]
        if busy is not None:
            lines.append(f"device busy per step: {busy:.2f} ms ({busy / (wall * 1e3):.0%} of the wall time)")
        if syncs is not None:
            lines.append(f"calls that made the host wait for the device: {sum(syncs.values())} in {steps} steps")
            lines += [f"  {count} x {where}" for where, count in syncs.most_common(10)]
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            sorts = (["self_device_time_total"] if device else []) + ["self_cpu_time_total"]
            tables = [f"by {key}:\n{table.table(sort_by=key, row_limit=30)}" for key in sorts]
            self.path.write_text("\n".join(lines) + "\n\n" + "\n\n".join(tables) + "\n")
            print("\n".join(lines))
        self.profiler, self.done = None, True

    def _start_sync_warnings(self) -> None:
        """From here on, every call that makes the host wait for the GPU (`.item()`, a copy to the
        CPU, a data-dependent shape) raises a warning that names its Python line: recorded."""
        self.syncs = warnings.catch_warnings(record=True)
        self.sync_warnings = self.syncs.__enter__()
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")

    def _stop_sync_warnings(self) -> Counter | None:
        """Where the synchronising calls of the profiled steps came from, by file, line and message."""
        if self.syncs is None:
            return None
        torch.cuda.set_sync_debug_mode(0)
        self.syncs.__exit__(None, None, None)
        found = Counter(
            f"{Path(w.filename).name}:{w.lineno}: {str(w.message).splitlines()[0][:100]}"
            for w in self.sync_warnings
            if "synchroniz" in str(w.message)  # the window records every warning; these are the syncs
        )
        self.syncs = self.sync_warnings = None
        return found
