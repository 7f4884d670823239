//! Reading the Prometheus text format: samples with their labels, histogram quantiles, and the
//! API server's request counts by verb and resource.

use std::collections::BTreeMap;

pub type Labels = BTreeMap<String, String>;

/// One scrape: every sample as (metric name, labels, value).
#[derive(Debug, Clone, Default)]
pub struct Samples(Vec<(String, Labels, f64)>);

impl Samples {
    pub fn parse(text: &str) -> Self {
        Self(
            text.lines()
                .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
                .filter_map(|line| line.rsplit_once(' '))
                .filter_map(|(series, value)| {
                    let (name, labels) = split_series(series);
                    Some((name.to_string(), labels, value.trim().parse().ok()?))
                })
                .collect(),
        )
    }

    /// Every series of metric `name` whose labels include all of `filter`.
    pub fn series<'a>(
        &'a self,
        name: &'a str,
        filter: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = (&'a Labels, f64)> + 'a {
        self.0
            .iter()
            .filter(move |(metric, labels, _)| metric == name && matches(labels, filter))
            .map(|(_, labels, value)| (labels, *value))
    }

    /// Sum of the series of metric `name` whose labels include all of `filter`.
    pub fn sum(&self, name: &str, filter: &[(&str, &str)]) -> f64 {
        total(self.series(name, filter).map(|(_, value)| value))
    }
}

fn matches(labels: &Labels, filter: &[(&str, &str)]) -> bool {
    filter
        .iter()
        .all(|(key, value)| labels.get(*key).map(String::as_str) == Some(*value))
}

fn split_series(series: &str) -> (&str, Labels) {
    match series.split_once('{') {
        None => (series.trim(), Labels::new()),
        Some((name, rest)) => (name, parse_labels(rest.trim_end().trim_end_matches('}'))),
    }
}

/// `a="x",b="y"`, with `\"`, `\\` and `\n` escapes in values.
fn parse_labels(mut text: &str) -> Labels {
    let mut labels = Labels::new();
    while let Some((key, after)) = text.split_once("=\"") {
        let mut value = String::new();
        let mut end = after.len();
        let mut chars = after.char_indices();
        while let Some((index, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, escaped)) => value.push(escaped),
                    None => {}
                },
                '"' => {
                    end = index + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').trim().to_string(), value);
        text = &after[end..];
    }
    labels
}

/// A histogram's cumulative buckets (upper bound, count), summed over the matching series.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    buckets: Vec<(f64, f64)>,
}

impl Histogram {
    /// The histogram `name` (without `_bucket`) from a scrape.
    pub fn read(samples: &Samples, name: &str, filter: &[(&str, &str)]) -> Self {
        let bucket_name = format!("{name}_bucket");
        let mut by_bound: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for (labels, count) in samples.series(&bucket_name, filter) {
            let Some(bound) = labels.get("le").and_then(|le| le.parse::<f64>().ok()) else {
                continue;
            };
            by_bound.entry(bound.to_bits()).or_insert((bound, 0.0)).1 += count;
        }
        let mut buckets: Vec<(f64, f64)> = by_bound.into_values().collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Self { buckets }
    }

    /// The observations made between `earlier` and `self` (two scrapes of one process).
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let buckets = self
            .buckets
            .iter()
            .map(|&(bound, count)| {
                let before = earlier
                    .buckets
                    .iter()
                    .find(|(b, _)| *b == bound)
                    .map_or(0.0, |(_, c)| *c);
                (bound, count - before)
            })
            .collect();
        Histogram { buckets }
    }

    pub fn count(&self) -> f64 {
        self.buckets.last().map_or(0.0, |(_, count)| *count)
    }

    /// The quantile as Prometheus' `histogram_quantile` computes it: linear within the bucket
    /// it falls in; the highest finite bound when it falls in `+Inf`. `None` without samples.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let mut lower = (0.0, 0.0);
        for &(bound, count) in &self.buckets {
            if count >= rank {
                if bound.is_infinite() {
                    return Some(lower.0);
                }
                let in_bucket = count - lower.1;
                let fraction = if in_bucket > 0.0 {
                    (rank - lower.1) / in_bucket
                } else {
                    1.0
                };
                return Some(lower.0 + (bound - lower.0) * fraction);
            }
            lower = (bound, count);
        }
        Some(lower.0)
    }
}

/// `apiserver_request_total` by (verb, resource, scope), summed over codes and the rest. The
/// API server of v1.20 does not say which client made a request; the scope tells the daemon's
/// namespaced requests apart from the API server's own cluster-wide loops (e.g. the Service IP
/// and port repair loops LIST every Service every 3 minutes).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestCounts(pub BTreeMap<(String, String, String), f64>);

impl RequestCounts {
    pub fn read(samples: &Samples) -> Self {
        let mut counts = BTreeMap::new();
        for (labels, value) in samples.series("apiserver_request_total", &[]) {
            let verb = labels.get("verb").cloned().unwrap_or_default();
            let resource = labels.get("resource").cloned().unwrap_or_default();
            let scope = labels.get("scope").cloned().unwrap_or_default();
            *counts.entry((verb, resource, scope)).or_insert(0.0) += value;
        }
        Self(counts)
    }

    /// Requests made between `earlier` and `self`, on `resources` only, without zeros.
    pub fn since(&self, earlier: &RequestCounts, resources: &[&str]) -> RequestCounts {
        let counts = self
            .0
            .iter()
            .filter(|((_, resource, _), _)| resources.contains(&resource.as_str()))
            .map(|(key, count)| (key.clone(), count - earlier.0.get(key).unwrap_or(&0.0)))
            .filter(|(_, delta)| *delta > 0.0)
            .collect();
        RequestCounts(counts)
    }

    pub fn total(&self) -> f64 {
        total(self.0.values().copied())
    }

    /// Requests with one of `verbs` on `resource`.
    pub fn of(&self, verbs: &[&str], resource: &str) -> f64 {
        total(
            self.0
                .iter()
                .filter(|((verb, res, _), _)| verbs.contains(&verb.as_str()) && res == resource)
                .map(|(_, count)| *count),
        )
    }

    /// Requests with one of `verbs` and `scope`, on any resource.
    pub fn verbs_in_scope(&self, verbs: &[&str], scope: &str) -> f64 {
        total(
            self.0
                .iter()
                .filter(|((verb, _, s), _)| verbs.contains(&verb.as_str()) && s == scope)
                .map(|(_, count)| *count),
        )
    }

    /// `"VERB resource"` (with ` (cluster)` when cluster-wide) → count, for the reports.
    pub fn to_map(&self) -> BTreeMap<String, f64> {
        self.0
            .iter()
            .map(|((verb, resource, scope), count)| {
                let scope = if scope == "cluster" { " (cluster)" } else { "" };
                (format!("{verb} {resource}{scope}"), *count)
            })
            .collect()
    }
}

/// The sum of `values`: 0, not the -0.0 of an empty f64 sum, when there are none.
fn total(values: impl Iterator<Item = f64>) -> f64 {
    values.sum::<f64>() + 0.0
}

/// Exact quantile of measured values (nearest rank); `None` when there are none.
pub fn exact_quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}
