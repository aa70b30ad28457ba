//! zTOC: the per-layer table of contents + gzip checkpoints of a SOCI index.
//!
//! Built in one streaming pass over a layer blob ([`ZtocBuilder`]: `feed` chunks of any
//! size, then `finish`), with memory bounded by a 1 MiB output ring (which holds the
//! 32 KiB window), the span-hashing queue (`spans`, about 1 MiB), the checkpoints emitted
//! so far and the current tar header. Encoded byte-for-byte as soci-snapshotter
//! encodes it ([`Ztoc::to_bytes`]), read back from ours or soci's ([`Ztoc::from_bytes`]),
//! and usable to extract one file the way the snapshotter does ([`extract_file`]).
//! Format: `docs/ztoc-format.md` (FlatBuffers layout, TOC entries, gzip checkpoints, tar
//! layers, and where we differ from soci-snapshotter on purpose).

mod allocator;
mod check;
mod entries;
mod error;
mod fbs;
mod generated;
pub mod gzip;
mod inflate;
mod restore;
mod spans;
mod tar;

pub use check::LayerFacts;
pub use error::ZtocError;
pub use gzip::{Checkpoint, Checkpoints, WINDOW_SIZE};
pub use restore::{extract_file, extract_file_to, LayerReader};
pub use tar::MAX_RECORD_SIZE;

use bytes::Bytes;
use std::collections::BTreeMap;

/// The zTOC format version soci writes and reads.
pub const ZTOC_VERSION: &str = "0.9";
/// The `TarZinfo.version` soci writes for tar layers.
pub(crate) const TAR_ZINFO_VERSION: i32 = 2;
/// soci's default span size (4 MiB).
pub const DEFAULT_SPAN_SIZE: u64 = 4 * 1024 * 1024;
/// The smallest span size a user may ask for: below it a gzip zTOC holds a 32 KiB window
/// per span, as big as the data it indexes.
pub const MIN_SPAN_SIZE: u64 = 64 * 1024;
/// The largest span size a user may ask for, and the largest [`ZtocBuilder`] accepts:
/// restoring a file reads (and holds) whole spans.
pub const MAX_SPAN_SIZE: u64 = 1024 * 1024 * 1024;

/// Checks a span size a user asked for (`--span-size` of `ztoc create` and `soci create`,
/// the indexer's `SPAN_SIZE`): [`MIN_SPAN_SIZE`] to [`MAX_SPAN_SIZE`].
///
/// # Errors
/// [`ZtocError::SpanSize`] outside that range.
pub fn check_span_size(span_size: u64) -> Result<u64, ZtocError> {
    if (MIN_SPAN_SIZE..=MAX_SPAN_SIZE).contains(&span_size) {
        Ok(span_size)
    } else {
        Err(ZtocError::SpanSize { span_size })
    }
}

/// The memory a zTOC build needs whatever the layer: the 1 MiB output ring, zlib's state,
/// the span-hashing queue (about 1.5 MiB) and the reader's buffer (see
/// [`ZtocBuilder::memory_needed`]).
pub const BUILD_WORKING_SET: u64 = 4 << 20;

/// Memory per span digest: the `sha256:<hex>` string held while building, and again in
/// the encoded zTOC (with its length prefix and vector slot).
const MEMORY_PER_SPAN: u64 = 96 + 80;

/// How a layer blob is compressed (the zTOC `CompressionAlgorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerCompression {
    /// gzip, possibly several members.
    Gzip,
    /// A plain tar.
    Uncompressed,
}

impl LayerCompression {
    /// `gzip` or `uncompressed`, as soci names them.
    pub fn as_str(self) -> &'static str {
        match self {
            LayerCompression::Gzip => "gzip",
            LayerCompression::Uncompressed => "uncompressed",
        }
    }
}

/// Tells gzip from tar by the first bytes of a layer (at least 2 for gzip, 512 for tar).
pub fn detect_compression(first_bytes: &[u8]) -> Option<LayerCompression> {
    if first_bytes.starts_with(&[0x1f, 0x8b]) {
        Some(LayerCompression::Gzip)
    } else if tar::looks_like_tar(first_bytes) {
        Some(LayerCompression::Uncompressed)
    } else {
        None
    }
}

/// Settings of a zTOC build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZtocOptions {
    /// Uncompressed bytes between gzip checkpoints (compressed bytes per span for tar).
    pub span_size: u64,
    /// Written into the zTOC (and, by the caller, the index annotation).
    pub build_tool_identifier: String,
}

