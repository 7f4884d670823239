//! From what a sweep listed to the `lambdaFunctions` an Upstream should hold: pure.

use std::collections::{BTreeMap, BTreeSet};

use regex::Regex;

use crate::crd::LambdaFunction;

/// The qualifier of a function's unpublished, current version.
pub const LATEST: &str = "$LATEST";

/// One version of a function, as ListFunctions (FunctionVersion=ALL) returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionVersion {
    pub name: String,
    /// `$LATEST` or a published version number.
    pub version: String,
    pub last_modified: String,
}

/// The aliases of one function, and the `LastModified` of its `$LATEST` when they were listed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FunctionAliases {
    pub last_modified: String,
    pub names: Vec<String>,
}

/// Everything one sweep of an account and region found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Listing {
    pub versions: Vec<FunctionVersion>,
    /// Per function name; empty unless aliases are listed.
    pub aliases: BTreeMap<String, FunctionAliases>,
}

impl Listing {
    /// Functions whose aliases must be (re)listed: new ones, and those whose `$LATEST` changed
    /// since `previous` listed their aliases.
    pub fn needing_aliases(&self, previous: Option<&Listing>) -> Vec<String> {
        self.versions
            .iter()
            .filter(|v| v.version == LATEST)
            .filter(|v| {
                previous
                    .and_then(|p| p.aliases.get(&v.name))
                    .is_none_or(|known| known.last_modified != v.last_modified)
            })
            .map(|v| v.name.clone())
            .collect()
    }

    /// Aliases of `previous` still valid for functions this listing did not re-list.
    pub fn keep_aliases_from(&mut self, previous: Option<&Listing>) {
        let Some(previous) = previous else { return };
        for version in self.versions.iter().filter(|v| v.version == LATEST) {
            if self.aliases.contains_key(&version.name) {
                continue;
            }
            if let Some(known) = previous.aliases.get(&version.name) {
                if known.last_modified == version.last_modified {
                    self.aliases.insert(version.name.clone(), known.clone());
                }
            }
        }
    }
}

/// `name` for `$LATEST`, `name:qualifier` otherwise, as Gloo writes it.
pub fn logical_name(name: &str, qualifier: &str) -> String {
    if qualifier == LATEST {
        name.to_string()
    } else {
        format!("{name}:{qualifier}")
    }
}

fn entry(name: &str, qualifier: &str) -> LambdaFunction {
    LambdaFunction {
        lambda_function_name: name.to_string(),
        qualifier: qualifier.to_string(),
        logical_name: logical_name(name, qualifier),
    }
}

/// What one Upstream should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// Sorted byte-wise by `logicalName`, at most the cap.
    pub functions: Vec<LambdaFunction>,
    /// Entries left out by the cap.
    pub left_out: usize,
}

/// Every version (and alias) of `listing` whose function name `filter` matches, sorted by
/// `logicalName` byte-wise, cut at `max` entries.
pub fn desired(listing: &Listing, filter: Option<&Regex>, max: usize) -> Desired {
    let wanted = |name: &str| filter.is_none_or(|f| f.is_match(name));
    let mut seen = BTreeSet::new();
    let mut functions: Vec<LambdaFunction> = listing
        .versions
        .iter()
        .filter(|v| wanted(&v.name))
        .map(|v| entry(&v.name, &v.version))
        .chain(
            listing
                .aliases
                .iter()
                .filter(|(name, _)| wanted(name))
                .flat_map(|(name, aliases)| aliases.names.iter().map(|alias| entry(name, alias))),
        )
        // An alias named like a version number would repeat an entry.
        .filter(|f| seen.insert(f.logical_name.clone()))
        .collect();
    functions.sort_by(|a, b| a.logical_name.as_bytes().cmp(b.logical_name.as_bytes()));
    let left_out = functions.len().saturating_sub(max);
    functions.truncate(max);
    Desired {
        functions,
        left_out,
    }
}

