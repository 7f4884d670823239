//! Watch responses are read by a task of their own, ahead of the loop that handles them.
//!
//! A loop busy planning (a burst of Services with 200 KiB annotations, a catch-up after a watch
//! renewal) would otherwise stop reading its watch responses. kube-apiserver then finds the
//! watcher "unresponsive" and drops it, and a 1.20 server does so without ending the response:
//! the daemon would hear nothing more until `--watch-timeout`. Reading ahead keeps the
//! connection drained while the loop catches up; the bound keeps a slow loop from buffering
//! without limit (it then slows the reading, as before).

use futures::stream::{BoxStream, StreamExt};
use tokio::sync::mpsc;

/// Inputs read ahead of the loop at most: enough to absorb a burst, few enough that even
/// 200 KiB objects stay a bounded cost.
pub const READ_AHEAD: usize = 256;

/// `inputs`, polled by a task of its own into a buffer of `capacity`. The task ends when the
/// returned stream is dropped, even while `inputs` has nothing to say.
pub fn read_ahead<I: Send + 'static>(
    mut inputs: BoxStream<'static, I>,
    capacity: usize,
) -> BoxStream<'static, I> {
    let (sender, receiver) = mpsc::channel(capacity.max(1));
    tokio::spawn(async move {
        loop {
            let input = tokio::select! {
                _ = sender.closed() => return,
                input = inputs.next() => input,
            };
            let Some(input) = input else { return };
            if sender.send(input).await.is_err() {
                return;
            }
        }
    });
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|input| (input, receiver))
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn reads_up_to_capacity_while_the_consumer_is_busy_and_keeps_order() {
        let produced = Arc::new(AtomicUsize::new(0));
        let counter = produced.clone();
        let inputs = futures::stream::iter(0..100)
            .inspect(move |_| {
                counter.fetch_add(1, Ordering::SeqCst);
            })
            .boxed();
        let mut ahead = read_ahead(inputs, 10);
        tokio::time::sleep(Duration::from_millis(100)).await;
        // 10 in the buffer and one waiting for room: read without being asked.
        let read = produced.load(Ordering::SeqCst);
        assert!((10..=11).contains(&read), "read {read} ahead");
        let all: Vec<i32> = ahead.by_ref().collect().await;
        assert_eq!(all, (0..100).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn the_reader_stops_when_the_consumer_goes_even_if_the_source_is_silent() {
        let dropped = Arc::new(AtomicUsize::new(0));
        struct Guard(Arc<AtomicUsize>);
        impl Drop for Guard {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let guard = Guard(dropped.clone());
        let silent = futures::stream::pending::<()>()
            .map(move |item| {
                let _keep = &guard;
                item
            })
            .boxed();
        let ahead = read_ahead(silent, 4);
        drop(ahead);
        tokio::time::timeout(Duration::from_secs(5), async {
            while dropped.load(Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the silent source (its watch connections) is dropped with the consumer");
    }
}
