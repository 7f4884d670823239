//! The shape of the crate (docs/architecture.md): every module imports only from its own layer
//! or those below it (the layers are listed in `src/lib.rs`, and read from there), the watches
//! import nothing from either loop, modules import each other in no cycle, neither across the
//! crate nor among the files of one folder, and no source file has more than 600 lines of
//! non-test code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_CODE_LINES: usize = 600;

/// The numbered list in `src/lib.rs`'s doc comment: each item's number is a layer, and each
/// module path in backticks in it (`a::{b, c}` stands for `a::b` and `a::c`) sits there. File
/// names (with a `.` or `/`) are not modules.
fn layers_of(lib: &str) -> Vec<(String, u8)> {
    let mut layers = Vec::new();
    let mut current: Option<u8> = None;
    for line in lib.lines() {
        let Some(doc) = line.strip_prefix("//!") else {
            break;
        };
        let doc = doc.trim();
        if doc.is_empty() {
            current = None;
            continue;
        }
        let (number, rest) = doc.split_once(". ").unwrap_or(("", doc));
        let text = match number.parse::<u8>() {
            Ok(number) => {
                current = Some(number);
                rest
            }
            Err(_) => doc,
        };
        let Some(layer) = current else {
            continue;
        };
        for span in text.split('`').skip(1).step_by(2) {
            if span.contains(['.', '/']) {
                continue;
            }
            match span.split_once("::{") {
                Some((base, group)) => {
                    for item in group.trim_end_matches('}').split(',') {
                        layers.push((format!("{base}::{}", item.trim()), layer));
                    }
                }
                None => layers.push((span.to_string(), layer)),
            }
        }
    }
    layers
}

fn crate_layers() -> Vec<(String, u8)> {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"))
        .expect("read src/lib.rs");
    layers_of(&lib)
}

/// The layer of `module`: that of its longest listed prefix.
fn layer_in(layers: &[(String, u8)], module: &str) -> u8 {
    layers
        .iter()
        .filter(|(prefix, _)| module == prefix || module.starts_with(&format!("{prefix}::")))
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(_, layer)| *layer)
        .unwrap_or_else(|| panic!("module {module} has no layer in src/lib.rs"))
}

