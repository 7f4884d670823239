//! Watch responses are read by a task of their own, ahead of the loop that handles them, and
//! never held back.
//!
//! A loop busy planning (a burst of Services with 200 KiB annotations, a catch-up after a watch
//! renewal) would otherwise stop reading its watch responses. kube-apiserver then finds the
//! watcher "unresponsive" and drops it, and a 1.20 server does so without ending the response:
//! the daemon would hear nothing more until the watch is renewed. So the reading never waits
//! for the loop. What piles up while the loop catches up is small and short-lived: handling an
//! input is a cache update and a dirty mark (the planning and the writes are what the work
//! queue spreads out), so the loop empties the buffer far faster than a server fills it, and a
//! burst's backlog lives on as dirty keys in the work queue, one per object however often it
//! changed.

use futures::stream::{BoxStream, StreamExt};
use tokio::sync::mpsc;

/// `inputs`, polled by a task of its own into an unbounded buffer. The task ends when the
/// returned stream is dropped, even while `inputs` has nothing to say.
pub fn read_ahead<I: Send + 'static>(mut inputs: BoxStream<'static, I>) -> BoxStream<'static, I> {
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let input = tokio::select! {
                _ = sender.closed() => return,
                input = inputs.next() => input,
            };
            let Some(input) = input else { return };
            if sender.send(input).is_err() {
                return;
            }
        }
    });
    receiver_stream(receiver)
}

/// What a channel's receiver yields, as a stream that ends when every sender is gone.
pub(super) fn receiver_stream<T: Send + 'static>(
    receiver: mpsc::UnboundedReceiver<T>,
) -> BoxStream<'static, T> {
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
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
    async fn reads_everything_while_the_consumer_is_busy_and_keeps_order() {
        let produced = Arc::new(AtomicUsize::new(0));
        let counter = produced.clone();
        let inputs = futures::stream::iter(0..100)
            .inspect(move |_| {
                counter.fetch_add(1, Ordering::SeqCst);
            })
            .boxed();
        let mut ahead = read_ahead(inputs);
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The consumer has asked for nothing: all of it read anyway.
        let read = produced.load(Ordering::SeqCst);
        assert_eq!(read, 100, "read {read} ahead");
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
        let ahead = read_ahead(silent);
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
