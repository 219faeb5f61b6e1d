"""The second revision: each project gets an owner."""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade():
    op.add_column("al_projects", sa.Column("owner", sa.Text))


def downgrade():
    op.drop_column("al_projects", "owner")
