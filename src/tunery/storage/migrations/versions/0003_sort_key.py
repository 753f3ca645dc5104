"""Files and jobs: a creation order finer than a second"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('files', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sort_key', sa.Float(), nullable=False, server_default="0"))
        batch_op.create_index(batch_op.f('ix_files_sort_key'), ['sort_key'], unique=False)
    op.execute("UPDATE files SET sort_key = created_at")  # rows from before keep their order by the second

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sort_key', sa.Float(), nullable=False, server_default="0"))
        batch_op.create_index(batch_op.f('ix_jobs_sort_key'), ['sort_key'], unique=False)
    op.execute("UPDATE jobs SET sort_key = created_at")  # rows from before keep their order by the second



def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_jobs_sort_key'))
        batch_op.drop_column('sort_key')

    with op.batch_alter_table('files', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_files_sort_key'))
        batch_op.drop_column('sort_key')

