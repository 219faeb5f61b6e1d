#!/usr/bin/env node
// pgshare-host: run a PGlite database in this process and share it through a
// pgshare gateway, so that any Postgres client can use it.

import { parseArgs } from 'node:util';
import { PGlite } from '@electric-sql/pglite';
import { share } from '../src/share.js';

const HELP = `Usage: pgshare-host --url URL --database NAME --token TOKEN [--data DIR]

Runs a PGlite database in this process and offers it to Postgres clients
through a pgshare gateway, as the gateway's database NAME. Prints
"attached NAME" on stdout once the gateway accepted it; logs the rest on
stderr. Reconnects after losing the gateway. Stops on SIGINT or SIGTERM.

Options:
  --url URL         the gateway's HTTP address, e.g. http://127.0.0.1:8080
                    (default: $PGSHARE_URL)
  --database NAME   the database name clients connect to
                    (default: $PGSHARE_DATABASE)
  --token TOKEN     the tunnel token: a JWT printed by "pgshare token NAME",
                    or the database's tunnel_secret (default: $PGSHARE_TOKEN;
                    prefer the variable, arguments are visible to other users)
  --data DIR        PGlite data directory, created if missing; without it
                    the database lives in memory and is lost at exit
  -h, --help        show this help
`;

const log = (message) => process.stderr.write(`pgshare-host: ${message}\n`);

function usageError(message) {
  process.stderr.write(`pgshare-host: ${message}\nTry pgshare-host --help.\n`);
  process.exit(2);
}

let args;
try {
  ({ values: args } = parseArgs({
    options: {
      url: { type: 'string' },
      database: { type: 'string' },
      token: { type: 'string' },
      data: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  }));
} catch (error) {
  usageError(error.message);
}
if (args.help) {
  process.stdout.write(HELP);
  process.exit(0);
}

const url = args.url ?? process.env.PGSHARE_URL;
const database = args.database ?? process.env.PGSHARE_DATABASE;
const token = args.token ?? process.env.PGSHARE_TOKEN;
if (!url) usageError('missing --url (or PGSHARE_URL)');
if (!database) usageError('missing --database (or PGSHARE_DATABASE)');
if (!token) usageError('missing --token (or PGSHARE_TOKEN)');

const pglite = await PGlite.create({ dataDir: args.data });
let announced = false;
const handle = await share(pglite, {
  url,
  database,
  token,
  onStatus(status, reason) {
    log(reason ? `${status} (${reason})` : status);
    if (status === 'failed') stop(1);
  },
  onHello(hello) {
    if (hello.connection_string) log(`clients connect with ${hello.connection_string}`);
    if (!announced) {
      announced = true;
      process.stdout.write(`attached ${database}\n`);
    }
  },
  onClients(count) {
    log(`${count} client${count === 1 ? '' : 's'} connected`);
  },
}).catch((error) => usageError(error.message));

let stopping = false;

/** Stops sharing, then closes PGlite so that its data directory is complete. */
async function stop(exitCode) {
  if (stopping) {
    log('stopping now');
    process.exit(1);
  }
  stopping = true;
  log('stopping (again to force)');
  await handle.close();
  try {
    if (!pglite.closed) await pglite.close();
  } catch (error) {
    log(`closing PGlite failed: ${error.message}`);
    exitCode = 1;
  }
  process.exit(exitCode);
}

process.on('SIGINT', () => stop(0));
process.on('SIGTERM', () => stop(0));
