//! Extract one file through a zTOC, as the snapshotter does: find the last checkpoint at
//! or before the file's data, fetch whole spans (checking their digests), restart raw
//! inflate there (prime the leftover bits, set the 32 KiB window), skip to the data.

use super::gzip::Checkpoints;
use super::inflate::{Inflater, Status, GZIP, RAW};
use super::{LayerCompression, Ztoc, ZtocError};
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, SeekFrom, Write};

/// Random access to a layer blob (a byte slice, a file, an HTTP range fetcher).
pub trait LayerReader {
    /// Reads exactly `len` bytes at `offset` (fewer only at the end of the blob).
    fn read_range(&self, offset: u64, len: u64) -> std::io::Result<Vec<u8>>;

    /// The blob's size when known cheaply: a layer of another size is refused up front.
    fn size(&self) -> Option<u64> {
        None
    }
}

impl LayerReader for [u8] {
    fn read_range(&self, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.len());
        let end = usize::try_from(offset.saturating_add(len))
            .unwrap_or(usize::MAX)
            .min(self.len());
        Ok(self[start..end].to_vec())
    }

    fn size(&self) -> Option<u64> {
        Some(self.len() as u64)
    }
}

impl LayerReader for Vec<u8> {
    fn read_range(&self, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
        self.as_slice().read_range(offset, len)
    }

    fn size(&self) -> Option<u64> {
        self.as_slice().size()
    }
}

impl LayerReader for std::fs::File {
    fn read_range(&self, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
        let mut f = self;
        f.seek(SeekFrom::Start(offset))?;
        let mut out = Vec::new();
        f.take(len).read_to_end(&mut out)?;
        Ok(out)
    }

    fn size(&self) -> Option<u64> {
        self.metadata().ok().map(|m| m.len())
    }
}

/// The contents of the regular file `path` of the layer, read through its zTOC, in
/// memory (see [`extract_file_to`] to stream a big file instead).
///
/// # Errors
/// As [`extract_file_to`].
pub fn extract_file(
    ztoc: &Ztoc,
    layer: &dyn LayerReader,
    path: &str,
) -> Result<Vec<u8>, ZtocError> {
    let mut out = Vec::new();
    extract_file_to(ztoc, layer, path, &mut out)?;
    Ok(out)
}

/// Writes the contents of the regular file `path` of the layer to `out`, read through
/// its zTOC; returns its size.
///
/// Hard links are followed to their target. Only the spans holding the file are read,
/// one at a time, and each is checked against its digest before any byte that comes
/// from it is written: memory stays about one span whatever the file size, and on an
/// error `out` holds only bytes of spans that matched.
///
/// # Errors
/// Unknown path, a span whose digest does not match (or is missing), a zTOC whose
/// spans do not fit its layer, corrupt data, I/O errors reading the layer
/// ([`ZtocError::Read`]) or writing `out` ([`ZtocError::Output`]).
pub fn extract_file_to(
    ztoc: &Ztoc,
    layer: &dyn LayerReader,
    path: &str,
    out: &mut dyn Write,
) -> Result<u64, ZtocError> {
    let not_found = |reason: &str| ZtocError::NoSuchFile {
        path: path.to_string(),
        reason: reason.to_string(),
    };
    let mut entry = ztoc.find(path).ok_or_else(|| not_found("not found"))?;
    for _ in 0..16 {
        if entry.file_type != "hardlink" {
            break;
        }
        entry = ztoc
            .find(&entry.linkname)
            .ok_or_else(|| not_found("its hard link target is missing"))?;
    }
    if entry.file_type != "reg" {
        return Err(not_found(&format!("it is a {}", entry.file_type)));
    }
    let (offset, size) = (
        u64::try_from(entry.uncompressed_offset).map_err(|_| not_found("negative offset"))?,
        u64::try_from(entry.uncompressed_size).map_err(|_| not_found("negative size"))?,
    );
    if let Some(actual) = layer.size() {
        if i64::try_from(actual) != Ok(ztoc.compressed_archive_size) {
            return Err(ZtocError::LayerSize {
                actual,
                expected: ztoc.compressed_archive_size,
            });
        }
    }
    match ztoc.compression_algorithm {
        LayerCompression::Uncompressed => extract_tar(ztoc, layer, offset, size, out)?,
        LayerCompression::Gzip => extract_gzip(ztoc, layer, offset, size, out)?,
    }
    Ok(size)
}

