//! Watch responses are read by a task of their own, ahead of the loop that handles them, and
//! never held back; lists are paced by the loop.
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
//!
//! A list is different: it is a request the client sends page by page, not a stream the server
//! pushes, so nothing is dropped when the client waits. Read ahead unpaced, a start or a
//! restart parsed every page of every list into the buffer while the loop was still taking the
//! first ones (tens of thousands of objects at once). So each stream's listed objects take a
//! slot of a [`ListWindow`] before they are handed on, and give it back when the loop asks for
//! its next input: a stream whose window is full stops asking for pages, while the other
//! streams (watches among them) are still read.

use std::sync::Arc;

use futures::stream::{BoxStream, StreamExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// Objects of one list that may wait between the watcher and the loop, beside the page the
/// watcher holds: one page, so the next is fetched while the loop takes this one.
pub(super) const LIST_WINDOW: usize = super::PAGE_SIZE as usize;

/// A listed object's place in its stream's window, shared by the copies handed to each loop.
pub(super) type Slot = Arc<OwnedSemaphorePermit>;

/// An input and, for a listed object, its slot.
pub(super) struct Paced<I> {
    pub input: I,
    pub slot: Option<Slot>,
}

impl<I> Paced<I> {
    pub fn free(input: I) -> Self {
        Self { input, slot: None }
    }
}

/// The slots of one list stream.
#[derive(Clone)]
pub(super) struct ListWindow(Arc<Semaphore>);

impl ListWindow {
    pub fn new() -> Self {
        Self(Arc::new(Semaphore::new(LIST_WINDOW)))
    }

    /// Waits until the loops have taken enough of this stream's listed objects. `None` only if
    /// the window were closed, which it never is: the object then goes unpaced.
    pub async fn slot(&self) -> Option<Slot> {
        self.0.clone().acquire_owned().await.ok().map(Arc::new)
    }
}

/// `inputs`, polled by a task of its own into an unbounded buffer; a listed object's slot is
/// given back when the consumer asks for the input after it. The task ends when the returned
/// stream is dropped, even while `inputs` has nothing to say.
pub fn read_ahead<I: Send + 'static>(
    mut inputs: BoxStream<'static, Paced<I>>,
) -> BoxStream<'static, I> {
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
    unpaced(receiver_stream(receiver))
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

/// The inputs alone; each slot is held until the consumer asks for the next input, that is
/// until it has handled the one the slot came with.
fn unpaced<I: Send + 'static>(paced: BoxStream<'static, Paced<I>>) -> BoxStream<'static, I> {
    futures::stream::unfold((paced, None), |(mut paced, held)| async move {
        let held: Option<Slot> = held;
        drop(held);
        paced
            .next()
            .await
            .map(|Paced { input, slot }| (input, (paced, slot)))
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
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
            .map(Paced::free)
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
    async fn a_list_waits_for_the_consumer_while_the_other_streams_are_read() {
        let window = ListWindow::new();
        let listed = Arc::new(AtomicUsize::new(0));
        let counter = listed.clone();
        let list = futures::stream::iter(0..LIST_WINDOW * 3)
            .then(move |item| {
                let window = window.clone();
                let counter = counter.clone();
                async move {
                    let slot = window.slot().await;
                    counter.fetch_add(1, Ordering::SeqCst);
                    Paced { input: item, slot }
                }
            })
            .boxed();
        let watched = Arc::new(AtomicUsize::new(0));
        let watch_counter = watched.clone();
        let watch = futures::stream::iter(0..LIST_WINDOW * 3)
            .map(move |item| {
                watch_counter.fetch_add(1, Ordering::SeqCst);
                Paced::free(item)
            })
            .boxed();
        let mut ahead = read_ahead(futures::stream::select(list, watch).boxed());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            listed.load(Ordering::SeqCst),
            LIST_WINDOW,
            "the list stops at its window"
        );
        assert_eq!(
            watched.load(Ordering::SeqCst),
            LIST_WINDOW * 3,
            "a watch beside it is read whole"
        );
        // Taking inputs gives the slots back, and the list goes on to its end.
        let all: Vec<usize> = ahead.by_ref().collect().await;
        assert_eq!(all.len(), LIST_WINDOW * 6);
        assert_eq!(listed.load(Ordering::SeqCst), LIST_WINDOW * 3);
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
                Paced::free(item)
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
