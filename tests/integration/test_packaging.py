"""What an operator installs: the systemd unit, and a wheel that ships the sample config."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.integration.harness import REPO_ROOT

UNIT = REPO_ROOT / "packaging" / "reticulum.service"


def test_unit_runs_twistd_in_the_foreground_as_its_own_user():
    lines = {line.split("=", 1)[0]: line.split("=", 1)[1]
             for line in UNIT.read_text().splitlines() if "=" in line and not line.startswith("#")}
    assert lines["ExecStart"] == ("/opt/reticulum/bin/twistd -n --pidfile= reticulum "
                                  "--config /etc/reticulum/reticulum.toml")
    assert lines["User"] == "reticulum" and lines["Restart"] == "on-failure"
    assert lines["ProtectSystem"] == "strict" and lines["NoNewPrivileges"] == "yes"
    assert lines["StateDirectory"] == "reticulum"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_unit_passes_systemd_analyze_verify(tmp_path):
    # verify insists that ExecStart's program exists: point it at this checkout's twistd
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    unit = tmp_path / "reticulum.service"
    unit.write_text(UNIT.read_text().replace("/opt/reticulum/bin/twistd", twistd))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                          timeout=60)
    # it reports unknown or bad settings as warnings with status 0: any output is a failure
    assert done.returncode == 0 and done.stderr.strip() == "" and done.stdout.strip() == "", \
        done.stdout + done.stderr


def test_wheel_ships_the_sample_config_and_the_plugin(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(REPO_ROOT, source, ignore=shutil.ignore_patterns(
        ".venv*", "node_modules", "build", "dist", "*.egg-info", "var", "__pycache__", ".git",
        "tests", "bench"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--disable-pip-version-check", "-w", str(tmp_path / "dist"), str(source)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = (tmp_path / "dist").glob("reticulum-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "reticulum/sample.toml" in names
    assert "reticulum/__main__.py" in names and "reticulum/control.py" in names
    assert "twisted/plugins/reticulum_plugin.py" in names
    assert zipfile.ZipFile(wheel).read("reticulum/sample.toml") == \
        (REPO_ROOT / "reticulum" / "sample.toml").read_bytes()
