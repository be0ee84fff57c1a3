"""Moved to ``tb_convfilters._record.files``; this name still works and warns once."""

import importlib
import warnings


def __getattr__(name: str):
    value = getattr(importlib.import_module("tb_convfilters._record.files"), name)
    if not globals().get("_warned"):
        globals()["_warned"] = True
        warnings.warn(
            "tb_convfilters.fs is private and moved to tb_convfilters._record.files; "
            "import public names from tb_convfilters (see the docs' API pages)",
            DeprecationWarning,
            stacklevel=2,
        )
    return value
