//! Gzip checkpoints ("zinfo" v2): the zran algorithm run as a push-style state machine.
//!
//! Blob layout (little endian, tightly packed):
//! `i32 count; i64 span_size; count × { i64 in; i64 out; u8 bits; [u8; 32768] window }`.

use super::inflate::{Inflater, Status, GZIP};
use super::spans::SpanDigester;
use super::ZtocError;

/// Deflate's maximum back-reference distance, and so the size of a checkpoint window.
pub const WINDOW_SIZE: usize = 32 * 1024;
/// Bytes of the blob header (`count`, `span_size`).
pub const BLOB_HEADER_SIZE: usize = 4 + 8;
/// Bytes of one packed checkpoint.
pub const CHECKPOINT_SIZE: usize = 8 + 8 + 1 + WINDOW_SIZE;

/// Output ring: the inflater gets up to `RING_SIZE - WINDOW_SIZE` bytes of room per call.
/// zlib copies up to 32 KiB of every call's output into its own window, so the bigger the
/// calls, the smaller that overhead (32 KiB per 992 KiB here, as for a plain 1 MiB inflate).
const RING_SIZE: usize = 32 * WINDOW_SIZE;
const Z_BLOCK: i32 = libz_rs_sys::Z_BLOCK;
const Z_NO_FLUSH: i32 = libz_rs_sys::Z_NO_FLUSH;

/// One decoded checkpoint, borrowing its window from the blob.
#[derive(Debug, Clone, Copy)]
pub struct Checkpoint<'a> {
    /// Compressed offset of the first full byte after the checkpoint.
    pub compressed_offset: u64,
    /// Uncompressed offset.
    pub uncompressed_offset: u64,
    /// Bits (0..=7) of the byte at `compressed_offset - 1` that belong to the next block.
    pub bits: u8,
    /// The 32 KiB of output before `uncompressed_offset`, zero padded at the front.
    pub window: &'a [u8],
}

/// A validated view over a checkpoints blob.
#[derive(Debug, Clone, Copy)]
pub struct Checkpoints<'a> {
    blob: &'a [u8],
    count: usize,
    /// The span size recorded in the blob.
    pub span_size: i64,
}

