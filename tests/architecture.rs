//! The shape docs/ARCHITECTURE.md promises, checked on the source: no import circle among the
//! daemon's modules (nor among the children of one module), and a protocol crate without I/O.
//!
//! The module graph is read from the source text: a file's module path comes from where it is
//! (`src/config/validate.rs` is `config::validate`), and every `crate::a::b…` or `super::x`
//! it names (in code, not comments, and not in its `#[cfg(test)]` part or a test file) is an
//! edge to the deepest module that path reaches. Run with `--nocapture` to see the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Every `.rs` file under `dir` with its module path (`a::b`; "" for lib.rs).
fn modules(src: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n == "bin") {
                    continue;
                }
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(src).unwrap().with_extension("");
                let mut parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
                    parts.pop();
                }
                out.push((parts.join("::"), path));
            }
        }
    }
    out.sort();
    out
}

/// A test file or test directory: not part of the shipped module graph.
fn is_test(module: &str) -> bool {
    module
        .split("::")
        .any(|p| p == "tests" || p.starts_with("tests_") || p == "props" || p == "adversary")
}

/// The code of a file without comments and without its `#[cfg(test)]` items: a one-line item
/// (`mod tests;`, a `use`) is dropped, a block (`mod tests { … }`) ends the code.
fn code_of(text: &str) -> String {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let line = match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        };
        if line.trim() == "#[cfg(test)]" {
            match lines.by_ref().find(|l| !l.trim().is_empty()) {
                Some(item) if item.trim_end().ends_with(';') => continue,
                _ => break,
            }
        }
        out.push(line);
    }
    out.join("\n")
}

/// Paths named after `crate::` or `super::` (with `use x::{a, b::c}` groups expanded).
fn named_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    for anchor in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(at) = code[from..].find(anchor) {
            let start = from + at;
            from = start + anchor.len();
            if start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
                continue;
            }
            let mut end = from;
            while end < bytes.len()
                && (bytes[end].is_ascii_alphanumeric() || b"_:".contains(&bytes[end]))
            {
                end += 1;
            }
            let head = code[start..end].trim_end_matches(':').to_string();
            if end < bytes.len() && bytes[end] == b'{' {
                let close = code[end..].find('}').map_or(code.len(), |c| end + c);
                for item in code[end + 1..close].split(',') {
                    let item = item.trim().trim_start_matches('{');
                    if !item.is_empty() && item != "self" {
                        out.push(format!("{head}::{item}"));
                    }
                }
            }
            out.push(head);
        }
    }
    out
}

/// The module graph of one crate's `src/`: module -> modules it names.
fn graph(src: &Path) -> Graph {
    let mods = modules(src);
    let known: BTreeSet<String> = mods.iter().map(|(m, _)| m.clone()).collect();
    let mut g = Graph::new();
    for (module, path) in &mods {
        if is_test(module) {
            continue;
        }
        let edges = g.entry(module.clone()).or_default();
        let code = code_of(&std::fs::read_to_string(path).unwrap());
        for named in named_paths(&code) {
            let mut parts: Vec<&str> = Vec::new();
            let mut rest = named.split("::").peekable();
            match rest.next() {
                Some("crate") => {}
                Some("super") => {
                    parts = module.split("::").filter(|p| !p.is_empty()).collect();
                    // `super` is the parent module, whether the file is a mod.rs or a leaf.
                    parts.pop();
                    while rest.peek() == Some(&"super") {
                        rest.next();
                        parts.pop();
                    }
                }
                _ => continue,
            }
            parts.extend(rest);
            // The deepest known module the path reaches.
            while !parts.is_empty() && !known.contains(&parts.join("::")) {
                parts.pop();
            }
            let target = parts.join("::");
            if !target.is_empty() && target != *module && !is_test(&target) {
                edges.insert(target);
            }
        }
    }
    g
}

/// The graph folded to the children of `parent` ("" for the crate's top level): an edge
/// between two of them for any edge between modules inside them; edges to `parent` itself
/// or outside it dropped (a child using its parent's items is how Rust modules are made).
fn level(g: &Graph, parent: &str) -> Graph {
    let child = |m: &str| -> Option<String> {
        let rest = if parent.is_empty() {
            m
        } else {
            m.strip_prefix(parent)?.strip_prefix("::")?
        };
        let first = rest.split("::").next().filter(|s| !s.is_empty())?;
        Some(if parent.is_empty() {
            first.to_string()
        } else {
            format!("{parent}::{first}")
        })
    };
    let mut out = Graph::new();
    for (from, tos) in g {
        let Some(a) = child(from) else { continue };
        let edges = out.entry(a.clone()).or_default();
        for to in tos {
            if let Some(b) = child(to) {
                if b != a {
                    edges.insert(b);
                }
            }
        }
    }
    out
}

