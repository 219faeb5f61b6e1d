"""Django 5 on psycopg 3: `manage.py migrate` for the project in
django_project/, then `manage.py test`, whose runner creates a test
database, migrates it, runs a test case that writes and reads, and drops it.

An upstream server behind pgshare is one database: pgshare passes `CREATE
DATABASE test_<name>` on to the server, but serves no database of that name
(3D000). There (CLIENT_MATRIX_ENGINE=upstream) the test database is the
database itself, kept (`--keepdb`), as the reason printed says."""

import os
import pathlib
import subprocess
import sys

import psycopg

from check import expect, fail, step

PROJECT = pathlib.Path(__file__).resolve().parent / "django_project"
DATABASE = os.environ["PGDATABASE"]
UPSTREAM = os.environ.get("CLIENT_MATRIX_ENGINE") == "upstream"


def manage(*args, env=None):
    print(f"$ manage.py {' '.join(args)}", flush=True)
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=100,
    )
    print(done.stdout + done.stderr, flush=True)
    if done.returncode != 0:
        fail(f"manage.py {' '.join(args)} exited with {done.returncode}")
    return done.stdout + done.stderr


step("manage.py migrate")
out = manage("migrate", "--noinput")
if "Applying notes.0001_initial... OK" not in out:
    fail("migrate did not apply notes.0001_initial")
with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
    applied = conn.execute("SELECT app, name FROM django_migrations WHERE app = 'notes'").fetchall()
    expect(applied, [("notes", "0001_initial")], "migrations recorded")
    columns = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'notes_note' ORDER BY ordinal_position"
    ).fetchall()
    expect([c[0] for c in columns], ["id", "title", "body", "stars", "created"], "columns of notes_note")

step("manage.py test")
if UPSTREAM:
    print(
        "upstream engine: pgshare serves only the upstream URL's database, so Django's "
        f"test database test_{DATABASE} could be created on the server but not reached; "
        f"the tests run in {DATABASE} itself with --keepdb",
        flush=True,
    )
    out = manage("test", "notes", "--noinput", "--keepdb", "-v", "2", env={"DJANGO_TEST_DATABASE": DATABASE})
    if f"Using existing test database for alias 'default' ('{DATABASE}')" not in out:
        fail("the test runner did not use the existing database")
else:
    out = manage("test", "notes", "--noinput", "-v", "2")
    if f"Creating test database for alias 'default' ('test_{DATABASE}')" not in out:
        fail("the test runner created no test database")
    if f"Destroying test database for alias 'default' ('test_{DATABASE}')" not in out:
        fail("the test runner did not drop its test database")
if "Ran 4 tests" not in out or "\nOK" not in out:
    fail("the test case did not run 4 tests successfully")

with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
    databases = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
    expect(f"test_{DATABASE}" in databases, False, "the test database after the run")
    notes = conn.execute("SELECT count(*) FROM notes_note").fetchone()[0]
    expect(notes, 0, "notes left in the database by the test run")
print("django: all checks passed")
