"""The ``convfilters`` TensorBoard plugin (entry point ``tb_convfilters.plugin:ConvFiltersLoader``).

The routes and the loader live in ``tb_convfilters._serving.plugin``.
"""

from tb_convfilters._serving.plugin import ConvFiltersLoader, ConvFiltersPlugin

__all__ = ["ConvFiltersLoader", "ConvFiltersPlugin"]
