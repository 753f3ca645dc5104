"""Checkpoints: the training type of their weights (lora | full), recorded when they are written"""

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('checkpoints', schema=None) as batch_op:
        batch_op.add_column(sa.Column('training_type', sa.String(length=8), nullable=True))
    # Checkpoints written before: their job's resolved training type.
    jobs = sa.table('jobs', sa.column('id', sa.String), sa.column('hyperparameters', sa.JSON))
    checkpoints = sa.table('checkpoints', sa.column('job_id', sa.String), sa.column('training_type', sa.String))
    connection = op.get_bind()
    for job_id, hyperparameters in connection.execute(sa.select(jobs.c.id, jobs.c.hyperparameters)):
        kind = (hyperparameters or {}).get('training_type') or 'lora'
        connection.execute(sa.update(checkpoints).where(checkpoints.c.job_id == job_id).values(training_type=kind))
    with op.batch_alter_table('checkpoints', schema=None) as batch_op:
        batch_op.alter_column('training_type', existing_type=sa.String(length=8), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('checkpoints', schema=None) as batch_op:
        batch_op.drop_column('training_type')
