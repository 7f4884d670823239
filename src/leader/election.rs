//! The election rule of client-go's leader election, on a `coordination.k8s.io/v1` Lease, as
//! plain decisions: given the Lease as read and the local clock, what to write. Another
//! holder's lease counts as expired only when its record has not changed for the lease
//! duration *as this replica has observed it*, so the rule never compares clocks of two
//! machines.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use tokio::time::Instant;

/// client-go's defaults: lease 15 s, renew deadline 10 s, retry every 2 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long others wait, after the record last changed, before taking the Lease.
    pub lease_duration: Duration,
    /// How long after the start of its last successful renewal a leader may still write.
    pub renew_deadline: Duration,
    /// How often to try to acquire or renew.
    pub retry_period: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Timings that cannot fence: a leader could still write after another replica took over.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TimingError {
    #[error("the lease duration ({lease:?}) must be longer than the renew deadline ({renew:?})")]
    LeaseNotLongerThanRenewDeadline { lease: Duration, renew: Duration },
    #[error("the renew deadline ({renew:?}) must be longer than the retry period ({retry:?})")]
    RenewDeadlineNotLongerThanRetry { renew: Duration, retry: Duration },
}

impl Timing {
    /// client-go's own checks: lease > renew deadline > retry period (both strictly).
    pub fn checked(self) -> Result<Self, TimingError> {
        if self.lease_duration <= self.renew_deadline {
            return Err(TimingError::LeaseNotLongerThanRenewDeadline {
                lease: self.lease_duration,
                renew: self.renew_deadline,
            });
        }
        if self.renew_deadline <= self.retry_period {
            return Err(TimingError::RenewDeadlineNotLongerThanRetry {
                renew: self.renew_deadline,
                retry: self.retry_period,
            });
        }
        Ok(self)
    }
}

/// What to do after reading the Lease.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    /// No Lease yet: create it holding it.
    Create(LeaseSpec),
    /// Take or renew it: replace the spec (guarded by the resourceVersion read).
    Write(LeaseSpec),
    /// Another replica holds a live lease.
    Wait { holder: String },
}

/// The parts of a Lease whose change shows that its holder is alive.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    holder: String,
    renew_time: Option<Timestamp>,
    acquire_time: Option<Timestamp>,
    transitions: i32,
    duration_seconds: Option<i32>,
}

impl Record {
    fn of(spec: &LeaseSpec) -> Self {
        Self {
            holder: spec.holder_identity.clone().unwrap_or_default(),
            renew_time: spec.renew_time.as_ref().map(|time| time.0),
            acquire_time: spec.acquire_time.as_ref().map(|time| time.0),
            transitions: spec.lease_transitions.unwrap_or(0),
            duration_seconds: spec.lease_duration_seconds,
        }
    }
}

/// One replica's view of the election.
#[derive(Debug)]
pub struct Election {
    identity: String,
    timing: Timing,
    /// The record last read and when it was first seen so (local clock).
    observed: Option<(Record, Instant)>,
}

