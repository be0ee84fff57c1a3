"""ONNX models (``.onnx``, read with the ``onnx`` package as data; nothing runs): the
initializers that feed the weight input of ``Conv`` (``OIHW``...) and ``ConvTranspose``
(``IOHW``...) nodes. An initializer ``conv1.weight`` (a PyTorch export) is tagged
``conv1/weight`` as ``log_kernels`` tags it; others keep their name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from tb_convfilters.importing.kernels import ImportFailure, Kernel, torch_layout


def tag_of(name: str) -> str:
    """The tag of an initializer named `name`."""
    return name[: -len(".weight")] + "/weight" if name.endswith(".weight") else name


def read_onnx(path: Path) -> Iterator[Kernel]:
    """The conv kernels of an ONNX model, in node order."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise ImportFailure(
            f"{path}: reading ONNX files needs the onnx package: pip install onnx"
        ) from None
    try:
        model = onnx.load(str(path), load_external_data=True)
    except Exception as e:  # protobuf DecodeError, missing external data
        raise ImportFailure(f"{path}: not a readable ONNX model: {e}") from None
    initializers = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose") or len(node.input) < 2:
            continue
        tensor = initializers.pop(node.input[1], None)  # a shared weight once
        if tensor is None:
            continue
        layout = torch_layout(len(tensor.dims), node.op_type == "ConvTranspose")
        if layout is None:
            raise ImportFailure(
                f"{path}: tensor {tensor.name!r} of {node.op_type} node {node.name!r} has "
                f"shape {list(tensor.dims)}; expected rank 3-5"
            )
        try:
            array = numpy_helper.to_array(tensor, base_dir=str(path.parent))
        except Exception as e:
            raise ImportFailure(f"{path}: tensor {tensor.name!r} cannot be read: {e}") from None
        yield Kernel(tensor.name, tag_of(tensor.name), layout, array)