impl Default for ZtocOptions {
    fn default() -> Self {
        ZtocOptions {
            span_size: DEFAULT_SPAN_SIZE,
            build_tool_identifier: format!("afterpush v{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// One TOC entry: a tar entry as Go's `archive/tar` resolves it.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct FileMetadata {
    /// Name with no cleaning (PAX path, GNU long name, or prefix + "/" + name).
    pub name: String,
    /// `reg`, `dir`, `symlink`, `hardlink`, `char`, `block` or `fifo`.
    #[serde(rename = "type")]
    pub file_type: String,
    /// Offset of the entry's data in the uncompressed tar.
    pub uncompressed_offset: i64,
    /// The header's size.
    pub uncompressed_size: i64,
    /// Link target.
    pub linkname: String,
    /// Raw header mode.
    pub mode: i64,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Owner name.
    pub uname: String,
    /// Group name.
    pub gname: String,
    /// RFC 3339 UTC, trailing fraction zeros trimmed.
    pub mod_time: String,
    /// Device major.
    pub devmajor: i64,
    /// Device minor.
    pub devminor: i64,
    /// Every PAX record of the entry, sorted by key.
    pub xattrs: BTreeMap<String, String>,
}

/// A zTOC, every field of the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ztoc {
    /// Always [`ZTOC_VERSION`] for what we build.
    pub version: String,
    /// Who built it.
    pub build_tool_identifier: String,
    /// Layer blob size.
    pub compressed_archive_size: i64,
    /// Offset just after the tar end-of-archive marker.
    pub uncompressed_archive_size: i64,
    /// TOC entries in tar order.
    pub files: Vec<FileMetadata>,
    /// Gzip or uncompressed.
    pub compression_algorithm: LayerCompression,
    /// Number of spans - 1.
    pub max_span_id: i32,
    /// `sha256:<hex>` per span.
    pub span_digests: Vec<String>,
    /// Gzip: zinfo v2 blob; tar: a `TarZinfo` FlatBuffers table.
    pub checkpoints: Vec<u8>,
}

impl Ztoc {
    /// FlatBuffers bytes, identical to what soci-snapshotter writes for the same zTOC.
    pub fn to_bytes(&self) -> Vec<u8> {
        fbs::encode(self)
    }

    /// The same bytes as [`Ztoc::to_bytes`], releasing the zTOC's memory while encoding
    /// (peak memory about one zTOC instead of two: use it for big layers).
    pub fn into_bytes(self) -> Vec<u8> {
        fbs::encode_owned(self)
    }

    /// Parses a zTOC (ours or soci's); errors, never panics, on garbage.
    pub fn from_bytes(b: &[u8]) -> Result<Ztoc, ZtocError> {
        fbs::decode(b)
    }

    /// Whether the layer needs xattrs: any `SCHILY.xattr.*` record or an opaque
    /// whiteout (`.wh..wh..opq`) entry.
    pub fn uses_xattrs(&self) -> bool {
        self.files.iter().any(|f| {
            f.xattrs.keys().any(|k| k.starts_with("SCHILY.xattr.")) || is_opaque_whiteout(&f.name)
        })
    }

    /// The gzip checkpoints (errors for tar layers or a malformed blob).
    pub fn gzip_checkpoints(&self) -> Result<Checkpoints<'_>, ZtocError> {
        if self.compression_algorithm != LayerCompression::Gzip {
            return Err(ZtocError::InvalidZtoc(
                "an uncompressed layer's zTOC has no gzip checkpoints".into(),
            ));
        }
        Checkpoints::parse(&self.checkpoints)
    }

    /// For a tar layer: (zinfo version, span size, size) of its `TarZinfo`.
    pub fn tar_zinfo(&self) -> Result<(i32, i64, i64), ZtocError> {
        fbs::decode_tar_zinfo(&self.checkpoints)
    }

    /// The TOC entry named `path` (exact match, else ignoring a leading `./` or `/`
    /// and a trailing `/`).
    pub fn find(&self, path: &str) -> Option<&FileMetadata> {
        let norm = |p: &str| -> String {
            let p = p.trim_start_matches("./").trim_start_matches('/');
            p.trim_end_matches('/').to_string()
        };
        self.files
            .iter()
            .rev()
            .find(|f| f.name == path)
            .or_else(|| {
                let want = norm(path);
                self.files.iter().rev().find(|f| norm(&f.name) == want)
            })
    }
}

/// Whether an entry name is an opaque whiteout (`.wh..wh..opq`).
fn is_opaque_whiteout(name: &str) -> bool {
    name.trim_end_matches('/').rsplit('/').next() == Some(".wh..wh..opq")
}

/// A zTOC built and encoded in one go ([`ZtocBuilder::finish_encoded`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedZtoc {
    /// The zTOC's bytes, as [`Ztoc::to_bytes`] gives them: a view into the encoder's
    /// buffer, whose unused front was never written and so takes no memory.
    pub bytes: Bytes,
    /// TOC entries.
    pub entries: usize,
    /// Number of spans.
    pub spans: usize,
    /// Offset just after the tar end-of-archive marker.
    pub uncompressed_archive_size: i64,
    /// As [`Ztoc::uses_xattrs`].
    pub uses_xattrs: bool,
}

