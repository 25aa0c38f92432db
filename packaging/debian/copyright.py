#!/usr/bin/env python3
"""Generate packaging/debian/copyright (machine-readable, DEP-5) from `cargo metadata`.

The binaries link the crates of Cargo.lock statically, so the copyright file lists every crate
the build uses (normal and build dependencies of greenarrow_proxy, for the host platform; not
dev-dependencies) with its authors and license as its Cargo.toml states them. The standalone
license texts are taken from the crates' own license files in the cargo registry (found by the
first words of the license), never typed in here; Apache-2.0 refers to
/usr/share/common-licenses as Debian does.

    packaging/debian/copyright.py > packaging/debian/copyright    regenerate (after Cargo.lock changes)
    packaging/debian/copyright.py --check packaging/debian/copyright    exit 1 if stale
    packaging/debian/copyright.py --spdx    the binaries' combined SPDX expression (RPM License:)

Needs: python3, cargo, rustc, and the dependencies' sources (any `cargo build` fetched them).
"""

import glob
import json
import os
import re
import subprocess
import sys

FORMAT = "https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"

# License id -> (license file name patterns, first words of the text to copy).
TEXTS = {
    "MIT": (["LICENSE-MIT*", "LICENSE*", "COPYING*"], "Permission is hereby granted"),
    "ISC": (["LICENSE-ISC*", "LICENSE*"], "Permission to use, copy, modify"),
    "BSD-3-Clause": (["LICENSE*", "COPYING*"], "Redistribution and use in source and binary forms"),
    "Zlib": (["LICENSE-ZLIB*", "LICENSE*"], "This software is provided 'as-is'"),
    "Unlicense": (["UNLICENSE*", "LICENSE*"], "This is free and unencumbered software"),
    "BSL-1.0": (["LICENSE-BOOST*", "LICENSE*"], "Boost Software License"),
    "Unicode-3.0": (["LICENSE*"], "UNICODE LICENSE V3"),
    "LLVM-exception": (["LICENSE-Apache-2.0_WITH_LLVM-exception*", "LICENSE*"], "--- LLVM Exceptions"),
}
APACHE = (
    "Licensed under the Apache License, Version 2.0 (the \"License\"); you may not use this\n"
    "file except in compliance with the License. On Debian systems, the complete text of the\n"
    "Apache License, Version 2.0 can be found in /usr/share/common-licenses/Apache-2.0."
)


def die(msg):
    print(f"copyright.py: {msg}", file=sys.stderr)
    sys.exit(2)


def host_triple():
    out = subprocess.run(["rustc", "-vV"], check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("host: "):
            return line.split(" ", 1)[1]
    die("rustc -vV names no host")


def metadata(root_dir):
    out = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked",
         "--filter-platform", host_triple()],
        cwd=root_dir, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def used_packages(meta):
    """The root package and every package reachable by normal or build dependencies from the
    workspace's packages that ship binaries (the daemon and gaproxy); the workspace's own
    crates are the root's (its Files: * stanza), not listed again."""
    packages = {p["id"]: p for p in meta["packages"]}
    nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
    root = meta["resolve"]["root"]
    members = set(meta["workspace_members"])
    shipped = [i for i in members
               if any("bin" in t["kind"] for t in packages[i]["targets"])]
    seen, stack = set(), [root] + shipped
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        for dep in nodes[pid]["deps"]:
            if any(k["kind"] in (None, "build") for k in dep["dep_kinds"]):
                stack.append(dep["pkg"])
    deps = sorted((packages[i] for i in seen if i not in members),
                  key=lambda p: (p["name"], p["version"]))
    return packages[root], deps


def dep5_license(expr):
    """An SPDX expression as Cargo.toml has it, in DEP-5 syntax."""
    if not expr:
        die("a crate has no license field")
    e = expr.strip().replace("/", " OR ")
    m = re.fullmatch(r"\((.*)\) AND (.*)", e)
    if m:
        e = f"{m.group(1)}, AND {m.group(2)}"
    e = e.replace(" WITH LLVM-exception", " with LLVM exception")
    e = re.sub(r"\bOR\b", "or", e)
    e = re.sub(r"\bAND\b", "and", e)
    if "(" in e or ")" in e:
        die(f"cannot express {expr!r} in DEP-5 syntax: extend dep5_license()")
    return e


