"""Train one task's model and export it as a checkpoint folder.

    python -m training.train generation --config training/configs/generation-cpu-tiny.yaml
    python -m training.train vision --config training/configs/vision-gpu.yaml --data-dir DATA
    python -m training.train audio --config ... --devices 2 --strategy ddp      # scale out, Lightning's way

Prints one JSON summary as its last line of stdout.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import time
from datetime import date
from pathlib import Path

from training.common import (
    TASKS,
    StepProfile,
    WallClockLog,
    export,
    load_config,
    process_start_time,
    resolve_data_dir,
    start_from_checkpoint,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", choices=TASKS)
    p.add_argument("--config", help="YAML file in training/configs/ (default: <task>-cpu-tiny.yaml)")
    p.add_argument("--data-dir", help="folder with the packed datasets (default: $PLAYGROUND_DATA, else download)")
    p.add_argument("--out", help="checkpoint folder to write (default: checkpoints/<task>)")
    p.add_argument("--log-dir", default="runs", help="training logs (CSV and JSON lines) go here")
    p.add_argument("--accelerator", default="auto", help="cpu, gpu or auto")
    p.add_argument("--devices", default="auto", help="number of devices (or 'auto')")
    p.add_argument("--strategy", default="auto", help="Lightning strategy: auto, ddp, fsdp, ...")
    p.add_argument("--num-nodes", type=int, default=1)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config fields")
    p.add_argument("--no-export", action="store_true", help="train only (used by the DDP test)")
    p.add_argument(
        "--profile",
        type=int,
        nargs="?",
        const=300,
        metavar="STEP",
        help="profile 20 steps from STEP (default 300) and Lightning's hooks over the whole run: "
        "<log-dir>/<task>/profile.txt and fit-profile-hooks.txt",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    task = importlib.import_module(f"training.{args.task}")
    config_path = args.config or Path(__file__).parent / "configs" / f"{args.task}-cpu-tiny.yaml"
    config = load_config(task.Config, config_path, args.set)
    L.seed_everything(config.seed, workers=True)
    import torch

    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")  # TF32 for the matmuls left outside bf16 autocast
        # let cuDNN time its conv algorithms once per shape: the convolutions (vision's stem, audio's
        # fixed-length clips on the GPU) see one shape per run; the text tasks have none
        torch.backends.cudnn.benchmark = True
    module, data = task.build(config, resolve_data_dir(args.data_dir))
    if config.init_from:
        start_from_checkpoint(module, config.init_from)

    run_dir = Path(args.log_dir) / args.task
    target_metric, target_value = getattr(task, "TARGET", (None, None))
    clock = WallClockLog(run_dir / "validation.jsonl", target_metric, target_value)
    callbacks: list = [clock]
    profiler = None
    if args.profile is not None:
        from lightning.pytorch.profilers import SimpleProfiler

        callbacks.append(StepProfile(run_dir / "profile.txt", first=args.profile))
        profiler = SimpleProfiler(dirpath=run_dir, filename="profile-hooks")
    devices = args.devices if args.devices == "auto" else int(args.devices)
    trainer = L.Trainer(
        accelerator=args.accelerator,
        devices=devices,
        strategy=args.strategy,
        num_nodes=args.num_nodes,
        precision=config.precision,
        max_steps=config.max_steps,
        gradient_clip_val=config.grad_clip or None,
        val_check_interval=config.val_every,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        logger=CSVLogger(run_dir, name="csv"),
        callbacks=callbacks,
        profiler=profiler,
        enable_checkpointing=False,
        enable_model_summary=False,
        log_every_n_steps=min(50, config.val_every),
    )
    fit_start = time.time()
    trainer.fit(module, datamodule=data)
    if clock.validated_step != trainer.global_step:  # a timed run can stop between validations:
        trainer.validate(module, datamodule=data, verbose=False)  # the log's last row is the model shipped
    summary = {
        "task": args.task,
        "config": str(config_path),
        "steps": trainer.global_step,
        "train_wall_s": round(time.time() - fit_start, 1),
        "step_ms": None if (ms := module.clock.step_ms()) is None else round(ms, 2),  # steady state
        "process_wall_s": round(time.time() - process_start_time(), 1),
        "time_to_target_s": clock.reached_at,
        "target": {target_metric: target_value} if target_metric else None,
        "last_validation": clock.history[-1] if clock.history else None,
        "hardware": hardware_name(),
        "date": date.today().isoformat(),
    }
    if trainer.is_global_zero and not args.no_export:
        out = Path(args.out or Path("checkpoints") / args.task)
        export(module, out, meta={"training": summary, "config": config.__dict__})
        summary["checkpoint"] = str(out)
    if trainer.is_global_zero:
        print(json.dumps(summary, default=str))
    return summary


def hardware_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


if __name__ == "__main__":
    main()
