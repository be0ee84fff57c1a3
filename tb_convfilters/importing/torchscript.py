"""TorchScript archives (``torch.jit.save``), with sample inputs only: loaded with
``torch.jit.load``, which reads TorchScript IR and tensors, never a Python pickle.

Kernels: the weight of each ``Conv*`` / ``ConvTranspose*`` submodule (its class is kept
in the archive, so transposed convolutions get ``IO...``), tagged ``<name>/weight``.

Activations: forward hooks are not supported on a ScriptModule, and its forward runs
compiled, past any Python hook. A model whose root is an ``nn.Sequential`` (nested
ones too) is run child by child from Python instead, each child still its compiled
TorchScript; that chain is checked to give the model's own output on the first batch,
then ``log_sample_activations`` records the conv children's outputs as
``<name>/activation`` with their dataset examples (the receptive field is unknown: the
examples keep their maps). Any other root: kernels only, with a note.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tb_convfilters._writing.writer import Writer
from tb_convfilters.importing.kernels import ImportFailure, Kernel, torch_layout
from tb_convfilters.importing.sample_inputs import Recorded, SampleInputs

_CONVS = {f"Conv{n}d": False for n in (1, 2, 3)} | {f"ConvTranspose{n}d": True for n in (1, 2, 3)}
NOT_SEQUENTIAL = (
    "no activations: a TorchScript model runs compiled, past Python hooks; its outputs per "
    "layer are reachable only when its root is an nn.Sequential. Save its state_dict and "
    "log with tb_convfilters.torch.log_sample_activations on the Python model"
)


def load(path: Path) -> Any:
    import torch

    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ImportFailure(f"{path}: not a loadable TorchScript archive: {first}") from None


def _convs(module: Any) -> Iterator[tuple[str, Any, bool]]:
    """(name, submodule, transposed) of each conv submodule."""
    for name, m in module.named_modules():
        transposed = _CONVS.get(getattr(m, "original_name", ""))
        if name and transposed is not None:
            yield name, m, transposed


def read_torchscript(path: Path) -> Iterator[Kernel]:
    """The conv weights of a TorchScript archive."""
    from tb_convfilters.importing.torch_files import _numpy

    for name, m, transposed in _convs(load(path)):
        weight = getattr(m, "weight", None)
        if weight is None:
            continue
        layout = torch_layout(weight.dim(), transposed)
        if layout is not None:
            yield Kernel(f"{name}.weight", f"{name}/weight", layout, _numpy(weight))


def _mirror(module: Any) -> Any:
    """An ``nn.Sequential`` tree running `module`'s children (ScriptModules) in order,
    or None when `module` is not a Sequential."""
    from torch import nn

    class TorchScript(nn.Module):  # a compiled child, called from Python: hooks see it
        def __init__(self, inner: Any):
            super().__init__()
            self.inner = inner

        def forward(self, *args: Any) -> Any:
            return self.inner(*args)

    def build(m: Any) -> Any:
        if getattr(m, "original_name", None) != "Sequential":
            return None
        children = OrderedDict()
        for name, child in m.named_children():
            children[name] = build(child) or TorchScript(child)
        return nn.Sequential(children)

    return build(module)


def record(
    path: Path, writer: Writer, step: int, sample: SampleInputs, keep: Callable[[str], bool]
) -> Recorded:
    """Runs the TorchScript model at `path` on the sample inputs and writes its conv
    outputs' activations and examples at `step`."""
    import torch

    from tb_convfilters.torch import log_sample_activations

    module = load(path).eval()
    names = [name for name, _, _ in _convs(module) if keep(f"{name}/activation")]
    if not names:
        return Recorded([], "no conv module selected for activations")
    mirror = _mirror(module)
    if mirror is None:
        return Recorded([], NOT_SEQUENTIAL)
    x = torch.from_numpy(sample.inputs)
    first = next(iter(module.parameters()), None)
    if x.is_floating_point() and first is not None and first.is_floating_point():
        x = x.to(first.dtype)
    try:
        with torch.no_grad():
            head = x[: sample.batch_size]
            same = torch.equal(module(head), mirror(head))
    except Exception as e:
        raise ImportFailure(f"{path}: running the model on the sample inputs: {e}") from None
    if not same:
        return Recorded([], NOT_SEQUENTIAL + " (its forward is not its children in order)")
    try:
        tags = log_sample_activations(
            writer,
            mirror,
            step,
            x,
            batch_size=sample.batch_size,
            max_samples=sample.max_samples,
            examples=sample.examples,
            modules=names,
            raise_errors=True,
        )
    except Exception as e:
        raise ImportFailure(f"{path}: recording activations: {e}") from None
    return Recorded(list(tags))
