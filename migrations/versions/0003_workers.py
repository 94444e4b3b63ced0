"""Workers: each process that takes jobs publishes its host, queue and the devices it offers a training
job, at start and every sweep interval (worker/presence.py); POST /training-jobs refuses a `devices`
that no live worker offers.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 07:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'workers',
        sa.Column('id', sa.String(length=300), nullable=False),
        sa.Column('hostname', sa.String(length=255), nullable=False),
        sa.Column('queue', sa.String(length=200), nullable=False),
        sa.Column('device_kind', sa.String(length=16), nullable=False),
        sa.Column('device_count', sa.Integer(), nullable=False),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_seen', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_workers')),
    )
    op.create_index(op.f('ix_workers_queue'), 'workers', ['queue'])
    op.create_index(op.f('ix_workers_last_seen'), 'workers', ['last_seen'])


def downgrade() -> None:
    op.drop_index(op.f('ix_workers_last_seen'), table_name='workers')
    op.drop_index(op.f('ix_workers_queue'), table_name='workers')
    op.drop_table('workers')
