"""The benchmark suite runs: a smoke run of bench/run.py end to end (the real model, a 100-article
index of the SQuAD records in tests/fixtures/squad-mini, so that it runs in any clone).

It checks that the suite still works against the current code and writes its numbers; what the
numbers are is the benchmark's business, not a test's (timed tests measure the machine).
"""

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow


SQUAD_MINI = ROOT / "tests" / "fixtures" / "squad-mini"


def test_bench_quick_run_writes_its_numbers(tmp_path):
    out = tmp_path / "latest.json"
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--sizes", "100",
                        "--data", str(SQUAD_MINI), "--no-build", "--no-docs", "--out", str(out)],
                       capture_output=True, text=True, cwd=ROOT, timeout=1800, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert p.returncode == 0, p.stderr[-3000:]
    result = json.loads(out.read_text())
    text = json.dumps(result)
    for key in ("ask_p50_ms", "cold_start_s", "peak_mb", "anon_beyond_model_mb", "retrieve_p50_ms", "n_sentences"):
        assert f'"{key}"' in text, key
    size = result["sizes"]["100"]
    # 12 paragraphs and recombinations of their sentences, less the near-duplicates askdesk drops
    assert size["vectors"] == "real" and 12 <= size["chunks"] <= 100 and size["ask_p50_ms"] > 0
    assert "| 100 |" in p.stdout
