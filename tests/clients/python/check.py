"""Assertions for the client programs: each prints the step it is at, and a
mismatch stops the program with exit status 1 and what was expected."""

import sys


def step(name):
    print(f"-- {name}", flush=True)


def expect(actual, expected, what):
    if actual != expected:
        print(f"MISMATCH in {what}: expected {expected!r}, got {actual!r}", flush=True)
        sys.exit(1)


def fail(message):
    print(f"FAILED: {message}", flush=True)
    sys.exit(1)
