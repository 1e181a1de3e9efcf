#!/usr/bin/env bash
# Calls per second through the server (SIPp UAC -> server -> SIPp UAS). Options: see calls.py.
cd "$(dirname "$0")/.." && exec .venv/bin/python bench/calls.py "$@"
