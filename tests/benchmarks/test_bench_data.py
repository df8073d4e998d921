"""benchmarks.dataloader at quick size: loader throughput and step demand are measured and consistent."""

from __future__ import annotations

import math

import torch

from benchmarks.dataloader import DEMAND_BATCH, bench_data, render_data_markdown


def test_data_bench_quick_cpu():
    d = bench_data("quick", torch.device("cpu"))
    assert d["image_size"] == 96 and d["batch"] == DEMAND_BATCH == 128
    (row,) = d["loader"]
    assert row["images"] == d["n_images"] == 24 and row["images_per_s"] > 0 and row["first_batch_s"] > 0
    s = d["step"]
    assert s["scaled"] and s["measured_batch"] == 2 and len(s["times_s"]) == 1
    assert math.isclose(s["demand_images_per_s"] * s["step_s_at_128"], 128.0, rel_tol=1e-9)
    assert math.isclose(d["supply_over_demand"], d["best_images_per_s"] / s["demand_images_per_s"])
    assert d["starves"] == (d["supply_over_demand"] < 1)
    text = "\n".join(render_data_markdown(d))
    assert "Data path at 96x96" in text and "images/s" in text and "scaled to 128" in text
