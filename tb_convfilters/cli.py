"""The ``tb-convfilters`` command: ``export``, ``doctor``, ``compare``, ``import``, ``animate``.

Each subcommand is a module of ``tb_convfilters._commands`` with ``add_arguments(parser)``
and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, one-line help)
SUBCOMMANDS = {
    "export": ("tb_convfilters._commands.export", "write logged tensors as .npy files"),
    "doctor": (
        "tb_convfilters._commands.doctor",
        "find dead, exploding, duplicate and frozen filters",
    ),
    "compare": (
        "tb_convfilters._commands.compare",
        "match filters across runs trained apart; layer CKA",
    ),
    "import": (
        "tb_convfilters._commands.importing",
        "write the kernels of trained models and checkpoint folders as runs",
    ),
    "animate": (
        "tb_convfilters._commands.animate",
        "a layer over its logged steps as a GIF, MP4 or WebM",
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tb-convfilters", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        module.add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    return module.run(args)


if __name__ == "__main__":
    sys.exit(main())
