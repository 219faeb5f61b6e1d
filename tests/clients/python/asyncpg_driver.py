"""asyncpg at its defaults (a statement cache, so named prepared statements):
a pool of 10 under many concurrent tasks, COPY both ways, a listener
receiving a NOTIFY from another connection, explicit prepared statements."""

import asyncio
import io
import json
import os

import asyncpg

from check import expect, fail, step
from live import Events

URL = os.environ["DATABASE_URL"]


async def pool_under_many_tasks():
    step("a pool of 10, 200 queries from 50 tasks at once")
    async with asyncpg.create_pool(URL, min_size=10, max_size=10) as pool:
        await pool.execute("DROP TABLE IF EXISTS apg_counts")
        await pool.execute("CREATE TABLE apg_counts (task int PRIMARY KEY, n int NOT NULL)")

        async def task(t):
            await pool.execute("INSERT INTO apg_counts VALUES ($1, 0)", t)
            for i in range(4):
                doubled = await pool.fetchval("SELECT $1::int * 2", t * 100 + i)
                expect(doubled, (t * 100 + i) * 2, f"task {t} query {i}")
                async with pool.acquire() as conn:
                    async with conn.transaction():
                        await conn.execute("UPDATE apg_counts SET n = n + 1 WHERE task = $1", t)
                        n = await conn.fetchval("SELECT n FROM apg_counts WHERE task = $1", t)
                        expect(n, i + 1, f"task {t}'s count inside its transaction")
            return t

        done = await asyncio.gather(*(task(t) for t in range(50)))
        expect(sorted(done), list(range(50)), "tasks finished")
        total = await pool.fetchrow("SELECT count(*) AS tasks, sum(n) AS n FROM apg_counts")
        expect((total["tasks"], total["n"]), (50, 200), "rows and counts after all tasks")

        step("a failed transaction in the pool rolls back and its connection is reused")
        try:
            async with pool.acquire() as conn:
                async with conn.transaction():
                    await conn.execute("UPDATE apg_counts SET n = 0")
                    await conn.execute("SELECT 1 / 0")
            fail("division by zero raised nothing")
        except asyncpg.DivisionByZeroError:
            pass
        expect(await pool.fetchval("SELECT sum(n) FROM apg_counts"), 200, "sum after the rolled-back transaction")


async def copy_both_ways():
    step("copy_records_to_table and copy_from_query")
    conn = await asyncpg.connect(URL)
    try:
        await conn.execute("DROP TABLE IF EXISTS apg_copy")
        await conn.execute("CREATE TABLE apg_copy (id int, name text, score float8)")
        records = [(i, f"name {i}", i / 4) for i in range(2000)]
        status = await conn.copy_records_to_table("apg_copy", records=records, columns=["id", "name", "score"])
        expect(status, "COPY 2000", "status of copy_records_to_table")
        row = await conn.fetchrow("SELECT count(*), sum(id), sum(score) FROM apg_copy")
        expect(tuple(row), (2000, 1999000, 1999000 / 4), "rows copied in")
        out = io.BytesIO()
        status = await conn.copy_from_query(
            "SELECT id, name FROM apg_copy WHERE id < $1 ORDER BY id", 3, output=out, format="csv"
        )
        expect(status, "COPY 3", "status of copy_from_query")
        expect(out.getvalue(), b"0,name 0\n1,name 1\n2,name 2\n", "rows copied out")
    finally:
        await conn.close()


async def listener_gets_a_notify():
    step("add_listener receives a NOTIFY sent on another connection")
    listener = await asyncpg.connect(URL)
    notifier = await asyncpg.connect(URL)
    try:
        received = asyncio.Queue()

        def on_notify(_conn, _pid, channel, payload):
            received.put_nowait((channel, payload))

        await listener.add_listener("apg_events", on_notify)
        await notifier.execute("NOTIFY apg_events, 'hello'")
        await notifier.execute("SELECT pg_notify('apg_events', $1)", "from a parameter")
        got = [await asyncio.wait_for(received.get(), 10) for _ in range(2)]
        expect(got, [("apg_events", "hello"), ("apg_events", "from a parameter")], "notifications received")
        await listener.remove_listener("apg_events", on_notify)
        await notifier.execute("NOTIFY apg_events, 'nobody listens'")
        await asyncio.sleep(0.5)
        expect(received.qsize(), 0, "notifications after remove_listener")
        expect(await listener.fetchval("SELECT 42"), 42, "the listener's connection still answers")
    finally:
        await notifier.close()
        await listener.close()


async def prepared_statements():
    step("explicit prepared statements, run many times and on two connections")
    a = await asyncpg.connect(URL)
    b = await asyncpg.connect(URL)
    try:
        await a.execute("DROP TABLE IF EXISTS apg_items")
        await a.execute("CREATE TABLE apg_items (id int PRIMARY KEY, label text)")
        insert = await a.prepare("INSERT INTO apg_items VALUES ($1, $2)")
        for i in range(20):
            await insert.fetch(i, f"item {i}")
        lookup_a = await a.prepare("SELECT label FROM apg_items WHERE id = $1")
        lookup_b = await b.prepare("SELECT label FROM apg_items WHERE id = $1")
        expect([p.name for p in lookup_a.get_parameters()], ["int4"], "parameter types of the prepared statement")
        for i in range(20):
            expect(await lookup_a.fetchval(i), f"item {i}", f"a's lookup {i}")
            expect(await lookup_b.fetchval(19 - i), f"item {19 - i}", f"b's lookup {19 - i}")
        rows = await (await b.prepare("SELECT id FROM apg_items WHERE id < $1 ORDER BY id")).fetch(3)
        expect([r["id"] for r in rows], [0, 1, 2], "rows of a prepared multi-row select")
        cursor_rows = []
        async with b.transaction():
            async for record in b.cursor("SELECT id FROM apg_items ORDER BY id", prefetch=4):
                cursor_rows.append(record["id"])
        expect(cursor_rows, list(range(20)), "rows through a cursor")
    finally:
        await a.close()
        await b.close()


async def live_query():
    """pgr.subscribe through asyncpg's prepared statements, with the result
    decoded as jsonb; the deltas of a committed transaction arrive as events."""
    step("live query: pgr.subscribe as a prepared statement, then deltas as events")
    conn = await asyncpg.connect(URL)
    try:
        await conn.execute("DROP TABLE IF EXISTS apg_live; CREATE TABLE apg_live (id int PRIMARY KEY, n int)")
        registered = json.loads(
            await conn.fetchval("SELECT pgr.subscribe($1, $2, 'delta')", "apg_live", "SELECT id, n FROM apg_live")
        )
        expect(registered["query_id"], "apg_live", "what pgr.subscribe returned")
        events = await asyncio.to_thread(Events, URL.rsplit("/", 1)[1], "apg_live")
        try:
            expect((await asyncio.to_thread(events.next))["type"], "subscribed", "the first event")
            snapshot = await asyncio.to_thread(events.next)
            expect(snapshot["inserted"], [], "the snapshot of an empty table")
            async with conn.transaction():
                await conn.executemany("INSERT INTO apg_live VALUES ($1, $2)", [(1, 10), (2, 20)])
            delta = await asyncio.to_thread(events.next)
            expect(
                sorted(row["id"] for row in delta["inserted"]),
                [1, 2],
                "one delta with both rows of the transaction",
            )
        finally:
            events.close()
    finally:
        await conn.close()


async def main():
    await pool_under_many_tasks()
    await copy_both_ways()
    await listener_gets_a_notify()
    await prepared_statements()
    await live_query()
    print("asyncpg: all checks passed")


asyncio.run(main())
