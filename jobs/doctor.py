"""`ple doctor`: check every component of the stack and print a table.

Exits 1 (with the fix for each failure) when a required component is missing.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="ple doctor", description=__doc__).parse_args(argv)
    from ple_runtime.doctor import format_table, run_checks

    results = run_checks()
    print(format_table(results))
    failed = [c.component for c in results if c.required and not c.ok]
    if failed:
        print(f"\ndoctor: {len(failed)} component(s) missing or broken: {', '.join(failed)}", file=sys.stderr)
        return 1
    print("\ndoctor: every component present")
    return 0


if __name__ == "__main__":
    sys.exit(main())