/// Whether `current` (as stored; absent counts as empty) already is `desired`.
pub fn unchanged(current: Option<&[LambdaFunction]>, desired: &[LambdaFunction]) -> bool {
    current.unwrap_or_default() == desired
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(name: &str, version: &str, modified: &str) -> FunctionVersion {
        FunctionVersion {
            name: name.into(),
            version: version.into(),
            last_modified: modified.into(),
        }
    }

    fn logical(desired: &Desired) -> Vec<&str> {
        desired
            .functions
            .iter()
            .map(|f| f.logical_name.as_str())
            .collect()
    }

    #[test]
    fn versions_become_entries_as_gloo_writes_them() {
        let listing = Listing {
            versions: vec![
                version("orders", "$LATEST", "t1"),
                version("orders", "2", "t0"),
                version("orders", "10", "t0"),
                version("Billing", "$LATEST", "t1"),
            ],
            aliases: BTreeMap::new(),
        };
        let desired = desired(&listing, None, 100);
        assert_eq!(
            logical(&desired),
            ["Billing", "orders", "orders:10", "orders:2"],
            "byte-wise: upper case first, '10' before '2'"
        );
        assert_eq!(desired.functions[0].qualifier, "$LATEST");
        assert_eq!(desired.functions[2].lambda_function_name, "orders");
        assert_eq!(desired.functions[2].qualifier, "10");
        assert_eq!(desired.left_out, 0);
    }

    #[test]
    fn aliases_add_name_colon_alias_entries() {
        let mut aliases = BTreeMap::new();
        aliases.insert(
            "orders".to_string(),
            FunctionAliases {
                last_modified: "t1".into(),
                names: vec!["live".into(), "1".into()],
            },
        );
        let listing = Listing {
            versions: vec![
                version("orders", "$LATEST", "t1"),
                version("orders", "1", "t0"),
            ],
            aliases,
        };
        let desired = desired(&listing, None, 100);
        assert_eq!(logical(&desired), ["orders", "orders:1", "orders:live"]);
        assert_eq!(desired.functions[2].qualifier, "live");
    }

    #[test]
    fn the_filter_narrows_by_function_name() {
        let listing = Listing {
            versions: vec![
                version("prod-orders", "$LATEST", "t"),
                version("prod-orders", "1", "t"),
                version("dev-orders", "$LATEST", "t"),
            ],
            aliases: BTreeMap::new(),
        };
        let filter = Regex::new("^prod-").expect("valid");
        assert_eq!(
            logical(&desired(&listing, Some(&filter), 100)),
            ["prod-orders", "prod-orders:1"]
        );
    }

    #[test]
    fn the_cap_keeps_the_first_entries_and_counts_the_rest() {
        let listing = Listing {
            versions: (0..10)
                .map(|i| version(&format!("f{i}"), "$LATEST", "t"))
                .collect(),
            aliases: BTreeMap::new(),
        };
        let capped = desired(&listing, None, 4);
        assert_eq!(logical(&capped), ["f0", "f1", "f2", "f3"]);
        assert_eq!(capped.left_out, 6);
    }

    #[test]
    fn aliases_are_relisted_only_for_new_or_changed_functions() {
        let mut known = BTreeMap::new();
        for (name, modified) in [("a", "t1"), ("b", "t1")] {
            known.insert(
                name.to_string(),
                FunctionAliases {
                    last_modified: modified.into(),
                    names: vec!["live".into()],
                },
            );
        }
        let previous = Listing {
            versions: vec![],
            aliases: known,
        };
        let mut now = Listing {
            versions: vec![
                version("a", "$LATEST", "t1"),
                version("b", "$LATEST", "t2"),
                version("c", "$LATEST", "t1"),
                version("c", "1", "t0"),
            ],
            aliases: BTreeMap::new(),
        };
        assert_eq!(now.needing_aliases(Some(&previous)), ["b", "c"]);
        assert_eq!(now.needing_aliases(None), ["a", "b", "c"]);
        now.keep_aliases_from(Some(&previous));
        assert_eq!(now.aliases.keys().collect::<Vec<_>>(), ["a"]);
    }

    #[test]
    fn absent_and_empty_lists_are_the_same() {
        assert!(unchanged(None, &[]));
        assert!(!unchanged(None, &[entry("a", LATEST)]));
        assert!(unchanged(
            Some(&[entry("a", LATEST)]),
            &[entry("a", LATEST)]
        ));
    }
}
