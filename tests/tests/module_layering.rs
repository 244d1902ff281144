//! No import circles between the modules of a crate (issue "Simulate the code that runs").
//!
//! A circle (`store → gossip → node → store`) means no module of it can be read, tested or
//! replaced without the others: the layering this test keeps is what lets a protocol core be a
//! sans-IO state machine with a thin driver above it. It reads every crate's `src/`, takes each
//! top-level module's references to `crate::<module>` in code (comments and `#[cfg(test)]`
//! modules left out: tests may reach anywhere), and fails naming every circle it finds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crates whose modules are checked (every crate with more than one module).
const CRATES: &[&str] = &[
    "libs/core",
    "libs/wire",
    "libs/objstore",
    "libs/quorum",
    "libs/utils",
    "libs/auth",
    "safekeeper",
    "pageserver",
    "compute-wasm/host",
    "gateway",
    "infra",
    "infra/bench",
    "tests",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_path_buf()
}

/// Every `.rs` file under `dir`, with the top-level module it belongs to.
fn modules(src: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                let rel = path.strip_prefix(src).expect("under src");
                let first = rel
                    .components()
                    .next()
                    .expect("a file")
                    .as_os_str()
                    .to_string_lossy()
                    .trim_end_matches(".rs")
                    .to_string();
                out.push((first, path));
            }
        }
    }
    out
}

/// The `crate::<name>` references of a file's code, before its first `#[cfg(test)]`.
fn references(text: &str) -> BTreeSet<String> {
    let mut refs = BTreeSet::new();
    for line in text.lines() {
        let code = line.trim_start();
        if code.starts_with("#[cfg(test)]") {
            break;
        }
        if code.starts_with("//") {
            continue;
        }
        let code = code.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                refs.insert(name);
            }
            rest = after;
        }
        // `use crate::{a, b::c}` names modules inside braces.
        if let Some(i) = code.find("crate::{") {
            let inner = &code[i + "crate::{".len()..];
            for part in inner.split([',', '}']) {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    refs.insert(name);
                }
            }
        }
    }
    refs
}

/// Every elementary circle, each reported once, from its smallest module name.
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let mut found = BTreeSet::new();
    for start in graph.keys() {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        while let Some((at, path)) = stack.pop() {
            for next in graph.get(&at).into_iter().flatten() {
                if next == start {
                    found.insert(path.clone());
                } else if next > start && !path.contains(next) && path.len() < 8 {
                    let mut p = path.clone();
                    p.push(next.clone());
                    stack.push((next.clone(), p));
                }
            }
        }
    }
    found.into_iter().collect()
}

#[test]
fn no_crate_has_an_import_circle_between_its_modules() {
    let root = workspace();
    let mut report = Vec::new();
    let mut checked = 0;
    for krate in CRATES {
        let src = root.join(krate).join("src");
        let files = modules(&src);
        let names: BTreeSet<String> = files.iter().map(|(m, _)| m.clone()).collect();
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (module, path) in &files {
            let text = std::fs::read_to_string(path).expect("readable source");
            for r in references(&text) {
                if r != *module && names.contains(&r) && !["lib", "main"].contains(&r.as_str()) {
                    graph.entry(module.clone()).or_default().insert(r);
                }
            }
        }
        checked += names.len();
        for c in circles(&graph) {
            report.push(format!("{krate}: {} → {}", c.join(" → "), c[0]));
        }
    }
    assert!(checked > 50, "only {checked} modules found: wrong root?");
    assert!(
        report.is_empty(),
        "import circles between modules:\n{}",
        report.join("\n")
    );
}

#[test]
fn the_checker_finds_a_circle() {
    let mut g = BTreeMap::new();
    g.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    g.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    g.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    g.insert("d".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(circles(&g), vec![vec!["a", "b", "c"]]);
    assert_eq!(
        references("use crate::{a, b::C};\n// crate::x\nlet y = crate::z::f();\n#[cfg(test)]\nuse crate::t;"),
        BTreeSet::from(["a".to_string(), "b".to_string(), "z".to_string()])
    );
}
