//! zTOC FlatBuffers: an encoder that pushes fields in the order of soci's Go marshaler
//! (so the bytes are identical) and a bounds-checked decoder that never panics.

use super::{FileMetadata, LayerCompression, Ztoc, ZtocError};
use flatbuffers::{FlatBufferBuilder, WIPOffset};
use std::collections::BTreeMap;

/// vtable slot byte offset of field `i`.
const fn slot(i: u16) -> u16 {
    4 + 2 * i
}

/// A builder sized up front (generously): growing it would copy the checkpoints.
fn builder_for(z: &Ztoc) -> FlatBufferBuilder<'static> {
    let files: usize = z
        .files
        .iter()
        .map(|f| {
            let strings = f.name.len() + f.file_type.len() + f.linkname.len() + f.uname.len();
            let xattrs: usize = f.xattrs.iter().map(|(k, v)| k.len() + v.len() + 48).sum();
            strings + f.gname.len() + f.mod_time.len() + xattrs + 200
        })
        .sum();
    let capacity = z.checkpoints.len() + files + z.span_digests.len() * 80 + 1024;
    FlatBufferBuilder::with_capacity(capacity)
}

/// Encodes a zTOC exactly as soci-snapshotter's `ztocToFlatbuffer` does.
pub(crate) fn encode(z: &Ztoc) -> Vec<u8> {
    let mut b = builder_for(z);
    let version = b.create_string(&z.version);
    let tool = b.create_string(&z.build_tool_identifier);
    let mut entries = vec![WIPOffset::new(0); z.files.len()];
    for (i, f) in z.files.iter().enumerate().rev() {
        entries[i] = encode_file(&mut b, f);
    }
    finish_encoding(b, z, version, tool, &entries, |b| {
        b.create_vector(&z.checkpoints)
    })
}

/// Same bytes as [`encode`], but frees the zTOC while it encodes it, so peak memory is
/// about one zTOC rather than two (the TOC structs and checkpoints are most of it).
pub(crate) fn encode_owned(mut z: Ztoc) -> Vec<u8> {
    let mut b = builder_for(&z);
    let version = b.create_string(&z.version);
    let tool = b.create_string(&z.build_tool_identifier);
    let mut entries = Vec::with_capacity(z.files.len());
    while let Some(f) = z.files.pop() {
        entries.push(encode_file(&mut b, &f));
        if z.files.capacity() > 4096 && z.files.len() * 2 < z.files.capacity() {
            z.files.shrink_to_fit();
        }
    }
    entries.reverse();
    let checkpoints = DrainBack {
        bytes: std::mem::take(&mut z.checkpoints),
        front: 0,
    };
    finish_encoding(b, &z, version, tool, &entries, move |b| {
        b.create_vector_from_iter(checkpoints)
    })
}

/// Same bytes as [`encode`] for a zTOC whose `count` entries come from `next_back`, last
/// first (`z.files` is ignored), so that they can be released as they are encoded;
/// `entries_size` is an upper bound of their encoded size.
pub(crate) fn encode_entries_from_back(
    z: &Ztoc,
    count: usize,
    entries_size: usize,
    mut next_back: impl FnMut() -> Option<FileMetadata>,
) -> Vec<u8> {
    let capacity = z.checkpoints.len() + entries_size + z.span_digests.len() * 80 + 1024;
    let mut b = FlatBufferBuilder::with_capacity(capacity);
    let version = b.create_string(&z.version);
    let tool = b.create_string(&z.build_tool_identifier);
    let mut entries = Vec::with_capacity(count);
    while let Some(f) = next_back() {
        entries.push(encode_file(&mut b, &f));
    }
    entries.reverse();
    finish_encoding(b, z, version, tool, &entries, |b| {
        b.create_vector(&z.checkpoints)
    })
}

/// Yields a byte vector's bytes (the builder takes them from the back), releasing the
/// memory behind them as it goes.
struct DrainBack {
    bytes: Vec<u8>,
    front: usize,
}

impl Iterator for DrainBack {
    type Item = u8;
    fn next(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.front)?;
        self.front += 1;
        Some(b)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.bytes.len() - self.front;
        (n, Some(n))
    }
}

impl ExactSizeIterator for DrainBack {}

