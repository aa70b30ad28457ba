//! The one error type of the zTOC module: every variant says where (offset) and what.

use thiserror::Error;

/// Why a zTOC could not be built, read or used.
///
/// Offsets are always absolute: `compressed offset` counts bytes of the layer blob,
/// `uncompressed offset` counts bytes of the tar stream inside it.
#[derive(Debug, Error)]
pub enum ZtocError {
    /// The deflate/gzip data is corrupt.
    #[error("corrupt gzip data at compressed offset {compressed_offset}: {reason}")]
    CorruptGzip {
        /// Offset of the first byte the inflater had not yet consumed.
        compressed_offset: u64,
        /// What zlib reported.
        reason: String,
    },
    /// The gzip stream stops before its end.
    #[error("truncated gzip stream: it ends at compressed offset {compressed_offset} (uncompressed offset {uncompressed_offset}) inside a member")]
    TruncatedGzip {
        /// Size of the data seen.
        compressed_offset: u64,
        /// Uncompressed bytes produced so far.
        uncompressed_offset: u64,
    },
    /// Bytes after the last gzip member that are not another gzip member.
    #[error("trailing garbage after the gzip stream at compressed offset {compressed_offset}")]
    TrailingGarbage {
        /// Offset of the first byte that is not part of a member.
        compressed_offset: u64,
    },
    /// A tar header (or the stream structure) is invalid.
    #[error("invalid tar header at uncompressed offset {uncompressed_offset}: {reason}")]
    InvalidTar {
        /// Offset of the offending header block.
        uncompressed_offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The tar stream ends without its end-of-archive marker, or inside an entry.
    #[error("tar stream ends at uncompressed offset {uncompressed_offset} {reason}")]
    TruncatedTar {
        /// Where the stream ended.
        uncompressed_offset: u64,
        /// "without its end-of-archive marker" or "inside entry ...".
        reason: String,
    },
    /// An entry type the zTOC format cannot describe (GNU sparse, ...).
    #[error("unsupported tar entry type {typeflag:?} for {name:?} at uncompressed offset {uncompressed_offset}: {reason}")]
    UnsupportedEntry {
        /// The raw typeflag byte, as a char.
        typeflag: char,
        /// The entry's name.
        name: String,
        /// Offset of the entry's header.
        uncompressed_offset: u64,
        /// Why it cannot be indexed.
        reason: String,
    },
    /// A PAX or GNU long-name record larger than we accept.
    #[error("tar metadata record of {size} bytes at uncompressed offset {uncompressed_offset} exceeds the {limit}-byte limit")]
    RecordTooLarge {
        /// Offset of its header.
        uncompressed_offset: u64,
        /// Its declared size.
        size: u64,
        /// Our limit.
        limit: u64,
    },
    /// A span size out of the supported range.
    #[error(
        "span size {span_size} is out of range: it must be from {min} (64 KiB) to {max} (1 GiB); soci's default is {default} (4 MiB)",
        min = super::MIN_SPAN_SIZE,
        max = super::MAX_SPAN_SIZE,
        default = super::DEFAULT_SPAN_SIZE
    )]
    SpanSize {
        /// The span size asked for.
        span_size: u64,
    },
    /// `feed` was called after an earlier error, or `finish` twice.
    #[error("the zTOC builder already failed: {0}")]
    Poisoned(String),
    /// The thread hashing the spans stopped before the layer ended (it panicked).
    #[error("the span hashing thread failed: {0}")]
    SpanHashing(String),
    /// A zTOC (FlatBuffers) that cannot be parsed.
    #[error("invalid zTOC: {0}")]
    InvalidZtoc(String),
    /// The path asked for is not in the zTOC (or is not a regular file).
    #[error("{path:?} is not a regular file in the zTOC: {reason}")]
    NoSuchFile {
        /// The path looked up.
        path: String,
        /// "not found", "is a dir", ...
        reason: String,
    },
    /// Data read back from the layer does not match the zTOC.
    #[error(
        "layer data does not match the zTOC at compressed offset {compressed_offset}: {reason}"
    )]
    Mismatch {
        /// Start of the span concerned.
        compressed_offset: u64,
        /// What differs.
        reason: String,
    },
    /// The layer read through a zTOC is not the size the zTOC describes.
    #[error("the layer has {actual} bytes, but the zTOC describes a layer of {expected} bytes: is it the layer the zTOC was built from?")]
    LayerSize {
        /// The layer's size.
        actual: u64,
        /// The zTOC's `compressed_archive_size`.
        expected: i64,
    },
    /// Reading the layer failed.
    #[error("reading layer bytes {offset}..{end}: {source}")]
    Read {
        /// First byte asked for.
        offset: u64,
        /// End (exclusive).
        end: u64,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Writing an extracted file's bytes failed.
    // `error` rather than `source`: the message already includes it (see `InLayer`).
    #[error("writing the extracted file: {error}")]
    Output {
        /// The I/O error.
        error: std::io::Error,
    },
    /// Any of the above, for a named layer (digest or file name).
    // Not a `source`: the message already includes it, and error-chain printers
    // (anyhow's `{:#}`) would repeat it.
    #[error("layer {layer}: {error}")]
    InLayer {
        /// The layer's digest or file name.
        layer: String,
        /// What went wrong.
        error: Box<ZtocError>,
    },
}

impl ZtocError {
    /// Wraps this error with the layer it concerns, so the message reads
    /// `layer sha256:…: corrupt gzip data at compressed offset 12345: …`.
    pub fn in_layer(self, layer: impl Into<String>) -> ZtocError {
        ZtocError::InLayer {
            layer: layer.into(),
            error: Box::new(self),
        }
    }
}
