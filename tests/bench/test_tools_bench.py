"""bench.tools measures what it says: both sides make the same successful call to the same backend."""

from __future__ import annotations

from pathlib import Path

import orjson

from bench import tools


def test_a_small_run_compares_both_sides_on_every_call(tmp_path: Path) -> None:
    output = tmp_path / "tools.json"
    assert tools.main(["--calls", "16", "--concurrency", "4", "--rounds", "1", "--output", str(output)]) == 0
    result = orjson.loads(output.read_bytes())
    for part in ("sequential", "concurrent_4"):
        assert result[part]["bare"]["n"] == result[part]["ours"]["n"] == 16
        assert 0 < result[part]["ours"]["p50_ms"] <= result[part]["ours"]["p99_ms"]
    assert set(result["ours_extra_p50_ms"]) == {"sequential", "concurrent"}
