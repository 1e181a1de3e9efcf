"""``./run.sh`` as an operator types it: help, and commands that take a --config relative
to the folder they are typed in."""
from __future__ import annotations

import os
import subprocess

import pytest

from tests.integration.harness import REPO_ROOT

RUN = str(REPO_ROOT / "run.sh")
SUBCOMMANDS = ("test", "users", "status", "registrations", "calls")


def run_sh(*args, cwd=None):
    env = {k: v for k, v in os.environ.items() if k != "RETICULUM_PYTHON"}
    return subprocess.run([RUN, *args], cwd=str(cwd or REPO_ROOT), env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("flag", ["--help", "-h", "help"])
def test_help_lists_every_subcommand_before_the_server_options(flag):
    done = run_sh(flag)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    options = out.index("--config=")
    for name in SUBCOMMANDS:
        assert "\n  %s " % name in out[:options], (name, out)
    assert "--version" in out[options:] and "--init-config" in out[options:]


def test_users_takes_config_relative_to_the_current_folder(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "r.toml").write_text('domains = ["example.com"]\nstate_dir = "state"\n[users]\nbob = "b"\n')
    added = run_sh("users", "add", "carol", "--password", "c", "--config", "site/r.toml", cwd=tmp_path)
    assert added.returncode == 0, added.stderr
    assert (site / "state" / "reticulum.sqlite3").exists()
    listed = run_sh("users", "--config=site/r.toml", "list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == ["bob    (from [users] in the config)", "carol"]


def test_status_takes_config_relative_to_the_current_folder(tmp_path):
    (tmp_path / "r.toml").write_text('state_dir = "state"\n')
    done = run_sh("status", "--config", "r.toml", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().endswith(
        "reticulum: %s has no admin address: add admin = [\"127.0.0.1:8000\"] to its [listen] "
        "table and restart the server" % (tmp_path / "r.toml"))
