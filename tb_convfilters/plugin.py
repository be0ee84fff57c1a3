"""The ``convfilters`` TensorBoard plugin (entry point ``tb_convfilters.plugin:ConvFiltersLoader``).

The loader lives in ``tb_convfilters._serving.loader``, the routes in
``tb_convfilters._serving.plugin``.
"""

from tb_convfilters._serving.loader import ConvFiltersLoader
from tb_convfilters._serving.plugin import ConvFiltersPlugin

__all__ = ["ConvFiltersLoader", "ConvFiltersPlugin"]
