"""psycopg 3 at its defaults and with everything prepared: transactions,
pipelines with an error in the middle, executemany then DROP TABLE (after
which psycopg sends DEALLOCATE ALL by itself), COPY both ways, LISTEN/NOTIFY,
and two connections used alternately from one thread."""

import os
import threading
import time

import psycopg
from psycopg import errors, pq

from check import expect, fail, step
from live import Events

URL = os.environ["DATABASE_URL"]


def defaults_use_transactions():
    step("defaults: autocommit off, so every statement runs in a transaction")
    with psycopg.connect(URL) as conn:
        expect(conn.autocommit, False, "autocommit at the defaults")
        cur = conn.cursor()
        cur.execute("DROP TABLE IF EXISTS psy_items")
        cur.execute("CREATE TABLE psy_items (id int PRIMARY KEY, name text NOT NULL)")
        conn.commit()
        cur.execute("INSERT INTO psy_items VALUES (%s, %s)", (1, "rolled back"))
        expect(conn.info.transaction_status, pq.TransactionStatus.INTRANS, "status after an INSERT")
        conn.rollback()
        cur.execute("SELECT count(*) FROM psy_items")
        expect(cur.fetchone()[0], 0, "rows after ROLLBACK")
        cur.execute("INSERT INTO psy_items VALUES (%s, %s), (%s, %s)", (1, "one", 2, "two"))
        conn.commit()
        # More runs than prepare_threshold (5): the query becomes a prepared statement.
        for i in range(8):
            cur.execute("SELECT name FROM psy_items WHERE id = %s", (1 + i % 2,))
            expect(cur.fetchone()[0], ["one", "two"][i % 2], f"prepared select, run {i}")
        conn.commit()
    with psycopg.connect(URL) as conn:
        rows = conn.execute("SELECT id, name FROM psy_items ORDER BY id").fetchall()
        expect(rows, [(1, "one"), (2, "two")], "committed rows seen by a new connection")


def everything_prepared():
    step("prepare_threshold=0: every statement prepared")
    with psycopg.connect(URL, prepare_threshold=0) as conn:
        for i in range(3):
            row = conn.execute("SELECT %s::int + 1, %s::text", (i, f"v{i}")).fetchone()
            expect(row, (i + 1, f"v{i}"), f"prepared select {i}")
        conn.execute("INSERT INTO psy_items VALUES (%s, %s)", (3, "three"))
        conn.commit()
        count = conn.execute("SELECT count(*) FROM psy_items").fetchone()[0]
        expect(count, 3, "rows after a prepared INSERT")
        names = conn.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE NOT from_sql"
        ).fetchone()[0]
        if names < 1:
            fail(f"no protocol-level prepared statement on the session: {names}")
        conn.commit()


def pipeline_with_an_error_in_the_middle():
    step("pipeline: an error in the middle aborts what follows, the connection still works")
    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS psy_pipe")
        conn.execute("CREATE TABLE psy_pipe (id int PRIMARY KEY)")
        try:
            with conn.pipeline() as pipeline:
                conn.execute("INSERT INTO psy_pipe VALUES (1)")
                pipeline.sync()
                conn.execute("INSERT INTO psy_pipe VALUES (1)")
                after = conn.execute("INSERT INTO psy_pipe VALUES (2)")
            fail("the duplicate key in the pipeline raised nothing")
        except errors.UniqueViolation:
            pass
        try:
            after.fetchone()
            fail("the statement after the error was not aborted")
        except psycopg.ProgrammingError:
            pass
        rows = conn.execute("SELECT array_agg(id ORDER BY id) FROM psy_pipe").fetchone()[0]
        expect(rows, [1], "rows after the failed pipeline")
        with conn.pipeline():
            first = conn.execute("SELECT 10")
            second = conn.execute("SELECT 20")
        expect((first.fetchone()[0], second.fetchone()[0]), (10, 20), "a pipeline after the failed one")
    with psycopg.connect(URL) as conn:
        # The same with a transaction open (the defaults): the error aborts it.
        try:
            with conn.pipeline():
                conn.execute("INSERT INTO psy_pipe VALUES (3)")
                conn.execute("INSERT INTO psy_pipe VALUES (1)")
                conn.execute("INSERT INTO psy_pipe VALUES (4)")
            fail("the duplicate key in the transaction's pipeline raised nothing")
        except errors.UniqueViolation:
            pass
        expect(conn.info.transaction_status, pq.TransactionStatus.INERROR, "status after the error")
        conn.rollback()
        rows = conn.execute("SELECT array_agg(id ORDER BY id) FROM psy_pipe").fetchone()[0]
        expect(rows, [1], "rows after the rolled-back pipeline")
        conn.commit()