/// `a::b::c` → `a::b`; a top-level module's parent is the crate root, `""`.
fn parent(module: &str) -> &str {
    module.rsplit_once("::").map_or("", |(parent, _)| parent)
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

/// The crate modules the code of `module` names: `crate::a::b`, `super::b` (relative to
/// `module`, repeatable) and, inside `use crate::{…}` or `use super::{…}`, each `a::b`,
/// resolved to the longest known module.
fn imports(module: &str, code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut paths = Vec::new();
    let starts_a_path = |at: usize| {
        !code[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
    };
    for anchor in ["crate::", "super::"] {
        for (at, _) in code
            .match_indices(anchor)
            .filter(|(at, _)| starts_a_path(*at))
        {
            let mut base = if anchor == "crate::" {
                ""
            } else {
                parent(module)
            };
            let mut rest = &code[at + anchor.len()..];
            while let Some(after) = rest.strip_prefix("super::") {
                base = parent(base);
                rest = after;
            }
            let join = |path: &str| match base {
                "" => path.to_string(),
                base => format!("{base}::{path}"),
            };
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    paths.push(join(item.trim()));
                }
            } else {
                let end = rest
                    .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                    .unwrap_or(rest.len());
                paths.push(join(&rest[..end]));
            }
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

/// Every module's layer violations: imports from a layer above its own.
fn layer_violations(crate_: &Crate, layers: &[(String, u8)]) -> Vec<String> {
    let modules: BTreeSet<String> = crate_.code.keys().cloned().collect();
    let mut violations = Vec::new();
    for (module, code) in &crate_.code {
        for imported in imports(module, code, &modules) {
            let (own, theirs) = (layer_in(layers, module), layer_in(layers, &imported));
            if theirs > own {
                violations.push(format!(
                    "{module} (layer {own}) imports {imported} (layer {theirs})"
                ));
            }
        }
    }
    violations
}

#[test]
fn no_module_imports_from_a_layer_above_it() {
    let violations = layer_violations(&read_crate(), &crate_layers());
    assert!(violations.is_empty(), "{violations:#?}");
}

#[test]
fn every_module_listed_in_the_layers_exists() {
    let crate_ = read_crate();
    let missing: Vec<String> = crate_layers()
        .into_iter()
        .map(|(module, _)| module)
        .filter(|module| !crate_.code.contains_key(module))
        .collect();
    assert!(
        missing.is_empty(),
        "listed in src/lib.rs, not in src/: {missing:?}"
    );
}

/// Function discovery's pure parts sit below `config` and so can never read flags; only its
/// network client and its loop sit above.
#[test]
fn function_discovery_state_sits_below_config_and_its_loop_above() {
    let (crate_, layers) = (read_crate(), crate_layers());
    let config = layer_in(&layers, "config");
    for module in crate_.code.keys().filter(|m| m.starts_with("lambda")) {
        let layer = layer_in(&layers, module);
        match module.as_str() {
            "lambda::aws" | "lambda::engine" => {
                assert!(
                    layer > config,
                    "{module} (layer {layer}) must sit above config"
                )
            }
            _ => assert!(
                layer < config,
                "{module} (layer {layer}) must sit below config"
            ),
        }
    }
}

/// The imports of the watches (`source`) that reach into either loop's folder.
fn watch_imports_into_a_loop(crate_: &Crate) -> Vec<String> {
    let modules: BTreeSet<String> = crate_.code.keys().cloned().collect();
    let in_folder =
        |module: &str, folder: &str| module == folder || module.starts_with(&format!("{folder}::"));
    crate_
        .code
        .iter()
        .filter(|(module, _)| in_folder(module, "source"))
        .flat_map(|(module, code)| {
            imports(module, code, &modules)
                .into_iter()
                .filter(|imported| in_folder(imported, "services") || in_folder(imported, "lambda"))
                .map(move |imported| format!("{module} imports {imported}"))
        })
        .collect()
}

/// Both loops consume the watches, so what the watches hand on is defined below both: a
/// helper shared with a loop lives in a lower layer (`compact`, `credentials`), not in the
/// loop's folder.
#[test]
fn the_watches_import_nothing_from_either_loop() {
    let found = watch_imports_into_a_loop(&read_crate());
    assert!(found.is_empty(), "{found:#?}");
}

/// A cycle in `edges`, if there is one.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    // Depth-first search for a back edge.
    fn visit(
        module: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|m| m == module) {
            let mut cycle = path[start..].to_vec();
            cycle.push(module.to_string());
            return Some(cycle);
        }
        if !done.insert(module.to_string()) {
            return None;
        }
        path.push(module.to_string());
        for next in edges.get(module).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|module| visit(module, edges, &mut Vec::new(), &mut done))
}

#[test]
fn modules_import_each_other_in_no_cycle() {
    let crate_ = read_crate();
    let modules: BTreeSet<String> = crate_.code.keys().cloned().collect();
    let edges: BTreeMap<String, BTreeSet<String>> = crate_
        .code
        .iter()
        .map(|(module, code)| {
            let mut targets = imports(module, code, &modules);
            targets.remove(module);
            // A file may use its own folder's `mod.rs` (`super::…`): that file declares it.
            targets.retain(|target| !module.starts_with(&format!("{target}::")));
            (module.clone(), targets)
        })
        .collect();
    if let Some(cycle) = find_cycle(&edges) {
        panic!("import cycle: {}", cycle.join(" -> "));
    }
}

/// The edges between the files of one folder (its `mod.rs` aside, which declares them and
/// may use them all): `a::b` → `a::c` when `a::b` imports `a::c` or anything in it.
fn folder_edges(crate_: &Crate) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<String> = crate_.code.keys().cloned().collect();
    crate_
        .code
        .iter()
        .map(|(module, code)| {
            let folder = parent(module);
            let siblings = imports(module, code, &modules)
                .into_iter()
                .filter_map(|imported| {
                    // The ancestor of `imported` that sits in `module`'s folder.
                    let mut sibling = imported.as_str();
                    while !sibling.is_empty() && parent(sibling) != folder {
                        sibling = parent(sibling);
                    }
                    (!sibling.is_empty() && sibling != module).then(|| sibling.to_string())
                })
                .collect();
            (module.clone(), siblings)
        })
        .collect()
}

