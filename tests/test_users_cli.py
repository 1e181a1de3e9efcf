"""`python -m reticulum.users` against a temporary config and database."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time

import pytest

from reticulum.accounts import AccountStore
from reticulum.sip import digest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOMAINS = ["example.com", "example.org"]


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "test.toml"
    path.write_text('domains = ["example.com", "example.org"]\nstate_dir = "state"\n')
    return str(path)


@pytest.fixture
def db_path(tmp_path):
    return str(tmp_path / "state" / "reticulum.sqlite3")


def users(config, *args, stdin=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "reticulum.users", *args, "--config", config],
        input=stdin, capture_output=True, text=True, env=env, cwd=ROOT, timeout=60,
        start_new_session=True,  # no controlling terminal: getpass reads stdin
    )


def rows(db_path):
    db = sqlite3.connect(db_path)
    try:
        return {(n, r, a): h for n, r, a, h in db.execute("SELECT * FROM accounts")}
    finally:
        db.close()


def file_bytes(db_path):
    data = b""
    for suffix in ("", "-wal"):
        if os.path.exists(db_path + suffix):
            with open(db_path + suffix, "rb") as f:
                data += f.read()
    return data


def test_add_list_passwd_remove(config, db_path):
    done = users(config, "add", "alice", "--password", "Needle-One")
    assert done.returncode == 0, done.stderr
    assert users(config, "add", "bob", "--password", "Needle-Two").returncode == 0

    stored = rows(db_path)
    for realm in DOMAINS:
        for algorithm in ("MD5", "SHA-256"):
            assert stored[("alice", realm, algorithm)] == \
                digest.ha1("alice", realm, "Needle-One", algorithm)
    assert b"Needle-One" not in file_bytes(db_path)
    assert b"Needle-Two" not in file_bytes(db_path)

    listed = users(config, "list")
    assert listed.returncode == 0
    assert listed.stdout.split() == ["alice", "bob"]

    again = users(config, "add", "alice", "--password", "x")
    assert again.returncode == 1 and "exists" in again.stderr

    changed = users(config, "passwd", "alice", "--password", "Needle-Three")
    assert changed.returncode == 0, changed.stderr
    assert rows(db_path)[("alice", "example.org", "SHA-256")] == \
        digest.ha1("alice", "example.org", "Needle-Three", "SHA-256")
    assert users(config, "passwd", "carol", "--password", "x").returncode == 1

    assert users(config, "remove", "alice").returncode == 0
    assert users(config, "remove", "alice").returncode == 1
    assert users(config, "list").stdout.split() == ["bob"]
    assert not any(name == "alice" for name, _, _ in rows(db_path))


def test_password_prompt(config, db_path):
    done = users(config, "add", "alice", stdin="Typed-Pw\nTyped-Pw\n")
    assert done.returncode == 0, done.stderr
    assert rows(db_path)[("alice", "example.com", "MD5")] == \
        digest.ha1("alice", "example.com", "Typed-Pw")
    mismatch = users(config, "passwd", "alice", stdin="one\ntwo\n")
    assert mismatch.returncode == 1 and "match" in mismatch.stderr
    empty = users(config, "passwd", "alice", stdin="\n\n")
    assert empty.returncode == 1
    assert rows(db_path)[("alice", "example.com", "MD5")] == \
        digest.ha1("alice", "example.com", "Typed-Pw")


def test_config_option_before_the_command(config):
    env = dict(os.environ, PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, "-m", "reticulum.users", "--config", config, "list"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr


def test_bad_name_and_bad_config(config, tmp_path):
    bad = users(config, "add", "a@b", "--password", "x")
    assert bad.returncode == 1 and "invalid user name" in bad.stderr
    missing = users(str(tmp_path / "nope.toml"), "list")
    assert missing.returncode == 1 and "nope.toml" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_running_server_sees_cli_changes(config, db_path):
    os.makedirs(os.path.dirname(db_path), exist_ok=True)
    running = AccountStore(db_path, DOMAINS)  # default poll interval, like the server
    running.start()
    try:
        assert users(config, "add", "alice", "--password", "pw").returncode == 0
        deadline = time.monotonic() + 3.0
        while not running.exists("alice") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert running.ha1("alice", "example.com", "MD5") == digest.ha1("alice", "example.com", "pw")
        assert users(config, "remove", "alice").returncode == 0
        deadline = time.monotonic() + 3.0
        while running.exists("alice") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not running.exists("alice")
    finally:
        running.stop()


def test_list_marks_accounts_of_the_config(tmp_path):
    path = tmp_path / "site.toml"
    path.write_text('domains = ["example.com"]\nstate_dir = "state"\n[users]\nalice = "a-secret"\n')
    assert users(str(path), "add", "zoe", "--password", "z").returncode == 0
    listed = users(str(path), "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == ["alice  (from [users] in the config)", "zoe"]


def test_removing_an_account_of_the_config_says_it_comes_back(tmp_path):
    path = tmp_path / "site.toml"
    path.write_text('domains = ["example.com"]\nstate_dir = "state"\n[users]\nalice = "a-secret"\n')
    assert users(str(path), "passwd", "alice", "--password", "x").returncode == 1  # not stored yet
    assert users(str(path), "add", "alice", "--password", "x").returncode == 0
    removed = users(str(path), "remove", "alice")
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.strip() == (
        "removed alice; but [users] in %s defines alice, so it comes back at the next start: "
        "delete its line there to remove it for good" % path)
    again = users(str(path), "remove", "alice")
    assert again.returncode == 0 and again.stdout.startswith("alice is not stored yet; but [users]")
