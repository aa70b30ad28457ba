//! [`VerifiedStream`]: a blob stream checked against what its descriptor declares, the
//! one check every backend's reads go through.
//!
//! It counts the bytes passing through and fails as soon as more than the declared size
//! arrive (so an endless body is cut off after `size + 1` bytes, not read to the end);
//! at the end it fails when fewer arrived, or when their sha256 is not the digest
//! expected. A failure is the stream's last item, and nothing is read after it.

use crate::oci::{DigestWriter, OciError, Sha256Digest};
use crate::registry::{BlobStream, RegistryError, Result};
use bytes::Bytes;
use futures::Stream;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A blob stream that enforces a declared size and/or digest (see the module docs).
pub struct VerifiedStream {
    inner: BlobStream,
    /// What the stream is, for messages (`blob sha256:… from host/app`).
    what: String,
    /// The exact size the stream must have, when declared.
    size: Option<u64>,
    /// The digest the whole must hash to, with the running hash.
    digest: Option<(Sha256Digest, DigestWriter)>,
    read: u64,
    done: bool,
}

impl std::fmt::Debug for VerifiedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedStream")
            .field("what", &self.what)
            .field("size", &self.size)
            .field("digest", &self.digest.as_ref().map(|(d, _)| d))
            .field("read", &self.read)
            .finish_non_exhaustive()
    }
}

impl VerifiedStream {
    /// Passes `inner` on unchecked until [`sized`](Self::sized) or
    /// [`digest`](Self::digest) say what to check; `what` names it in errors.
    pub fn new(inner: BlobStream, what: impl Into<String>) -> Self {
        Self {
            inner,
            what: what.into(),
            size: None,
            digest: None,
            read: 0,
            done: false,
        }
    }

    /// The stream must be exactly `size` bytes: one byte more fails at once, fewer fail
    /// at the end.
    pub fn sized(mut self, size: u64) -> Self {
        self.size = Some(size);
        self
    }

    /// The bytes must hash to `expected`; checked at the end.
    pub fn digest(mut self, expected: Sha256Digest) -> Self {
        self.digest = Some((expected, DigestWriter::new()));
        self
    }

    /// Boxed, as a [`BlobStream`].
    pub fn boxed(self) -> BlobStream {
        Box::pin(self)
    }

    fn fail(&mut self, err: RegistryError) -> Poll<Option<Result<Bytes>>> {
        self.done = true;
        Poll::Ready(Some(Err(err)))
    }

    fn invalid(&self, message: String) -> RegistryError {
        RegistryError::Invalid {
            location: self.what.clone(),
            message,
        }
    }
}

impl Stream for VerifiedStream {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match this.inner.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                this.read += chunk.len() as u64;
                if let Some(size) = this.size {
                    if this.read > size {
                        let err = this.invalid(format!(
                            "more than the declared {size} bytes (at least {})",
                            this.read
                        ));
                        return this.fail(err);
                    }
                }
                if let Some((_, hasher)) = this.digest.as_mut() {
                    hasher.update(&chunk);
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => this.fail(e),
            Poll::Ready(None) => {
                this.done = true;
                if let Some(size) = this.size {
                    if this.read != size {
                        let err = this.invalid(format!(
                            "ended after {} bytes, {} short of the declared {size}",
                            this.read,
                            size - this.read
                        ));
                        return this.fail(err);
                    }
                }
                if let Some((expected, hasher)) = this.digest.take() {
                    let actual = hasher.finish();
                    if actual != expected {
                        let err = OciError::DigestMismatch {
                            what: this.what.clone(),
                            expected,
                            actual,
                        };
                        return this.fail(err.into());
                    }
                }
                Poll::Ready(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    /// `data` in chunks of `chunk` bytes, then (with `endless`) more chunks forever.
    fn chunks(data: &'static [u8], chunk: usize, endless: bool) -> BlobStream {
        let finite = futures::stream::iter(
            data.chunks(chunk.max(1))
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        );
        if endless {
            finite
                .chain(futures::stream::repeat_with(|| {
                    Ok(Bytes::from_static(b"x"))
                }))
                .boxed()
        } else {
            finite.boxed()
        }
    }

    async fn run(s: VerifiedStream) -> (Vec<u8>, Option<RegistryError>) {
        let mut out = Vec::new();
        let items: Vec<Result<Bytes>> = s.collect().await;
        let mut err = None;
        for item in items {
            match item {
                Ok(b) => out.extend_from_slice(&b),
                Err(e) => {
                    assert!(err.is_none(), "an error is the last item");
                    err = Some(e)
                }
            }
        }
        (out, err)
    }

    const DATA: &[u8] = b"hello, verified world";

    #[tokio::test]
    async fn exact_size_and_digest_pass_unchanged() {
        for chunk in [1, 4, DATA.len(), 100] {
            let s = VerifiedStream::new(chunks(DATA, chunk, false), "blob")
                .sized(DATA.len() as u64)
                .digest(Sha256Digest::of(DATA));
            let (out, err) = run(s).await;
            assert!(err.is_none(), "{err:?}");
            assert_eq!(out, DATA);
        }
    }

    #[tokio::test]
    async fn short_stream_fails_at_the_end_naming_the_sizes() {
        let s = VerifiedStream::new(chunks(DATA, 5, false), "blob b1")
            .sized(DATA.len() as u64 + 3)
            .digest(Sha256Digest::of(DATA));
        let (out, err) = run(s).await;
        assert_eq!(out, DATA);
        let err = err.expect("short").to_string();
        assert!(err.contains("blob b1") && err.contains("3 short"), "{err}");
    }

    #[tokio::test]
    async fn long_stream_is_cut_at_the_first_byte_too_many() {
        // Endless: only the cut makes this finish.
        let s = VerifiedStream::new(chunks(DATA, 4, true), "config c1").sized(DATA.len() as u64);
        let (out, err) = run(s).await;
        let err = err.expect("too long").to_string();
        assert!(
            err.contains("config c1") && err.contains(&format!("declared {}", DATA.len())),
            "{err}"
        );
        assert_eq!(
            out, DATA,
            "everything within the size passes, nothing after"
        );
    }

    #[tokio::test]
    async fn wrong_digest_fails_at_the_end() {
        let wrong = Sha256Digest::of(b"something else");
        let s = VerifiedStream::new(chunks(DATA, 3, false), "blob b2")
            .sized(DATA.len() as u64)
            .digest(wrong.clone());
        let (out, err) = run(s).await;
        assert_eq!(out, DATA);
        let err = err.expect("mismatch");
        assert!(
            matches!(&err, RegistryError::Oci(OciError::DigestMismatch { expected, .. }) if *expected == wrong),
            "{err}"
        );
    }

    #[tokio::test]
    async fn inner_errors_pass_through_and_end_the_stream() {
        let inner = futures::stream::iter(vec![
            Ok(Bytes::from_static(b"ab")),
            Err(RegistryError::Invalid {
                location: "x".into(),
                message: "broken".into(),
            }),
            Ok(Bytes::from_static(b"cd")),
        ])
        .boxed();
        let s = VerifiedStream::new(inner, "blob").digest(Sha256Digest::of(b"abcd"));
        let (out, err) = run(s).await;
        assert_eq!(out, b"ab");
        assert!(err.unwrap().to_string().contains("broken"));
    }

    #[tokio::test]
    async fn empty_blob_of_size_zero() {
        let s = VerifiedStream::new(chunks(b"", 1, false), "empty")
            .sized(0)
            .digest(Sha256Digest::of(b""));
        let (out, err) = run(s).await;
        assert!(out.is_empty() && err.is_none(), "{err:?}");
    }
}