#[test]
fn the_files_of_one_folder_import_each_other_in_no_cycle() {
    if let Some(cycle) = find_cycle(&folder_edges(&read_crate())) {
        panic!("import cycle inside one folder: {}", cycle.join(" -> "));
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

fn modules(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|m| m.to_string()).collect()
}

fn crate_of(files: &[(&str, &str)]) -> Crate {
    Crate {
        code: files
            .iter()
            .map(|(module, code)| (module.to_string(), code.to_string()))
            .collect(),
        files: files
            .iter()
            .map(|(module, _)| (module.to_string(), PathBuf::from(module)))
            .collect(),
    }
}

#[test]
fn the_checks_see_imports_in_every_form() {
    let known = modules(&["model", "plan", "lambda", "lambda::state", "lambda::target"]);
    let code = "use crate::model::{Scope, ServiceKey};\nuse crate::{plan, lambda::state::Decision};\nlet x = crate::lambda::engine::X;";
    let found: Vec<String> = imports("render", code, &known).into_iter().collect();
    assert_eq!(found, ["lambda", "lambda::state", "model", "plan"]);
    let relative =
        "use super::target::Keys;\nuse super::{self, state::X};\nlet y = super::super::model::Z;";
    let found: Vec<String> = imports("lambda::aws", relative, &known)
        .into_iter()
        .collect();
    assert_eq!(
        found,
        ["lambda", "lambda::state", "lambda::target", "model"]
    );
}

#[test]
fn the_layers_are_read_from_the_numbered_list() {
    let lib = "//! Intro naming `docs/x.md`.\n//!\n//! 1. `model`: keys;\n//! 2. `crd` and\n//!    `lambda::{selection, state}`;\n//! 3. `lambda::engine`, wired by `main.rs`.\n\npub mod model;";
    let layers = layers_of(lib);
    let listed: Vec<(&str, u8)> = layers.iter().map(|(m, l)| (m.as_str(), *l)).collect();
    assert_eq!(
        listed,
        [
            ("model", 1),
            ("crd", 2),
            ("lambda::selection", 2),
            ("lambda::state", 2),
            ("lambda::engine", 3)
        ]
    );
    let layers = crate_layers();
    assert_eq!(layer_in(&layers, "lambda::state"), 5);
    assert_eq!(layer_in(&layers, "lambda"), 5);
    assert_eq!(layer_in(&layers, "lambda::aws"), 7);
    assert_eq!(layer_in(&layers, "services"), 8);
    assert_eq!(layer_in(&layers, "services::state"), 5);
}

/// Each check fails on the import it exists to forbid.
#[test]
fn the_checks_fail_on_what_they_forbid() {
    let layers = crate_layers();
    let pure_state_reads_flags = crate_of(&[
        ("config", ""),
        ("lambda::state", "use crate::config::LambdaArgs;"),
    ]);
    assert_eq!(
        layer_violations(&pure_state_reads_flags, &layers),
        ["lambda::state (layer 5) imports config (layer 6)"]
    );
    let watch_uses_a_loop = crate_of(&[
        ("services::state", ""),
        ("lambda::target", ""),
        (
            "source::slim",
            "use crate::services::state::compact_service;",
        ),
        ("source::secrets", "use crate::lambda::target::SecretSeen;"),
    ]);
    assert_eq!(
        watch_imports_into_a_loop(&watch_uses_a_loop),
        [
            "source::secrets imports lambda::target",
            "source::slim imports services::state"
        ]
    );
    let folder_cycle = crate_of(&[
        ("translate", "pub use trace::Tracer;"),
        ("translate::trace", "use super::warning::AnnotationOrigin;"),
        (
            "translate::warning",
            "use crate::translate::upstream_config::MAX;",
        ),
        (
            "translate::upstream_config",
            "use super::trace::{record, Tracer};",
        ),
    ]);
    let cycle = find_cycle(&folder_edges(&folder_cycle)).expect("a cycle");
    assert_eq!(
        cycle,
        [
            "translate::trace",
            "translate::warning",
            "translate::upstream_config",
            "translate::trace"
        ]
    );
    let parent_and_child = crate_of(&[
        ("source", "use grants::inputs;"),
        ("source::grants", "use super::{watch, ServiceInput};"),
    ]);
    assert_eq!(find_cycle(&folder_edges(&parent_and_child)), None);
}
