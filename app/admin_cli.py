"""The administration commands of ``python -m app``: database migrations and accounts."""

from __future__ import annotations

import argparse
import getpass
import sys

from app.config import get_settings
from app.db import Database, database_url, upgrade


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m app")
    sub = parser.add_subparsers(dest="group", required=True)
    db = sub.add_parser("db", help="the database")
    db.add_argument("action", choices=["upgrade", "current"])
    user = sub.add_parser("user", help="reviewer accounts")
    user_sub = user.add_subparsers(dest="action", required=True)
    add = user_sub.add_parser("add", help="add an account; the password is read from stdin")
    add.add_argument("name")
    add.add_argument("--role", choices=["reviewer", "admin"], default="reviewer")
    delete = user_sub.add_parser("delete", help="delete an account (its sessions end)")
    delete.add_argument("name")
    args = parser.parse_args(argv)
    settings = get_settings()
    url = database_url(settings.database_url, settings.data_dir)
    if args.group == "db":
        if args.action == "upgrade":
            upgrade(url)
        database = Database(url)
        state = "current" if database.is_current() else "not current"
        print(f"database schema: {state}")
        database.dispose()
        return 0
    from app.accounts import add_user, delete_user

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
