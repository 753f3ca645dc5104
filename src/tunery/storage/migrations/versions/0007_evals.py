"""Evals, their runs (claimed by workers with a lease, as jobs are) and the runs' output items"""

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('evals',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('organization_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=256), nullable=False),
    sa.Column('metadata', sa.JSON(), nullable=True),
    sa.Column('data_source_config', sa.JSON(), nullable=False),
    sa.Column('testing_criteria', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.Integer(), nullable=False),
    sa.Column('sort_key', sa.Float(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('evals', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_evals_organization_id'), ['organization_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_evals_sort_key'), ['sort_key'], unique=False)
        batch_op.create_index(batch_op.f('ix_evals_updated_at'), ['updated_at'], unique=False)
    op.create_table('eval_runs',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('eval_id', sa.String(length=64), nullable=False),
    sa.Column('organization_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=256), nullable=False),
    sa.Column('model', sa.String(length=256), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('data_source', sa.JSON(), nullable=False),
    sa.Column('metadata', sa.JSON(), nullable=True),
    sa.Column('error', sa.JSON(), nullable=True),
    sa.Column('result_counts', sa.JSON(), nullable=False),
    sa.Column('per_criteria', sa.JSON(), nullable=False),
    sa.Column('per_model_usage', sa.JSON(), nullable=False),
    sa.Column('items_done', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.Integer(), nullable=False),
    sa.Column('sort_key', sa.Float(), nullable=False),
    sa.Column('worker_id', sa.String(length=64), nullable=True),
    sa.Column('lease_expires_at', sa.Double(), nullable=True),
    sa.ForeignKeyConstraint(['eval_id'], ['evals.id'], ),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('eval_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_eval_runs_eval_id'), ['eval_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_eval_runs_organization_id'), ['organization_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_eval_runs_sort_key'), ['sort_key'], unique=False)
        batch_op.create_index(batch_op.f('ix_eval_runs_status'), ['status'], unique=False)
    op.create_table('eval_output_items',
    sa.Column('seq', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('run_id', sa.String(length=64), nullable=False),
    sa.Column('datasource_item_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=8), nullable=False),
    sa.Column('datasource_item', sa.JSON(), nullable=False),
    sa.Column('sample', sa.JSON(), nullable=False),
    sa.Column('results', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['eval_runs.id'], ),
    sa.PrimaryKeyConstraint('seq'),
    sa.UniqueConstraint('id')
    )
    with op.batch_alter_table('eval_output_items', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_eval_output_items_run_id'), ['run_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('eval_output_items', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_eval_output_items_run_id'))
    op.drop_table('eval_output_items')
    with op.batch_alter_table('eval_runs', schema=None) as batch_op:
        for column in ('status', 'sort_key', 'organization_id', 'eval_id'):
            batch_op.drop_index(batch_op.f(f'ix_eval_runs_{column}'))
    op.drop_table('eval_runs')
    with op.batch_alter_table('evals', schema=None) as batch_op:
        for column in ('updated_at', 'sort_key', 'organization_id'):
            batch_op.drop_index(batch_op.f(f'ix_evals_{column}'))
    op.drop_table('evals')
