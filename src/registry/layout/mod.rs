//! OCI image layout repositories: a directory ([`LayoutRepository`], in `dir.rs`) and an
//! `oci-archive` tarball of one ([`ArchiveRepository`], in `archive.rs`), which is worked on
//! as a layout directory unpacked from the tarball.
//!
//! A layout is `oci-layout` (`{"imageLayoutVersion":"1.0.0"}`), `index.json` and
//! `blobs/sha256/<hex>`. Tags are the `org.opencontainers.image.ref.name` annotations of
//! the `index.json` entries; manifests are blobs like any other.
//!
//! This file holds what both share: the limits, the I/O error mapping and the blob
//! stream over a file.

mod archive;
mod dir;

pub use archive::{write_layout_tar, ArchiveRepository};
pub use dir::LayoutRepository;

use super::{BlobStream, RegistryError, MAX_MANIFEST_SIZE};
use crate::oci::{DigestWriter, Sha256Digest};
use futures::StreamExt;
use std::path::{Path, PathBuf};
use tokio::io::AsyncReadExt;

/// The content of the `oci-layout` file.
pub const OCI_LAYOUT_FILE_CONTENT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;

/// `index.json` is an image index: registries refuse indexes over 4 MiB, and so do we
/// here, on reads (a 157 MB one took 2.3 GB of memory to parse) and on writes (so that
/// we never write one we would refuse to read). About 15,000 tags fit.
pub const MAX_INDEX_JSON_SIZE: usize = MAX_MANIFEST_SIZE;

/// Chunk size of blob reads.
const READ_CHUNK: usize = 256 * 1024;

fn io_err(path: &Path, source: std::io::Error) -> RegistryError {
    RegistryError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A blob stream over a file (already positioned), `len` bytes long. With `verify`, the
/// digest and length of the whole are checked at the end and a mismatch is the last item.
pub(crate) fn file_stream(
    file: tokio::fs::File,
    len: u64,
    verify: Option<(Sha256Digest, String)>,
    path: PathBuf,
) -> BlobStream {
    struct State {
        inner: tokio_util::io::ReaderStream<tokio::io::Take<tokio::fs::File>>,
        hasher: Option<DigestWriter>,
        verify: Option<(Sha256Digest, String)>,
        read: u64,
        len: u64,
        path: PathBuf,
        done: bool,
    }
    let state = State {
        inner: tokio_util::io::ReaderStream::with_capacity(file.take(len), READ_CHUNK),
        hasher: verify.as_ref().map(|_| DigestWriter::new()),
        verify,
        read: 0,
        len,
        path,
        done: false,
    };
    futures::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        match s.inner.next().await {
            Some(Ok(chunk)) => {
                if let Some(h) = s.hasher.as_mut() {
                    h.update(&chunk);
                }
                s.read += chunk.len() as u64;
                Some((Ok(chunk), s))
            }
            Some(Err(e)) => {
                s.done = true;
                let err = io_err(&s.path, e);
                Some((Err(err), s))
            }
            None => {
                s.done = true;
                if s.read != s.len {
                    let err = RegistryError::Invalid {
                        location: s.path.display().to_string(),
                        message: format!("expected {} bytes, read {}", s.len, s.read),
                    };
                    return Some((Err(err), s));
                }
                if let (Some(h), Some((expected, what))) = (s.hasher.take(), s.verify.take()) {
                    let actual = h.finish();
                    if actual != expected {
                        let err = RegistryError::Oci(crate::oci::OciError::DigestMismatch {
                            what,
                            expected,
                            actual,
                        });
                        return Some((Err(err), s));
                    }
                }
                None
            }
        }
    })
    .boxed()
}
