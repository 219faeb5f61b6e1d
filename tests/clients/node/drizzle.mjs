// drizzle-kit push (the schema in drizzle_schema.mjs, through its pg
// driver: it reads the database's catalogs, then creates what is missing),
// pushed twice, then drizzle-orm queries on node-postgres.
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { and, asc, eq, sql } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/node-postgres';
import pg from 'pg';
import { expect, fail, step } from './check.mjs';
import { lists, tasks } from './drizzle_schema.mjs';

const here = fileURLToPath(new URL('.', import.meta.url));
const url = process.env.DATABASE_URL;

function push() {
  const args = ['node_modules/drizzle-kit/bin.cjs', 'push', '--dialect', 'postgresql', '--schema', 'drizzle_schema.mjs', '--url', url];
  try {
    const out = execFileSync(process.execPath, args, { cwd: here, stdio: ['ignore', 'pipe', 'pipe'], timeout: 60000, encoding: 'utf8' });
    console.log(out);
    return out;
  } catch (err) {
    fail(`drizzle-kit push failed (${err.status ?? err.signal}):\n${err.stdout}\n${err.stderr}`);
  }
}

step('drizzle-kit push');
if (!push().includes('Changes applied')) fail('the first push applied no changes');
const pool = new pg.Pool({ connectionString: url, max: 4 });
const columns = await pool.query(
  "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'dz_tasks' ORDER BY ordinal_position",
);
expect(
  columns.rows.map((r) => `${r.column_name} ${r.data_type}`),
  ['id integer', 'list_id integer', 'title text', 'done boolean', 'priority USER-DEFINED', 'points integer'],
  'columns pushed',
);

step('drizzle-kit push again: nothing to change');
if (!push().includes('No changes detected')) fail('the second push found changes in a database that has the schema');

step('drizzle-orm: insert, select, join, update, a transaction rolled back');
const db = drizzle(pool);
const [home, work] = await db.insert(lists).values([{ name: 'home' }, { name: 'work' }]).returning();
expect([home.name, work.name], ['home', 'work'], 'lists returned');
await db.insert(tasks).values([
  { listId: home.id, title: 'dishes', points: 2 },
  { listId: home.id, title: 'laundry', priority: 'high' },
  { listId: work.id, title: 'report', points: 5, priority: 'low' },
]);
const homeTasks = await db.select({ title: tasks.title, priority: tasks.priority, done: tasks.done }).from(tasks).where(eq(tasks.listId, home.id)).orderBy(asc(tasks.title));
expect(homeTasks, [
  { title: 'dishes', priority: 'normal', done: false },
  { title: 'laundry', priority: 'high', done: false },
], 'tasks of the home list');
const joined = await db
  .select({ list: lists.name, points: sql`sum(${tasks.points})`.mapWith(Number) })
  .from(lists)
  .innerJoin(tasks, eq(tasks.listId, lists.id))
  .groupBy(lists.name)
  .orderBy(asc(lists.name));
expect(joined, [{ list: 'home', points: 3 }, { list: 'work', points: 5 }], 'points per list');
const updated = await db.update(tasks).set({ done: true }).where(and(eq(tasks.listId, home.id), eq(tasks.title, 'dishes'))).returning({ id: tasks.id });
expect(updated.length, 1, 'rows updated');
try {
  await db.transaction(async (tx) => {
    await tx.update(tasks).set({ points: 100 });
    await tx.insert(lists).values({ name: 'home' });
  });
  fail('the duplicate list name was committed');
} catch (err) {
  expect((err.cause ?? err).code, '23505', 'SQLSTATE of the duplicate list name');
}
const [{ points, done }] = await db.select({ points: sql`sum(${tasks.points})`.mapWith(Number), done: sql`count(*) filter (where ${tasks.done})`.mapWith(Number) }).from(tasks);
expect([points, done], [8, 1], 'points and done tasks after the rollback');
await db.delete(lists).where(eq(lists.id, work.id));
expect((await db.select().from(tasks)).length, 2, 'tasks after deleting a list (cascade)');

await pool.end();
console.log('drizzle: all checks passed');
