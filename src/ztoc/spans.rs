//! SHA-256 digests of a layer's spans, computed beside the inflater.
//!
//! Hashing the compressed bytes costs about a tenth of inflating them (SHA-NI runs at
//! ~1.6 GB/s, zlib-rs inflates ~150 MB/s of compressed input here), so a worker thread
//! does it while the caller inflates: on two cores the zTOC build then takes about as long
//! as the inflate alone. The bytes travel in batches of [`BATCH`] through a channel of
//! [`QUEUE`] batches, which bounds the memory whatever the layer size. The worker hands
//! each emptied batch back for reuse: a batch is above glibc's mmap threshold, which the
//! zTOC build pins (`allocator.rs`), so a fresh batch per message would cost an `mmap`,
//! its page faults and an `munmap` every 256 KiB of the layer. Where no thread can be
//! started, the hashing happens inline, with the same results.

use super::ZtocError;
use sha2::{Digest, Sha256};
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

/// Bytes per message to the worker: large enough that channel overhead is noise.
const BATCH: usize = 256 * 1024;
/// Batches in flight: the worker may lag by this much (1 MiB) before `update` waits.
const QUEUE: usize = 4;

/// `sha256:<hex>` of a hasher's input.
pub(crate) fn digest_string(h: Sha256) -> String {
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// The span being hashed and the digests of the spans before it.
#[derive(Default)]
struct Spans {
    current: Option<Sha256>,
    digests: Vec<String>,
}

impl Spans {
    fn start(&mut self, first_byte: Option<u8>) {
        if let Some(h) = self.current.take() {
            self.digests.push(digest_string(h));
        }
        let mut h = Sha256::new();
        if let Some(b) = first_byte {
            h.update([b]);
        }
        self.current = Some(h);
    }

    fn update(&mut self, bytes: &[u8]) {
        if let Some(h) = self.current.as_mut() {
            h.update(bytes);
        }
    }

    fn finish(mut self) -> Vec<String> {
        if let Some(h) = self.current.take() {
            self.digests.push(digest_string(h));
        }
        self.digests
    }
}

enum Message {
    Bytes(Vec<u8>),
    StartSpan(Option<u8>),
}

enum Mode {
    Inline(Spans),
    Worker {
        sender: SyncSender<Message>,
        worker: JoinHandle<Vec<String>>,
        /// Bytes not sent yet (less than a batch).
        batch: Vec<u8>,
        /// Emptied batches the worker handed back.
        recycled: Receiver<Vec<u8>>,
        /// Batches allocated so far (the rest were reused).
        batches_made: usize,
    },
}

/// Span digests in the order the spans are started. Bytes fed before the first span
/// starts (a gzip header) belong to no span and are not hashed.
pub(crate) struct SpanDigester {
    mode: Mode,
    span_open: bool,
}

impl SpanDigester {
    pub(crate) fn new() -> Self {
        let (sender, receiver) = sync_channel::<Message>(QUEUE);
        // Unbounded, yet never more than QUEUE + 3 batches exist: a new one is made only
        // when none has come back, so every other batch is in the channel (QUEUE at
        // most), in the worker's hands or the full one being sent.
        let (give_back, recycled) = channel::<Vec<u8>>();
        let worker = std::thread::Builder::new()
            .name("ztoc-span-sha256".into())
            .spawn(move || {
                let mut spans = Spans::default();
                for message in receiver {
                    match message {
                        Message::Bytes(mut b) => {
                            spans.update(&b);
                            b.clear();
                            // The builder may be gone already (it failed): drop the batch.
                            let _ = give_back.send(b);
                        }
                        Message::StartSpan(first_byte) => spans.start(first_byte),
                    }
                }
                spans.finish()
            });
        let mode = match worker {
            Ok(worker) => Mode::Worker {
                sender,
                worker,
                batch: Vec::with_capacity(BATCH),
                recycled,
                batches_made: 1,
            },
            Err(_) => Mode::Inline(Spans::default()),
        };
        SpanDigester {
            mode,
            span_open: false,
        }
    }

    /// Ends the current span (if any) and starts the next, whose first byte is
    /// `first_byte` when given (the byte a gzip checkpoint's bits come from).
    pub(crate) fn start_span(&mut self, first_byte: Option<u8>) {
        self.span_open = true;
        if let Mode::Inline(spans) = &mut self.mode {
            spans.start(first_byte);
            return;
        }
        self.flush();
        self.send(Message::StartSpan(first_byte));
    }

    /// Adds bytes to the current span.
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        if !self.span_open || bytes.is_empty() {
            return;
        }
        let batch_full = match &mut self.mode {
            Mode::Inline(spans) => {
                spans.update(bytes);
                false
            }
            Mode::Worker { batch, .. } => {
                batch.extend_from_slice(bytes);
                batch.len() >= BATCH
            }
        };
        if batch_full {
            self.flush();
        }
    }

    /// Ends the last span; returns every span's digest.
    pub(crate) fn finish(mut self) -> Result<Vec<String>, ZtocError> {
        self.flush();
        match self.mode {
            Mode::Inline(spans) => Ok(spans.finish()),
            Mode::Worker { sender, worker, .. } => {
                drop(sender);
                worker.join().map_err(|panic| {
                    let reason = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "panicked".into());
                    ZtocError::SpanHashing(reason)
                })
            }
        }
    }

    fn flush(&mut self) {
        if let Mode::Worker {
            batch,
            recycled,
            batches_made,
            ..
        } = &mut self.mode
        {
            if !batch.is_empty() {
                let next = recycled.try_recv().unwrap_or_else(|_| {
                    *batches_made += 1;
                    Vec::with_capacity(BATCH)
                });
                let full = std::mem::replace(batch, next);
                self.send(Message::Bytes(full));
            }
        }
    }

    /// A send fails only when the worker is gone (it panicked); `finish` reports that.
    fn send(&mut self, message: Message) {
        if let Mode::Worker { sender, .. } = &self.mode {
            let _ = sender.send(message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(parts: &[&[u8]]) -> String {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p);
        }
        digest_string(h)
    }

    fn run(mut d: SpanDigester) -> Vec<String> {
        d.update(b"header, before any span");
        d.start_span(None);
        let big: Vec<u8> = (0..3 * BATCH + 17).map(|i| (i % 251) as u8).collect();
        d.update(&big[..10]);
        d.update(&big[10..]);
        d.start_span(Some(0xAB));
        d.update(b"tail");
        d.finish().unwrap()
    }

    #[test]
    fn worker_and_inline_hash_the_same_spans() {
        let big: Vec<u8> = (0..3 * BATCH + 17).map(|i| (i % 251) as u8).collect();
        let expected = vec![digest(&[&big]), digest(&[&[0xAB], b"tail"])];
        let worker = SpanDigester::new();
        assert!(matches!(worker.mode, Mode::Worker { .. }));
        assert_eq!(run(worker), expected);
        let inline = SpanDigester {
            mode: Mode::Inline(Spans::default()),
            span_open: false,
        };
        assert_eq!(run(inline), expected);
    }

    /// Whatever the worker's pace, a batch is allocated only when none has come back: at
    /// most one per message the channel holds, one in the worker's hands, the one being
    /// sent and the one replacing it.
    #[test]
    fn batches_are_reused() {
        let mut d = SpanDigester::new();
        d.start_span(None);
        let chunk = vec![7u8; BATCH];
        for _ in 0..64 {
            d.update(&chunk);
        }
        let Mode::Worker { batches_made, .. } = &d.mode else {
            panic!("no worker thread");
        };
        assert!(
            *batches_made <= QUEUE + 3,
            "{batches_made} batches for 64 sends"
        );
        let mut h = Sha256::new();
        for _ in 0..64 {
            h.update(&chunk);
        }
        assert_eq!(d.finish().unwrap(), vec![digest_string(h)]);
    }

    #[test]
    fn no_span_no_digest() {
        let mut d = SpanDigester::new();
        d.update(b"ignored");
        assert!(d.finish().unwrap().is_empty());
    }
}