fn read_exact(layer: &dyn LayerReader, offset: u64, len: u64) -> Result<Vec<u8>, ZtocError> {
    let end = offset.saturating_add(len);
    let data = layer
        .read_range(offset, len)
        .map_err(|source| ZtocError::Read {
            offset,
            end,
            source,
        })?;
    if data.len() as u64 != len {
        return Err(ZtocError::Read {
            offset,
            end,
            source: std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("got {} bytes", data.len()),
            ),
        });
    }
    Ok(data)
}

/// The bytes `start..end` of span `span`, read whole and checked against the span's
/// digest: nothing read from a layer is used before this check.
fn verified_span(
    ztoc: &Ztoc,
    layer: &dyn LayerReader,
    span: usize,
    start: u64,
    end: u64,
) -> Result<Vec<u8>, ZtocError> {
    let expected = ztoc.span_digests.get(span).ok_or_else(|| {
        ZtocError::InvalidZtoc(format!(
            "span {span} has no digest ({} span digests)",
            ztoc.span_digests.len()
        ))
    })?;
    let data = read_exact(layer, start, end - start)?;
    let actual = super::spans::digest_string(Sha256::new_with_prefix(&data));
    if &actual != expected {
        return Err(ZtocError::Mismatch {
            compressed_offset: start,
            reason: format!(
                "span {span} (bytes {start}..{end}) has digest {actual}, the zTOC says {expected}: is this the layer the zTOC was built from?"
            ),
        });
    }
    Ok(data)
}

fn write_out(out: &mut dyn Write, bytes: &[u8]) -> Result<(), ZtocError> {
    out.write_all(bytes)
        .map_err(|error| ZtocError::Output { error })
}

/// A plain tar layer: span `i` is bytes `i * span_size..` of the blob itself, so the
/// file's bytes are copied out of its verified spans.
fn extract_tar(
    ztoc: &Ztoc,
    layer: &dyn LayerReader,
    offset: u64,
    size: u64,
    out: &mut dyn Write,
) -> Result<(), ZtocError> {
    let (_, span_size, zinfo_size) = ztoc.tar_zinfo()?;
    let span_size = u64::try_from(span_size)
        .ok()
        .filter(|&s| s > 0)
        .ok_or_else(|| {
            ZtocError::InvalidZtoc(format!("tar span size {span_size} is not positive"))
        })?;
    let layer_size = u64::try_from(ztoc.compressed_archive_size)
        .ok()
        .filter(|&s| i64::try_from(s) == Ok(zinfo_size))
        .ok_or_else(|| {
            ZtocError::InvalidZtoc(format!(
                "the layer size {} differs from the tar checkpoints' size {zinfo_size}",
                ztoc.compressed_archive_size
            ))
        })?;
    let spans = layer_size.div_ceil(span_size);
    if spans != ztoc.span_digests.len() as u64 {
        return Err(ZtocError::InvalidZtoc(format!(
            "{} span digests for the {spans} spans of {span_size} bytes in a {layer_size}-byte layer",
            ztoc.span_digests.len()
        )));
    }
    let end = offset
        .checked_add(size)
        .filter(|&e| e <= layer_size)
        .ok_or_else(|| {
            ZtocError::InvalidZtoc(format!(
                "the file's bytes {offset}..{} run past the {layer_size}-byte layer",
                offset.saturating_add(size)
            ))
        })?;
    if size == 0 {
        return Ok(());
    }
    for span in offset / span_size..=(end - 1) / span_size {
        let span_start = span * span_size;
        let span_end = (span_start + span_size).min(layer_size);
        // `span` < `spans` = the number of digests, so it fits a usize.
        let data = verified_span(ztoc, layer, span as usize, span_start, span_end)?;
        let from = (offset.max(span_start) - span_start) as usize;
        let to = (end.min(span_end) - span_start) as usize;
        write_out(out, &data[from..to])?;
    }
    Ok(())
}

/// The error for corrupt deflate data found at `compressed_offset`, as a `map_err` mapper.
fn corrupt_at(compressed_offset: u64) -> impl Fn(String) -> ZtocError + Copy {
    move |reason| ZtocError::CorruptGzip {
        compressed_offset,
        reason,
    }
}

/// Output buffer of the gzip path: one `inflate` call's worth of output.
const OUT_CHUNK: usize = 256 * 1024;

