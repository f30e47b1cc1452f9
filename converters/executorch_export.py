"""ExecuTorch exporter: torch.export -> (PT2E int8) -> XNNPACK lowering -> .pte, plus a delegation report.

The delegation report says which operators run inside the XNNPACK delegate and which fall back to ExecuTorch's
portable kernels, by operator name and count, and what share of the compute (estimated FLOPs) is delegated.
It is written beside the program as `delegation.json` and summarised in the recipe options.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from converters.executorch_quant import MAX_BATCH, as_tensor, dynamic_shapes, first_line, quantize, weight_layers
from converters.exporter import Exporter, ExportRequest, ExportResult
from converters.sources import TorchSource
from edge_sdk.bundle import Recipe, RuntimeRequirement
from edge_sdk.errors import ConfigError, ExportError, ModelSourceError
from edge_sdk.types import Backend, QuantScheme, TensorSpec
from runtimes.executorch_adapter import quiet_engine

_ALTERNATIVE = "try --backend onnx, or rewrite the construct with tensor ops (torch.where, torch.cond)"
_PRECISION = {
    QuantScheme.NONE: "fp32",
    QuantScheme.INT8_DYNAMIC: "int8 weights (per channel), dynamic int8 activations",
    QuantScheme.INT8_STATIC: "int8 weights (per channel) and activations (PT2E, calibrated)",
}
# Operators whose cost is a matrix product: FLOPs = 2 x output elements x reduction length.
_MATMUL = ("convolution", "linear", "addmm", "mm", "bmm", "matmul", "baddbmm")
_IGNORED = ("getitem", "executorch_call_delegate", "sym_size", "sym_numel", "sym_stride")


@dataclass
class DelegationReport:
    """Operators inside the XNNPACK delegate vs left on portable kernels, by name and count, and FLOP shares."""

    delegated: Counter[str] = field(default_factory=Counter)
    portable: Counter[str] = field(default_factory=Counter)
    delegated_flops: float = 0.0
    portable_flops: float = 0.0
    subgraphs: int = 0

    @property
    def op_share(self) -> float:
        total = sum(self.delegated.values()) + sum(self.portable.values())
        return sum(self.delegated.values()) / total if total else 1.0

    @property
    def flop_share(self) -> float:
        total = self.delegated_flops + self.portable_flops
        return self.delegated_flops / total if total else self.op_share

    def describe_portable(self) -> str:
        return ", ".join(f"{name} x{n}" for name, n in self.portable.most_common()) or "none"

    def to_dict(self) -> dict[str, Any]:
        return {
            "delegate": "XnnpackBackend",
            "delegated_subgraphs": self.subgraphs,
            "delegated_ops": sum(self.delegated.values()),
            "portable_ops": sum(self.portable.values()),
            "delegated_share_ops": round(self.op_share, 4),
            "delegated_share_flops": round(self.flop_share, 4),
            "delegated_flops": self.delegated_flops,
            "portable_flops": self.portable_flops,
            "delegated_by_operator": dict(self.delegated.most_common()),
            "portable_by_operator": dict(self.portable.most_common()),
        }

    def options(self) -> dict[str, str]:
        """The summary as recipe options (text only, as the manifest requires)."""
        return {
            "delegate": "xnnpack",
            "delegated_ops": str(sum(self.delegated.values())),
            "portable_ops": str(sum(self.portable.values())),
            "delegated_share_ops": f"{self.op_share:.4f}",
            "delegated_share_flops": f"{self.flop_share:.4f}",
            "portable_operators": self.describe_portable(),
            "delegation": json.dumps(
                {"delegated": dict(self.delegated.most_common()), "portable": dict(self.portable.most_common())},
                separators=(",", ":"),
            ),
        }


class ExecuTorchExporter(Exporter):
    backend = Backend.EXECUTORCH
    quantizations = tuple(_PRECISION)

    def __init__(self) -> None:
        # torch.export of the source, by shared directory: every quantization of one conversion starts from it
        self._exported: dict[Path, tuple[Any, bool, tuple[torch.Tensor, ...]]] = {}

    def export(self, request: ExportRequest) -> ExportResult:
        self.check(request.quantization)
        source = request.source
        if not isinstance(source, TorchSource):
            raise ModelSourceError(
                f"the executorch backend exports torch models; it cannot read a {source.kind!r} source "
                "(use --backend onnx for an existing .onnx)"
            )
        if request.min_delegated is not None and not 0.0 <= request.min_delegated <= 1.0:
            raise ConfigError(f"min_delegated must be a share between 0 and 1, got {request.min_delegated!r}")
        with quiet_engine():
            program, dynamic, args = self._base(request, source)
            quantized: dict[str, str] = {}
            if request.quantization is not QuantScheme.NONE:
                if request.calibration_method is not None:
                    raise ConfigError(
                        "the executorch backend calibrates with XNNPACK's own observers; --calibration-method "
                        f"({request.calibration_method.value}) applies to the onnx backend"
                    )
                calibration = request.calibration if request.calibration is not None else source.example_inputs
                program, quantized = quantize(
                    source, program, args, request.quantization, calibration, dynamic, request.keep_float
                )
            edge = _lower(source, program)
            report = delegation_report(edge.exported_program().graph_module)
            if request.min_delegated is not None and report.flop_share < request.min_delegated:
                raise ExportError(
                    f"{source.describe()}: only {report.flop_share:.1%} of the compute ({report.op_share:.1%} of "
                    f"operators) is delegated to XNNPACK, below min_delegated={request.min_delegated}. "
                    f"Left on portable kernels: {report.describe_portable()}. "
                    f"Lower the threshold or try --backend onnx."
                )
            buffer = _to_executorch(source, edge)
        out = request.workdir / "model.pte"
        out.write_bytes(buffer)
        report_path = request.workdir / "delegation.json"
        report_path.write_text(json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n")
        inputs = source.input_specs(dynamic_batch=dynamic)
        options = {"partitioner": "XnnpackPartitioner", "max_batch": str(MAX_BATCH if dynamic else args[0].shape[0])}
        notes = [] if dynamic else ["the batch size is fixed: torch.export could not keep it dynamic"]
        if report.portable:
            notes.append(f"left on portable kernels: {report.describe_portable()}")
        return ExportResult(
            files={"model.pte": out, "delegation.json": report_path},
            inputs=inputs,
            outputs=_output_specs(source, program, dynamic),
            recipe=Recipe(
                quantization=request.quantization,
                precision=_PRECISION[request.quantization],
                options={**options, **quantized, **report.options()},
            ),
            runtime=RuntimeRequirement(package="executorch", version=version("executorch"), extra="executorch"),
            notes=notes,
        )

    def _base(self, request: ExportRequest, source: TorchSource) -> tuple[Any, bool, tuple[torch.Tensor, ...]]:
        if request.shared is None:
            return _export(source)
        if request.shared not in self._exported:
            self._exported[request.shared] = _export(source)
        program, dynamic, args = self._exported[request.shared]
        return copy.deepcopy(program), dynamic, args  # lowering may rewrite the program it is given

    def layers(self, request: ExportRequest) -> tuple[str, ...]:
        if request.quantization is QuantScheme.NONE or not isinstance(request.source, TorchSource):
            return ()
        return weight_layers(request.source.module)


def _export(source: TorchSource) -> tuple[Any, bool, tuple[torch.Tensor, ...]]:
    """torch.export with a dynamic batch dimension (1..MAX_BATCH), else with the example's fixed shapes.

    Returns the program, whether its batch is dynamic, and the example tensors it was traced with.
    """
    arrays = list(source.example_inputs.values())
    # A batch of 1 would be specialised by torch.export and one over MAX_BATCH is outside the declared range:
    # trace the dynamic attempt with 2..MAX_BATCH samples.
    traced = tuple(as_tensor(_trace_batch(a)) for a in arrays)
    try:
        program = torch.export.export(source.module, traced, dynamic_shapes=dynamic_shapes(source, traced))
        return program, True, traced
    except Exception:
        args = tuple(as_tensor(a) for a in arrays)
        try:
            return torch.export.export(source.module, args), False, args
        except Exception as exc:
            raise ExportError(
                f"{source.describe()} could not be exported with torch.export: {_construct(exc)}"
                f"({first_line(exc)}). {_ALTERNATIVE[0].upper()}{_ALTERNATIVE[1:]}."
            ) from exc


def _trace_batch(array: np.ndarray) -> np.ndarray:
    if array.ndim == 0:
        return array
    return np.concatenate([array, array]) if len(array) == 1 else array[:MAX_BATCH]


def _lower(source: TorchSource, program: Any) -> Any:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    try:
        return to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    except Exception as exc:
        raise ExportError(
            f"{source.describe()} could not be lowered to the ExecuTorch edge dialect: {first_line(exc)}. "
            f"An operator without an ExecuTorch kernel is the usual cause: {_ALTERNATIVE}."
        ) from exc


def _to_executorch(source: TorchSource, edge: Any) -> bytes:
    _restore_batch_bound(edge.exported_program())
    try:
        return bytes(edge.to_executorch().buffer)
    except Exception as exc:
        raise ExportError(
            f"{source.describe()} could not be written as an ExecuTorch program: {first_line(exc)}. Try --backend onnx."
        ) from exc


def _restore_batch_bound(program: Any) -> None:
    """Make the memory planner see the batch bound we exported with.

    With torch 2.13 / executorch 1.5.1 the shape environment attached to the graph carries a wrong upper bound
    for the batch symbol (15 for the digits CNN, whatever max= says) while `range_constraints` has the right one,
    and the memory planner reads the former: the program would refuse 16 samples or more. Copy the bounds over.
    """
    for node in program.graph.nodes:
        val = node.meta.get("val")
        dims = getattr(val, "shape", ())
        sym = next((d for d in dims if isinstance(d, torch.SymInt)), None)
        if sym is not None:
            env = sym.node.shape_env
            for symbol, bound in program.range_constraints.items():
                env.var_to_range[symbol] = bound
            return


def delegation_report(graph_module: Any) -> DelegationReport:
    """Walk a lowered edge program: top-level operators run on portable kernels, lowered modules' ops on XNNPACK."""
    report = DelegationReport()
    for node in graph_module.graph.nodes:
        if node.op == "get_attr" and node.name.startswith("lowered_module_"):
            report.subgraphs += 1
            lowered = getattr(graph_module, node.target)
            for inner in lowered.original_module.graph.nodes:
                name = _op_name(inner)
                if name is not None:
                    report.delegated[name] += 1
                    report.delegated_flops += _flops(inner, name)
        elif node.op == "call_function":
            name = _op_name(node)
            if name is not None:
                report.portable[name] += 1
                report.portable_flops += _flops(node, name)
    return report


