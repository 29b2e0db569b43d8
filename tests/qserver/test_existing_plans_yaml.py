"""The committed ``existing_plans_and_devices.yaml`` matches what the startup code defines right now."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

STARTUP_DIR = Path(__file__).parents[2] / "profiles" / "queueserver"
REGENERATE = (
    "cd profiles/queueserver && XBEAM_MODE=sim XBEAM_DATA_DIR=$(mktemp -d) XBEAM_CONFIG=/dev/null/none "
    "qserver-list-plans-devices --startup-dir ."
)


def _differences(committed: dict, fresh: dict) -> list[str]:
    lines = []
    for section in ("existing_plans", "existing_devices"):
        old, new = committed.get(section, {}), fresh.get(section, {})
        lines += [
            f"{section}: {name} missing from the committed file" for name in sorted(set(new) - set(old))
        ]
        lines += [f"{section}: {name} no longer defined" for name in sorted(set(old) - set(new))]
        lines += [
            f"{section}: {name} changed" for name in sorted(set(old) & set(new)) if old[name] != new[name]
        ]
    return lines


@pytest.mark.qserver
@pytest.mark.slow
def test_committed_yaml_is_current(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("XBEAM_")}
    env.update(
        XBEAM_MODE="sim", XBEAM_DATA_DIR=str(tmp_path / "data"), XBEAM_CONFIG=str(tmp_path / "none.toml")
    )
    cmd = [str(Path(sys.executable).with_name("qserver-list-plans-devices")), "--startup-dir", str(STARTUP_DIR),
           "--file-dir", str(tmp_path)]  # fmt: skip
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    fresh = yaml.safe_load((tmp_path / "existing_plans_and_devices.yaml").read_text())
    committed = yaml.safe_load((STARTUP_DIR / "existing_plans_and_devices.yaml").read_text())
    differences = _differences(committed, fresh)
    assert not differences, (
        "profiles/queueserver/existing_plans_and_devices.yaml is stale:\n  "
        + "\n  ".join(differences)
        + f"\nregenerate it with:\n  {REGENERATE}"
    )
    assert fresh == committed  # nothing else differs either
