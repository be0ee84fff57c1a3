"""Training dynamics: the filter x step raster served against reading the kernels.

``dynamics.raster_512x100``: 100 logged steps of a 3x3x64x512 float32 kernel (118 MB);
the ``dynamics`` route (update ratios, rotations, gradient norms of every filter and
step) answered by a plugin that has not read the series yet (its index built, the
cache empty), against reading the same 100 kernels back with ``reader``: the
``reader.entries(...)`` stream decoding each step's array, the fastest way the reader
reads them (``reader.read`` per step rescans the file each call: slower, a weaker
baseline). Target: <= 2. Also printed: the same request again (the cache).
"""

from __future__ import annotations

import numpy as np

from benchmarks.common import Result, Timer, fmt_ms, log, scratch_dir

SHAPE = (3, 3, 64, 512)


def run(quick: bool) -> list[Result]:
    from tensorboard.backend import application
    from tensorboard.plugins import base_plugin
    from werkzeug.test import Client

    from tb_convfilters import Writer, reader
    from tb_convfilters._serving.plugin import ConvFiltersPlugin

    steps = 20 if quick else 100
    with scratch_dir("dynamics") as root:
        rng = np.random.default_rng(0)
        w = rng.normal(0, 0.05, SHAPE).astype(np.float32)
        with Writer(f"{root}/run") as writer:
            for step in range(steps):
                writer.kernel("conv/kernel", w, step)
                w = w + rng.normal(0, 1e-3, SHAPE).astype(np.float32)
        log(f"wrote {steps} steps of {SHAPE} float32")
        state: dict = {}

        def new_client() -> None:
            context = base_plugin.TBContext(logdir=root, data_provider=None)
            state["client"] = Client(application.TensorBoardWSGI([ConvFiltersPlugin(context)]))
            assert state["client"].get("/data/plugin/convfilters/tags").status_code == 200

        url = "/data/plugin/convfilters/dynamics?run=run&tag=conv%2Fkernel"

        def served() -> None:
            response = state["client"].get(url)
            assert response.status_code == 200, response.get_data(as_text=True)[:300]

        def read() -> None:
            for entry in reader.entries(root, run="run", tag="conv/kernel"):
                entry.array()

        def read_each() -> None:  # the wording: reader.read per step
            for step in range(steps):
                reader.read(root, "run", "conv/kernel", step)

        timer = Timer(rounds=2 if quick else 4)
        timer.add("served", served, before=new_client)
        timer.add("reader", read)
        best = timer.run(log)
        each = Timer(rounds=1, warmup=0)
        each.add("read_each", read_each)
        best["read_each"] = each.run(log)["read_each"]
        new_client()
        served()
        cached = Timer(rounds=3, warmup=0)
        cached.add("cached", served)
        again = cached.run()["cached"]
    ratio = best["served"] / best["reader"]
    detail = (
        f"route {fmt_ms(best['served'])} (cold cache) vs reader {fmt_ms(best['reader'])} for "
        f"{SHAPE[-1]} filters x {steps} steps; cached {fmt_ms(again)}; against reader.read "
        f"once per step ({fmt_ms(best['read_each'])}): "
        f"{best['served'] / best['read_each']:.3g}"
    )
    return [
        Result(
            f"dynamics.raster_512x{steps}",
            ratio,
            "<= 2",
            detail,
            {
                "served_s": best["served"],
                "reader_s": best["reader"],
                "read_each_s": best["read_each"],
                "cached_s": again,
            },
        )
    ]