def license_names(dep5):
    """The standalone license paragraphs a DEP-5 expression needs."""
    names = set()
    for part in re.split(r",? (?:or|and) ", dep5):
        names.add(part.strip())
    return names


def find_text(license_id, candidates):
    """The text of `license_id` from the first candidate crate's files that contain it."""
    patterns, start = TEXTS[license_id]
    for pkg in candidates:
        crate_dir = os.path.dirname(pkg["manifest_path"])
        for pattern in patterns:
            for path in sorted(glob.glob(os.path.join(crate_dir, pattern))):
                try:
                    with open(path, encoding="utf-8") as f:
                        text = f.read()
                except (OSError, UnicodeDecodeError):
                    continue
                at = text.find(start)
                if at >= 0:
                    return text[at:].strip()
    die(f"no license file with the text of {license_id} in the crates that use it")


def formatted(text):
    """A DEP-5 continuation: each line indented by one space, empty lines as ' .'."""
    out = []
    for line in text.splitlines():
        line = line.rstrip()
        out.append(" " + line if line else " .")
    return "\n".join(out)


def generate(root_dir):
    root, deps = used_packages(metadata(root_dir))
    out = [
        f"Format: {FORMAT}",
        f"Upstream-Name: {root['name']}",
        "Comment: The binaries are statically linked with the Rust crates listed below",
        " (Cargo.lock; generated by packaging/debian/copyright.py, do not edit).",
        "",
        "Files: *",
        "Copyright: greenarrow_proxy contributors",
        f"License: {dep5_license(root['license'])}",
    ]
    needed = set(license_names(dep5_license(root["license"])))
    for pkg in deps:
        lic = dep5_license(pkg["license"])
        needed |= license_names(lic)
        authors = [a for a in pkg.get("authors") or [] if a.strip()]
        holders = authors or [f"the {pkg['name']} authors"]
        out += [
            "",
            f"Files: vendor/{pkg['name']}-{pkg['version']}/*",
            "Copyright: " + "\n ".join(holders),
            f"License: {lic}",
        ]
    for name in sorted(needed):
        out += ["", f"License: {name}"]
        if name == "Apache-2.0":
            out.append(formatted(APACHE))
        elif name == "Apache-2.0 with LLVM exception":
            users = [p for p in deps if "LLVM-exception" in (p["license"] or "")]
            out.append(formatted(APACHE + "\n\n" + find_text("LLVM-exception", users)))
        elif name in TEXTS:
            users = [p for p in deps if name in (p["license"] or "")]
            out.append(formatted(find_text(name, users)))
        else:
            die(f"no license text known for {name!r}: add it to TEXTS")
    return "\n".join(out) + "\n"


def and_terms(expr):
    """The top-level AND terms of an SPDX expression, each without redundant parentheses."""
    terms, depth, start = [], 0, 0
    e = expr.strip().replace("/", " OR ")
    i = 0
    while i < len(e):
        c = e[i]
        depth += (c == "(") - (c == ")")
        if depth == 0 and e.startswith(" AND ", i):
            terms.append(e[start:i])
            start = i = i + len(" AND ")
            continue
        i += 1
    terms.append(e[start:])
    out = []
    for t in terms:
        t = t.strip()
        if t.startswith("(") and t.endswith(")") and t.count("(") == 1:
            t = t[1:-1]
        if " AND " in t:
            out += and_terms(t)
        else:
            out.append(f"({t})" if " OR " in t else t)
    return out


def spdx(root_dir):
    """Every distinct AND term of the root's and its crates' licenses, joined with AND."""
    root, deps = used_packages(metadata(root_dir))
    terms = []
    for pkg in [root] + deps:
        for t in and_terms(pkg["license"]):
            if t not in terms:
                terms.append(t)
    return " AND ".join(terms)


def main():
    root_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    if sys.argv[1:] == ["--spdx"]:
        print(spdx(root_dir))
        return
    text = generate(root_dir)
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        with open(sys.argv[2], encoding="utf-8") as f:
            if f.read() != text:
                print(f"{sys.argv[2]} is stale: run packaging/debian/copyright.py > {sys.argv[2]}",
                      file=sys.stderr)
                sys.exit(1)
        return
    if len(sys.argv) != 1:
        die("usage: copyright.py [--check FILE]")
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