enum Engine {
    Gzip(gzip::GzipIndexer),
    Tar {
        spans: spans::SpanDigester,
        /// Bytes in the current span (0: the next byte starts a span).
        span_filled: u64,
        size: u64,
    },
}

impl Engine {
    /// A plain tar layer: spans cut every `span_size` bytes of the blob itself.
    fn uncompressed() -> Self {
        Engine::Tar {
            spans: spans::SpanDigester::new(),
            span_filled: 0,
            size: 0,
        }
    }
}

/// Builds a [`Ztoc`] from a layer blob fed in chunks of any size.
pub struct ZtocBuilder {
    options: ZtocOptions,
    compression: LayerCompression,
    engine: Engine,
    tar: tar::TarIndexer,
    failed: Option<String>,
}

impl ZtocBuilder {
    /// A builder for a layer of the given compression.
    ///
    /// Any span size from 1 byte to [`MAX_SPAN_SIZE`] builds (tests use tiny spans on
    /// tiny layers); another fails on the first `feed` with [`ZtocError::SpanSize`].
    /// Users' settings go through [`check_span_size`] first.
    pub fn new(compression: LayerCompression, options: ZtocOptions) -> Self {
        allocator::return_large_blocks_when_freed();
        if !(1..=MAX_SPAN_SIZE).contains(&options.span_size) {
            return ZtocBuilder {
                failed: Some(
                    ZtocError::SpanSize {
                        span_size: options.span_size,
                    }
                    .to_string(),
                ),
                options: ZtocOptions {
                    span_size: 1,
                    ..options
                },
                compression,
                engine: Engine::uncompressed(),
                tar: tar::TarIndexer::new(),
            };
        }
        let (engine, failed) = match compression {
            LayerCompression::Gzip => match gzip::GzipIndexer::new(options.span_size) {
                Ok(g) => (Engine::Gzip(g), None),
                // Only an allocation failure in zlib can get here; it is reported on feed,
                // and the placeholder engine is never fed.
                Err(e) => (Engine::uncompressed(), Some(e.to_string())),
            },
            LayerCompression::Uncompressed => (Engine::uncompressed(), None),
        };
        ZtocBuilder {
            options,
            compression,
            engine,
            tar: tar::TarIndexer::new(),
            failed,
        }
    }

    /// Uncompressed bytes seen so far (for progress reports).
    pub fn uncompressed_bytes(&self) -> u64 {
        match &self.engine {
            Engine::Gzip(g) => g.total_out(),
            Engine::Tar { size, .. } => *size,
        }
    }

    /// The memory, in bytes, this build needs to finish if the layer ended here: the
    /// working set ([`BUILD_WORKING_SET`]), the checkpoints it holds, and the larger of
    /// the TOC entries it holds and an upper bound of their encoding
    /// ([`ZtocBuilder::finish_encoded`] releases entries as it encodes them; the
    /// checkpoints move into the zTOC rather than being copied). While the encoding
    /// grows, popped entries wait to be released until they are an eighth of those held,
    /// so the entries and the first eighth of the encoding can meet: hence the
    /// `encoded / 8` beside the held entries. It only grows as the layer streams in, and
    /// it bounds the encoded zTOC's size too. The indexer admits layers by it
    /// (`src/soci/memory.rs`).
    pub fn memory_needed(&self) -> u64 {
        let (checkpoints, spans) = match &self.engine {
            Engine::Gzip(g) => (g.blob_bytes(), g.checkpoints()),
            Engine::Tar {
                size, span_filled, ..
            } => (
                0,
                (*size / self.options.span_size) as usize + usize::from(*span_filled > 0),
            ),
        };
        let encoded = self.tar.files.encoded_size_bound();
        let entries = (self.tar.files.heap_bytes() + encoded / 8).max(encoded);
        BUILD_WORKING_SET + (checkpoints + entries) as u64 + spans as u64 * MEMORY_PER_SPAN
    }

