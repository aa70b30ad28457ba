//! Extract one file through a zTOC, as the snapshotter does: find the last checkpoint at
//! or before the file's data, fetch whole spans (checking their digests), restart raw
//! inflate there (prime the leftover bits, set the 32 KiB window), skip to the data.

use super::gzip::Checkpoints;
use super::inflate::{Inflater, Status, GZIP, RAW};
use super::{LayerCompression, Ztoc, ZtocError};
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, SeekFrom};

/// Random access to a layer blob (a byte slice, a file, an HTTP range fetcher).
pub trait LayerReader {
    /// Reads exactly `len` bytes at `offset` (fewer only at the end of the blob).
    fn read_range(&self, offset: u64, len: u64) -> std::io::Result<Vec<u8>>;
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
}

impl LayerReader for Vec<u8> {
    fn read_range(&self, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
        self.as_slice().read_range(offset, len)
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
}

/// The contents of the regular file `path` of the layer, read through its zTOC.
///
/// Hard links are followed to their target. Only the spans holding the file are read.
///
/// # Errors
/// Unknown path, a span whose digest does not match, corrupt data, I/O errors.
pub fn extract_file(
    ztoc: &Ztoc,
    layer: &dyn LayerReader,
    path: &str,
) -> Result<Vec<u8>, ZtocError> {
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
    match ztoc.compression_algorithm {
        LayerCompression::Uncompressed => read_exact(layer, offset, size),
        LayerCompression::Gzip => extract_gzip(ztoc, layer, offset, size),
    }
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

/// The error for corrupt deflate data found at `compressed_offset`, as a `map_err` mapper.
fn corrupt_at(compressed_offset: u64) -> impl Fn(String) -> ZtocError + Copy {
    move |reason| ZtocError::CorruptGzip {
        compressed_offset,
        reason,
    }
}

fn extract_gzip(
    ztoc: &Ztoc,
    layer: &dyn LayerReader,
    offset: u64,
    size: u64,
) -> Result<Vec<u8>, ZtocError> {
    let cps = Checkpoints::parse(&ztoc.checkpoints)?;
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
    let mut out = Vec::with_capacity(size.min(1 << 20) as usize);
    if size == 0 {
        return Ok(out);
    }
    let mut to_skip = offset - start.uncompressed_offset;

    let mut inflater = Inflater::new(RAW).map_err(corrupt_at(start.compressed_offset))?;
    let mut span = first;
    let mut raw_mode = true;
    let mut primed = start.bits == 0;
    let mut discard = vec![0u8; super::WINDOW_SIZE];
    // Bytes to drop from the input before inflating again (a raw member's trailer).
    let mut drop_trailer = 0usize;
    while (out.len() as u64) < size {
        if span >= cps.len() {
            return Err(ZtocError::TruncatedGzip {
                compressed_offset: compressed_size,
                uncompressed_offset: offset + out.len() as u64,
            });
        }
        let (s, e) = (cps.span_start(span), cps.span_end(span, compressed_size));
        if e < s {
            return Err(ZtocError::InvalidZtoc(format!(
                "span {span} ends before it starts"
            )));
        }
        let data = read_exact(layer, s, e - s)?;
        if let Some(expected) = ztoc.span_digests.get(span) {
            let actual = super::spans::digest_string(Sha256::new_with_prefix(&data));
            if &actual != expected {
                return Err(ZtocError::Mismatch {
                    compressed_offset: s,
                    reason: format!("span {span} has digest {actual}, the zTOC says {expected}"),
                });
            }
        }
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
        while !input.is_empty() && (out.len() as u64) < size {
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
            let step = if to_skip > 0 {
                let n = to_skip.min(discard.len() as u64) as usize;
                let st = inflater.inflate(input, &mut discard[..n], libz_rs_sys::Z_NO_FLUSH);
                to_skip -= st.produced as u64;
                st
            } else {
                let want = (size - out.len() as u64).min(1 << 20) as usize;
                let at = out.len();
                out.resize(at + want, 0);
                let st = inflater.inflate(input, &mut out[at..], libz_rs_sys::Z_NO_FLUSH);
                out.truncate(at + st.produced);
                st
            };
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
    Ok(out)
}
