// Assertions for the client programs: each prints the step it is at, and a
// mismatch stops the program with exit status 1 and what was expected.
import { isDeepStrictEqual, inspect } from 'node:util';

export function step(name) {
  console.log(`-- ${name}`);
}

export function expect(actual, expected, what) {
  if (!isDeepStrictEqual(actual, expected)) {
    fail(`MISMATCH in ${what}: expected ${inspect(expected)}, got ${inspect(actual)}`);
  }
}

export function fail(message) {
  console.log(`FAILED: ${message}`);
  process.exit(1);
}

// Any error nobody caught fails the program with its stack.
process.on('unhandledRejection', (err) => fail(`unhandled rejection: ${err?.stack ?? err}`));
process.on('uncaughtException', (err) => fail(`uncaught exception: ${err?.stack ?? err}`));
