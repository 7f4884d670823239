//! Kubernetes label selectors in their string form (`app=web,tier in (a,b),!canary`), parsed
//! into `kube`'s [`Selector`] so that the same value filters Services offline (`render`) and
//! is sent to the API server as a `labelSelector` by the daemon.

use std::collections::BTreeSet;
use std::str::FromStr;

use kube::core::{Expression, Selector, SelectorExt};

/// A selector string that could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid label selector {input:?}: {reason}")]
pub struct SelectorError {
    input: String,
    reason: String,
}

/// A parsed label selector. The empty string selects everything.
#[derive(Debug, Clone, Default)]
pub struct LabelSelector {
    selector: Selector,
    /// More selectors, any of which may match instead (Gloo's `watchNamespaceSelectors`).
    alternatives: Vec<Selector>,
    source: String,
}

/// Selectors read from the same text select the same labels; the text is what a change of
/// configuration compares.
impl PartialEq for LabelSelector {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for LabelSelector {}

impl LabelSelector {
    /// Labels match when any of `selectors` matches; none selects everything. Only for
    /// matching here: the API server's `labelSelector` has no "or", so [`Self::as_str`] is then
    /// for reading, not for sending.
    pub fn any_of(selectors: Vec<LabelSelector>) -> Self {
        let source = selectors
            .iter()
            .map(|selector| format!("({})", selector.source))
            .collect::<Vec<_>>()
            .join(" or ");
        let mut all = selectors
            .into_iter()
            .flat_map(|selector| std::iter::once(selector.selector).chain(selector.alternatives));
        match all.next() {
            None => Self::default(),
            Some(selector) => Self {
                selector,
                alternatives: all.collect(),
                source,
            },
        }
    }

    /// True when every Service is selected.
    pub fn selects_all(&self) -> bool {
        self.selector.selects_all() || self.alternatives.iter().any(Selector::selects_all)
    }

    /// Whether a set of labels matches.
    pub fn matches(&self, labels: &std::collections::BTreeMap<String, String>) -> bool {
        self.selector.matches(labels)
            || self
                .alternatives
                .iter()
                .any(|selector| selector.matches(labels))
    }

    /// The selector as the user wrote it, for the API server's `labelSelector` parameter.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl FromStr for LabelSelector {
    type Err = SelectorError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let fail = |reason: &str| SelectorError {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let mut selector = Selector::default();
        for requirement in split_requirements(input).map_err(|reason| fail(&reason))? {
            selector.extend([parse_requirement(&requirement).map_err(|reason| fail(&reason))?]);
        }
        Ok(Self {
            selector,
            alternatives: Vec::new(),
            source: input.trim().to_string(),
        })
    }
}

/// Splits on commas that are not inside a `( … )` value set.
fn split_requirements(input: &str) -> Result<Vec<String>, String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut depth = 0usize;
    for c in input.chars() {
        match c {
            '(' => {
                depth += 1;
                current.push(c);
            }
            ')' => {
                depth = depth.checked_sub(1).ok_or("unbalanced ')'")?;
                current.push(c);
            }
            ',' if depth == 0 => parts.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    if depth != 0 {
        return Err("unbalanced '('".to_string());
    }
    parts.push(current);
    let parts: Vec<String> = parts.into_iter().map(|p| p.trim().to_string()).collect();
    if parts.len() == 1 && parts[0].is_empty() {
        return Ok(Vec::new());
    }
    if parts.iter().any(String::is_empty) {
        return Err("empty requirement".to_string());
    }
    Ok(parts)
}

fn parse_requirement(text: &str) -> Result<Expression, String> {
    if let Some(key) = text.strip_prefix('!') {
        return Ok(Expression::DoesNotExist(valid_key(key.trim())?));
    }
    for (operator, negated) in [("!=", true), ("==", false), ("=", false)] {
        if let Some((key, value)) = text.split_once(operator) {
            let (key, value) = (valid_key(key.trim())?, valid_value(value.trim())?);
            return Ok(if negated {
                Expression::NotEqual(key, value)
            } else {
                Expression::Equal(key, value)
            });
        }
    }
    let words: Vec<&str> = text.splitn(2, char::is_whitespace).collect();
    if let [key, rest] = words[..] {
        let rest = rest.trim_start();
        for (operator, negated) in [("notin", true), ("in", false)] {
            if let Some(set) = rest.strip_prefix(operator) {
                let values = parse_value_set(set.trim())?;
                let key = valid_key(key)?;
                return Ok(if negated {
                    Expression::NotIn(key, values)
                } else {
                    Expression::In(key, values)
                });
            }
        }
        return Err(format!("unknown operator in {text:?}"));
    }
    Ok(Expression::Exists(valid_key(text)?))
}

fn parse_value_set(text: &str) -> Result<BTreeSet<String>, String> {
    let inner = text
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(|| format!("expected a value set like (a,b), got {text:?}"))?;
    inner.split(',').map(|v| valid_value(v.trim())).collect()
}

fn valid_key(key: &str) -> Result<String, String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    });
    if !prefix_ok || name.is_empty() || !is_label_text(name) {
        return Err(format!("invalid label key {key:?}"));
    }
    Ok(key.to_string())
}

