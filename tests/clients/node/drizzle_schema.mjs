// The schema drizzle.mjs pushes with drizzle-kit and then queries.
import { boolean, index, integer, pgEnum, pgTable, serial, text, timestamp, uniqueIndex } from 'drizzle-orm/pg-core';

export const priority = pgEnum('dz_priority', ['low', 'normal', 'high']);

export const lists = pgTable('dz_lists', {
  id: serial('id').primaryKey(),
  name: text('name').notNull(),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
}, (t) => [uniqueIndex('dz_lists_name').on(t.name)]);

export const tasks = pgTable('dz_tasks', {
  id: serial('id').primaryKey(),
  listId: integer('list_id').notNull().references(() => lists.id, { onDelete: 'cascade' }),
  title: text('title').notNull(),
  done: boolean('done').notNull().default(false),
  priority: priority('priority').notNull().default('normal'),
  points: integer('points').notNull().default(1),
}, (t) => [index('dz_tasks_list').on(t.listId)]);
