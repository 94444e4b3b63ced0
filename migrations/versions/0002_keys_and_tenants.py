"""Keys and tenants: API keys get a tenant, an admin flag and an optional expiry; datasets, training
jobs, models, cohorts and reports record the tenant that created them.

Existing keys become tenants of their own name (what `promptehr apikey create` gives a new key by
default) and are not admins. Existing resources get no tenant (NULL): nobody can tell which key
made them, so only admin keys (`promptehr apikey create --admin`) see them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 06:40:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

OWNED_TABLES = ("datasets", "training_jobs", "models", "cohorts", "reports")


def upgrade() -> None:
    with op.batch_alter_table('api_keys') as batch:
        batch.add_column(sa.Column('tenant', sa.String(length=200), nullable=True))
        batch.add_column(sa.Column('is_admin', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE api_keys SET tenant = name")
    with op.batch_alter_table('api_keys') as batch:
        batch.alter_column('tenant', existing_type=sa.String(length=200), nullable=False)
        # the models give the default (False) on insert; the server default only filled old rows
        batch.alter_column('is_admin', existing_type=sa.Boolean(), server_default=None)
        batch.create_index(batch.f('ix_api_keys_tenant'), ['tenant'])
    for table in OWNED_TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column('tenant', sa.String(length=200), nullable=True))
            batch.create_index(batch.f(f'ix_{table}_tenant'), ['tenant'])


def downgrade() -> None:
    for table in reversed(OWNED_TABLES):
        with op.batch_alter_table(table) as batch:
            batch.drop_index(batch.f(f'ix_{table}_tenant'))
            batch.drop_column('tenant')
    with op.batch_alter_table('api_keys') as batch:
        batch.drop_index(batch.f('ix_api_keys_tenant'))
        batch.drop_column('expires_at')
        batch.drop_column('is_admin')
        batch.drop_column('tenant')
