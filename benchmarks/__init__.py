"""Benchmarks of tb-convfilters: ``python -m benchmarks`` (see ``__main__.py``)."""
