"""The administration commands of ``python -m app``: database migrations and accounts."""

from __future__ import annotations

import argparse
import getpass
import sys
import time

from sqlalchemy.exc import OperationalError

from app.config import get_settings
from app.db import Database, database_url, migrate_embedded, upgrade


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m app")
    sub = parser.add_subparsers(dest="group", required=True)
    db = sub.add_parser("db", help="the database")
    db.add_argument("action", choices=["upgrade", "current"])
    db.add_argument(
        "--wait",
        type=float,
        default=0,
        metavar="SECONDS",
        help="retry while the database is not reachable yet, up to this long (a container "
        "that starts beside its database)",
    )
    user = sub.add_parser("user", help="reviewer accounts")
    user_sub = user.add_subparsers(dest="action", required=True)
    add = user_sub.add_parser("add", help="add an account; the password is read from stdin")
    add.add_argument("name")
    add.add_argument("--role", choices=["reviewer", "admin"], default="reviewer")
    delete = user_sub.add_parser("delete", help="delete an account (its sessions end)")
    delete.add_argument("name")
    args = parser.parse_args(argv)
    settings = get_settings()
    url = database_url(settings.database_url, settings.store_dir)
    if args.group == "db":
        deadline = time.monotonic() + args.wait
        while True:
            try:
                if args.action == "upgrade":
                    upgrade(url)
                break
            except OperationalError as exc:
                if time.monotonic() >= deadline:
                    print(f"the database is not reachable: {type(exc).__name__}", file=sys.stderr)
                    return 1
                time.sleep(1)
        database = Database(url)
        state = "current" if database.is_current() else "not current"
        print(f"database schema: {state}")
        database.dispose()
        return 0
    from app.accounts import add_user, delete_user

    migrate_embedded(url)
    database = Database(url)
    if not database.is_current():
        print(
            "the database is not at the current migration: run `python -m app db upgrade`",
            file=sys.stderr,
        )
        return 1
    try:
        with database.session() as session:
            if args.action == "add":
                password = (
                    getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline()
                ).rstrip("\n")
                add_user(session, args.name, args.role, password)
                print(f"user {args.name} added ({args.role})")
            else:
                delete_user(session, args.name)
                print(f"user {args.name} deleted")
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    finally:
        database.dispose()
    return 0
