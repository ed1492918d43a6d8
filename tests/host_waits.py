"""Spotting, on a CPU, the calls that would make the host wait for a GPU in a training step.

A GPU step is fast only while the host runs ahead of the device, queueing kernels. Anything that
needs a device value on the host stops that: `.item()`, `int()`, `float()` or `bool()` of a tensor
(aten._local_scalar_dense), and ops whose output size depends on the data (nonzero, boolean
indexing, masked_select). `HostWaits` records those ops while it is active; on a CPU they cost
nothing, which is why only a record finds them before a GPU run.
"""

from __future__ import annotations

import traceback

import torch
from torch.utils._python_dispatch import TorchDispatchMode

WAITING_OPS = {"_local_scalar_dense", "nonzero", "masked_select", "unique", "is_nonzero"}


class HostWaits(TorchDispatchMode):
    """`with HostWaits() as waits: ...`; then `waits.calls`: (op, the project's line that asked)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        boolean_index = name == "index" and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] if len(args) > 1 else [])
        )
        if name in WAITING_OPS or boolean_index:
            ours = [f for f in traceback.extract_stack() if "/site-packages/" not in f.filename]
            where = f"{ours[-2].filename}:{ours[-2].lineno}" if len(ours) > 1 else "?"
            self.calls.append(("boolean index" if boolean_index else name, where))
        return func(*args, **(kwargs or {}))
