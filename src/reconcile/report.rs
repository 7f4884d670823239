//! Report-once bookkeeping: an Event (and its counter) is recorded when an object's problem
//! changes, not on every pass over it, and forgotten with the object.

use std::collections::HashMap;
use std::hash::Hash;

/// What happened to a key's reported state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change<V> {
    /// The same problem (or none) as last time: nothing to report.
    Unchanged,
    /// A new or different problem; `previous` is what was reported before it.
    Raised { previous: Option<V> },
    /// The problem is over; here is what it was.
    Cleared(V),
}

#[derive(Debug)]
pub struct ReportOnce<K, V> {
    reported: HashMap<K, V>,
}

impl<K, V> Default for ReportOnce<K, V> {
    fn default() -> Self {
        Self {
            reported: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash + Clone, V: PartialEq> ReportOnce<K, V> {
    /// Records `current` as the key's state and says whether that is news.
    pub fn update(&mut self, key: &K, current: Option<V>) -> Change<V> {
        match current {
            None => match self.reported.remove(key) {
                Some(previous) => Change::Cleared(previous),
                None => Change::Unchanged,
            },
            Some(current) => {
                if self.reported.get(key) == Some(&current) {
                    return Change::Unchanged;
                }
                let previous = self.reported.insert(key.clone(), current);
                Change::Raised { previous }
            }
        }
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.reported.get(key)
    }

    /// Drops the key without reporting anything (the object is gone).
    pub fn forget(&mut self, key: &K) {
        self.reported.remove(key);
    }

    pub fn len(&self) -> usize {
        self.reported.len()
    }

    pub fn is_empty(&self) -> bool {
        self.reported.is_empty()
    }
}

/// A lasting refusal (a right the API server denies) is said once, not on every retry of every
/// object: the first refusal is worth a warning line, the next ones only until something goes
/// through again.
#[derive(Debug, Default)]
pub struct SayOnce {
    said: bool,
}

impl SayOnce {
    /// True the first time since the last [`SayOnce::clear`].
    pub fn first(&mut self) -> bool {
        !std::mem::replace(&mut self.said, true)
    }

    /// Something went through: the next refusal is news again.
    pub fn clear(&mut self) {
        self.said = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_is_news_once_per_change() {
        let mut reports: ReportOnce<&str, &str> = ReportOnce::default();
        assert_eq!(reports.update(&"a", None), Change::Unchanged);
        assert_eq!(
            reports.update(&"a", Some("x")),
            Change::Raised { previous: None }
        );
        assert_eq!(reports.update(&"a", Some("x")), Change::Unchanged);
        assert_eq!(
            reports.update(&"a", Some("y")),
            Change::Raised {
                previous: Some("x")
            }
        );
        assert_eq!(reports.update(&"a", None), Change::Cleared("y"));
        assert!(reports.is_empty());
        reports.update(&"b", Some("x"));
        reports.forget(&"b");
        assert_eq!(reports.len(), 0);
    }

    #[test]
    fn a_refusal_is_said_once_until_something_goes_through() {
        let mut notice = SayOnce::default();
        assert!(notice.first());
        assert!(!notice.first());
        assert!(!notice.first());
        notice.clear();
        assert!(notice.first());
    }
}
