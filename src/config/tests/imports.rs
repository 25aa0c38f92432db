//! The configuration's modules import one way (no module imports one that imports it back,
//! directly or through others): read from the sources, `use super::…`, `super::…::` and
//! `crate::config::…` paths outside `#[cfg(test)]`. An item re-exported by `mod.rs` and
//! named through it counts as an import of `mod.rs`.

use std::collections::{BTreeMap, BTreeSet};

/// The modules of the configuration each file imports, by file stem (`mod` for mod.rs).
/// `mod.rs` imports its children (`pub use`, paths); a child imports its siblings and mod.rs
/// through `super::`.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config");
    let mut sources = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            sources.insert(stem, std::fs::read_to_string(&path).unwrap());
        }
    }
    let modules: BTreeSet<String> = sources.keys().cloned().collect();
    let target = |name: &str| -> String {
        if modules.contains(name) && name != "mod" {
            name.to_string()
        } else {
            "mod".to_string()
        }
    };
    let mut graph = BTreeMap::new();
    for (stem, text) in &sources {
        let code = text
            .split("#[cfg(test)]\nmod tests {")
            .next()
            .unwrap_or_default();
        let mut deps = BTreeSet::new();
        // mod.rs names its children directly (`pub use access::…`, `validate::validate(…)`).
        let own: Vec<String> = if stem == "mod" {
            modules.iter().map(|m| format!("{m}::")).collect()
        } else {
            Vec::new()
        };
        for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for m in &own {
                let direct = line.match_indices(m.as_str()).any(|(at, _)| {
                    !line[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':')
                });
                if direct {
                    deps.insert(m.trim_end_matches(':').to_string());
                }
            }
            for prefix in ["super::", "crate::config::"] {
                for (at, _) in line.match_indices(prefix) {
                    let rest = &line[at + prefix.len()..];
                    let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
                        let group = group.split('}').next().unwrap_or_default();
                        group.split(',').map(|p| p.trim()).collect()
                    } else {
                        vec![rest]
                    };
                    for name in names {
                        let first = name
                            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                            .next()
                            .unwrap_or_default();
                        if !first.is_empty() {
                            deps.insert(target(first));
                        }
                    }
                }
            }
        }
        deps.remove(stem.as_str());
        graph.insert(stem.clone(), deps);
    }
    graph
}

/// A cycle, as the list of modules along it, if any.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        graph: &BTreeMap<String, BTreeSet<String>>,
        node: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|n| n == node) {
            let mut c = path[i..].to_vec();
            c.push(node.to_string());
            return Some(c);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(graph, next, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(graph, n, &mut Vec::new(), &mut done))
}

#[test]
fn the_configuration_modules_import_one_way() {
    let graph = imports();
    // The reader sees the imports (a module that is not read would pass unseen).
    assert!(graph["validate"].contains("access"), "{graph:?}");
    assert!(graph["mod"].contains("validate"), "{graph:?}");
    assert!(graph["raw"].is_empty(), "raw imports {:?}", graph["raw"]);
    assert_eq!(cycle(&graph), None, "{graph:#?}");
    // The checker finds a cycle when there is one.
    let mut circular = graph.clone();
    circular.get_mut("raw").unwrap().insert("caps".into());
    assert!(cycle(&circular).is_some());
}
