"""PyTorch ``state_dict`` files (``.pt .pth .bin .ckpt``, read with ``weights_only=True``) and
``.safetensors`` (read here as data: a JSON header and raw little-endian tensors).

A weight ``<module name>.weight`` of rank 3-5 is a conv kernel, tagged ``<module name>/weight``
as ``log_kernels`` tags it, laid out ``OIW OIHW OIDHW``: a state_dict does not say which
modules are transposed convolutions (``IOHW``); name them with a layout override.
"""

from __future__ import annotations

import json
import pickle
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tb_convfilters.importing.kernels import ImportFailure, Kernel, torch_layout

# Where training scripts put the model's state_dict inside a larger checkpoint dict.
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net", "module")
_REFUSED = (
    "{path}: refused: loading it would run code from the file ({why}). Only plain "
    "state_dicts (tensors in dicts) are read, with torch.load(weights_only=True). If you trust "
    "the file, load it yourself and save its weights: torch.save(model.state_dict(), 'x.pt'), "
    "then import that file."
)


def is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.split("/", 1)[-1].startswith("code/") for n in z.namelist())


def state_dict(obj: Any) -> dict[str, Any]:
    """The tensors of a loaded checkpoint: its state_dict, found under `STATE_DICT_KEYS`."""
    import torch

    if not isinstance(obj, Mapping):
        return {}
    for key in STATE_DICT_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
            obj = inner
            break
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if tensors and all(k.startswith("module.") for k in tensors):  # saved from DataParallel
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


def _numpy(tensor: Any) -> np.ndarray:
    import torch

    t = tensor.detach().cpu()
    if t.dtype == torch.bfloat16:
        import ml_dtypes

        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def _kernel(name: str, shape: tuple[int, ...], float_dtype: bool) -> tuple[str, str] | None:
    """(tag, layout) of a state_dict entry if it is a conv weight."""
    module, _, attribute = name.rpartition(".")
    layout = torch_layout(len(shape))
    if attribute != "weight" or not module or layout is None or not float_dtype:
        return None
    return f"{module}/weight", layout


def read_torch(path: Path) -> Iterator[Kernel]:
    """The conv weights of a PyTorch checkpoint; refuses files whose load would run code."""
    import torch

    if is_torchscript(path):
        why = (
            "a TorchScript archive holds code; with sample inputs (--sample-inputs) it is "
            "loaded with torch.jit.load, which runs TorchScript, never Python"
        )
        raise ImportFailure(_REFUSED.format(path=path, why=why))
    try:
        with warnings.catch_warnings():  # torch doubts pickle protocols it then refuses or reads
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ImportFailure(
            _REFUSED.format(path=path, why=f"it pickles more than tensors: {first}")
        ) from None
    except Exception as e:  # a truncated or foreign file
        raise ImportFailure(f"{path}: not a readable PyTorch checkpoint: {e}") from None
    tensors = state_dict(obj)
    if not tensors:
        raise ImportFailure(
            f"{path}: holds no state_dict (a dict of tensors, or one under "
            + ", ".join(repr(k) for k in STATE_DICT_KEYS)
            + ")"
        )
    for name, t in tensors.items():
        found = _kernel(name, tuple(t.shape), t.is_floating_point())
        if found:
            yield Kernel(name, found[0], found[1], _numpy(t))


_SAFETENSORS_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "bfloat16"}


def read_safetensors(path: Path) -> Iterator[Kernel]:
    """The conv weights of a ``.safetensors`` file, each read on its own."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        try:
            if not 2 <= n <= size - 8:
                raise ValueError(f"header length {n} does not fit the file's {size} bytes")
            header = json.loads(f.read(n))
            if not isinstance(header, dict):
                raise ValueError("the header is not a JSON object")
        except ValueError as e:
            raise ImportFailure(f"{path}: not a safetensors file: {e}") from None
    entries = [(k, v) for k, v in header.items() if k != "__metadata__"]
    for name, info in entries:
        try:
            dtype, shape, (start, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise ImportFailure(f"{path}: tensor {name!r} has a malformed header entry") from None
        found = _kernel(name, shape, dtype in _SAFETENSORS_DTYPES)
        if not found:
            continue
        if dtype == "BF16":
            import ml_dtypes

            np_dtype = np.dtype(ml_dtypes.bfloat16)
        else:
            np_dtype = np.dtype(_SAFETENSORS_DTYPES[dtype])
        count = int(np.prod(shape))
        if end - start != count * np_dtype.itemsize or 8 + n + end > size:
            raise ImportFailure(
                f"{path}: tensor {name!r} ({dtype} {list(shape)}) has data offsets "
                f"{start}..{end} that do not match its shape or the file's size (truncated?)"
            )
        array = np.fromfile(path, np_dtype, count, offset=8 + n + start).reshape(shape)
        yield Kernel(name, found[0], found[1], array)