fn extract_gzip(
    ztoc: &Ztoc,
    layer: &dyn LayerReader,
    offset: u64,
    size: u64,
    out: &mut dyn Write,
) -> Result<(), ZtocError> {
    let cps = Checkpoints::parse(&ztoc.checkpoints)?;
    if ztoc.span_digests.len() != cps.len() {
        return Err(ZtocError::InvalidZtoc(format!(
            "{} span digests for {} checkpoints",
            ztoc.span_digests.len(),
            cps.len()
        )));
    }
    let compressed_size = u64::try_from(ztoc.compressed_archive_size)
        .map_err(|_| ZtocError::InvalidZtoc("negative compressed size".into()))?;
    // The last checkpoint at or before the data.
    let first = (0..cps.len())
        .rev()
        .find(|&i| cps.get(i).uncompressed_offset <= offset)
        .ok_or_else(|| {
            ZtocError::InvalidZtoc(format!(
                "no checkpoint at or before uncompressed offset {offset}"
            ))
        })?;
    let start = cps.get(first);
    if size == 0 {
        return Ok(());
    }
    let mut to_skip = offset - start.uncompressed_offset;
    let mut written = 0u64;
    // Skipped bytes land here too: they are never written out.
    let mut buf = vec![0u8; OUT_CHUNK];

    let mut inflater = Inflater::new(RAW).map_err(corrupt_at(start.compressed_offset))?;
    let mut span = first;
    let mut raw_mode = true;
    let mut primed = start.bits == 0;
    // Bytes to drop from the input before inflating again (a raw member's trailer).
    let mut drop_trailer = 0usize;
    while written < size {
        if span >= cps.len() {
            return Err(ZtocError::TruncatedGzip {
                compressed_offset: compressed_size,
                uncompressed_offset: offset + written,
            });
        }
        let (s, e) = (cps.span_start(span), cps.span_end(span, compressed_size));
        if e < s {
            return Err(ZtocError::InvalidZtoc(format!(
                "span {span} ends before it starts"
            )));
        }
        let data = verified_span(ztoc, layer, span, s, e)?;
        let mut input: &[u8] = &data;
        let corrupt_at_span = corrupt_at(s);
        if !primed {
            let Some(&byte) = input.first() else {
                return Err(ZtocError::InvalidZtoc(format!("span {span} is empty")));
            };
            inflater
                .prime(start.bits, byte >> (8 - start.bits))
                .map_err(corrupt_at_span)?;
            inflater
                .set_dictionary(start.window)
                .map_err(corrupt_at_span)?;
            input = &input[1..];
            primed = true;
        } else if span == first {
            inflater
                .set_dictionary(start.window)
                .map_err(corrupt_at_span)?;
        } else if cps.get(span).bits != 0 {
            // Adjacent spans overlap by the one byte holding bits of both.
            input = input.get(1..).unwrap_or_default();
        }
        let mut pos_in_blob = e - input.len() as u64;
        while !input.is_empty() && written < size {
            if drop_trailer > 0 {
                let n = drop_trailer.min(input.len());
                input = &input[n..];
                pos_in_blob += n as u64;
                drop_trailer -= n;
                if drop_trailer == 0 {
                    inflater.reset(GZIP).map_err(corrupt_at(pos_in_blob))?;
                }
                continue;
            }
            let want = if to_skip > 0 { to_skip } else { size - written };
            let room = &mut buf[..want.min(OUT_CHUNK as u64) as usize];
            let step = inflater.inflate(input, room, libz_rs_sys::Z_NO_FLUSH);
            if to_skip > 0 {
                to_skip -= step.produced as u64;
            } else {
                write_out(out, &room[..step.produced])?;
                written += step.produced as u64;
            }
            input = &input[step.consumed..];
            pos_in_blob += step.consumed as u64;
            match step.status {
                Status::Ok | Status::BufError => {}
                Status::Error(reason) => return Err(corrupt_at(pos_in_blob)(reason)),
                Status::StreamEnd => {
                    // End of a gzip member: the next one follows (pigz, concatenation).
                    // Raw inflate leaves the 8-byte trailer; gzip mode consumes it.
                    if raw_mode {
                        drop_trailer = 8;
                        raw_mode = false;
                    } else {
                        inflater.reset(GZIP).map_err(corrupt_at(pos_in_blob))?;
                    }
                }
            }
            if step.consumed == 0 && step.produced == 0 && step.status != Status::StreamEnd {
                break; // needs the next span's bytes
            }
        }
        span += 1;
    }
    Ok(())
}