def executemany_then_drop_table():
    step("executemany then DROP TABLE (psycopg sends DEALLOCATE ALL), another connection's statements survive")
    with psycopg.connect(URL, autocommit=True) as other, psycopg.connect(URL, autocommit=True) as conn:
        for i in range(7):
            expect(other.execute("SELECT %s::int * 3", (i,)).fetchone()[0], i * 3, f"other's query {i}")
        conn.execute("DROP TABLE IF EXISTS psy_many")
        conn.execute("CREATE TABLE psy_many (id int, name text)")
        cur = conn.cursor()
        cur.executemany("INSERT INTO psy_many VALUES (%s, %s)", [(i, f"n{i}") for i in range(20)])
        expect(conn.execute("SELECT count(*), sum(id) FROM psy_many").fetchone(), (20, 190), "rows from executemany")
        if not conn._prepared._names:
            fail("executemany prepared nothing, so DROP TABLE would send no DEALLOCATE ALL")
        conn.execute("DROP TABLE psy_many")
        expect(len(conn._prepared._names), 0, "psycopg's prepared statements after DROP TABLE")
        for i in range(7):
            expect(conn.execute("SELECT %s::int * 5", (i,)).fetchone()[0], i * 5, f"query {i} after DEALLOCATE ALL")
            expect(other.execute("SELECT %s::int * 3", (i,)).fetchone()[0], i * 3, f"other's query {i} after DEALLOCATE ALL")


def copy_in_and_out():
    step("COPY FROM STDIN and TO STDOUT with cursor.copy")
    with psycopg.connect(URL) as conn:
        cur = conn.cursor()
        cur.execute("DROP TABLE IF EXISTS psy_copy")
        cur.execute("CREATE TABLE psy_copy (id int, name text, note text)")
        with cur.copy("COPY psy_copy (id, name, note) FROM STDIN") as copy:
            for i in range(1000):
                copy.write_row((i, f"name {i}", None if i % 2 else "tab\there"))
        conn.commit()
        cur.execute("SELECT count(*), sum(id), count(note) FROM psy_copy")
        expect(cur.fetchone(), (1000, 499500, 500), "rows copied in")
        out = []
        with cur.copy("COPY (SELECT id, name, note FROM psy_copy WHERE id < 3 ORDER BY id) TO STDOUT") as copy:
            copy.set_types(["int4", "text", "text"])
            for row in copy.rows():
                out.append(row)
        expect(out, [(0, "name 0", "tab\there"), (1, "name 1", None), (2, "name 2", "tab\there")], "rows copied out")
        data = b""
        with cur.copy("COPY psy_copy TO STDOUT (FORMAT csv)") as copy:
            for block in copy:
                data += bytes(block)
        expect(data.count(b"\n"), 1000, "lines of COPY TO STDOUT in CSV")
        conn.commit()


def listen_notify():
    step("LISTEN/NOTIFY with conn.notifies()")
    with psycopg.connect(URL, autocommit=True) as listener, psycopg.connect(URL) as notifier:
        listener.execute("LISTEN psy_events")
        notifier.execute("NOTIFY psy_events, 'first'")
        notifier.execute("SELECT pg_notify('psy_events', 'second')")
        got = [n.payload for n in listener.notifies(timeout=0.5)]
        expect(got, [], "notifications before the notifier's commit")
        notifier.commit()
        got = []
        for note in listener.notifies(timeout=10, stop_after=2):
            expect(note.channel, "psy_events", "channel")
            got.append(note.payload)
        expect(got, ["first", "second"], "payloads received")
        listener.execute("UNLISTEN psy_events")
        notifier.execute("NOTIFY psy_events, 'nobody listens'")
        notifier.commit()
        got = [n.payload for n in listener.notifies(timeout=0.5)]
        expect(got, [], "notifications after UNLISTEN")


