// knex on pg at its defaults: migrations to the latest and rolled back
// through the API (with knex's migration lock table), then queries and a
// transaction.
import knexFactory from 'knex';
import { expect, fail, step } from './check.mjs';

const migrations = {
  '001_create_users': {
    up: (knex) =>
      knex.schema.createTable('kx_users', (t) => {
        t.increments('id');
        t.string('email').notNullable().unique();
        t.timestamps(true, true);
      }),
    down: (knex) => knex.schema.dropTable('kx_users'),
  },
  '002_create_posts': {
    up: (knex) =>
      knex.schema.createTable('kx_posts', (t) => {
        t.increments('id');
        t.integer('user_id').notNullable().references('id').inTable('kx_users').onDelete('CASCADE');
        t.text('body');
        t.integer('likes').defaultTo(0);
      }),
    down: (knex) => knex.schema.dropTable('kx_posts'),
  },
};

const migrationSource = {
  getMigrations: async () => Object.keys(migrations),
  getMigrationName: (name) => name,
  getMigration: async (name) => migrations[name],
};

const knex = knexFactory({ client: 'pg', connection: process.env.DATABASE_URL, migrations: { migrationSource } });

const tables = async () =>
  (await knex('information_schema.tables').where({ table_schema: 'public' }).pluck('table_name')).sort();

step('migrate.latest');
const [batch, applied] = await knex.migrate.latest();
expect([batch, applied], [1, ['001_create_users', '002_create_posts']], 'batch and migrations applied');
expect(await tables(), ['knex_migrations', 'knex_migrations_lock', 'kx_posts', 'kx_users'], 'tables after migrate.latest');
expect(await knex.migrate.currentVersion(), '002', 'current version');

step('queries: inserts with returning, a join, an update, a transaction rolled back');
const users = await knex('kx_users').insert([{ email: 'a@example.com' }, { email: 'b@example.com' }]).returning(['id', 'email']);
expect(users.map((u) => u.email), ['a@example.com', 'b@example.com'], 'inserted users');
await knex('kx_posts').insert(users.flatMap((u, i) => Array.from({ length: i + 2 }, (_, j) => ({ user_id: u.id, body: `post ${j}` }))));
const perUser = await knex('kx_users')
  .join('kx_posts', 'kx_users.id', 'kx_posts.user_id')
  .groupBy('kx_users.email')
  .orderBy('kx_users.email')
  .select('kx_users.email')
  .count({ posts: 'kx_posts.id' });
expect(perUser, [{ email: 'a@example.com', posts: '2' }, { email: 'b@example.com', posts: '3' }], 'posts per user');
expect(await knex('kx_posts').where('body', 'post 0').update({ likes: knex.raw('likes + 5') }), 2, 'rows updated');
try {
  await knex.transaction(async (trx) => {
    await trx('kx_posts').update({ likes: 100 });
    await trx('kx_users').insert({ email: 'a@example.com' });
  });
  fail('the duplicate email was committed');
} catch (err) {
  expect(err.code, '23505', 'SQLSTATE of the duplicate email');
}
const [{ likes }] = await knex('kx_posts').sum({ likes: 'likes' });
expect(likes, '10', 'likes after the rolled-back transaction');

step('migrate.rollback, one batch at a time and then all');
await knex.migrate.down();
expect(await tables(), ['knex_migrations', 'knex_migrations_lock', 'kx_users'], 'tables after migrate.down');
const [, rolledBack] = await knex.migrate.rollback(undefined, true);
expect(rolledBack, ['001_create_users'], 'migrations rolled back');
expect(await tables(), ['knex_migrations', 'knex_migrations_lock'], 'tables after migrate.rollback');
expect(await knex.migrate.currentVersion(), 'none', 'current version after the rollback');
const [again] = await knex.migrate.latest();
expect(again, 1, 'batch of migrating again');
await knex.migrate.rollback(undefined, true);

await knex.destroy();
console.log('knex: all checks passed');
