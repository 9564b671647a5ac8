"""Specimens, cells, the audit trail, reviewer accounts and sessions.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None

TZ = sa.DateTime(timezone=True)

# PostgreSQL: the audit trail is append-only for everyone, the service included.
APPEND_ONLY = """
CREATE FUNCTION audit_events_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE OR TRUNCATE
    ON audit_events FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();
"""
# SQLite: the same refusal, row by row.
APPEND_ONLY_SQLITE = [
    """CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
       BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: UPDATE refused'); END""",
    """CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
       BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: DELETE refused'); END""",
]


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(256), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("deleted_at", TZ),
    )
    op.create_table(
        "sessions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("expires_at", TZ, nullable=False),
    )
    op.create_table(
        "login_failures",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("address", sa.String(64), nullable=False),
        sa.Column("at", TZ, nullable=False),
    )
    op.create_index("ix_login_failures_name_at", "login_failures", ["name", "at"])
    op.create_table(
        "specimens",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("accession", sa.String(64), nullable=False, unique=True),
        sa.Column("patient", sa.String(64)),
        sa.Column("collected_at", TZ),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("amendments", sa.Integer, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("finalised_by", sa.String(64)),
        sa.Column("finalised_at", TZ),
    )
    op.create_table(
        "cells",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("specimen_id", sa.Integer, sa.ForeignKey("specimens.id"), nullable=False),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("image_png", sa.LargeBinary, nullable=False),
        sa.Column("machine_label", sa.String(16), nullable=False),
        sa.Column("label", sa.String(16), nullable=False),
        sa.Column("probabilities", sa.JSON, nullable=False),
        sa.Column("review_reasons", sa.JSON, nullable=False),
        sa.Column("ood_score", sa.Float),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("changed_by", sa.String(64)),
        sa.Column("changed_at", TZ),
    )
    op.create_index("ix_cells_specimen_id", "cells", ["specimen_id"])
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("specimen_id", sa.Integer, sa.ForeignKey("specimens.id"), nullable=False),
        sa.Column("at", TZ, nullable=False),
        sa.Column("actor", sa.String(80), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("detail", sa.JSON, nullable=False),
        sa.Column("model_version", sa.String(32)),
        sa.Column("note", sa.Text),
    )
    op.create_index("ix_audit_events_specimen_id", "audit_events", ["specimen_id"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(APPEND_ONLY)
    elif op.get_bind().dialect.name == "sqlite":
        for statement in APPEND_ONLY_SQLITE:
            op.execute(statement)


def downgrade() -> None:
    for table in ("audit_events", "cells", "specimens", "login_failures", "sessions", "users"):
        op.drop_table(table)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS audit_events_append_only()")
