"""An ONNX model run on sample inputs with ``onnxruntime``: the output of each ``Conv`` /
``ConvTranspose`` node is added to the graph's outputs, and its maps, firing and dataset
examples are recorded as ``log_sample_activations`` records them (``NCW NCHW NCDHW``).

The tag of a node's output is ``<module>/activation`` when its weight is ``<module>.weight``
(a PyTorch export: ``conv1.weight`` -> ``conv1/activation``, beside the kernel
``conv1/weight``), else ``<node name>/activation``. The receptive field of each output is
walked from the attributes of a plain chain: ``Conv``, ``MaxPool``, ``AveragePool``
(explicit ``pads``, or ``auto_pad`` ``VALID``) and elementwise nodes; anything else on the
path (``auto_pad=SAME_*``, ``Pad``, reshapes, ...) leaves it unknown: the examples keep
their maps, to lay over the whole input.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tb_convfilters._record.examples import TopK
from tb_convfilters._record.firing import Firing
from tb_convfilters._record.receptive_field import ReceptiveField
from tb_convfilters._record.record import make_record, samples_digest
from tb_convfilters._writing.writer import Writer
from tb_convfilters.importing.kernels import ImportFailure
from tb_convfilters.importing.onnx_files import tag_of
from tb_convfilters.importing.sample_inputs import Recorded, SampleInputs

_LAYOUTS = {3: "NCW", 4: "NCHW", 5: "NCDHW"}
_CONST = object()  # a value that does not depend on the input
# Each output position from the same position of its inputs.
_ELEMENTWISE = {
    "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Gelu", "Sigmoid", "HardSigmoid",
    "HardSwish", "Tanh", "Softplus", "Softsign", "Clip", "Identity", "Dropout", "Cast",
    "BatchNormalization", "InstanceNormalization", "Add", "Sub", "Mul", "Div", "Max", "Min",
    "Sum", "Mean", "Abs", "Neg", "Sqrt", "Exp", "Erf", "Pow", "Mish",
}  # fmt: skip


def _attributes(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _window(field: ReceptiveField, node: Any, kernel: Sequence[int]) -> ReceptiveField | None:
    """`field` after a Conv / pooling node: output q reads ``q * s - pad + [0, d * (k - 1)]``."""
    a = _attributes(node)
    axes = field.axes
    auto_pad = a.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    if auto_pad not in ("NOTSET", "VALID") or len(kernel) != axes:
        return None
    stride = list(a.get("strides", [1] * axes))
    dilation = list(a.get("dilations", [1] * axes))
    pads = list(a.get("pads", [0] * 2 * axes)) if auto_pad == "NOTSET" else [0] * 2 * axes
    return ReceptiveField(
        tuple(st - p * j for st, j, p in zip(field.start, field.jump, pads[:axes], strict=True)),
        tuple(j * s for j, s in zip(field.jump, stride, strict=True)),
        tuple(
            n + d * (k - 1) * j
            for n, j, k, d in zip(field.size, field.jump, kernel, dilation, strict=True)
        ),
    )


def receptive_fields(graph: Any, input_name: str, axes: int) -> dict[str, ReceptiveField | None]:
    """The receptive field over input `input_name` of each tensor of `graph` that depends
    on it (None: unknown), walked through the nodes in their (topological) order."""
    initializers = {t.name: t for t in graph.initializer}
    values: dict[str, Any] = {input_name: ReceptiveField.identity(axes)}
    for node in graph.node:
        inputs = [values.get(name, _CONST) for name in node.input if name]
        live = [v for v in inputs if v is not _CONST]
        if not live:
            out: Any = _CONST
        elif any(v is None for v in live):
            out = None
        elif node.op_type in _ELEMENTWISE:
            out = live[0]
            for other in live[1:]:
                out = out and out.union(other)
        elif node.op_type == "Concat" and _attributes(node).get("axis") == 1:
            out = live[0]
            for other in live[1:]:
                out = out and out.union(other)
        elif len(live) != 1 or inputs[0] is _CONST:
            out = None
        elif node.op_type == "Conv":
            weight = initializers.get(node.input[1])
            shape = _attributes(node).get("kernel_shape")
            if shape is None and weight is not None:
                shape = list(weight.dims[2:])
            out = None if shape is None else _window(live[0], node, shape)
        elif node.op_type in ("MaxPool", "AveragePool"):
            out = _window(live[0], node, _attributes(node).get("kernel_shape", []))
        else:
            out = None
        for name in node.output:
            values[name] = out
    return {k: (None if v is _CONST else v) for k, v in values.items()}


def _session(path: Path, outputs: list[str]) -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ImportFailure(
            f"{path}: activations of an ONNX model need onnxruntime: pip install onnxruntime"
        ) from None
    import onnx

    model = onnx.load(str(path), load_external_data=True)
    present = {o.name for o in model.graph.output}
    for name in outputs:
        if name not in present:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
    try:
        return onnxruntime.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
    except Exception as e:
        raise ImportFailure(f"{path}: onnxruntime cannot run the model: {e}") from None


def _heads(model: Any, keep: Callable[[str], bool]) -> list[tuple[str, str]]:
    """(tag, output tensor) of each Conv / ConvTranspose node, in node order."""
    out, seen = [], set()
    for node in model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose") or len(node.input) < 2:
            continue
        weight = node.input[1]
        if weight.endswith(".weight"):
            name = tag_of(weight).removesuffix("/weight")
        else:
            name = (node.name or node.output[0]).strip("/")
        tag = f"{name}/activation"
        if tag not in seen and keep(tag):
            seen.add(tag)
            out.append((tag, node.output[0]))
    return out


def _graph_input(model: Any, path: Path) -> Any:
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ImportFailure(
            f"{path}: the model has {len(inputs)} inputs "
            f"({', '.join(i.name for i in inputs)}); sample inputs feed a model of one input"
        )
    return inputs[0]


def record(
    path: Path, writer: Writer, step: int, sample: SampleInputs, keep: Callable[[str], bool]
) -> Recorded:
    """Runs the model at `path` on the sample inputs and writes each conv output's
    activation and examples at `step`."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path), load_external_data=True)
    heads = _heads(model, keep)
    if not heads:
        return Recorded([], "no Conv node selected for activations")
    graph_input = _graph_input(model, path)
    x = sample.inputs
    elem = graph_input.type.tensor_type.elem_type
    want = helper.tensor_dtype_to_np_dtype(elem) if elem else x.dtype
    if x.dtype != want and x.dtype.kind == "f" and np.dtype(want).kind == "f":
        x = x.astype(want)  # float64 probe inputs for a float32 model
    if x.ndim not in _LAYOUTS:
        raise ImportFailure(
            f"{path}: sample inputs of shape {x.shape}: an ONNX conv model takes (N, C, ...) "
            "inputs of rank 3-5"
        )
    fields = receptive_fields(model.graph, graph_input.name, x.ndim - 2)
    del model
    session = _session(path, [name for _, name in heads])
    batch = sample.batch_size
    dims = session.get_inputs()[0].shape
    if dims and isinstance(dims[0], int) and dims[0] > 0:  # a fixed batch size
        batch = dims[0]
        if len(x) % batch:
            raise ImportFailure(
                f"{path}: the model's input has a fixed batch of {batch}; give a multiple of "
                f"{batch} sample inputs (not {len(x)})"
            )
    maps: list[list[np.ndarray]] = [[] for _ in heads]
    firing = [Firing() for _ in heads]
    layouts: list[str | None] = [None] * len(heads)
    tops: list[TopK | None] = [None] * len(heads)
    for start in range(0, len(x), batch):
        try:
            values = session.run(
                [name for _, name in heads], {graph_input.name: x[start : start + batch]}
            )
        except Exception as e:
            raise ImportFailure(f"{path}: running the model on the sample inputs: {e}") from None
        for i, ((tag, _), value) in enumerate(zip(heads, values, strict=True)):
            if layouts[i] is None:
                layouts[i] = _LAYOUTS.get(np.ndim(value))
                if layouts[i] is None:
                    raise ImportFailure(f"{path}: {tag} has shape {np.shape(value)}; not a map")
                if sample.examples:
                    tops[i] = TopK(sample.examples, keep_maps=_field(fields, heads[i][1]) is None)
            firing[i].add(value, layouts[i])
            kept = sum(len(m) for m in maps[i])
            if kept < sample.max_samples:
                maps[i].append(np.array(value[: sample.max_samples - kept]))
            if tops[i] is not None:
                tops[i].add(value, layouts[i])
    digest = samples_digest(x[: sample.max_samples])
    probe_digest = samples_digest(x)
    tags = []
    for i, (tag, output) in enumerate(heads):
        layout = layouts[i]
        rec = make_record(
            np.concatenate(maps[i]),
            kind="activation",
            layout=layout,
            firing=firing[i],
            extra={"samples_digest": digest},
            complete=False,
            convert=False,
            owned=True,
        )
        description = (
            f"ONNX node output {output!r} on the sample inputs ({layout}): maps of "
            f"{len(rec.array)}; firing counted over all {firing[i].inputs}"
        )
        writer.write_record(tag, rec, step, description)
        tags.append(tag)
        if tops[i] is not None:
            writer.write_examples(
                tag,
                tops[i].result(),
                step,
                layout=layout,
                field=_field(fields, output),
                inputs=x,
                input_layout=_LAYOUTS[x.ndim],
                digest=probe_digest,
            )
    return Recorded(tags)


def _field(fields: dict[str, ReceptiveField | None], name: str) -> ReceptiveField | None:
    return fields.get(name)
