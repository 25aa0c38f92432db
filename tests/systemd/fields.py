#!/usr/bin/env python3
"""Read `journalctl -o json` (one entry a line) on standard input for tests/systemd/run.sh.

  fields.py report          the last SIGUSR1 summary: its MESSAGE, then every field that is
                            not journald's own (KEY=VALUE lines); exit 1 if there is none
  fields.py audit SOURCE    every info-level entry of a relayed session from SOURCE (fields
                            SOURCE and MX), each in the same form, a blank line between them;
                            exit 1 if there is none
"""
import json
import sys


def entries():
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            continue


def text(value):
    # journald gives non-UTF-8 or binary values as arrays of bytes.
    if isinstance(value, list):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def show(entry):
    print("MESSAGE=" + text(entry.get("MESSAGE", "")))
    for key in sorted(entry):
        if key == "MESSAGE" or key.startswith("_"):
            continue
        print(f"{key}={text(entry[key])}")


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    found = None
    if mode == "audit" and len(sys.argv) == 3:
        source = sys.argv[2]
        sessions = [
            e
            for e in entries()
            if text(e.get("PRIORITY", "")) == "6"
            and text(e.get("SOURCE", "")) == source
            and "MX" in e
        ]
        for i, e in enumerate(sessions):
            if i:
                print()
            show(e)
        return 0 if sessions else 1
    if mode == "report":
        for e in entries():
            if text(e.get("MESSAGE", "")).startswith("report summary"):
                found = e
    else:
        print(__doc__, file=sys.stderr)
        return 2
    if found is None:
        return 1
    show(found)
    return 0


if __name__ == "__main__":
    sys.exit(main())
