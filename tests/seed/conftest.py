"""The seed copy's own check, collected only where the original seed is.

``session-management.md`` here is a copy of the project's seed, kept beside the development
checkout at ``../shared/seed/``. A user's clone has no such folder, so the check is not
collected there at all (rather than shown as a skip the user can do nothing about).
"""

from __future__ import annotations

from pathlib import Path

#: the original seed, beside the development checkout
SHARED_SEED = Path(__file__).resolve().parents[3] / "shared" / "seed" / "session-management.md"

collect_ignore = [] if SHARED_SEED.exists() else ["test_seed_copy.py"]
