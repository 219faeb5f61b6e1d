// postgres.js at its defaults (up to 10 connections, every query a named
// prepared statement): concurrent queries, sql.begin transactions committed
// and rolled back, savepoints, sql.listen and sql.notify.
import postgres from 'postgres';
import { expect, fail, step } from './check.mjs';

const sql = postgres(process.env.DATABASE_URL, { onnotice: () => {} });

step('concurrent prepared queries');
await sql`DROP TABLE IF EXISTS pjs_accounts`;
await sql`CREATE TABLE pjs_accounts (id int PRIMARY KEY, owner text NOT NULL, balance int NOT NULL)`;
await Promise.all(
  Array.from({ length: 50 }, (_, i) => sql`INSERT INTO pjs_accounts ${sql({ id: i, owner: `owner ${i}`, balance: 100 })}`),
);
const balances = await Promise.all(
  Array.from({ length: 200 }, (_, i) => sql`SELECT balance, owner FROM pjs_accounts WHERE id = ${i % 50}`),
);
balances.forEach((rows, i) => expect([...rows], [{ balance: 100, owner: `owner ${i % 50}` }], `account ${i % 50}`));
const [{ total }] = await sql`SELECT sum(balance)::int AS total FROM pjs_accounts`;
expect(total, 5000, 'total balance');

step('sql.begin: transfers committed concurrently, one rolled back by an error');
await Promise.all(
  Array.from({ length: 20 }, (_, i) =>
    sql.begin(async (tx) => {
      await tx`UPDATE pjs_accounts SET balance = balance - 10 WHERE id = ${i}`;
      await tx`UPDATE pjs_accounts SET balance = balance + 10 WHERE id = ${49 - i}`;
    }),
  ),
);
try {
  await sql.begin(async (tx) => {
    await tx`UPDATE pjs_accounts SET balance = 0`;
    await tx`SELECT 1 / 0`;
  });
  fail('division by zero raised nothing');
} catch (err) {
  expect(err.code, '22012', 'SQLSTATE of the failed transaction');
}
const after = await sql`SELECT sum(balance)::int AS total, min(balance) AS low, max(balance) AS high FROM pjs_accounts`;
expect([...after], [{ total: 5000, low: 90, high: 110 }], 'balances after the transfers and the rollback');

step('a savepoint rolled back inside a committed transaction');
await sql.begin(async (tx) => {
  await tx`UPDATE pjs_accounts SET owner = 'kept' WHERE id = 0`;
  try {
    await tx.savepoint(async (sp) => {
      await sp`UPDATE pjs_accounts SET owner = 'lost' WHERE id = 1`;
      await sp`INSERT INTO pjs_accounts VALUES (0, 'duplicate', 0)`;
    });
    fail('the duplicate key in the savepoint raised nothing');
  } catch (err) {
    expect(err.code, '23505', 'SQLSTATE in the savepoint');
  }
});
const owners = await sql`SELECT owner FROM pjs_accounts WHERE id < 2 ORDER BY id`;
expect(owners.map((r) => r.owner), ['kept', 'owner 1'], 'owners after the savepoint');

step('sql.listen and sql.notify');
const received = [];
const listening = await sql.listen('pjs_events', (payload) => received.push(payload));
await sql.notify('pjs_events', 'first');
await sql`SELECT pg_notify('pjs_events', ${'second'})`;
const deadline = Date.now() + 10000;
while (received.length < 2 && Date.now() < deadline) {
  await new Promise((resolve) => setTimeout(resolve, 50));
}
expect(received, ['first', 'second'], 'payloads received');
await listening.unlisten();
await sql.notify('pjs_events', 'nobody listens');
await new Promise((resolve) => setTimeout(resolve, 300));
expect(received.length, 2, 'notifications after unlisten');

await sql.end({ timeout: 5 });
console.log('postgres.js: all checks passed');
