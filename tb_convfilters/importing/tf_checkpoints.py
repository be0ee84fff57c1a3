"""TensorFlow checkpoints (``tf.train.Checkpoint`` / ``CheckpointManager`` ``ckpt-N`` prefixes,
TF1 name-based ``model.ckpt-N``) and a SavedModel's variables, read variable by variable with
``tf.train.load_checkpoint``: no model is built and no graph runs.

A variable's name is its ``full_name`` in the checkpoint's object graph (``conv1/kernel``,
the Keras layer's name and its attribute) or, in a name-based checkpoint, its key. Rank 3-5
float variables named ``.../kernel``, ``depthwise_kernel``, ``pointwise_kernel`` (Keras) or
``.../weights``, ``depthwise_weights`` (TF-Slim) are kernels, tagged and laid out as
FiltersCallback logs them; optimizer slots are skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from tb_convfilters.importing.kernels import ImportFailure, Kernel, keras_kernel, keras_kind

_OBJECT_GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"
_ATTRIBUTES = {
    "kernel": "kernel",
    "weights": "kernel",
    "depthwise_kernel": "depthwise_kernel",
    "depthwise_weights": "depthwise_kernel",
    "pointwise_kernel": "pointwise_kernel",
}


def savedmodel_prefix(folder: Path) -> Path:
    """The checkpoint prefix of a SavedModel folder's variables."""
    return folder / "variables" / "variables"


def _names(reader) -> list[tuple[str, str]]:
    """(checkpoint key, variable name) of every variable, in the model's order."""
    keys = reader.get_variable_to_shape_map()
    if _OBJECT_GRAPH not in keys:
        return [(k, k) for k in sorted(keys)]
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor(_OBJECT_GRAPH))
    return [
        (a.checkpoint_key, a.full_name or a.checkpoint_key)
        for node in graph.nodes
        for a in node.attributes
        if a.name == "VARIABLE_VALUE"
    ]


def read_checkpoint(prefix: Path, shown: Path | None = None) -> Iterator[Kernel]:
    """The conv kernels of the checkpoint at `prefix` (`shown` names it in errors)."""
    import tensorflow as tf

    shown = shown or prefix
    try:
        reader = tf.train.load_checkpoint(str(prefix))
        shapes = reader.get_variable_to_shape_map()
        dtypes = reader.get_variable_to_dtype_map()
        names = _names(reader)
    except Exception as e:  # tf.errors.DataLossError, NotFoundError, a bad object graph
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ImportFailure(f"{shown}: not a readable TensorFlow checkpoint: {message}") from None
    found = []
    for key, name in names:
        if key.startswith("optimizer/") or ".OPTIMIZER_SLOT" in key or key not in shapes:
            continue
        layer, _, attribute = name.removesuffix(":0").rpartition("/")
        attribute = _ATTRIBUTES.get(attribute)
        if layer and attribute is not None and dtypes[key].is_floating:
            found.append((key, name, layer, attribute))
    short = _layer_names([layer for _, _, layer, _ in found])
    for key, name, layer, attribute in found:
        layer = short[layer]
        shape = tuple(shapes[key])
        tag_layout = keras_kernel(layer, attribute, shape, keras_kind(None, layer.split("/")[-1]))
        if tag_layout is None:
            continue
        try:
            array = reader.get_tensor(key)
        except Exception as e:
            raise ImportFailure(f"{shown}: variable {name!r} cannot be read: {e}") from None
        yield Kernel(name, *tag_layout, array)


def _layer_names(paths: list[str]) -> dict[str, str]:
    """Each layer's path as FiltersCallback names the layer: its last part (``c1`` of a
    Sequential's ``sequential/c1``, as ``layer.name``), or the whole path where two
    layers would share that name."""
    unique = sorted(set(paths))
    last = [path.rsplit("/", 1)[-1] for path in unique]
    return {p: n if last.count(n) == 1 else p for p, n in zip(unique, last, strict=True)}


def read_savedmodel(folder: Path) -> Iterator[Kernel]:
    """The conv kernels of a SavedModel folder (its variables; ``saved_model.pb`` is not read)."""
    prefix = savedmodel_prefix(folder)
    if not Path(str(prefix) + ".index").is_file():
        raise ImportFailure(f"{folder}: a SavedModel without variables/variables.index")
    yield from read_checkpoint(prefix, folder)
