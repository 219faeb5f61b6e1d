"""SQLAlchemy 2 ORM at its defaults on psycopg 3 (a connection pool, a
transaction per Session), then an alembic project's two revisions upgraded
to head and downgraded to base."""

import os
import pathlib

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from check import expect, fail, step

URL = os.environ["DATABASE_URL"].replace("postgres://", "postgresql+psycopg://", 1)
HERE = pathlib.Path(__file__).resolve().parent


class Base(DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "sa_authors"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(100), unique=True)
    books: Mapped[list["Book"]] = relationship(back_populates="author", cascade="all, delete-orphan")


class Book(Base):
    __tablename__ = "sa_books"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    copies: Mapped[int] = mapped_column(default=1)
    author_id: Mapped[int] = mapped_column(sa.ForeignKey("sa_authors.id"))
    author: Mapped[Author] = relationship(back_populates="books")


class Visit(Base):
    __tablename__ = "sa_visits"
    id: Mapped[int] = mapped_column(primary_key=True)
    page: Mapped[str] = mapped_column(sa.String(50))


def bulk_inserts_then_sessions():
    """ORM bulk inserts go through psycopg's executemany, a pipeline ending
    with Sync and Flush; each following Session selects and closes, which
    rolls back, after which psycopg sends DEALLOCATE ALL."""
    step("bulk inserts, then new Sessions that select and close")
    engine = sa.create_engine(URL)
    Visit.__table__.drop(engine, checkfirst=True)
    Visit.__table__.create(engine)
    for round_ in range(7):
        with Session(engine) as session:
            session.execute(sa.insert(Visit), [{"page": f"page {round_}.{i}"} for i in range(3)])
            session.commit()
        with Session(engine) as session:
            expect(len(session.scalars(sa.select(Visit)).all()), 3 * (round_ + 1), "visits after the bulk insert")
    Visit.__table__.drop(engine)
    engine.dispose()


def orm_rounds():
    engine = sa.create_engine(URL)
    step("create the tables")
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    tables = set(sa.inspect(engine).get_table_names())
    if not {"sa_authors", "sa_books"} <= tables:
        fail(f"tables after create_all: {sorted(tables)}")
    # Eight rounds: from the sixth run of a query psycopg prepares it, and
    # then sends DEALLOCATE ALL by itself after each ROLLBACK.
    for round_ in range(8):
        step(f"round {round_}: insert, commit, select in a new Session, update, rollback")
        with Session(engine) as session:
            author = Author(name=f"author {round_}", books=[Book(title=f"book {round_}.{i}", copies=i) for i in range(3)])
            session.add(author)
            session.commit()
            author_id = author.id
        with Session(engine) as session:
            author = session.get(Author, author_id)
            expect(author.name, f"author {round_}", "the committed author")
            expect(sorted((b.title, b.copies) for b in author.books), [(f"book {round_}.{i}", i) for i in range(3)], "the committed books")
            for book in author.books:
                book.copies += 10
            session.flush()
            total = session.scalar(sa.select(sa.func.sum(Book.copies)).where(Book.author_id == author_id))
            expect(total, 33, "copies inside the transaction")
            session.rollback()
            total = session.scalar(sa.select(sa.func.sum(Book.copies)).where(Book.author_id == author_id))
            expect(total, 3, "copies after the rollback")
            session.execute(sa.update(Book).where(Book.author_id == author_id).values(copies=Book.copies * 2))
            session.commit()
        with Session(engine) as session:
            counts = session.execute(sa.select(sa.func.count(Author.id), sa.func.sum(Book.copies)).join(Author.books).where(Author.id == author_id)).one()
            expect(tuple(counts), (3, 6), "rows and copies after the committed update")
            try:
                session.add(Author(name=f"author {round_}"))
                session.commit()
                fail("a duplicate author name was committed")
            except sa.exc.IntegrityError:
                session.rollback()
            expect(session.scalar(sa.select(sa.func.count()).select_from(Author)), round_ + 1, "authors after the failed commit")
    Base.metadata.drop_all(engine)
    engine.dispose()


def alembic_up_and_down():
    step("alembic upgrade head")
    config = Config()
    config.set_main_option("script_location", str(HERE / "alembic_project"))
    config.set_main_option("sqlalchemy.url", URL)
    command.upgrade(config, "head")
    engine = sa.create_engine(URL)
    with engine.connect() as conn:
        expect(conn.scalar(sa.text("SELECT version_num FROM alembic_version")), "0002", "alembic_version after upgrade head")
        columns = {c["name"] for c in sa.inspect(conn).get_columns("al_projects")}
        expect(columns, {"id", "name", "owner"}, "columns of the first revision's table after the second")
        conn.execute(sa.text("INSERT INTO al_projects (name, owner) VALUES ('p', 'o')"))
        conn.commit()
    step("alembic downgrade -1, then base")
    command.downgrade(config, "-1")
    with engine.connect() as conn:
        expect(conn.scalar(sa.text("SELECT version_num FROM alembic_version")), "0001", "alembic_version after downgrade -1")
        columns = {c["name"] for c in sa.inspect(conn).get_columns("al_projects")}
        expect(columns, {"id", "name"}, "columns after downgrade -1")
        expect(conn.scalar(sa.text("SELECT name FROM al_projects")), "p", "rows kept by downgrade -1")
    command.downgrade(config, "base")
    with engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
        expect("al_projects" in tables, False, "the table after downgrade base")
        expect(conn.scalar(sa.text("SELECT count(*) FROM alembic_version")), 0, "alembic_version rows after downgrade base")
    engine.dispose()


bulk_inserts_then_sessions()
orm_rounds()
alembic_up_and_down()
print("sqlalchemy and alembic: all checks passed")
