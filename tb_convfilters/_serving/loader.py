"""How TensorBoard makes the ``convfilters`` plugin: its flags, their defaults, and `load`.

The entry point is ``tb_convfilters.plugin:ConvFiltersLoader``; the routes are in ``plugin``.
"""

from __future__ import annotations

from typing import Any

from tensorboard.plugins import base_plugin

from tb_convfilters._record import metadata
from tb_convfilters._serving import memory_release
from tb_convfilters._serving.compare_routes import DEFAULT_MAX_SIMILARITY_MB
from tb_convfilters._serving.dynamics_routes import DEFAULT_MAX_DYNAMICS_MB
from tb_convfilters._serving.example_routes import DEFAULT_MAX_EXAMPLES_MB
from tb_convfilters._serving.plugin import DEFAULT_MAX_TENSOR_MB, ConvFiltersPlugin


def _use_c_crc32c() -> None:
    """Makes TensorBoard's TensorFlow-free event reader check CRCs in C.

    Without TensorFlow (e.g. to read s3:// logdirs) TensorBoard computes every
    record's CRC32C in pure Python, ~7 MB/s; the C ``crc32c`` gives the same values.
    """
    import crc32c
    from tensorboard.compat.tensorflow_stub import pywrap_tensorflow

    pywrap_tensorflow.crc32c = crc32c.crc32c


class ConvFiltersLoader(base_plugin.TBLoader):
    """Loads the plugin and makes every logged step available by default."""

    def define_flags(self, parser: Any) -> None:
        parser.add_argument(
            "--convfilters_max_tensor_mb",
            type=float,
            default=DEFAULT_MAX_TENSOR_MB,
            help="Filters tab: largest tensor (MiB) served to the browser (default: %(default)s).",
        )
        parser.add_argument(
            "--convfilters_max_similarity_mb",
            type=float,
            default=DEFAULT_MAX_SIMILARITY_MB,
            help="Filters tab: memory (MiB) one CKA similarity request may use "
            "(default: %(default)s).",
        )
        parser.add_argument(
            "--convfilters_max_examples_mb",
            type=float,
            default=DEFAULT_MAX_EXAMPLES_MB,
            help="Filters tab: largest answer (MiB) of crops one dataset-examples request "
            "returns (default: %(default)s).",
        )
        parser.add_argument(
            "--convfilters_max_dynamics_mb",
            type=float,
            default=DEFAULT_MAX_DYNAMICS_MB,
            help="Filters tab: kernel bytes (MiB) one training-dynamics request may read; "
            "what was read before is cached (default: %(default)s).",
        )
        parser.add_argument(
            "--convfilters_release_memory",
            choices=("true", "false"),
            default="true",
            help="Filters tab: give memory back after TensorBoard's loaders read our records "
            "(glibc only; default: %(default)s).",
        )

    def fix_flags(self, flags: Any) -> None:
        _use_c_crc32c()
        # TensorBoard keeps one step per tag of ours in memory (enough to show the tab)
        # unless the user set --samples_per_plugin=convfilters=N: the plugin's own index
        # serves every step from the event files. Without a logdir to index
        # (--grpc_data_provider) the plugin serves what TensorBoard kept: keep all (0).
        samples = getattr(flags, "samples_per_plugin", None)
        if isinstance(samples, dict):
            indexed = not getattr(flags, "grpc_data_provider", "")
            samples.setdefault(metadata.PLUGIN_NAME, 1 if indexed else 0)
        # Our Keras callback shares log_dir/train with the stock TensorBoard callback:
        # poll every event file of a run, not only the newest, unless told otherwise.
        # The index reads every file anyway; this is for the stock callback's scalars
        # (and our one kept step per tag, which activates the tab). Not on object
        # stores, where our Writer uploads one new file per flush.
        logdir = getattr(flags, "logdir", "") or ""
        if getattr(flags, "reload_multifile", False) is None and "://" not in logdir:
            flags.reload_multifile = True
        # The Rust data server, spawned after this and before `load`, reads glibc's
        # tunables from its environment at start; `load` takes the variable back.
        if (
            getattr(flags, "convfilters_release_memory", "true") == "true"
            and getattr(flags, "load_fast", "auto") != "false"
            and not getattr(flags, "grpc_data_provider", "")
        ):
            self._env_set = memory_release.set_data_server_env()

    def load(self, context: base_plugin.TBContext) -> ConvFiltersPlugin:
        if getattr(self, "_env_set", False):
            memory_release.unset_data_server_env()
            self._env_set = False
        flags = context.flags
        max_mb = (
            getattr(flags, "convfilters_max_tensor_mb", DEFAULT_MAX_TENSOR_MB)
            if flags
            else DEFAULT_MAX_TENSOR_MB
        )
        # The Python loader reads in TensorBoard's own process (see memory_release.Releaser).
        if (
            flags is not None
            and context.multiplexer is not None
            and getattr(flags, "convfilters_release_memory", "true") == "true"
        ):
            interval = float(getattr(flags, "reload_interval", 5.0) or 5.0)
            memory_release.Releaser(context.multiplexer, max(interval, 1.0)).start()
        similarity_mb = (
            getattr(flags, "convfilters_max_similarity_mb", DEFAULT_MAX_SIMILARITY_MB)
            if flags
            else DEFAULT_MAX_SIMILARITY_MB
        )
        examples_mb = (
            getattr(flags, "convfilters_max_examples_mb", DEFAULT_MAX_EXAMPLES_MB)
            if flags
            else DEFAULT_MAX_EXAMPLES_MB
        )
        dynamics_mb = (
            getattr(flags, "convfilters_max_dynamics_mb", DEFAULT_MAX_DYNAMICS_MB)
            if flags
            else DEFAULT_MAX_DYNAMICS_MB
        )
        return ConvFiltersPlugin(
            context,
            max_tensor_mb=max_mb,
            max_similarity_mb=similarity_mb,
            max_examples_mb=examples_mb,
            max_dynamics_mb=dynamics_mb,
        )
