"""Microseconds per ``matches`` evaluation on a 10,000-character message.

Compares a nested-quantifier pattern (exponential on a backtracking engine) with a
trivial one, both as bundles compile them (RE2). Run:

    .venv/bin/python bench/patterns.py
"""

from __future__ import annotations

import re
import time
import timeit

from engine.conditions import compile_test

MESSAGE_CHARS = 10_000
PATTERNS = {
    "nested quantifiers ^(a+)+$": "^(a+)+$",
    "trivial 'cancel'": "cancel",
    "case-insensitive alternation": "(?i)discount|price match|cancel",
}
MESSAGES = {
    "no match (a... then !)": "a" * MESSAGE_CHARS + "!",
    "match (all a)": "a" * MESSAGE_CHARS,
}


def main() -> None:
    print(f"µs per evaluation, {MESSAGE_CHARS:,}-character message")
    for label, pattern in PATTERNS.items():
        test = compile_test("matches", pattern)
        for message_label, message in MESSAGES.items():
            runs, total = timeit.Timer(lambda: test(message)).autorange()  # noqa: B023
            print(f"  {label:<32} {message_label:<24} {total / runs * 1e6:10.1f}")
    typical = "Hi, could you give us a discount on the enterprise plan? We compare vendors."
    print(f"µs per evaluation, a {len(typical)}-character message: Python re / bundles (RE2)")
    for pattern in ("(?i)discount|price match", "^enterprise", "cancel"):
        backtracking, linear = re.compile(pattern), compile_test("matches", pattern)
        runs, total = timeit.Timer(lambda: backtracking.search(typical)).autorange()  # noqa: B023
        runs2, total2 = timeit.Timer(lambda: linear(typical)).autorange()  # noqa: B023
        print(f"  {pattern!r:<32} {total / runs * 1e6:8.2f} {total2 / runs2 * 1e6:8.2f}")
    short = "a" * 22 + "!"
    started = time.perf_counter()
    re.compile("^(a+)+$").search(short)  # what bundles ran before: Python's backtracking re
    elapsed = time.perf_counter() - started
    print(f"for comparison, Python re on ^(a+)+$ and a {len(short)}-character message: ", end="")
    print(f"{elapsed * 1e6:,.0f} µs (doubling with every character)")


if __name__ == "__main__":
    main()
