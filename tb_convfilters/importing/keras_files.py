"""Keras files read as data with h5py: no model is built and nothing from the file runs
(stricter than Keras' safe mode: the config is read as JSON, never deserialized).

- ``.keras``: a zip of ``config.json`` (layer classes and order) and ``model.weights.h5``.
- ``.weights.h5`` (Keras 3 ``save_weights``): groups ``layers/<class_name>[_N]/vars/<i>``,
  whose ``vars`` attribute ``name`` is the layer's name.
- ``.h5`` (legacy ``model.save`` / ``save_weights``): ``layer_names`` and per layer
  ``weight_names`` (``conv/kernel:0``); its ``model_config`` names the classes.

Tags and layouts are FiltersCallback's: ``<layer>/kernel`` (``HWIO``, transposed ``HWOI``,
depthwise ``HWIM``), separable ``<layer>/depthwise`` and ``<layer>/pointwise``.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tb_convfilters.importing.kernels import ImportFailure, Kernel, keras_kernel, keras_kind

# The variables of a Keras 3 layer, in the order `build` creates them (kernel before bias).
_VARS = {
    "conv": ["kernel"],
    "transpose": ["kernel"],
    "depthwise": ["kernel"],
    "separable": ["depthwise_kernel", "pointwise_kernel"],
}


def config_layers(config: Any) -> dict[str, str]:
    """``{layer name: class name}`` of a Keras model config, nested models included, in order."""
    out: dict[str, str] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            inner = node.get("config")
            if isinstance(node.get("class_name"), str) and isinstance(inner, dict):
                if isinstance(inner.get("name"), str):  # a layer (or its dtype policy: harmless)
                    out.setdefault(inner["name"], node["class_name"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return out


def _natural(name: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def _keras3(h5: Any, path: Path, classes: dict[str, str]) -> list[tuple[Any, Kernel]]:
    """(sort key, kernel) of a Keras 3 weights tree (``layers/<name>/vars/<i>``)."""
    order = {name: i for i, name in enumerate(classes)}
    found = []

    def walk(group: Any) -> None:
        layers = group.get("layers")
        if layers is None or not hasattr(layers, "keys"):
            return
        for key in layers:
            child = layers[key]
            if not hasattr(child, "keys"):
                continue
            variables = child.get("vars")
            if variables is not None and len(variables):
                name = variables.attrs.get("name", key)
                name = name.decode() if isinstance(name, bytes) else str(name)
                kind = keras_kind(classes.get(name), key)
                for i, attribute in enumerate(_VARS.get(kind, [])):
                    data = variables.get(str(i))
                    if data is None or not hasattr(data, "shape"):
                        continue
                    tag_layout = keras_kernel(name, attribute, data.shape, kind)
                    if tag_layout:
                        kernel = Kernel(f"{child.name}/vars/{i}", *tag_layout, _read(data, path))
                        found.append(((order.get(name, len(order)), _natural(name)), kernel))
            walk(child)

    walk(h5)
    return found


def _legacy(h5: Any, path: Path) -> list[tuple[Any, Kernel]]:
    """(sort key, kernel) of a legacy Keras h5 (``layer_names`` / ``weight_names``)."""
    root = h5["model_weights"] if "model_weights" in h5 else h5
    config = h5.attrs.get("model_config")
    classes = config_layers(json.loads(config)) if config is not None else {}
    order = {name: i for i, name in enumerate(classes)}
    found = []
    for i, raw in enumerate(root.attrs["layer_names"]):
        group = root[raw.decode() if isinstance(raw, bytes) else str(raw)]
        for raw_weight in group.attrs.get("weight_names", []):
            weight = raw_weight.decode() if isinstance(raw_weight, bytes) else str(raw_weight)
            data = group.get(weight)
            if data is None or not hasattr(data, "shape"):
                continue
            # `conv/kernel:0`; a nested model's group lists its layers' weights by their names
            *_, layer, attribute = ["", *weight.removesuffix(":0").split("/")]
            layer = layer or group.name.rsplit("/", 1)[-1]
            tag_layout = keras_kernel(
                layer, attribute, data.shape, keras_kind(classes.get(layer), layer)
            )
            if tag_layout:
                key = (i, order.get(layer, len(order)))
                found.append((key, Kernel(data.name, *tag_layout, _read(data, path))))
    return found


def _read(data: Any, path: Path) -> Any:
    try:
        return data[()]
    except Exception as e:  # a truncated file
        raise ImportFailure(f"{path}: tensor {data.name!r} cannot be read: {e}") from None


def _kernels(file: Any, path: Path, classes: dict[str, str]) -> list[Kernel]:
    import h5py

    try:
        h5 = h5py.File(file, "r")
    except Exception as e:
        raise ImportFailure(f"{path}: not a readable HDF5 file: {e}") from None
    with h5:
        root = h5["model_weights"] if "model_weights" in h5 else h5
        if "layer_names" in root.attrs:
            found = _legacy(h5, path)
        elif "layers" in h5:
            found = _keras3(h5, path, classes)
        else:
            raise ImportFailure(
                f"{path}: an HDF5 file but not Keras weights (no 'layers' group and no "
                "'layer_names' attribute)"
            )
    return [k for _, k in sorted(found, key=lambda pair: pair[0])]


def read_h5(path: Path) -> Iterator[Kernel]:
    """The conv kernels of a ``.h5`` / ``.weights.h5`` file."""
    yield from _kernels(path, path, {})


def read_keras(path: Path) -> Iterator[Kernel]:
    """The conv kernels of a ``.keras`` file (its config read as JSON, for classes and order)."""
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            if "model.weights.h5" not in names:
                raise ImportFailure(
                    f"{path}: a zip without model.weights.h5; not a Keras 3 .keras file"
                )
            classes = {}
            if "config.json" in names:
                classes = config_layers(json.loads(z.read("config.json")))
            with z.open("model.weights.h5") as weights:
                yield from _kernels(weights, path, classes)
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        if isinstance(e, ImportFailure):
            raise
        raise ImportFailure(f"{path}: not a readable .keras file: {e}") from None
