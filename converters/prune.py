"""Pruning: structured (channels, heads and MLP width physically removed, with torch-pruning) followed by a
short distillation from the unpruned model, and unstructured sparsity, reported for what it is.

Structured pruning makes every exported file smaller and faster on every backend. Unstructured sparsity only
zeroes weights: ONNX Runtime, ExecuTorch (XNNPACK) and llama.cpp store and multiply them densely.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from edge_sdk.errors import BackendUnavailableError, ConfigError, ModelSourceError

if TYPE_CHECKING:
    from torch import nn

MAX_RATIO = 0.9
RECOVERY_EPOCHS = 30
TEMPERATURE = 4.0  # softens both distributions so the student learns the teacher's near-misses too
DISTILL_WEIGHT = 0.7  # the rest of the loss is cross-entropy on the labels, when there are labels
SEED = 0


@dataclass(frozen=True)
class TrainData:
    """Inputs (name -> array, samples first) and optional integer labels, for recovery after pruning."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None


@dataclass(frozen=True)
class PruneReport:
    ratio: float
    parameters_before: int
    parameters_after: int
    recovered_epochs: int  # 0: no training data, the pruned model is used as it is

    def as_options(self) -> dict[str, str]:
        return {
            "pruning": "structured (torch-pruning, L2 magnitude)",
            "parameters_before": str(self.parameters_before),
            "parameters_after": str(self.parameters_after),
            "recovery": f"distillation from the unpruned model, {self.recovered_epochs} epochs"
            if self.recovered_epochs
            else "none (no training data given)",
        }


def check_ratio(ratio: float, what: str = "pruning ratio") -> None:
    if not 0.0 <= ratio <= MAX_RATIO:
        raise ConfigError(f"{what} must be between 0 and {MAX_RATIO} (a share of channels), got {ratio}")


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _output_layers(module: nn.Module) -> list[nn.Module]:
    """The last Linear/Conv layer (in definition order), taken as the output layer: its width is the task's."""
    from torch import nn

    prunable: list[nn.Module] = [m for m in module.modules() if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d)]
    if not prunable:
        raise ModelSourceError("nothing to prune: the model has no Linear or Conv layer")
    return prunable[-1:]


def prune_structured(module: nn.Module, example_inputs: Mapping[str, np.ndarray], ratio: float) -> nn.Module:
    """A copy of `module` with `ratio` of the channels / features of every inner layer removed (not zeroed)."""
    check_ratio(ratio)
    try:
        import torch_pruning as tp
    except ModuleNotFoundError as exc:
        raise BackendUnavailableError(
            "structured pruning needs torch-pruning, which is not installed: pip install 'edge-sdk[prune]'"
        ) from exc
    import torch

    pruned = copy.deepcopy(module).eval()
    example = tuple(torch.from_numpy(np.ascontiguousarray(a[:2])) for a in example_inputs.values())
    pruner = tp.pruner.MetaPruner(
        pruned,
        example_inputs=example if len(example) > 1 else example[0],
        importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=ratio,
        ignored_layers=_output_layers(pruned),
    )
    pruner.step()
    if ratio and parameter_count(pruned) >= parameter_count(module):  # else the bundle would claim a pruning
        raise ConfigError(
            f"pruning {ratio:.0%} removed nothing from {type(module).__name__}: the output layer keeps its width "
            "and no other Linear/Conv layer lost a channel; convert it without --prune"
        )
    return pruned


def recover(student: nn.Module, teacher: nn.Module, data: TrainData, *, epochs: int = RECOVERY_EPOCHS) -> nn.Module:
    """Fine-tune the pruned `student` to imitate `teacher` (soft targets, and labels when given). Seeded."""
    import torch
    from torch import nn

    torch.manual_seed(SEED)
    names = list(data.inputs)
    xs = [torch.from_numpy(np.ascontiguousarray(data.inputs[n])) for n in names]
    ys = torch.from_numpy(data.labels.astype(np.int64)) if data.labels is not None else None
    with torch.no_grad():
        teacher.eval()
        soft = torch.cat([teacher(*(x[i : i + 256] for x in xs)) for i in range(0, len(xs[0]), 256)])
    opt = torch.optim.Adam(student.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(SEED)
    student.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xs[0]), generator=gen).split(64):
            opt.zero_grad()
            logits = student(*(x[idx] for x in xs))
            loss = nn.functional.kl_div(
                nn.functional.log_softmax(logits / TEMPERATURE, -1),
                nn.functional.softmax(soft[idx] / TEMPERATURE, -1),
                reduction="batchmean",
            ) * (TEMPERATURE**2)
            if ys is not None:
                loss = DISTILL_WEIGHT * loss + (1 - DISTILL_WEIGHT) * nn.functional.cross_entropy(logits, ys[idx])
            loss.backward()
            opt.step()
    return student.eval()


# Pruning and recovery are seeded, so a plan, its replay and `convert --auto` in one process share the result.
_CACHE: dict[str, tuple[nn.Module, PruneReport]] = {}
_CACHE_SIZE = 4


def _digest(module: nn.Module, ratio: float, data: TrainData | None) -> str:
    h = hashlib.sha256(f"{ratio}:{RECOVERY_EPOCHS}".encode())
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    for array in (
        *(data.inputs.values() if data else ()),
        *(() if data is None or data.labels is None else (data.labels,)),
    ):
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def prune_and_recover(
    module: nn.Module, example_inputs: Mapping[str, np.ndarray], ratio: float, data: TrainData | None
) -> tuple[nn.Module, PruneReport]:
    key = _digest(module, ratio, data)
    if key not in _CACHE:
        pruned = prune_structured(module, example_inputs, ratio)
        epochs = RECOVERY_EPOCHS if data is not None else 0
        if data is not None:
            recover(pruned, module, data, epochs=epochs)
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = (pruned, PruneReport(ratio, parameter_count(module), parameter_count(pruned), epochs))
    pruned, report = _CACHE[key]
    return copy.deepcopy(pruned), report


def sparsify(module: nn.Module, ratio: float) -> tuple[nn.Module, dict[str, str]]:
    """A copy with the smallest `ratio` of each layer's weights set to zero (what torch.nn.utils.prune does),
    and the honest note that goes into the recipe: the exported file stays dense."""
    check_ratio(ratio, "sparsity")
    import torch
    from torch import nn

    sparse = copy.deepcopy(module).eval()
    zeroed = total = 0
    with torch.no_grad():
        for layer in sparse.modules():
            if isinstance(layer, nn.Linear | nn.Conv1d | nn.Conv2d) and ratio > 0:
                w = layer.weight
                k = int(w.numel() * ratio)
                if k:
                    threshold = w.abs().flatten().kthvalue(k).values
                    w[w.abs() <= threshold] = 0.0
                zeroed += int((w == 0).sum())
                total += w.numel()
    share = zeroed / total if total else 0.0
    note = (
        f"{share:.0%} of weights are zero, but the file is stored dense: no smaller on disk or in memory, "
        "and the engines' CPU kernels do not skip zeros, so no faster. Use --prune for a smaller, faster model."
    )
    return sparse, {"sparsity": f"{share:.3f}", "sparsity_effect": note}
