//! The gateway's floor plan (ARCHITECTURE.md, "The gateway's floor plan"), checked on its
//! sources: no import circle between files, the shared edge (`http/`, `auth/`) never reaches
//! into a feature, and no feature reads another feature's routes. The plan held only while
//! someone read every import; this keeps it without anyone doing so.
//!
//! An import is a `crate::…` or `super::…` path outside comments and test modules, resolved to
//! the file of the longest module it names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Folders of features: each owns its routes, handlers, domain code and background work.
const FEATURES: &[&str] = &["builds", "workers", "logs", "figures", "keys", "dashboard"];
/// Files below every feature, importing nothing but each other.
const BASE: &[&str] = &["error.rs", "config.rs", "storage_client.rs"];

type Graph = BTreeMap<String, BTreeSet<String>>;

fn sources(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        panic!("cannot read {}", dir.display());
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            sources(&p, root, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            let rel = p
                .strip_prefix(root)
                .map(|r| r.to_string_lossy().replace('\\', "/"))
                .unwrap_or_default();
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            out.push((rel, text));
        }
    }
}

/// The module path a file defines: `auth/mod.rs` → `auth`, `auth/session.rs` → `auth::session`.
fn module_of(file: &str) -> Vec<String> {
    let mut parts: Vec<String> = file
        .trim_end_matches(".rs")
        .split('/')
        .map(str::to_owned)
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The code a reader follows: comments and `#[cfg(test)]` modules left out.
fn code(text: &str) -> String {
    let before_tests = text.split("#[cfg(test)]").next().unwrap_or("");
    before_tests
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::a::b` / `super::a` path (and each path of a `{…}` group) in `code`.
fn paths(code: &str) -> Vec<(bool, Vec<String>)> {
    let mut out = Vec::new();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    for (start, kind) in code
        .match_indices("crate::")
        .map(|(i, _)| (i, true))
        .chain(code.match_indices("super::").map(|(i, _)| (i, false)))
    {
        if code[..start].chars().next_back().is_some_and(ident) {
            continue;
        }
        let rest = &code[start + "crate::".len()..];
        let group = if let Some(inner) = rest.strip_prefix('{') {
            inner.split('}').next().unwrap_or("").to_owned()
        } else {
            rest.chars()
                .take_while(|c| ident(*c) || *c == ':')
                .collect()
        };
        for alt in group.split(',') {
            let segs: Vec<String> = alt
                .trim()
                .split("::")
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty() && s != "self" && s != "*")
                .collect();
            out.push((kind, segs));
        }
    }
    out
}

fn graph() -> Graph {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &root, &mut files);
    let modules: BTreeMap<Vec<String>, String> = files
        .iter()
        .filter(|(f, _)| f != "main.rs")
        .map(|(f, _)| (module_of(f), f.clone()))
        .collect();
    let mut g = Graph::new();
    for (file, text) in &files {
        let here = module_of(file);
        let mut to = BTreeSet::new();
        for (from_crate, segs) in paths(&code(text)) {
            let mut full: Vec<String> = if from_crate {
                Vec::new()
            } else {
                here[..here.len().saturating_sub(1)].to_vec()
            };
            full.extend(segs);
            let target = (0..=full.len())
                .rev()
                .find_map(|n| modules.get(&full[..n]).cloned());
            if let Some(t) = target.filter(|t| t != file) {
                to.insert(t);
            }
        }
        g.insert(file.clone(), to);
    }
    g
}

fn folder(file: &str) -> &str {
    file.split_once('/').map(|(f, _)| f).unwrap_or("")
}

/// Strongly connected components of more than one file (Tarjan).
fn circles(g: &Graph) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        t.index.insert(v, t.next);
        t.low.insert(v, t.next);
        t.next += 1;
        t.stack.push(v);
        t.on.insert(v);
        let g = t.g;
        for w in g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low[v];
                t.low.insert(v, lv.min(lw));
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low[v];
                t.low.insert(v, lv.min(iw));
            }
        }
        if t.low[v] == t.index[v] {
            let mut c = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                c.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if c.len() > 1 {
                c.sort();
                t.out.push(c);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn no_file_imports_itself_back() {
    let g = graph();
    assert!(g.len() > 40, "found only {} source files", g.len());
    let found = circles(&g);
    assert!(
        found.is_empty(),
        "import circles between files (break each by moving the shared piece down): {found:#?}"
    );
}

#[test]
fn the_base_and_the_shared_edge_know_no_feature() {
    let g = graph();
    let mut wrong = Vec::new();
    for (file, to) in &g {
        let allowed = |t: &str| -> bool {
            if BASE.contains(&file.as_str()) {
                BASE.contains(&t)
            } else if folder(file) == "http" {
                BASE.contains(&t) || t == "state.rs" || folder(t) == "http"
            } else if folder(file) == "auth" {
                BASE.contains(&t) || t == "state.rs" || matches!(folder(t), "http" | "auth")
            } else {
                true
            }
        };
        for t in to.iter().filter(|t| !allowed(t)) {
            wrong.push(format!("{file} → {t}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "the base (error, config, storage client) and the shared edge (http/, auth/) must not reach up into a feature: {wrong:#?}"
    );
}

#[test]
fn no_feature_reads_another_features_routes() {
    let g = graph();
    let mut wrong = Vec::new();
    for (file, to) in &g {
        for t in to {
            let is_routes = t.ends_with("/routes.rs") && FEATURES.contains(&folder(t));
            if is_routes
                && folder(t) != folder(file)
                && !matches!(file.as_str(), "routes.rs" | "lib.rs")
            {
                wrong.push(format!("{file} → {t}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "a feature's routes are read only by `routes.rs`, which lists every route: {wrong:#?}"
    );
}

#[test]
fn state_holds_only_what_imports_nothing_above_the_edge() {
    // `AppState` names a type from several features; those files must not import the state (or
    // anything that does), or the state and the feature would import each other.
    let g = graph();
    let state = g.get("state.rs").cloned().unwrap_or_default();
    let mut wrong = Vec::new();
    for held in state
        .iter()
        .filter(|t| FEATURES.contains(&folder(t)) || folder(t) == "auth")
    {
        for t in g.get(held).into_iter().flatten() {
            if !(BASE.contains(&t.as_str()) || folder(t) == "http") {
                wrong.push(format!("{held} → {t}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "a type the state holds imports past the shared edge: {wrong:#?}"
    );
}