impl DoubleEndedIterator for DrainBack {
    fn next_back(&mut self) -> Option<u8> {
        if self.bytes.len() <= self.front {
            return None;
        }
        let b = self.bytes.pop();
        if self.bytes.capacity() - self.bytes.len() >= 1 << 20 {
            self.bytes.shrink_to_fit();
        }
        b
    }
}

/// Everything after the TOC entries, in soci's push order.
fn finish_encoding<'a>(
    mut b: FlatBufferBuilder<'a>,
    z: &Ztoc,
    version: WIPOffset<&'a str>,
    tool: WIPOffset<&'a str>,
    entries: &[WIPOffset<flatbuffers::TableFinishedWIPOffset>],
    checkpoints: impl FnOnce(&mut FlatBufferBuilder<'a>) -> WIPOffset<flatbuffers::Vector<'a, u8>>,
) -> Vec<u8> {
    let metadata = b.create_vector(entries);
    let toc_start = b.start_table();
    b.push_slot_always(slot(0), metadata);
    let toc = b.end_table(toc_start);

    let checkpoints = checkpoints(&mut b);
    let digests: Vec<_> = z.span_digests.iter().map(|d| b.create_string(d)).collect();
    let digests = b.create_vector(&digests);
    let ci_start = b.start_table();
    b.push_slot::<i32>(slot(1), z.max_span_id, 0);
    b.push_slot_always(slot(2), digests);
    b.push_slot_always(slot(3), checkpoints);
    b.push_slot::<i8>(slot(0), z.compression_algorithm.flatbuffers_value(), 1);
    let compression_info = b.end_table(ci_start);

    let root_start = b.start_table();
    b.push_slot_always(slot(0), version);
    b.push_slot_always(slot(1), tool);
    b.push_slot_always(slot(4), toc);
    b.push_slot::<i64>(slot(2), z.compressed_archive_size, 0);
    b.push_slot::<i64>(slot(3), z.uncompressed_archive_size, 0);
    b.push_slot_always(slot(5), compression_info);
    let root = b.end_table(root_start);
    b.finish(root, None);
    // Hand over the builder's buffer rather than copying it.
    let (mut buf, head) = b.collapse();
    buf.drain(..head);
    buf
}

fn encode_file<'a>(
    b: &mut FlatBufferBuilder<'a>,
    f: &FileMetadata,
) -> WIPOffset<flatbuffers::TableFinishedWIPOffset> {
    let name = b.create_string(&f.name);
    let file_type = b.create_string(&f.file_type);
    let linkname = b.create_string(&f.linkname);
    let uname = b.create_string(&f.uname);
    let gname = b.create_string(&f.gname);
    let mod_time = b.create_string(&f.mod_time);
    let mut xattrs = Vec::with_capacity(f.xattrs.len());
    for (k, v) in &f.xattrs {
        let k = b.create_string(k);
        let v = b.create_string(v);
        let t = b.start_table();
        b.push_slot_always(slot(0), k);
        b.push_slot_always(slot(1), v);
        xattrs.push(b.end_table(t));
    }
    let xattrs = b.create_vector(&xattrs);
    let t = b.start_table();
    b.push_slot_always(slot(0), name);
    b.push_slot_always(slot(1), file_type);
    b.push_slot::<i64>(slot(2), f.uncompressed_offset, 0);
    b.push_slot::<i64>(slot(3), f.uncompressed_size, 0);
    b.push_slot_always(slot(4), linkname);
    b.push_slot::<i64>(slot(5), f.mode, 0);
    b.push_slot::<u32>(slot(6), f.uid, 0);
    b.push_slot::<u32>(slot(7), f.gid, 0);
    b.push_slot_always(slot(8), uname);
    b.push_slot_always(slot(9), gname);
    b.push_slot_always(slot(10), mod_time);
    b.push_slot::<i64>(slot(11), f.devmajor, 0);
    b.push_slot::<i64>(slot(12), f.devminor, 0);
    b.push_slot_always(slot(13), xattrs);
    b.end_table(t)
}

/// Encodes the `zinfo.TarZinfo` table soci stores in `checkpoints` for tar layers.
pub(crate) fn encode_tar_zinfo(span_size: i64, size: i64) -> Vec<u8> {
    let mut b = FlatBufferBuilder::new();
    let t = b.start_table();
    b.push_slot::<i32>(slot(0), 2, 0);
    b.push_slot::<i64>(slot(1), span_size, 0);
    b.push_slot::<i64>(slot(2), size, 0);
    let root = b.end_table(t);
    b.finish(root, None);
    b.finished_data().to_vec()
}