fn valid_value(value: &str) -> Result<String, String> {
    if value.is_empty() || is_label_text(value) {
        Ok(value.to_string())
    } else {
        Err(format!("invalid label value {value:?}"))
    }
}

/// A label name or value: at most 63 characters, alphanumerics with `-`, `_`, `.` inside.
fn is_label_text(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() <= 63
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn any_of_matches_when_one_does() {
        let parse = |text: &str| text.parse::<LabelSelector>().expect("valid");
        let either = LabelSelector::any_of(vec![parse("team=edge"), parse("tier in (a,b)")]);
        assert!(either.matches(&labels(&[("team", "edge")])));
        assert!(either.matches(&labels(&[("tier", "b")])));
        assert!(!either.matches(&labels(&[("team", "core"), ("tier", "c")])));
        assert!(!either.selects_all());
        assert_eq!(either.as_str(), "(team=edge) or (tier in (a,b))");
        assert!(LabelSelector::any_of(Vec::new()).selects_all());
        assert!(LabelSelector::any_of(vec![parse("a=b"), parse("")]).selects_all());
    }

    #[test]
    fn matching_table() {
        let web = labels(&[("app", "web"), ("tier", "front")]);
        let db = labels(&[("app", "db"), ("canary", "yes")]);
        let cases = [
            ("", true, true),
            ("app=web", true, false),
            ("app==web", true, false),
            ("app!=web", false, true),
            ("app in (web, api)", true, false),
            ("app notin (web,api)", false, true),
            ("canary", false, true),
            ("!canary", true, false),
            ("app=web,tier=front", true, false),
            ("app in (db),canary", false, true),
            ("example.com/team=x", false, false),
        ];
        for (text, want_web, want_db) in cases {
            let selector: LabelSelector = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(selector.matches(&web), want_web, "{text:?} on web");
            assert_eq!(selector.matches(&db), want_db, "{text:?} on db");
        }
    }

    #[test]
    fn rejects_malformed_selectors() {
        for text in [
            "=web",
            "app in web",
            "app in (web",
            "a,,b",
            "app=we b",
            "app ~ web",
            "-bad=x",
        ] {
            assert!(
                text.parse::<LabelSelector>().is_err(),
                "{text:?} should be rejected"
            );
        }
    }

    #[test]
    fn an_empty_value_is_a_valid_equality() {
        let selector: LabelSelector = "app=".parse().expect("valid in Kubernetes");
        assert!(selector.matches(&labels(&[("app", "")])));
        assert!(!selector.matches(&labels(&[("app", "web")])));
    }

    #[test]
    fn keeps_the_source_text() {
        let selector: LabelSelector = " app=web ".parse().expect("valid");
        assert_eq!(selector.as_str(), "app=web");
        assert!(!selector.selects_all());
        assert!("".parse::<LabelSelector>().expect("valid").selects_all());
    }
}
