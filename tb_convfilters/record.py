"""Moved to ``tb_convfilters._record.record`` (and its neighbours); this name still works
and warns once."""

import importlib
import warnings

# Where the names of the old ``record.py`` live now.
_MODULES = (
    "tb_convfilters._record.record",
    "tb_convfilters._record.arguments",
    "tb_convfilters._record.dtypes",
    "tb_convfilters._writing.policies",
)
_MISSING = object()


def __getattr__(name: str):
    for module in _MODULES:
        value = getattr(importlib.import_module(module), name, _MISSING)
        if value is not _MISSING:
            break
    else:
        raise AttributeError(f"module 'tb_convfilters.record' has no attribute {name!r}")
    if not globals().get("_warned"):
        globals()["_warned"] = True
        warnings.warn(
            "tb_convfilters.record is private and moved to tb_convfilters._record.record; "
            "import public names from tb_convfilters (see the docs' API pages)",
            DeprecationWarning,
            stacklevel=2,
        )
    return value