/// The strongly connected components with more than one module (Tarjan).
fn circles(g: &Graph) -> Vec<Vec<String>> {
    struct State<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on.insert(v);
        for w in s.g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on.remove(w);
                scc.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                s.out.push(scc);
            }
        }
    }
    let mut s = State {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

/// Every circle at the top level and among the children of each module, with the edges.
fn all_circles(src: &Path) -> Vec<String> {
    let g = graph(src);
    let parents: BTreeSet<String> = std::iter::once(String::new())
        .chain(g.keys().cloned())
        .collect();
    let mut found = Vec::new();
    for parent in &parents {
        let folded = level(&g, parent);
        for scc in circles(&folded) {
            let edges: Vec<String> = scc
                .iter()
                .flat_map(|a| {
                    folded[a]
                        .iter()
                        .filter(|b| scc.contains(b))
                        .map(move |b| format!("{a} -> {b}"))
                })
                .collect();
            found.push(format!("{}: {}", scc.join(", "), edges.join("; ")));
        }
    }
    found
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn no_import_circle_among_the_daemons_modules() {
    let src = root().join("src");
    let top = level(&graph(&src), "");
    for (m, tos) in &top {
        println!(
            "{m} -> {}",
            tos.iter().cloned().collect::<Vec<_>>().join(" ")
        );
    }
    let found = all_circles(&src);
    assert!(found.is_empty(), "import circles:\n{}", found.join("\n"));
}

#[test]
fn no_import_circle_inside_the_other_crates() {
    for krate in ["proto", "net", "client", "testkit", "gaproxy"] {
        let found = all_circles(&root().join("crates").join(krate).join("src"));
        assert!(
            found.is_empty(),
            "{krate}: import circles:\n{}",
            found.join("\n")
        );
    }
}

/// The checker sees a circle when there is one (so that its silence means something).
#[test]
fn the_circle_check_finds_a_planted_circle() {
    let dir = std::env::temp_dir().join(format!("arch-check-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("b")).unwrap();
    std::fs::write(dir.join("lib.rs"), "mod a; mod b;\n").unwrap();
    std::fs::write(dir.join("a.rs"), "use crate::b::x::Thing; // crate::c\n").unwrap();
    std::fs::write(dir.join("b/mod.rs"), "mod x; mod y;\n").unwrap();
    std::fs::write(dir.join("b/x.rs"), "use super::y::Y;\npub struct Thing;\n").unwrap();
    std::fs::write(
        dir.join("b/y.rs"),
        "use crate::{a, b::x::{self, Thing}};\n#[cfg(test)]\nuse super::z;\n",
    )
    .unwrap();
    let found = all_circles(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        found,
        [
            "a, b: a -> b; b -> a",
            "b::x, b::y: b::x -> b::y; b::y -> b::x"
        ]
    );
}

/// The protocol crate is sans-I/O: no socket, thread, process, file or TLS library in its code
/// (tests aside), and no dependency beyond the small pure ones named here.
#[test]
fn the_protocol_crate_has_no_io() {
    let proto = root().join("crates/proto");
    let manifest = std::fs::read_to_string(proto.join("Cargo.toml")).unwrap();
    let deps = manifest
        .split("\n[dependencies]\n")
        .nth(1)
        .unwrap()
        .split("\n[")
        .next()
        .unwrap();
    let names: Vec<&str> = deps
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split(['.', ' ', '=']).next().unwrap())
        .collect();
    for name in &names {
        assert!(
            ["humantime", "memchr", "serde"].contains(name),
            "crates/proto depends on {name}: the protocol crate takes no I/O dependency"
        );
    }
    let forbidden = [
        "std::net::Tcp",
        "std::net::Udp",
        "std::os::unix::net",
        "std::thread",
        "std::process",
        "std::fs",
        "Instant::now",
        "SystemTime::now",
        "rustls",
        "socket2",
        "nix::",
    ];
    for (module, path) in modules(&proto.join("src")) {
        if is_test(&module) {
            continue;
        }
        let code = code_of(&std::fs::read_to_string(&path).unwrap());
        for word in forbidden {
            assert!(
                !code.contains(word),
                "{}: names {word}: the protocol crate does no I/O (time is given to it)",
                path.display()
            );
        }
    }
}
