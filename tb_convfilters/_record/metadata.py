"""Plugin name and the SummaryMetadata every convfilters series carries."""

from __future__ import annotations

import json

from tensorboard.compat.proto import summary_pb2

PLUGIN_NAME = "convfilters"
# Version of the JSON in ``plugin_data.content``; readers accept <= this.
PROTO_VERSION = 1
# Keys of a step header that also describe the whole series in ``tags``.
SERIES_KEYS = ("kind", "layout", "shape", "dtype", "filters", "channels", "image_shape")


def create_summary_metadata(
    header: dict, description: str | None = None
) -> summary_pb2.SummaryMetadata:
    """SummaryMetadata for a series whose first step has `header`."""
    content = {k: header[k] for k in SERIES_KEYS if k in header}
    content["version"] = PROTO_VERSION
    return summary_pb2.SummaryMetadata(
        summary_description=description or "",
        plugin_data=summary_pb2.SummaryMetadata.PluginData(
            plugin_name=PLUGIN_NAME,
            content=json.dumps(content, separators=(",", ":"), sort_keys=True).encode("utf-8"),
        ),
        data_class=summary_pb2.DATA_CLASS_BLOB_SEQUENCE,
    )


def parse_plugin_metadata(content: bytes) -> dict | None:
    """The series description from ``plugin_data.content``; None if unreadable."""
    try:
        parsed = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("version"), int):
        return None
    if parsed["version"] > PROTO_VERSION or "kind" not in parsed:
        return None
    return parsed
