"""Reticulum: a SIP proxy and registrar built on Twisted."""

__version__ = "0.1.0"