def _op_name(node: Any) -> str | None:
    if node.op != "call_function":
        return None
    target = getattr(node.target, "_op", node.target)
    if not isinstance(target, torch._ops.OpOverload):
        return None  # getitem, symbolic-size arithmetic, the delegate call itself
    name = str(target).removesuffix(".default")
    if any(part in name for part in _IGNORED):
        return None
    return name


def _numel(value: Any) -> int:
    shape = getattr(value, "shape", None)
    if shape is None:
        return 0
    return math.prod(d if isinstance(d, int) else 1 for d in shape)  # symbolic batch counts as 1 on both sides


def _flops(node: Any, name: str) -> float:
    """Estimated FLOPs of one node: 2 x MACs for matrix products, one per output element otherwise."""
    out = node.meta.get("val")
    if isinstance(out, tuple | list):
        out = out[0] if out else None
    n_out = _numel(out)
    op = name.split(".")[1] if "." in name else name
    if op in _MATMUL and len(node.args) > 1:
        weight = node.args[1].meta.get("val") if hasattr(node.args[1], "meta") else None
        wshape = getattr(weight, "shape", None)
        if wshape is not None and len(wshape) >= 2:
            if op == "convolution":  # weight [out, in/groups, *kernel]
                k = math.prod(d if isinstance(d, int) else 1 for d in wshape[1:])
            elif op in ("linear",):  # weight [out, in]
                k = wshape[-1] if isinstance(wshape[-1], int) else 1
            else:  # mm/bmm/matmul: (.., m, k) @ (.., k, n); addmm's args[1] is mat1
                k = wshape[-2] if op != "addmm" and isinstance(wshape[-2], int) else wshape[-1]
            return 2.0 * n_out * float(k)
    return float(n_out)


