"""Manage local accounts: ``python -m reticulum.users`` (``./run.sh users ...``).

    users add NAME [--password P]      create an account (asks twice when P is absent)
    users passwd NAME [--password P]   change a password
    users remove NAME                  delete an account
    users list                         print the account names, one a line; those that
                                       the config's [users] table defines are marked

Every command takes ``--config PATH`` (default ``reticulum.toml``, relative to the current
folder, as for the server). The database is the one in the config's ``state_dir``; a hash is
stored for every served domain (each one is a realm). Safe while the server runs: it picks the
change up within about a second. The server creates or resets the accounts of ``[users]`` at
every start, so those come back after ``remove`` until their line is deleted.
"""
from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Union

from reticulum.accounts import AccountStore, valid_name
from reticulum.cluster import RedisAccounts
from reticulum.config import ConfigError, load_config

#: where the accounts are: this host's database, or the cluster's Redis
Store = Union[AccountStore, RedisAccounts]

DEFAULT_CONFIG = "reticulum.toml"


class UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", metavar="PATH", default=argparse.SUPPRESS,
        help="configuration file (default: %s)" % DEFAULT_CONFIG,
    )
    parser = argparse.ArgumentParser(
        prog="users", parents=[common], description="Manage Reticulum's local accounts."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for name, text in (("add", "create an account"), ("passwd", "change a password")):
        sub = commands.add_parser(name, parents=[common], help=text, description=text)
        sub.add_argument("name", metavar="NAME")
        sub.add_argument("--password", metavar="P",
                         help="the password (asked for interactively when absent)")
    sub = commands.add_parser("remove", parents=[common], help="delete an account")
    sub.add_argument("name", metavar="NAME")
    commands.add_parser("list", parents=[common], help="list the account names")
    return parser


def _ask_password(name: str) -> str:
    try:
        first = getpass.getpass("Password for %s: " % name)
        second = getpass.getpass("Repeat it: ")
    except (EOFError, KeyboardInterrupt):
        raise UsageError("no password given") from None
    if first != second:
        raise UsageError("the passwords do not match")
    return first


def _load(config_path: str):
    try:
        return load_config(config_path)
    except ConfigError as e:
        raise UsageError(str(e)) from None


def _open_store(config) -> Store:
    if config.cluster.redis is not None:  # the accounts every node of the cluster reads
        shared = RedisAccounts(config.cluster.redis, list(config.domains),
                               prefix=config.cluster.prefix, watch=False)
        shared.start()
        return shared
    os.makedirs(config.state_dir, exist_ok=True)
    store = AccountStore(config.database, list(config.domains),
                         watch=False)
    store.start()
    return store


def run(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config_path = getattr(args, "config", DEFAULT_CONFIG)
    try:
        if args.command in ("add", "passwd", "remove") and not valid_name(args.name):
            raise UsageError("invalid user name %r (no blanks, @ : \" \\ < > %%)" % args.name)
        config = _load(config_path)
        store = _open_store(config)
        try:
            return _command(store, args, config)
        finally:
            store.stop()
    except UsageError as e:
        print("users: %s" % e, file=sys.stderr)
        return 1
    except Exception as e:  # database trouble: one line, not a traceback
        print("users: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        return 1


#: the mark ``list`` puts after an account that the config's [users] table defines
FROM_CONFIG = "(from [users] in the config)"


def _command(store: Store, args, config) -> int:
    defined = set(config.users or {})
    if args.command == "list":
        names = set(store.names()) | defined  # [users] accounts exist once the server starts
        width = max((len(n) for n in names), default=0)
        for name in sorted(names):
            print(("%-*s  %s" % (width, name, FROM_CONFIG)) if name in defined else name)
        return 0
    name = args.name
    if args.command == "remove":
        removed = store.remove(name)
        if name in defined:
            done = ("removed %s" % name) if removed else ("%s is not stored yet" % name)
            print("%s; but [users] in %s defines %s, so it comes back at the next start: "
                  "delete its line there to remove it for good" % (done, config.path, name))
            return 0
        if not removed:
            raise UsageError("no account named %r" % name)
        print("removed %s" % name)
        return 0
    exists = store.exists(name)
    if args.command == "add" and exists:
        raise UsageError("%r already exists (use passwd to change the password)" % name)
    if args.command == "passwd" and not exists:
        raise UsageError("no account named %r (use add to create it)" % name)
    password = args.password if args.password is not None else _ask_password(name)
    if not password:
        raise UsageError("the password must not be empty")
    store.set_password(name, password)
    print("%s %s" % ("added" if args.command == "add" else "changed password of", name))
    return 0


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