    /// Feeds the next chunk of the layer blob.
    ///
    /// # Errors
    /// Corrupt compressed data or tar headers, with their offsets. After an error every
    /// later call fails too.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), ZtocError> {
        if let Some(reason) = &self.failed {
            return Err(ZtocError::Poisoned(reason.clone()));
        }
        let result = self.feed_inner(chunk);
        if let Err(e) = &result {
            self.failed = Some(e.to_string());
        }
        result
    }

    fn feed_inner(&mut self, chunk: &[u8]) -> Result<(), ZtocError> {
        let tar = &mut self.tar;
        match &mut self.engine {
            Engine::Gzip(g) => g.feed(chunk, &mut |out| tar.feed(out)),
            Engine::Tar {
                spans,
                span_filled,
                size,
            } => {
                let span = self.options.span_size;
                let mut rest = chunk;
                while !rest.is_empty() {
                    if *span_filled == 0 {
                        spans.start_span(None);
                    }
                    let n = (span - *span_filled).min(rest.len() as u64) as usize;
                    spans.update(&rest[..n]);
                    *span_filled = (*span_filled + n as u64) % span;
                    rest = &rest[n..];
                }
                *size += chunk.len() as u64;
                tar.feed(chunk)
            }
        }
    }

    /// Ends the layer and returns its zTOC.
    ///
    /// # Errors
    /// Truncated gzip, a tar without its end-of-archive marker, or an earlier error.
    pub fn finish(self) -> Result<Ztoc, ZtocError> {
        let (mut ztoc, entries) = self.finish_parts()?;
        ztoc.files = entries.into_vec();
        Ok(ztoc)
    }

    /// Ends the layer and returns its zTOC encoded, the same bytes as
    /// `finish()?.into_bytes()` with less memory: the entries go from their compact form
    /// straight into the encoding, never all at once as [`FileMetadata`].
    ///
    /// # Errors
    /// As [`ZtocBuilder::finish`].
    pub fn finish_encoded(self) -> Result<EncodedZtoc, ZtocError> {
        let (ztoc, mut entries) = self.finish_parts()?;
        let count = entries.len();
        let uses_xattrs = entries.uses_xattrs();
        let hint = entries.encoded_size_bound();
        let (spans, uncompressed_archive_size) =
            (ztoc.span_digests.len(), ztoc.uncompressed_archive_size);
        let (buffer, start) = fbs::encode_entries_from_back(ztoc, count, hint, || entries.pop());
        Ok(EncodedZtoc {
            bytes: Bytes::from(buffer).slice(start..),
            entries: count,
            spans,
            uncompressed_archive_size,
            uses_xattrs,
        })
    }

    /// The zTOC without its entries, and the entries.
    fn finish_parts(mut self) -> Result<(Ztoc, entries::CompactEntries), ZtocError> {
        if let Some(reason) = self.failed {
            return Err(ZtocError::Poisoned(reason));
        }
        let span = self.options.span_size;
        let (checkpoints, span_digests, compressed_size, max_span_id) = match self.engine {
            Engine::Gzip(g) => {
                let (blob, digests, size) = g.finish()?;
                let count = digests.len() as i32;
                (blob, digests, size, count - 1)
            }
            Engine::Tar { spans, size, .. } => {
                let digests = spans.finish()?;
                let mut max = (size / span) as i64;
                if size % span == 0 {
                    max -= 1;
                }
                (
                    fbs::encode_tar_zinfo(span as i64, size as i64),
                    digests,
                    size,
                    max as i32,
                )
            }
        };
        let uncompressed_archive_size = self.tar.finish()?;
        let ztoc = Ztoc {
            version: ZTOC_VERSION.to_string(),
            build_tool_identifier: self.options.build_tool_identifier,
            compressed_archive_size: compressed_size as i64,
            uncompressed_archive_size: uncompressed_archive_size as i64,
            files: Vec::new(),
            compression_algorithm: self.compression,
            max_span_id,
            span_digests,
            checkpoints,
        };
        Ok((ztoc, std::mem::take(&mut self.tar.files)))
    }
}

/// Builds a zTOC from a reader (a file, a test vector), detecting the compression.
///
/// # Errors
/// Unknown format, I/O errors (as [`ZtocError::Read`]) and everything `feed`/`finish` report.
pub fn build_from_reader(
    reader: impl std::io::Read,
    options: ZtocOptions,
    progress: impl FnMut(u64),
) -> Result<Ztoc, ZtocError> {
    feed_from_reader(reader, options, progress)?.finish()
}

/// [`build_from_reader`], encoded with [`ZtocBuilder::finish_encoded`].
///
/// # Errors
/// As [`build_from_reader`].
pub fn encode_from_reader(
    reader: impl std::io::Read,
    options: ZtocOptions,
    progress: impl FnMut(u64),
) -> Result<EncodedZtoc, ZtocError> {
    feed_from_reader(reader, options, progress)?.finish_encoded()
}

