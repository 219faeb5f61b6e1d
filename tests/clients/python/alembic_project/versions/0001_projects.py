"""The first revision: a table of projects."""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade():
    op.create_table(
        "al_projects",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
    )
    op.create_index("al_projects_name", "al_projects", ["name"])


def downgrade():
    op.drop_index("al_projects_name", "al_projects")
    op.drop_table("al_projects")