impl<'a> Checkpoints<'a> {
    /// Checks the blob's size against its count (v2 layout only).
    pub fn parse(blob: &'a [u8]) -> Result<Self, ZtocError> {
        if blob.len() < BLOB_HEADER_SIZE {
            return Err(ZtocError::InvalidZtoc(format!(
                "checkpoints blob of {} bytes is shorter than its {BLOB_HEADER_SIZE}-byte header",
                blob.len()
            )));
        }
        let count = i32::from_le_bytes(blob[0..4].try_into().expect("4 bytes"));
        let span_size = i64::from_le_bytes(blob[4..12].try_into().expect("8 bytes"));
        let expected = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(CHECKPOINT_SIZE))
            .and_then(|n| n.checked_add(BLOB_HEADER_SIZE));
        if expected != Some(blob.len()) || count <= 0 {
            return Err(ZtocError::InvalidZtoc(format!(
                "checkpoints blob of {} bytes does not hold the {count} checkpoints it announces (only zinfo v2 is supported)",
                blob.len()
            )));
        }
        let view = Checkpoints {
            blob,
            count: count as usize,
            span_size,
        };
        for i in 0..view.len() {
            let c = view.get(i);
            if c.bits > 7 || (c.bits > 0 && c.compressed_offset == 0) {
                return Err(ZtocError::InvalidZtoc(format!(
                    "checkpoint {i} has invalid bits {}",
                    c.bits
                )));
            }
        }
        Ok(view)
    }

    /// Number of checkpoints.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Never true for a parsed blob (at least one checkpoint).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Checkpoint `i` (< `len()`).
    pub fn get(&self, i: usize) -> Checkpoint<'a> {
        let at = BLOB_HEADER_SIZE + i * CHECKPOINT_SIZE;
        let b = &self.blob[at..at + CHECKPOINT_SIZE];
        Checkpoint {
            compressed_offset: u64::from_le_bytes(b[0..8].try_into().expect("8 bytes")),
            uncompressed_offset: u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")),
            bits: b[16],
            window: &b[17..],
        }
    }

    /// All checkpoints in order.
    pub fn iter(&self) -> impl Iterator<Item = Checkpoint<'a>> + '_ {
        (0..self.count).map(|i| self.get(i))
    }

    /// Compressed start of span `i`: one byte earlier when the checkpoint has bits.
    pub fn span_start(&self, i: usize) -> u64 {
        let c = self.get(i);
        c.compressed_offset - u64::from(c.bits != 0)
    }

    /// Compressed end of span `i` (exclusive); the last span ends at the blob's end.
    pub fn span_end(&self, i: usize, compressed_size: u64) -> u64 {
        if i + 1 >= self.count {
            compressed_size
        } else {
            self.get(i + 1).compressed_offset
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum MemberState {
    /// Inside a gzip member (header, deflate data or trailer).
    InMember,
    /// A member just ended; more bytes must start another member.
    BetweenMembers,
}

/// Streams a gzip layer through zlib with `Z_BLOCK`, emitting checkpoints exactly where
/// soci-snapshotter's zran-derived builder does, span digests, and the uncompressed bytes.
pub(crate) struct GzipIndexer {
    inflater: Inflater,
    span_size: u64,
    /// Output ring ([`RING_SIZE`]): the inflater writes straight into it, never over the
    /// live window, so the 32 KiB before `ring_pos` are always the last output (zero
    /// initially, which gives the front padding for free). The live window is never part
    /// of the room handed out because zlib-rs may scribble past the bytes it reports as
    /// produced (within `avail_out`).
    ring: Box<[u8]>,
    ring_pos: usize,
    total_in: u64,
    total_out: u64,
    last_checkpoint_out: u64,
    member: MemberState,
    member_start: u64,
    blob: Vec<u8>,
    count: i32,
    spans: SpanDigester,
    last_consumed_byte: u8,
}

impl GzipIndexer {
    pub(crate) fn new(span_size: u64) -> Result<Self, ZtocError> {
        let inflater = Inflater::new(GZIP).map_err(|reason| ZtocError::CorruptGzip {
            compressed_offset: 0,
            reason,
        })?;
        let mut blob = Vec::with_capacity(BLOB_HEADER_SIZE + CHECKPOINT_SIZE);
        blob.extend_from_slice(&[0u8; BLOB_HEADER_SIZE]);
        Ok(GzipIndexer {
            inflater,
            span_size,
            ring: vec![0u8; RING_SIZE].into_boxed_slice(),
            ring_pos: 0,
            total_in: 0,
            total_out: 0,
            last_checkpoint_out: 0,
            member: MemberState::InMember,
            member_start: 0,
            blob,
            count: 0,
            spans: SpanDigester::new(),
            last_consumed_byte: 0,
        })
    }

    /// Uncompressed bytes produced so far.
    pub(crate) fn total_out(&self) -> u64 {
        self.total_out
    }

    /// Checkpoints emitted so far.
    pub(crate) fn checkpoints(&self) -> usize {
        self.count as usize
    }

    /// Bytes the checkpoints blob holds (its capacity: what the allocator gave it).
    pub(crate) fn blob_bytes(&self) -> usize {
        self.blob.capacity()
    }

    /// Inflates `input`, handing every uncompressed byte to `sink` in order.
    pub(crate) fn feed(
        &mut self,
        mut input: &[u8],
        sink: &mut dyn FnMut(&[u8]) -> Result<(), ZtocError>,
    ) -> Result<(), ZtocError> {
        let mut stalls = 0;
        while !input.is_empty() {
            if self.member == MemberState::BetweenMembers {
                // More bytes after a member: they must be another member (pigz, cat a b).
                if input[0] != 0x1f {
                    return Err(ZtocError::TrailingGarbage {
                        compressed_offset: self.total_in,
                    });
                }
                self.inflater
                    .reset(GZIP)
                    .map_err(|reason| ZtocError::CorruptGzip {
                        compressed_offset: self.total_in,
                        reason,
                    })?;
                self.member = MemberState::InMember;
                self.member_start = self.total_in;
            }
            if self.ring_pos == RING_SIZE {
                self.ring_pos = 0;
            }
            // Never hand out the live window (the 32 KiB before ring_pos).
            let mut room = (RING_SIZE - self.ring_pos).min(RING_SIZE - WINDOW_SIZE);
            // Only the first block boundary past `last_checkpoint_out + span_size` can
            // become a checkpoint. Until the output reaches that point, inflate without
            // stopping at every block (one call per ring's worth instead of one per ~50 KiB
            // block), with the room capped so no call runs past it; from there on, stop at
            // every boundary (`Z_BLOCK`) until the checkpoint is taken. The checkpoints
            // are the same as stopping everywhere: a boundary at or before the cap never
            // qualifies.
            let threshold = self.last_checkpoint_out.saturating_add(self.span_size);
            let flush = if self.count > 0 && self.total_out < threshold {
                room = room.min((threshold - self.total_out).min(usize::MAX as u64) as usize);
                Z_NO_FLUSH
            } else {
                Z_BLOCK
            };
            let step = self.inflater.inflate(
                input,
                &mut self.ring[self.ring_pos..self.ring_pos + room],
                flush,
            );
            let consumed = &input[..step.consumed];
            if let Some(&b) = consumed.last() {
                self.last_consumed_byte = b;
            }
            self.spans.update(consumed);
            input = &input[step.consumed..];
            self.total_in += step.consumed as u64;
            let produced_at = self.ring_pos;
            self.ring_pos += step.produced;
            self.total_out += step.produced as u64;
            if step.produced > 0 {
                sink(&self.ring[produced_at..self.ring_pos])?;
            }
            match step.status {
                Status::Error(reason) => {
                    // A bad magic right where a next member should start is trailing
                    // garbage rather than a corrupt member.
                    if self.member_start > 0 && self.total_in <= self.member_start + 2 {
                        return Err(ZtocError::TrailingGarbage {
                            compressed_offset: self.member_start,
                        });
                    }
                    return Err(ZtocError::CorruptGzip {
                        compressed_offset: self.total_in,
                        reason,
                    });
                }
                Status::StreamEnd => {
                    self.member = MemberState::BetweenMembers;
                    continue;
                }
                Status::Ok | Status::BufError => {}
            }
            if step.consumed == 0 && step.produced == 0 {
                stalls += 1;
                if stalls > 3 {
                    return Err(ZtocError::CorruptGzip {
                        compressed_offset: self.total_in,
                        reason: "inflate makes no progress".into(),
                    });
                }
            } else {
                stalls = 0;
            }
            let dt = step.data_type;
            // At the end of a header or of a non-last deflate block (see zlib.h,
            // `data_type`): a place a reader can restart from.
            if dt & 128 != 0
                && dt & 64 == 0
                && (self.total_out == 0
                    || self.total_out - self.last_checkpoint_out > self.span_size)
            {
                self.add_checkpoint((dt & 7) as u8);
            }
        }
        Ok(())
    }

    fn add_checkpoint(&mut self, bits: u8) {
        // Grow by an eighth rather than double: the capacity is what the memory budget
        // counts, and a doubled buffer would count up to twice the checkpoints.
        if self.blob.capacity() - self.blob.len() < CHECKPOINT_SIZE {
            self.blob
                .reserve_exact(CHECKPOINT_SIZE.max(self.blob.len() / 8));
        }
        self.blob
            .extend_from_slice(&(self.total_in as i64).to_le_bytes());
        self.blob
            .extend_from_slice(&(self.total_out as i64).to_le_bytes());
        self.blob.push(bits);
        let start = (self.ring_pos + RING_SIZE - WINDOW_SIZE) % RING_SIZE;
        if start + WINDOW_SIZE <= RING_SIZE {
            self.blob
                .extend_from_slice(&self.ring[start..start + WINDOW_SIZE]);
        } else {
            self.blob.extend_from_slice(&self.ring[start..]);
            self.blob.extend_from_slice(&self.ring[..self.ring_pos]);
        }
        self.count += 1;
        self.last_checkpoint_out = self.total_out;
        // The previous span ends here; the next one starts one byte earlier when that
        // byte's high bits already belong to the next block.
        self.spans
            .start_span((bits != 0).then_some(self.last_consumed_byte));
    }

    /// Ends the stream: returns (checkpoints blob, span digests, compressed size).
    pub(crate) fn finish(mut self) -> Result<(Vec<u8>, Vec<String>, u64), ZtocError> {
        if self.member != MemberState::BetweenMembers || self.count == 0 {
            return Err(ZtocError::TruncatedGzip {
                compressed_offset: self.total_in,
                uncompressed_offset: self.total_out,
            });
        }
        let span_digests = self.spans.finish()?;
        self.blob[0..4].copy_from_slice(&self.count.to_le_bytes());
        self.blob[4..12].copy_from_slice(&(self.span_size as i64).to_le_bytes());
        Ok((self.blob, span_digests, self.total_in))
    }
}