/// A builder fed the whole reader, its compression detected from the first bytes.
fn feed_from_reader(
    mut reader: impl std::io::Read,
    options: ZtocOptions,
    mut progress: impl FnMut(u64),
) -> Result<ZtocBuilder, ZtocError> {
    let mut buf = vec![0u8; 1 << 20];
    let mut head = Vec::new();
    let mut offset = 0u64;
    let mut builder: Option<ZtocBuilder> = None;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(ZtocError::Read {
                    offset,
                    end: offset + buf.len() as u64,
                    source,
                })
            }
        };
        let chunk = &buf[..n];
        offset += n as u64;
        match builder.as_mut() {
            Some(b) => {
                if n == 0 {
                    break;
                }
                b.feed(chunk)?;
            }
            None => {
                // Collect enough bytes to recognise the format.
                head.extend_from_slice(chunk);
                if head.len() >= 512 || n == 0 {
                    let compression =
                        detect_compression(&head).ok_or_else(|| ZtocError::InvalidTar {
                            uncompressed_offset: 0,
                            reason: "the layer is neither gzip nor tar".into(),
                        })?;
                    let mut b = ZtocBuilder::new(compression, options.clone());
                    b.feed(&head)?;
                    head = Vec::new();
                    builder = Some(b);
                    if n == 0 {
                        break;
                    }
                }
            }
        }
        progress(offset);
    }
    match builder {
        Some(b) => Ok(b),
        None => unreachable!("the loop only ends once a builder exists"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_gzip_and_tar() {
        assert_eq!(
            detect_compression(&[0x1f, 0x8b, 8]),
            Some(LayerCompression::Gzip)
        );
        let mut h = ::tar::Header::new_ustar();
        h.set_path("a").unwrap();
        h.set_cksum();
        assert_eq!(
            detect_compression(h.as_bytes()),
            Some(LayerCompression::Uncompressed)
        );
        assert_eq!(
            detect_compression(&[0u8; 512]),
            Some(LayerCompression::Uncompressed)
        );
        assert_eq!(detect_compression(b"(\xb5/\xfd zstd"), None);
        let mut bad = *h.as_bytes();
        bad[0] = b'b'; // checksum no longer matches
        assert_eq!(detect_compression(&bad), None);
    }

    /// Random deflate data after a gzip header fails with what is wrong, never with
    /// zlib-rs's "repeated call with bad state" (see `inflate::FAST_PATH_LOST_MESSAGE`),
    /// which some of these layers produced before.
    #[test]
    fn random_deflate_data_names_the_cause() {
        let (mut corrupt, mut from_fast_decoder) = (0, 0);
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..200 {
            let mut layer = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
            while layer.len() < 4096 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                layer.extend_from_slice(&x.to_le_bytes());
            }
            match build_from_reader(&layer[..], ZtocOptions::default(), |_| {}) {
                Err(ZtocError::CorruptGzip { reason, .. }) => {
                    assert!(!reason.contains("repeated call"), "{reason}");
                    corrupt += 1;
                    from_fast_decoder += usize::from(reason.contains("fast decoder"));
                }
                Err(other) => assert!(!other.to_string().contains("repeated call"), "{other}"),
                Ok(_) => {}
            }
        }
        assert!(
            corrupt > 0 && from_fast_decoder > 0,
            "{corrupt} corrupt, {from_fast_decoder} from the fast decoder"
        );
    }

    #[test]
    fn xattrs_and_opaque_whiteouts_need_xattrs() {
        let entry = |name: &str, key: Option<&str>| FileMetadata {
            name: name.into(),
            xattrs: key
                .map(|k| (k.to_string(), String::new()))
                .into_iter()
                .collect(),
            ..FileMetadata::default()
        };
        let z = |files| Ztoc {
            version: ZTOC_VERSION.into(),
            build_tool_identifier: String::new(),
            compressed_archive_size: 0,
            uncompressed_archive_size: 0,
            files,
            compression_algorithm: LayerCompression::Gzip,
            max_span_id: 0,
            span_digests: vec![],
            checkpoints: vec![],
        };
        assert!(!z(vec![entry("a", Some("mtime")), entry("b/.wh.c", None)]).uses_xattrs());
        assert!(z(vec![entry("a", Some("SCHILY.xattr.security.capability"))]).uses_xattrs());
        assert!(z(vec![entry("./etc/.wh..wh..opq", None)]).uses_xattrs());
        assert!(z(vec![entry(".wh..wh..opq", None)]).uses_xattrs());
    }
}
