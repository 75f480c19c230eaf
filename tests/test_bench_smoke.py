"""The benchmarks still run: ``python -m bench --quick`` in a subprocess prints the table and
writes valid JSON whose rows carry ratios (issue 7). Numbers are not checked here: a missed
target is a result, a crash is a bug."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STATUSES = {"PASS", "MISS", "INFO", "SKIP", "PENDING", "ERROR"}


@pytest.mark.timeout(240)
def test_quick_bench_prints_a_table_and_writes_json_with_ratios(tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=230,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    # the table: a header and one line per row
    lines = proc.stdout.splitlines()
    assert any(line.startswith("| #") and "ratio" in line and "status" in line for line in lines)
    table_rows = [line for line in lines if line.startswith("| ") and not line.startswith("| #")]

    # the JSON: a timestamped file and latest-quick.json, the same content
    written = sorted(p.name for p in tmp_path.iterdir())
    assert "latest-quick.json" in written
    stamped = [name for name in written if name.endswith("-quick.json") and name[0].isdigit()]
    assert len(stamped) == 1
    data = json.loads((tmp_path / "latest-quick.json").read_text(encoding="utf-8"))
    assert data == json.loads((tmp_path / stamped[0]).read_text(encoding="utf-8"))
    assert data["quick"] is True
    rows = data["rows"]
    assert len(rows) == len(table_rows) >= 10
    assert {row["status"] for row in rows} <= STATUSES
    assert not [row for row in rows if row["status"] == "ERROR"]
    # every benchmark reported something
    numbers = {re.match(r"\d+", row["id"]).group() for row in rows}
    assert numbers == {str(n) for n in range(1, 11)}

    # the figures are ratios against a baseline measured in the same run
    with_ratio = [row for row in rows if row["ratio"] is not None]
    assert len(with_ratio) >= 10
    for row in with_ratio:
        assert row["ratio"] > 0 and row["baseline"] > 0
        if row["ratio_of"] == "value / baseline":
            assert row["ratio"] == pytest.approx(row["value"] / row["baseline"])
    # rows with a target say whether they met it
    targeted = [row for row in rows if row["target"] != "-"]
    assert targeted and all(row["status"] in {"PASS", "MISS"} for row in targeted)
    for required in ("1b", "2a", "2b", "3a", "3b", "4b", "4d"):
        assert required in {row["id"] for row in targeted}, required
