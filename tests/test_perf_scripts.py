"""The perf benchmarks run end to end on tiny sizes (their timings are reported from benchmarks/perf, never tested)."""
from __future__ import annotations

from grbench.benchmarks.perf import beam_search, rpg_vs_tiger


def test_beam_search_benchmark_agrees_with_generate_on_a_small_batch() -> None:
    r = beam_search.run(users=2, beams=3, threads=1, repeats=1, index=None)
    assert r["same_top_b_lists"] == 1.0 and r["same_lists_copied_encoder"] == 1.0
    assert r["sid_table"] == "random 4 x 256" and r["levels"] == 4
    assert r["hf_generate_s"] > 0 and r["ours_s"] > 0 and r["limit_s"] > 0


def test_rpg_vs_tiger_measures_every_decoder() -> None:
    for kind in ("tiger", "rpg-exact", "rpg-graph"):
        f = rpg_vs_tiger.measure(kind, items=300, users=4, batch=2, device="cpu")
        assert f["ms_per_user"] > 0 and f["peak_decode_mb"] >= 0
