// node-postgres (pg) at its defaults: a Pool of 10 under concurrent
// queries, parameterized and named (prepared) queries, a transaction rolled
// back, LISTEN/NOTIFY on a dedicated client.
import pg from 'pg';
import { expect, fail, step } from './check.mjs';
import { Events } from './live.mjs';

const connectionString = process.env.DATABASE_URL;
const pool = new pg.Pool({ connectionString, max: 10 });

step('a Pool of 10, 100 parameterized queries at once');
await pool.query('DROP TABLE IF EXISTS np_items');
await pool.query('CREATE TABLE np_items (id int PRIMARY KEY, label text NOT NULL, n int NOT NULL DEFAULT 0)');
const inserted = await Promise.all(
  Array.from({ length: 100 }, (_, i) =>
    pool.query('INSERT INTO np_items (id, label) VALUES ($1, $2) RETURNING id', [i, `label ${i}`]),
  ),
);
expect(inserted.map((r) => r.rows[0].id).sort((a, b) => a - b), Array.from({ length: 100 }, (_, i) => i), 'ids returned');
const labels = await Promise.all(
  Array.from({ length: 100 }, (_, i) => pool.query('SELECT label FROM np_items WHERE id = $1', [99 - i])),
);
labels.forEach((r, i) => expect(r.rows, [{ label: `label ${99 - i}` }], `label of row ${99 - i}`));
expect(pool.totalCount <= 10, true, 'clients the pool opened at most');

step('named (prepared) queries from many pool clients');
const named = await Promise.all(
  Array.from({ length: 40 }, (_, i) =>
    pool.query({ name: 'np-count-above', text: 'SELECT count(*)::int AS c FROM np_items WHERE id >= $1', values: [i] }),
  ),
);
named.forEach((r, i) => expect(r.rows[0].c, 100 - i, `named query ${i}`));

step('a transaction rolled back, another committed');
const client = await pool.connect();
try {
  await client.query('BEGIN');
  await client.query('UPDATE np_items SET n = n + 1');
  expect((await client.query('SELECT sum(n)::int AS s FROM np_items')).rows[0].s, 100, 'sum inside the transaction');
  await client.query('ROLLBACK');
  expect((await pool.query('SELECT sum(n)::int AS s FROM np_items')).rows[0].s, 0, 'sum after ROLLBACK');
  await client.query('BEGIN');
  await client.query('UPDATE np_items SET n = 2 WHERE id < $1', [10]);
  await client.query('COMMIT');
  try {
    await client.query('BEGIN');
    await client.query('INSERT INTO np_items (id, label) VALUES (1, $1)', ['duplicate']);
    fail('a duplicate key was inserted');
  } catch (err) {
    expect(err.code, '23505', 'SQLSTATE of the duplicate key');
    await client.query('ROLLBACK');
  }
} finally {
  client.release();
}
expect((await pool.query('SELECT sum(n)::int AS s FROM np_items')).rows[0].s, 20, 'sum after COMMIT');

step('LISTEN on a dedicated client, NOTIFY from the pool');
const listener = new pg.Client({ connectionString });
await listener.connect();
const received = [];
let wake;
listener.on('notification', (note) => {
  received.push([note.channel, note.payload]);
  if (wake) wake();
});
await listener.query('LISTEN np_events');
await pool.query("NOTIFY np_events, 'one'");
await pool.query('SELECT pg_notify($1, $2)', ['np_events', 'two']);
const deadline = Date.now() + 10000;
while (received.length < 2 && Date.now() < deadline) {
  await new Promise((resolve) => {
    wake = resolve;
    setTimeout(resolve, 200);
  });
}
expect(received, [['np_events', 'one'], ['np_events', 'two']], 'notifications received');
await listener.query('UNLISTEN np_events');
await pool.query("NOTIFY np_events, 'nobody listens'");
await new Promise((resolve) => setTimeout(resolve, 300));
expect(received.length, 2, 'notifications after UNLISTEN');
await listener.end();

step('live query: pgr.subscribe with a parameterized query, then deltas as events');
await pool.query('DROP TABLE IF EXISTS np_live');
await pool.query('CREATE TABLE np_live (id int PRIMARY KEY, label text)');
const registered = await pool.query('SELECT pgr.subscribe($1, $2) AS r', ['np_live', 'SELECT id, label FROM np_live WHERE id < 100']);
expect(registered.rows[0].r.query_id, 'np_live', 'what pgr.subscribe returned (jsonb, parsed)');
const database = new URL(connectionString).pathname.slice(1);
const events = await Events.open(database, 'np_live');
try {
  expect((await events.next()).type, 'subscribed', 'the first event');
  expect((await events.next()).inserted, [], 'the snapshot of an empty table');
  await pool.query('INSERT INTO np_live VALUES ($1, $2), ($3, $4)', [1, 'in', 500, 'outside the query']);
  const delta = await events.next();
  expect([delta.inserted, delta.deleted], [[{ id: 1, label: 'in' }], []], 'the delta: only the row the query reads');
  await pool.query('DELETE FROM np_live WHERE id = 1');
  const removed = await events.next();
  expect([removed.inserted, removed.deleted, removed.seq > delta.seq], [[], [{ id: 1, label: 'in' }], true], 'the delta of the DELETE');
} finally {
  events.close();
}

await pool.end();
console.log('node-postgres: all checks passed');
