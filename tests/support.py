"""Constants and helpers shared by tests (fixtures live in conftest.py files)."""

from __future__ import annotations

from mfg.config import RESOURCE_ROOT

PASSWORD = "correct-horse-battery"
DEMO_SOP = RESOURCE_ROOT / "sops" / "demo" / "DEMO-PROC_v1.yaml"
