"""The ``tb-convfilters`` subcommands, each a module with ``add_arguments(parser)`` and
``run(args) -> int``."""
