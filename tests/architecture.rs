//! The shape of the crate (DESIGN.md §5, issue 10): every module imports only from its own
//! layer or those below it (the layers are listed in `src/lib.rs`), modules import each other
//! in no cycle, and no source file has more than 600 lines of non-test code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path prefix → layer, bottom first; the longest matching prefix wins.
const LAYERS: &[(&str, u8)] = &[
    ("model", 1),
    ("crd", 2),
    ("selector", 2),
    ("reconcile", 2),
    ("health", 2),
    ("admission", 2),
    ("translate", 3),
    ("plan", 4),
    ("services::state", 5),
    ("services::compact", 5),
    ("services::grant_cache", 5),
    ("lambda::selection", 5),
    ("lambda::functions", 5),
    ("lambda::target", 5),
    ("lambda::problem", 5),
    ("lambda::state", 5),
    ("lambda", 5),
    ("config", 6),
    ("source", 7),
    ("apply", 7),
    ("events", 7),
    ("leader", 7),
    ("metrics", 7),
    ("http", 7),
    ("lambda::aws", 7),
    ("services", 8),
    ("lambda::engine", 8),
    ("daemon", 9),
    ("render", 9),
    ("preview", 9),
];

const MAX_CODE_LINES: usize = 600;

fn layer(module: &str) -> u8 {
    LAYERS
        .iter()
        .filter(|(prefix, _)| module == *prefix || module.starts_with(&format!("{prefix}::")))
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(_, layer)| *layer)
        .unwrap_or_else(|| panic!("module {module} has no layer in tests/architecture.rs"))
}

fn source_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            source_files(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

/// `src/a/b.rs` and `src/a/b/mod.rs` → `a::b`.
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file
        .strip_prefix(src)
        .expect("under src")
        .with_extension("");
    let parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .filter(|part| part != "mod")
        .collect();
    parts.join("::")
}

/// The code before the unit tests (`#[cfg(test)]` at the start of a line ends it).
fn code_of(text: &str) -> &str {
    text.find("\n#[cfg(test)]").map_or(text, |end| &text[..end])
}

/// The crate modules a file's code names: `crate::a::b` and, inside `use crate::{…}`, each
/// `a::b`, resolved to the longest known module.
fn imports(code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut paths = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                paths.push(item.trim().to_string());
            }
        } else {
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            paths.push(rest[..end].to_string());
        }
    }
    paths
        .iter()
        .filter_map(|path| {
            let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
            (1..=segments.len())
                .rev()
                .map(|n| segments[..n].join("::"))
                .find(|candidate| modules.contains(candidate))
        })
        .collect()
}

struct Crate {
    code: BTreeMap<String, String>,
    files: BTreeMap<String, PathBuf>,
}

fn read_crate() -> Crate {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    let mut crate_ = Crate {
        code: BTreeMap::new(),
        files: BTreeMap::new(),
    };
    for file in files {
        let module = module_of(&src, &file);
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read");
        crate_
            .code
            .insert(module.clone(), code_of(&text).to_string());
        crate_.files.insert(module, file);
    }
    crate_
}

#[test]
fn no_module_imports_from_a_layer_above_it() {
    let crate_ = read_crate();
    let modules: BTreeSet<String> = crate_.code.keys().cloned().collect();
    let mut violations = Vec::new();
    for (module, code) in &crate_.code {
        for imported in imports(code, &modules) {
            if layer(&imported) > layer(module) {
                violations.push(format!(
                    "{module} (layer {}) imports {imported} (layer {})",
                    layer(module),
                    layer(&imported)
                ));
            }
        }
    }
    assert!(violations.is_empty(), "{violations:#?}");
}

#[test]
fn modules_import_each_other_in_no_cycle() {
    let crate_ = read_crate();
    let modules: BTreeSet<String> = crate_.code.keys().cloned().collect();
    let edges: BTreeMap<&String, BTreeSet<String>> = crate_
        .code
        .iter()
        .map(|(module, code)| {
            let mut targets = imports(code, &modules);
            targets.remove(module);
            (module, targets)
        })
        .collect();
    // Depth-first search for a back edge.
    fn visit<'a>(
        module: &'a String,
        edges: &'a BTreeMap<&'a String, BTreeSet<String>>,
        path: &mut Vec<&'a String>,
        done: &mut BTreeSet<&'a String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|m| *m == module) {
            let mut cycle: Vec<String> = path[start..].iter().map(|m| m.to_string()).collect();
            cycle.push(module.clone());
            return Some(cycle);
        }
        if !done.insert(module) {
            return None;
        }
        path.push(module);
        for next in edges.get(module).into_iter().flatten() {
            let key = edges.keys().find(|k| **k == next)?;
            if let Some(cycle) = visit(key, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for module in edges.keys() {
        if let Some(cycle) = visit(module, &edges, &mut Vec::new(), &mut done) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn no_source_file_has_more_than_600_lines_of_code() {
    let crate_ = read_crate();
    let long: Vec<String> = crate_
        .code
        .iter()
        .map(|(module, code)| (module, code.lines().count()))
        .filter(|(_, lines)| *lines > MAX_CODE_LINES)
        .map(|(module, lines)| format!("{} ({module}): {lines}", crate_.files[module].display()))
        .collect();
    assert!(long.is_empty(), "{long:#?}");
}

#[test]
fn the_checks_see_imports_in_every_form() {
    let modules: BTreeSet<String> = ["model", "plan", "lambda", "lambda::state"]
        .iter()
        .map(|m| m.to_string())
        .collect();
    let code = "use crate::model::{Scope, ServiceKey};\nuse crate::{plan, lambda::state::Decision};\nlet x = crate::lambda::engine::X;";
    let found: Vec<String> = imports(code, &modules).into_iter().collect();
    assert_eq!(found, ["lambda", "lambda::state", "model", "plan"]);
    assert_eq!(layer("lambda::state"), 5);
    assert_eq!(layer("lambda::aws"), 7);
    assert_eq!(layer("services"), 8);
    assert_eq!(layer("services::state"), 5);
}
