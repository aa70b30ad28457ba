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
mod referrers;

pub use archive::{write_layout_tar, ArchiveRepository};
pub use dir::LayoutRepository;

use super::verified_stream::VerifiedStream;
use super::{BlobStream, RegistryError, MAX_MANIFEST_SIZE};
use crate::oci::Sha256Digest;
use futures::{StreamExt, TryStreamExt};
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

/// A blob stream over a file (already positioned), `len` bytes long: a file that ends
/// early is an error. With `verify`, the digest of the whole is checked at the end (a
/// mismatch is the last item), and errors name the blob as the `String` says.
pub(crate) fn file_stream(
    file: tokio::fs::File,
    len: u64,
    verify: Option<(Sha256Digest, String)>,
    path: PathBuf,
) -> BlobStream {
    let what = match &verify {
        Some((_, what)) => what.clone(),
        None => path.display().to_string(),
    };
    let reader = tokio_util::io::ReaderStream::with_capacity(file.take(len), READ_CHUNK)
        .map_err(move |e| io_err(&path, e))
        .boxed();
    let stream = VerifiedStream::new(reader, what).sized(len);
    match verify {
        Some((digest, _)) => stream.digest(digest).boxed(),
        None => stream.boxed(),
    }
}
