"""The seed copy is current: it equals the project's seed (development checkouts only)."""

from __future__ import annotations

from pathlib import Path

COPY = Path(__file__).with_name("session-management.md")
#: the original seed, beside the development checkout (conftest.py collects this file only
#: where it exists)
SHARED_SEED = Path(__file__).resolve().parents[3] / "shared" / "seed" / COPY.name


def test_seed_copy_is_current() -> None:
    assert COPY.read_text(encoding="utf-8") == SHARED_SEED.read_text(encoding="utf-8")
