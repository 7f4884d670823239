//! How long a failed list or watch waits before it tries again. kube's default backoff grows to
//! 30 s and only starts over after two quiet minutes, so after an outage a watch could sit out
//! half a minute after the API server is back. Here the wait is capped at a few seconds (the
//! server is noticed within that of coming back), a `410 Gone` re-lists at once (the data is
//! only stale, the server is fine), and the wait starts over as soon as a list or watch has
//! answered, not merely been retried.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kube::runtime::utils::Backoff;
use kube::runtime::watcher;

/// The first wait after a failure.
const FIRST: Duration = Duration::from_millis(500);
/// The longest wait: an API server that is back is noticed within this.
const CAP: Duration = Duration::from_secs(4);

/// What the stream has shown since the last wait, seen before the backoff decides.
#[derive(Debug, Default)]
pub struct Signals {
    /// The last failure was `410 Gone`.
    gone: AtomicBool,
    /// A list or watch answered since the last failure.
    answered: AtomicBool,
}

impl Signals {
    pub fn observe<K>(&self, item: &Result<watcher::Event<K>, watcher::Error>) {
        match item {
            // Sent before each retry's list, so it says nothing about the server.
            Ok(watcher::Event::Init) => {}
            Ok(_) => self.answered.store(true, Ordering::Release),
            Err(error) => {
                self.answered.store(false, Ordering::Release);
                self.gone.store(is_gone(error), Ordering::Release);
            }
        }
    }
}

fn is_gone(error: &watcher::Error) -> bool {
    status_code(error) == Some(410)
}

/// The HTTP status the API server answered a failed list or watch with, if it answered.
pub fn status_code(error: &watcher::Error) -> Option<u16> {
    let api_code = |error: &kube::Error| match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    };
    match error {
        watcher::Error::WatchError(status) => Some(status.code),
        watcher::Error::InitialListFailed(error)
        | watcher::Error::WatchStartFailed(error)
        | watcher::Error::WatchFailed(error) => api_code(error),
        watcher::Error::NoResourceVersion => None,
    }
}

/// The waits of one watch stream.
#[derive(Debug)]
pub struct WatchBackoff {
    signals: Arc<Signals>,
    failures: u32,
    cap: Duration,
}

impl WatchBackoff {
    pub fn new(signals: Arc<Signals>) -> Self {
        Self::capped(signals, CAP)
    }

    /// Waits that grow to `cap` instead of [`CAP`], for a watch whose failure is expected to
    /// last (an optional CRD not installed).
    pub fn capped(signals: Arc<Signals>, cap: Duration) -> Self {
        Self {
            signals,
            failures: 0,
            cap,
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self.signals.gone.swap(false, Ordering::AcqRel) {
            return Some(Duration::ZERO);
        }
        let doubled = FIRST.saturating_mul(1 << self.failures.min(16));
        self.failures = self.failures.saturating_add(1);
        // Up to a fifth less, so that the streams of many replicas do not retry in step.
        let jitter = 1.0 - rand::random::<f64>() * 0.2;
        Some(doubled.min(self.cap).mul_f64(jitter))
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        if self.signals.answered.load(Ordering::Acquire) {
            self.failures = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Item = Result<watcher::Event<()>, watcher::Error>;

    fn failed(code: u16) -> Item {
        let status = kube::core::Status::failure("failed", "Reason").with_code(code);
        Err(watcher::Error::WatchError(Box::new(status)))
    }

    #[test]
    fn waits_grow_to_a_few_seconds_and_start_over_only_after_an_answer() {
        let signals = Arc::new(Signals::default());
        let mut backoff = WatchBackoff::new(signals.clone());
        let mut waits = Vec::new();
        for _ in 0..8 {
            signals.observe(&failed(503));
            waits.push(backoff.next().expect("always a wait"));
            // Each retry starts with `Init`: no answer yet, so no fresh start.
            signals.observe::<()>(&Ok(watcher::Event::Init));
            backoff.reset();
        }
        assert!(
            waits[0] <= FIRST && waits[0] >= FIRST.mul_f64(0.8),
            "{waits:?}"
        );
        assert!(waits[2] > waits[0], "{waits:?}");
        assert!(waits.iter().all(|wait| *wait <= CAP), "{waits:?}");
        assert!(waits[7] >= CAP.mul_f64(0.8), "{waits:?}");

        signals.observe::<()>(&Ok(watcher::Event::InitDone));
        backoff.reset();
        signals.observe(&failed(503));
        assert!(backoff.next().expect("a wait") <= FIRST, "started over");
    }

    #[test]
    fn a_capped_backoff_grows_past_the_usual_cap_to_its_own() {
        let signals = Arc::new(Signals::default());
        let mut backoff = WatchBackoff::capped(signals.clone(), Duration::from_secs(60));
        let waits: Vec<Duration> = (0..10)
            .map(|_| {
                signals.observe(&failed(404));
                // A retry's `Init` is no answer: the wait keeps growing.
                signals.observe::<()>(&Ok(watcher::Event::Init));
                backoff.reset();
                backoff.next().expect("always a wait")
            })
            .collect();
        assert!(waits[9] > CAP, "{waits:?}");
        assert!(
            waits.iter().all(|w| *w <= Duration::from_secs(60)),
            "{waits:?}"
        );
    }

    #[test]
    fn gone_relists_at_once() {
        let signals = Arc::new(Signals::default());
        let mut backoff = WatchBackoff::new(signals.clone());
        signals.observe(&failed(503));
        backoff.next();
        signals.observe(&failed(410));
        assert_eq!(backoff.next(), Some(Duration::ZERO));
        signals.observe(&failed(500));
        assert!(backoff.next().expect("a wait") > Duration::ZERO);
    }
}