def two_connections_alternately():
    step("two autocommit connections used alternately from one thread")
    with psycopg.connect(URL, autocommit=True) as a, psycopg.connect(URL, autocommit=True) as b:
        a.execute("DROP TABLE IF EXISTS psy_alt")
        a.execute("CREATE TABLE psy_alt (id int PRIMARY KEY, who text)")
        for i in range(12):
            conn, who = (a, "a") if i % 2 == 0 else (b, "b")
            conn.execute("INSERT INTO psy_alt VALUES (%s, %s)", (i, who))
            count = conn.execute("SELECT count(*) FROM psy_alt WHERE who = %s", (who,)).fetchone()[0]
            expect(count, i // 2 + 1, f"rows of {who} after insert {i}")
        # Both now hold prepared statements (the same psycopg names, _pg3_0 and on).
        expect(bool(a._prepared._names) and bool(b._prepared._names), True, "both connections prepared statements")
        # One of them drops a table inside a pipeline: once the DROP's result
        # is in, psycopg sends DEALLOCATE ALL in the same pipeline (extended
        # protocol) before the next statement; the other's statements must live.
        with a.pipeline() as pipeline:
            a.cursor().executemany("INSERT INTO psy_alt VALUES (%s, 'a')", [(100 + i,) for i in range(10)])
            a.execute("DROP TABLE IF EXISTS psy_alt_scratch")
            pipeline.sync()
            total = a.execute("SELECT count(*) FROM psy_alt")
        expect(total.fetchone()[0], 22, "rows after a's pipeline")
        expect(len(a._prepared._names), 0, "a's prepared statements after its DROP TABLE")
        for i in range(6):
            for conn, who, expected in ((a, "a", 16), (b, "b", 6)):
                count = conn.execute("SELECT count(*) FROM psy_alt WHERE who = %s", (who,)).fetchone()[0]
                expect(count, expected, f"rows of {who} after a's pipelined DEALLOCATE ALL, round {i}")


def cancel_behind_a_running_statement():
    """On a shared engine a statement waits behind another client's running
    one; Connection.cancel() takes it back at once (57014), and nothing of it
    ran. Behind a pool each has a session of its own, so nothing waits."""
    if os.environ.get("CLIENT_MATRIX_ENGINE") == "upstream":
        return
    step("cancel a statement queued behind another client's pg_sleep")
    with psycopg.connect(URL, autocommit=True) as sleeper, psycopg.connect(URL, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS psy_cancelled")
        conn.execute("CREATE TABLE psy_cancelled (x int)")
        sleeping = threading.Thread(target=lambda: sleeper.execute("SELECT pg_sleep(2)"))
        sleeping.start()
        time.sleep(0.3)
        canceller = threading.Timer(0.3, conn.cancel)
        canceller.start()
        started = time.monotonic()
        try:
            conn.execute("INSERT INTO psy_cancelled VALUES (1)")
            fail("the queued INSERT was not cancelled")
        except errors.QueryCanceled:
            pass
        waited = time.monotonic() - started
        if waited > 1.2:
            fail(f"the cancel took effect only after {waited:.1f} s, behind the sleep")
        sleeping.join()
        canceller.join()
        expect(conn.execute("SELECT count(*) FROM psy_cancelled").fetchone()[0], 0, "rows of the cancelled INSERT")


def live_query():
    """pgr.subscribe at psycopg's defaults (inside a transaction it opens,
    so the registration counts once committed), then the rows that enter
    and leave the result as events; a rolled-back INSERT sends nothing."""
    step("live query: pgr.subscribe in a transaction, then deltas as events")
    database = URL.rsplit("/", 1)[1]
    with psycopg.connect(URL) as conn:
        conn.execute("DROP TABLE IF EXISTS psy_live")
        conn.execute("CREATE TABLE psy_live (id int PRIMARY KEY, name text)")
        conn.execute("INSERT INTO psy_live VALUES (1, 'one')")
        registered = conn.execute(
            "SELECT pgr.subscribe(%s, %s)", ("psy_live", "SELECT id, name FROM psy_live")
        ).fetchone()[0]
        expect((registered["query_id"], registered["mode"]), ("psy_live", "delta"), "what pgr.subscribe returned")
        conn.commit()
        events = Events(database, "psy_live")
        try:
            expect(events.next()["type"], "subscribed", "the first event")
            snapshot = events.next()
            expect((snapshot["type"], snapshot["inserted"]), ("snapshot", [{"id": 1, "name": "one"}]), "the snapshot")
            conn.execute("INSERT INTO psy_live VALUES (2, 'rolled back')")
            conn.rollback()
            conn.execute("UPDATE psy_live SET name = 'uno' WHERE id = 1")
            conn.commit()
            delta = events.next()
            expect(
                (delta["inserted"], delta["deleted"], delta["seq"] > snapshot["seq"]),
                ([{"id": 1, "name": "uno"}], [{"id": 1, "name": "one"}], True),
                "the delta of the committed UPDATE (and nothing of the rollback)",
            )
        finally:
            events.close()
        expect(conn.execute("SELECT pgr.unsubscribe('psy_live')").fetchone()[0], True, "pgr.unsubscribe")
        conn.commit()


defaults_use_transactions()
everything_prepared()
pipeline_with_an_error_in_the_middle()
executemany_then_drop_table()
copy_in_and_out()
listen_notify()
two_connections_alternately()
cancel_behind_a_running_statement()
live_query()
print("psycopg: all checks passed")
