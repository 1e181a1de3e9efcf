#!/usr/bin/env bash
# Registrations per second through the server (SIPp, 10,000 users, UDP). Options: see register.py.
cd "$(dirname "$0")/.." && exec .venv/bin/python bench/register.py "$@"
