//! Writes refused by admission control, per Upstream: one Warning Event (and so one WARN line)
//! when a refusal starts or changes, one INFO line when the write finally goes through, and
//! nothing per retry in between. The retries themselves are the work queue's: the Service's
//! job backs off like any failed one (capped at [`super::RETRY`]'s cap), others go on.

use std::collections::HashMap;

use tokio::time::{Duration, Instant};

use super::state::Job;
use super::Engine;
use crate::admission::{Refusal, RefusedWrite};
use crate::events::{ObjectEvent, Regarding};
use crate::metrics::WriteOp;
use crate::model::{ErrorKind, UpstreamKey};

/// A refusal that has not been followed by the write going through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    pub op: WriteOp,
    pub refusal: Refusal,
    /// The job whose write it is: when that job has nothing left to write, the refusal is over.
    pub job: Job,
    pub since: Instant,
    /// Refused tries so far.
    pub tries: u32,
}

impl Standing {
    /// The same refusal again (not news): the same write refused by the same webhook or policy
    /// for the same reason. An unavailable webhook's reason names ports and timings, so only
    /// its name counts.
    fn same(&self, op: WriteOp, refusal: &Refusal) -> bool {
        self.op == op
            && self.refusal.kind == refusal.kind
            && self.refusal.by == refusal.by
            && (refusal.kind == ErrorKind::AdmissionUnavailable
                || self.refusal.message == refusal.message)
    }
}

/// The standing refusals, by Upstream.
#[derive(Debug, Default)]
pub struct Refusals {
    standing: HashMap<UpstreamKey, Standing>,
}

impl Refusals {
    /// Records a refused write; true when it is news (a first or a different refusal).
    pub fn refused(
        &mut self,
        job: &Job,
        op: WriteOp,
        refused: &RefusedWrite,
        now: Instant,
    ) -> bool {
        if let Some(standing) = self.standing.get_mut(&refused.upstream) {
            if standing.same(op, &refused.refusal) {
                standing.tries += 1;
                standing
                    .refusal
                    .message
                    .clone_from(&refused.refusal.message);
                return false;
            }
        }
        let since = self
            .standing
            .get(&refused.upstream)
            .map_or(now, |previous| previous.since);
        let tries = self
            .standing
            .get(&refused.upstream)
            .map_or(1, |previous| previous.tries + 1);
        self.standing.insert(
            refused.upstream.clone(),
            Standing {
                op,
                refusal: refused.refusal.clone(),
                job: job.clone(),
                since,
                tries,
            },
        );
        true
    }

    /// A write of `key` went through: the refusal it ends, if any.
    pub fn allowed(&mut self, key: &UpstreamKey) -> Option<Standing> {
        self.standing.remove(key)
    }

    /// `job` has nothing left to write: its refusals are over without a write (the Service
    /// changed back, or the object went by other hands).
    pub fn settle(&mut self, job: &Job) {
        self.standing.retain(|_, standing| standing.job != *job);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.standing.len()
    }
}

impl Engine {
    /// A write admission control refused: counted by the caller; reported here when news.
    pub(super) fn on_refused(&mut self, job: &Job, op: WriteOp, refused: &RefusedWrite) {
        let key = &refused.upstream;
        if !self.refusals.refused(job, op, refused, Instant::now()) {
            tracing::debug!(%job, upstream = %key, op = op.as_str(), error = %refused.refusal.message, "refused by admission control again; will retry");
            return;
        }
        let regarding = match (&refused.uid, job) {
            (Some(uid), _) => Regarding::upstream(key, Some(uid.clone())),
            (None, Job::Service(service)) => {
                let uid = self
                    .state
                    .service_in_scope(service)
                    .and_then(|service| service.metadata.uid);
                Regarding::service(service, uid)
            }
            (None, Job::Orphan(_)) => Regarding::upstream(key, None),
        };
        self.events.record(ObjectEvent {
            regarding,
            warning: true,
            reason: refused.refusal.event_reason(),
            note: note(op, refused, super::RETRY.cap),
        });
    }

    /// A write of `key` went through: says so once if admission control had refused it.
    pub(super) fn on_allowed(&mut self, job: &Job, key: &UpstreamKey, op: WriteOp) {
        if let Some(standing) = self.refusals.allowed(key) {
            let refused_for = standing.since.elapsed();
            tracing::info!(%job, upstream = %key, op = op.as_str(), refused_tries = standing.tries, refused_for_ms = refused_for.as_millis() as u64, by = %standing.refusal.by_what(), "write went through after admission control refused it");
        }
    }
}

/// The Event's text: which write, who refused it, the API server's message word for word, and
/// what the daemon does about it.
fn note(op: WriteOp, refused: &RefusedWrite, cap: Duration) -> String {
    let refusal = &refused.refusal;
    let what = if refusal.kind == ErrorKind::AdmissionUnavailable {
        format!("{} could not be called", refusal.by_what())
    } else {
        format!("refused by {}", refusal.by_what())
    };
    format!(
        "{} of Upstream {} {what}: {}; retrying with backoff (at most {}s apart) until it is allowed",
        op.as_str(),
        refused.upstream,
        refusal.message,
        cap.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ServiceKey;

    fn refused(message: &str) -> RefusedWrite {
        RefusedWrite {
            upstream: UpstreamKey::new("gloo-system", "shop-web-80"),
            uid: Some("u1".into()),
            refusal: Refusal::from_message(message).expect("a refusal"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_is_news_once_per_change_and_ends_with_the_write() {
        let job = Job::Service(ServiceKey::new("shop", "web"));
        let frozen = refused("admission webhook \"w\" denied the request: frozen");
        let mut refusals = Refusals::default();
        let start = Instant::now();
        assert!(refusals.refused(&job, WriteOp::Delete, &frozen, start));
        assert!(!refusals.refused(&job, WriteOp::Delete, &frozen, start));
        assert!(
            refusals.refused(&job, WriteOp::Update, &frozen, start),
            "another write"
        );
        let other = refused("admission webhook \"w\" denied the request: not today");
        assert!(
            refusals.refused(&job, WriteOp::Update, &other, start),
            "another reason"
        );
        let down = |port| {
            refused(&format!(
                "Internal error occurred: failed calling webhook \"w\": dial tcp 127.0.0.1:{port}: connect: connection refused"
            ))
        };
        assert!(refusals.refused(&job, WriteOp::Update, &down(1), start));
        assert!(
            !refusals.refused(&job, WriteOp::Update, &down(2), start),
            "the same webhook still down"
        );
        let standing = refusals.allowed(&frozen.upstream).expect("it was refused");
        assert_eq!((standing.tries, standing.since), (6, start));
        assert!(refusals.allowed(&frozen.upstream).is_none(), "said once");

        refusals.refused(&job, WriteOp::Delete, &frozen, start);
        refusals.settle(&Job::Service(ServiceKey::new("shop", "other")));
        assert_eq!(refusals.len(), 1, "another job's end is not this one's");
        refusals.settle(&job);
        assert_eq!(refusals.len(), 0);
    }

    #[test]
    fn the_note_carries_the_message_word_for_word() {
        let write = refused(
            "admission webhook \"upstreams.example.com\" denied the request: deletes are frozen",
        );
        assert_eq!(
            note(WriteOp::Delete, &write, Duration::from_secs(60)),
            "delete of Upstream gloo-system/shop-web-80 refused by admission webhook \"upstreams.example.com\": admission webhook \"upstreams.example.com\" denied the request: deletes are frozen; retrying with backoff (at most 60s apart) until it is allowed"
        );
    }
}