fn invalid(what: impl Into<String>) -> ZtocError {
    ZtocError::InvalidZtoc(what.into())
}

/// A bounds-checked view of a FlatBuffers buffer.
#[derive(Clone, Copy)]
struct Buf<'a>(&'a [u8]);

#[derive(Clone, Copy)]
struct Table<'a> {
    buf: Buf<'a>,
    pos: usize,
    vtable: usize,
    vtable_len: usize,
    what: &'static str,
}

impl<'a> Buf<'a> {
    fn bytes<const N: usize>(&self, at: usize) -> Result<[u8; N], ZtocError> {
        at.checked_add(N)
            .and_then(|end| self.0.get(at..end))
            .map(|s| s.try_into().expect("N bytes"))
            .ok_or_else(|| {
                invalid(format!(
                    "offset {at} is outside the {}-byte buffer",
                    self.0.len()
                ))
            })
    }
    fn u32(&self, at: usize) -> Result<u32, ZtocError> {
        Ok(u32::from_le_bytes(self.bytes::<4>(at)?))
    }
    fn u16(&self, at: usize) -> Result<u16, ZtocError> {
        Ok(u16::from_le_bytes(self.bytes::<2>(at)?))
    }
    /// Follows the uoffset stored at `at`.
    fn deref(&self, at: usize) -> Result<usize, ZtocError> {
        let off = self.u32(at)? as usize;
        at.checked_add(off)
            .filter(|&p| p < self.0.len())
            .ok_or_else(|| invalid(format!("offset at {at} points outside the buffer")))
    }
    fn table(&self, pos: usize, what: &'static str) -> Result<Table<'a>, ZtocError> {
        let soff = i32::from_le_bytes(self.bytes::<4>(pos)?);
        let vtable = pos as i64 - i64::from(soff);
        let vtable = usize::try_from(vtable)
            .ok()
            .filter(|&v| v < self.0.len())
            .ok_or_else(|| {
                invalid(format!(
                    "{what} table at {pos} has its vtable outside the buffer"
                ))
            })?;
        let vtable_len = self.u16(vtable)? as usize;
        if vtable_len < 4 || vtable_len % 2 != 0 || vtable + vtable_len > self.0.len() {
            return Err(invalid(format!("{what} table at {pos} has a bad vtable")));
        }
        Ok(Table {
            buf: *self,
            pos,
            vtable,
            vtable_len,
            what,
        })
    }
}

impl<'a> Table<'a> {
    /// Absolute position of field `i`, when present.
    fn field(&self, i: u16) -> Result<Option<usize>, ZtocError> {
        let at = slot(i) as usize;
        if at + 2 > self.vtable_len {
            return Ok(None);
        }
        let off = self.buf.u16(self.vtable + at)? as usize;
        Ok(if off == 0 { None } else { Some(self.pos + off) })
    }
    fn scalar<const N: usize>(&self, i: u16) -> Result<Option<[u8; N]>, ZtocError> {
        match self.field(i)? {
            Some(p) => Ok(Some(self.buf.bytes::<N>(p)?)),
            None => Ok(None),
        }
    }
    fn i64(&self, i: u16) -> Result<i64, ZtocError> {
        Ok(self.scalar::<8>(i)?.map_or(0, i64::from_le_bytes))
    }
    fn i32(&self, i: u16) -> Result<i32, ZtocError> {
        Ok(self.scalar::<4>(i)?.map_or(0, i32::from_le_bytes))
    }
    fn u32(&self, i: u16) -> Result<u32, ZtocError> {
        Ok(self.scalar::<4>(i)?.map_or(0, u32::from_le_bytes))
    }
    /// (start, len) of a vector field with `elem` bytes per element.
    fn vector(&self, i: u16, elem: usize) -> Result<Option<(usize, usize)>, ZtocError> {
        let Some(p) = self.field(i)? else {
            return Ok(None);
        };
        let v = self.buf.deref(p)?;
        let len = self.buf.u32(v)? as usize;
        let start = v + 4;
        let fits = len
            .checked_mul(elem)
            .and_then(|n| n.checked_add(start))
            .is_some_and(|end| end <= self.buf.0.len());
        if !fits {
            return Err(invalid(format!(
                "{} field {i}: vector of {len} elements runs past the buffer",
                self.what
            )));
        }
        Ok(Some((start, len)))
    }
    fn bytes(&self, i: u16) -> Result<&'a [u8], ZtocError> {
        Ok(match self.vector(i, 1)? {
            Some((start, len)) => &self.buf.0[start..start + len],
            None => &[],
        })
    }
    fn string(&self, i: u16) -> Result<String, ZtocError> {
        let b = self.bytes(i)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| invalid(format!("{} field {i} is not valid UTF-8", self.what)))
    }
    fn tables(&self, i: u16, what: &'static str) -> Result<Vec<Table<'a>>, ZtocError> {
        let Some((start, len)) = self.vector(i, 4)? else {
            return Ok(Vec::new());
        };
        (0..len)
            .map(|k| {
                let p = self.buf.deref(start + 4 * k)?;
                self.buf.table(p, what)
            })
            .collect()
    }
    fn sub_table(&self, i: u16, what: &'static str) -> Result<Option<Table<'a>>, ZtocError> {
        match self.field(i)? {
            Some(p) => Ok(Some(self.buf.table(self.buf.deref(p)?, what)?)),
            None => Ok(None),
        }
    }
}

/// Decodes a zTOC (ours or soci's). Never panics on any input.
pub(crate) fn decode(bytes: &[u8]) -> Result<Ztoc, ZtocError> {
    let buf = Buf(bytes);
    let root = buf.table(buf.deref(0)?, "Ztoc")?;
    let mut files = Vec::new();
    if let Some(toc) = root.sub_table(4, "TOC")? {
        for f in toc.tables(0, "FileMetadata")? {
            let mut xattrs = BTreeMap::new();
            for x in f.tables(13, "Xattr")? {
                xattrs.insert(x.string(0)?, x.string(1)?);
            }
            files.push(FileMetadata {
                name: f.string(0)?,
                file_type: f.string(1)?,
                uncompressed_offset: f.i64(2)?,
                uncompressed_size: f.i64(3)?,
                linkname: f.string(4)?,
                mode: f.i64(5)?,
                uid: f.u32(6)?,
                gid: f.u32(7)?,
                uname: f.string(8)?,
                gname: f.string(9)?,
                mod_time: f.string(10)?,
                devmajor: f.i64(11)?,
                devminor: f.i64(12)?,
                xattrs,
            });
        }
    }
    let (mut algorithm, mut max_span_id, mut span_digests, mut checkpoints) =
        (LayerCompression::Gzip, 0, Vec::new(), Vec::new());
    if let Some(ci) = root.sub_table(5, "CompressionInfo")? {
        algorithm = match ci.scalar::<1>(0)?.map_or(1, |b| b[0] as i8) {
            1 => LayerCompression::Gzip,
            2 => LayerCompression::Uncompressed,
            other => return Err(invalid(format!("unknown compression algorithm {other}"))),
        };
        max_span_id = ci.i32(1)?;
        if let Some((start, len)) = ci.vector(2, 4)? {
            for k in 0..len {
                let p = buf.deref(start + 4 * k)?;
                let n = buf.u32(p)? as usize;
                let s = bytes
                    .get(p + 4..p + 4 + n)
                    .ok_or_else(|| invalid("span digest string runs past the buffer"))?;
                span_digests.push(
                    String::from_utf8(s.to_vec())
                        .map_err(|_| invalid("span digest is not valid UTF-8"))?,
                );
            }
        }
        checkpoints = ci.bytes(3)?.to_vec();
    }
    Ok(Ztoc {
        version: root.string(0)?,
        build_tool_identifier: root.string(1)?,
        compressed_archive_size: root.i64(2)?,
        uncompressed_archive_size: root.i64(3)?,
        files,
        compression_algorithm: algorithm,
        max_span_id,
        span_digests,
        checkpoints,
    })
}

/// Decodes a `zinfo.TarZinfo` table: (version, span_size, size).
pub(crate) fn decode_tar_zinfo(bytes: &[u8]) -> Result<(i32, i64, i64), ZtocError> {
    let buf = Buf(bytes);
    let t = buf.table(buf.deref(0)?, "TarZinfo")?;
    Ok((t.i32(0)?, t.i64(1)?, t.i64(2)?))
}
