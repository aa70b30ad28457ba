//! [`MinProgress`]: a blob body must keep moving. The HTTP client's read timeout only
//! bounds the gap between two reads, so a server sending a byte every few seconds keeps
//! a download alive forever; here every window of the stall timeout
//! (`AFTERPUSH_REGISTRY_BLOB_STALL_TIMEOUT`) must bring at least [`MIN_PROGRESS_BYTES`],
//! or the body fails with a retryable transport error (the download then resumes from
//! the first missing byte, within the retry policy).

use crate::registry::{BlobStream, RegistryError, Result};
use bytes::Bytes;
use futures::Stream;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// Bytes a blob body must bring in every window of the stall timeout: 64 KiB per
/// minute (the default window) is about 1 KiB/s, far below any working link.
pub const MIN_PROGRESS_BYTES: u64 = 64 * 1024;

/// A blob body that fails when a window passes with less than [`MIN_PROGRESS_BYTES`].
///
/// Only the time spent waiting for the body counts, not the time the consumer takes
/// between two reads: a copy that uploads a chunk for minutes before reading on is
/// not a stalled download.
pub(crate) struct MinProgress {
    inner: BlobStream,
    url: String,
    window: Duration,
    /// Bytes received in the current window.
    in_window: u64,
    /// Time spent waiting for the body in the current window (finished waits).
    waited: Duration,
    /// When the wait in progress started, if one is.
    waiting_since: Option<Instant>,
    deadline: Pin<Box<Sleep>>,
    done: bool,
}

impl MinProgress {
    pub(crate) fn new(inner: BlobStream, url: String, window: Duration) -> Self {
        Self {
            inner,
            url,
            window,
            in_window: 0,
            waited: Duration::ZERO,
            waiting_since: None,
            deadline: Box::pin(tokio::time::sleep(window)),
            done: false,
        }
    }

    pub(crate) fn boxed(self) -> BlobStream {
        Box::pin(self)
    }

    fn stalled(&mut self) -> Poll<Option<Result<Bytes>>> {
        self.done = true;
        Poll::Ready(Some(Err(RegistryError::Transport {
            url: self.url.clone(),
            message: format!(
                "blob body stalled: {} bytes in {:?} of waiting, less than the {MIN_PROGRESS_BYTES} bytes required per window (AFTERPUSH_REGISTRY_BLOB_STALL_TIMEOUT)",
                self.in_window, self.window
            ),
            retryable: true,
        })))
    }
}

impl Stream for MinProgress {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        let since = match this.waiting_since {
            Some(since) => since,
            None => {
                // A new wait: the deadline is what is left of the window's waiting time.
                let now = Instant::now();
                this.waiting_since = Some(now);
                let left = this.window.saturating_sub(this.waited);
                this.deadline.as_mut().reset(now + left);
                now
            }
        };
        match this.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.waiting_since = None;
                this.waited += since.elapsed();
                this.in_window += chunk.len() as u64;
                if this.in_window >= MIN_PROGRESS_BYTES {
                    this.in_window = 0;
                    this.waited = Duration::ZERO;
                } else if this.waited >= this.window {
                    return this.stalled();
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(other) => {
                this.done = true;
                Poll::Ready(other)
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => this.stalled(),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn a_dripping_body_fails_and_a_moving_one_passes() {
        // A byte every 20 ms against a 200 ms window: never 64 KiB, so it is cut off.
        let drip = futures::stream::unfold(0u32, |n| async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            (n < 100_000).then(|| (Ok(Bytes::from_static(b"x")), n + 1))
        })
        .boxed();
        let items: Vec<Result<Bytes>> =
            MinProgress::new(drip, "u".into(), Duration::from_millis(200))
                .collect()
                .await;
        let err = items.last().unwrap().as_ref().unwrap_err();
        assert!(
            err.is_retryable() && err.to_string().contains("stalled"),
            "{err}"
        );

        // 64 KiB chunks at once: every chunk is enough progress.
        let moving =
            futures::stream::iter((0..50).map(|_| Ok(Bytes::from(vec![0u8; 64 * 1024])))).boxed();
        let items: Vec<Result<Bytes>> =
            MinProgress::new(moving, "u".into(), Duration::from_millis(200))
                .collect()
                .await;
        assert_eq!(items.len(), 50);
        assert!(items.iter().all(|i| i.is_ok()));
    }

    #[tokio::test]
    async fn a_slow_consumer_is_not_a_stalled_body() {
        // The body is always ready; the consumer takes longer than a window between
        // reads of small chunks. Only waiting for the body counts.
        let ready = futures::stream::iter((0..5).map(|_| Ok(Bytes::from_static(b"x")))).boxed();
        let mut body = MinProgress::new(ready, "u".into(), Duration::from_millis(50));
        let mut got = 0;
        while let Some(item) = body.next().await {
            item.unwrap();
            got += 1;
            tokio::time::sleep(Duration::from_millis(80)).await;
        }
        assert_eq!(got, 5);
    }
}