impl Election {
    pub fn new(identity: &str, timing: Timing) -> Self {
        Self {
            identity: identity.to_string(),
            timing,
            observed: None,
        }
    }

    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// Decides what to write, given the Lease's spec as just read (`None`: no Lease), the
    /// monotonic `now` and the wall-clock `wall` to record in the Lease.
    pub fn attempt(&mut self, lease: Option<&LeaseSpec>, now: Instant, wall: Timestamp) -> Attempt {
        let seconds = i32::try_from(self.timing.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(spec) = lease else {
            return Attempt::Create(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(seconds),
                acquire_time: Some(MicroTime(wall)),
                renew_time: Some(MicroTime(wall)),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            });
        };
        let record = Record::of(spec);
        let observed_at = match &self.observed {
            Some((seen, at)) if *seen == record => *at,
            _ => {
                self.observed = Some((record.clone(), now));
                now
            }
        };
        let held_by_other = !record.holder.is_empty() && record.holder != self.identity;
        // The holder's own duration decides how long it may be silent, as in client-go.
        let their_duration = record
            .duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.timing.lease_duration, Duration::from_secs);
        if held_by_other && now < observed_at + their_duration {
            return Attempt::Wait {
                holder: record.holder,
            };
        }
        let renewing = record.holder == self.identity;
        Attempt::Write(LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(seconds),
            acquire_time: if renewing {
                spec.acquire_time.clone()
            } else {
                Some(MicroTime(wall))
            },
            renew_time: Some(MicroTime(wall)),
            lease_transitions: Some(if renewing {
                record.transitions
            } else {
                record.transitions.saturating_add(1)
            }),
            ..LeaseSpec::default()
        })
    }

    /// The spec that gives the Lease up at shutdown, so another replica need not wait for it
    /// to expire (client-go's release on cancel).
    pub fn release(&self, lease: &LeaseSpec, wall: Timestamp) -> Option<LeaseSpec> {
        (lease.holder_identity.as_deref() == Some(self.identity.as_str())).then(|| LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            acquire_time: lease.acquire_time.clone(),
            renew_time: Some(MicroTime(wall)),
            lease_transitions: lease.lease_transitions,
            ..LeaseSpec::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wall(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).expect("valid time")
    }

    fn held_by(holder: &str, renewed: i64, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.to_string()),
            lease_duration_seconds: Some(15),
            acquire_time: Some(MicroTime(wall(0))),
            renew_time: Some(MicroTime(wall(renewed))),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    fn written(attempt: Attempt) -> LeaseSpec {
        match attempt {
            Attempt::Write(spec) | Attempt::Create(spec) => spec,
            Attempt::Wait { holder } => panic!("expected a write, {holder} holds it"),
        }
    }

    #[test]
    fn client_go_timings_are_the_default_and_bad_ones_are_refused() {
        let timing = Timing::default();
        assert_eq!(timing.lease_duration, Duration::from_secs(15));
        assert_eq!(timing.renew_deadline, Duration::from_secs(10));
        assert_eq!(timing.retry_period, Duration::from_secs(2));
        assert_eq!(timing.checked(), Ok(timing));
        let same = Timing {
            renew_deadline: Duration::from_secs(15),
            ..timing
        };
        assert!(same.checked().is_err());
        let slow_retry = Timing {
            retry_period: Duration::from_secs(10),
            ..timing
        };
        assert!(slow_retry.checked().is_err());
    }

    #[test]
    fn no_lease_is_created_holding_it() {
        let mut election = Election::new("a", Timing::default());
        let spec = written(election.attempt(None, Instant::now(), wall(5)));
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.renew_time, Some(MicroTime(wall(5))));
        assert_eq!(spec.acquire_time, Some(MicroTime(wall(5))));
        assert_eq!(spec.lease_transitions, Some(0));
    }

    #[tokio::test(start_paused = true)]
    async fn another_holder_is_waited_for_until_its_record_is_silent_for_the_lease_duration() {
        let mut election = Election::new("b", Timing::default());
        let lease = held_by("a", 0, 3);
        assert_eq!(
            election.attempt(Some(&lease), Instant::now(), wall(0)),
            Attempt::Wait { holder: "a".into() }
        );
        tokio::time::advance(Duration::from_secs(14)).await;
        // The same record 14 s later: still inside its duration as observed here.
        assert!(matches!(
            election.attempt(Some(&lease), Instant::now(), wall(100)),
            Attempt::Wait { .. }
        ));
        // A renewal resets the observation, whatever the wall clocks say.
        let renewed = held_by("a", -50, 3);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(matches!(
            election.attempt(Some(&renewed), Instant::now(), wall(100)),
            Attempt::Wait { .. }
        ));
        tokio::time::advance(Duration::from_secs(15)).await;
        let taken = written(election.attempt(Some(&renewed), Instant::now(), wall(120)));
        assert_eq!(taken.holder_identity.as_deref(), Some("b"));
        assert_eq!(
            taken.lease_transitions,
            Some(4),
            "a change of holder is a transition"
        );
        assert_eq!(taken.acquire_time, Some(MicroTime(wall(120))));
    }

    #[test]
    fn the_holder_renews_keeping_its_acquire_time_and_transitions() {
        let mut election = Election::new("a", Timing::default());
        let renewed = written(election.attempt(Some(&held_by("a", 0, 3)), Instant::now(), wall(2)));
        assert_eq!(renewed.renew_time, Some(MicroTime(wall(2))));
        assert_eq!(renewed.acquire_time, Some(MicroTime(wall(0))));
        assert_eq!(renewed.lease_transitions, Some(3));
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let mut election = Election::new("b", Timing::default());
        let released = Election::new("a", Timing::default())
            .release(&held_by("a", 0, 3), wall(1))
            .expect("a holds it");
        assert_eq!(released.holder_identity, None);
        let taken = written(election.attempt(Some(&released), Instant::now(), wall(1)));
        assert_eq!(taken.holder_identity.as_deref(), Some("b"));
        assert_eq!(taken.lease_transitions, Some(4));
        assert_eq!(
            Election::new("b", Timing::default()).release(&held_by("a", 0, 3), wall(1)),
            None,
            "only the holder gives it up"
        );
    }
}
