"""tb-convfilters: log convolution filters and activations; see them in TensorBoard.

Writing: ``tb_convfilters.summary`` (TF2 ops and numpy ``*_pb`` twins),
``tb_convfilters.Writer`` (no TensorFlow needed). Reading back:
``tb_convfilters.reader``. The dashboard is the plugin in ``plugin.py``.
"""

from tb_convfilters._record.metadata import PLUGIN_NAME
from tb_convfilters._record.receptive_field import ReceptiveField
from tb_convfilters._writing.writer import Writer, WriterError

__all__ = ["PLUGIN_NAME", "ReceptiveField", "Writer", "WriterError"]
__version__ = "0.1.0"
