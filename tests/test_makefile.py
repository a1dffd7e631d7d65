"""The README's commands on a fresh clone: each make target installs what it needs before it runs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("target", ["run", "demo", "test"])
def test_a_target_sets_up_the_venv_and_azurite_before_it_needs_them(target: str, tmp_path: Path) -> None:
    """``make run`` on a fresh clone failed at start-up (AzuriteNotInstalled): only ``demo`` and ``test``
    listed Azurite. A dry run in a directory holding nothing but the Makefile shows what a fresh clone does."""
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    (tmp_path / "pyproject.toml").write_text("")
    plan = subprocess.run(
        ["make", "-n", target], cwd=tmp_path, capture_output=True, text=True, check=True, timeout=30
    ).stdout
    venv, azurite = plan.index("-m venv"), plan.index("npm install")
    starts = {"run": "-m router serve", "demo": "-m emulators.demo", "test": "/bin/pytest"}[target]
    assert venv < plan.index(starts) and azurite < plan.index(starts)