def _output_specs(source: TorchSource, program: Any, dynamic: bool) -> tuple[TensorSpec, ...]:
    from edge_sdk.types import DType

    sample = {k: v[:2] if dynamic else v for k, v in source.example_inputs.items()}
    outputs = source.reference(sample)
    return tuple(
        TensorSpec(
            name=name,
            dtype=DType.of(a.dtype),
            shape=(("batch", *a.shape[1:]) if dynamic and a.ndim else tuple(a.shape)),
        )
        for name, a in outputs.items()
    )


_USER_FRAME = re.compile(r'The following call raised this error:\s*\n\s*File "([^"]+)", line (\d+), in (\S+)\n\s*(.+)')


def _construct(exc: BaseException) -> str:
    """Name what torch.export refused and where in the user's code, when its message says so."""
    text = str(exc)
    if "data-dependent" in text or "GuardOnDataDependent" in type(exc).__name__:
        what = "data-dependent control flow (a Python `if`/`while` on a tensor's value)"
    elif "Unsupported" in type(exc).__name__ or "not supported" in text.lower():
        what = "an unsupported operator or construct"
    else:
        what = "a construct torch.export cannot trace"
    frame = _USER_FRAME.search(text)
    if frame:
        file, line, func, code = frame.groups()
        what += f" at {Path(file).name}:{line} in {func}(): `{code.strip()}`"
    return what + " "
