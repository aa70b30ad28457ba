//! zTOC FlatBuffers through the code `flatc` generated from `schema/ztoc.fbs` and
//! `schema/zinfo.fbs` (see [`super::generated`]).
//!
//! The encoder calls the generated builders' `add_*` in the order soci-snapshotter's Go
//! marshaler (`ztocToFlatbuffer`) adds the fields, not through the generated `create`
//! (which orders fields by size): the push order decides the byte layout, and this order
//! is what makes our bytes identical to soci's. The decoder runs the FlatBuffers verifier,
//! bounded by the buffer's size, before it reads anything, so a forged offset, count or
//! string is an [`ZtocError::InvalidZtoc`] naming what the verifier found.

use super::generated::{zinfo, ztoc as fb};
use super::{FileMetadata, LayerCompression, Ztoc, ZtocError, TAR_ZINFO_VERSION};
use flatbuffers::{FlatBufferBuilder, Push, PushAlignment, VerifierOptions, WIPOffset};

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
    let checkpoints = std::mem::take(&mut z.checkpoints);
    finish_encoding(b, &z, version, tool, &entries, move |b| {
        move_bytes_vector(b, checkpoints)
    })
}

/// Same bytes as [`encode`] for a zTOC whose `count` entries come from `next_back`, last
/// first (`z.files` is ignored), so that they can be released as they are encoded;
/// `entries_size` is an upper bound of their encoded size. The checkpoints move from
/// `z.checkpoints` into the buffer piece by piece, each piece released once copied, so
/// they exist once, not twice, whatever their size.
///
/// Returns the builder's whole buffer and where the zTOC starts in it: the front of the
/// buffer, which the size bound reserved but the encoding did not use, is never written
/// (so never resident), and moving the zTOC there would touch it.
pub(crate) fn encode_entries_from_back(
    mut z: Ztoc,
    count: usize,
    entries_size: usize,
    mut next_back: impl FnMut() -> Option<FileMetadata>,
) -> (Vec<u8>, usize) {
    let capacity = z.checkpoints.len() + entries_size + z.span_digests.len() * 80 + 1024;
    let mut b = FlatBufferBuilder::with_capacity(capacity);
    let version = b.create_string(&z.version);
    let tool = b.create_string(&z.build_tool_identifier);
    let mut entries = Vec::with_capacity(count);
    while let Some(f) = next_back() {
        entries.push(encode_file(&mut b, &f));
    }
    entries.reverse();
    let checkpoints = std::mem::take(&mut z.checkpoints);
    let b = build_after_entries(b, &z, version, tool, &entries, move |b| {
        move_bytes_vector(b, checkpoints)
    });
    b.collapse()
}

/// Bytes the checkpoints are copied in at a time (and so at most held twice).
const PIECE: usize = 64 * 1024;

/// A [`PIECE`]-byte run of a byte vector, pushed in one copy.
struct Piece<'a>(&'a [u8]);

impl Push for Piece<'_> {
    type Output = u8;

    unsafe fn push(&self, dst: &mut [u8], _written_len: usize) {
        dst[..PIECE].copy_from_slice(self.0);
    }

    fn size() -> usize {
        PIECE
    }

    fn alignment() -> PushAlignment {
        PushAlignment::new(1)
    }
}

/// The same vector as `b.create_vector(&bytes)`, built from the back of `bytes` while
/// `bytes` shrinks: at no point are both copies whole.
fn move_bytes_vector<'a>(
    b: &mut FlatBufferBuilder<'a>,
    mut bytes: Vec<u8>,
) -> WIPOffset<flatbuffers::Vector<'a, u8>> {
    let len = bytes.len();
    // `start_vector` pads for `len` bytes as `create_vector` does; pieces of alignment 1
    // then add no padding of their own.
    b.start_vector::<u8>(len);
    let head = len % PIECE;
    while bytes.len() > head {
        let at = bytes.len() - PIECE;
        b.push(Piece(&bytes[at..]));
        bytes.truncate(at);
        if bytes.capacity() - bytes.len() >= 1 << 20 {
            bytes.shrink_to_fit();
        }
    }
    for &byte in bytes.iter().rev() {
        b.push(byte);
    }
    b.end_vector::<u8>(len)
}

/// Everything after the TOC entries, in soci's push order; the buffer moved to the front.
fn finish_encoding<'a>(
    b: FlatBufferBuilder<'a>,
    z: &Ztoc,
    version: WIPOffset<&'a str>,
    tool: WIPOffset<&'a str>,
    entries: &[WIPOffset<fb::FileMetadata<'a>>],
    checkpoints: impl FnOnce(&mut FlatBufferBuilder<'a>) -> WIPOffset<flatbuffers::Vector<'a, u8>>,
) -> Vec<u8> {
    let b = build_after_entries(b, z, version, tool, entries, checkpoints);
    // Hand over the builder's buffer rather than copying it.
    let (mut buf, head) = b.collapse();
    buf.drain(..head);
    buf
}

/// Everything after the TOC entries, in soci's push order; returns the finished builder.
fn build_after_entries<'a>(
    mut b: FlatBufferBuilder<'a>,
    z: &Ztoc,
    version: WIPOffset<&'a str>,
    tool: WIPOffset<&'a str>,
    entries: &[WIPOffset<fb::FileMetadata<'a>>],
    checkpoints: impl FnOnce(&mut FlatBufferBuilder<'a>) -> WIPOffset<flatbuffers::Vector<'a, u8>>,
) -> FlatBufferBuilder<'a> {
    let metadata = b.create_vector(entries);
    let mut toc = fb::TOCBuilder::new(&mut b);
    toc.add_metadata(metadata);
    let toc = toc.finish();

    let checkpoints = checkpoints(&mut b);
    let digests: Vec<_> = z.span_digests.iter().map(|d| b.create_string(d)).collect();
    let digests = b.create_vector(&digests);
    let mut ci = fb::CompressionInfoBuilder::new(&mut b);
    ci.add_max_span_id(z.max_span_id);
    ci.add_span_digests(digests);
    ci.add_checkpoints(checkpoints);
    ci.add_compression_algorithm(match z.compression_algorithm {
        LayerCompression::Gzip => fb::CompressionAlgorithm::Gzip,
        LayerCompression::Uncompressed => fb::CompressionAlgorithm::Uncompressed,
    });
    let compression_info = ci.finish();

    let mut root = fb::ZtocBuilder::new(&mut b);
    root.add_version(version);
    root.add_build_tool_identifier(tool);
    root.add_toc(toc);
    root.add_compressed_archive_size(z.compressed_archive_size);
    root.add_uncompressed_archive_size(z.uncompressed_archive_size);
    root.add_compression_info(compression_info);
    let root = root.finish();
    fb::finish_ztoc_buffer(&mut b, root);
    b
}

fn encode_file<'a>(
    b: &mut FlatBufferBuilder<'a>,
    f: &FileMetadata,
) -> WIPOffset<fb::FileMetadata<'a>> {
    let name = b.create_string(&f.name);
    let file_type = b.create_string(&f.file_type);
    let linkname = b.create_string(&f.linkname);
    let uname = b.create_string(&f.uname);
    let gname = b.create_string(&f.gname);
    let mod_time = b.create_string(&f.mod_time);
    let mut xattrs = Vec::with_capacity(f.xattrs.len());
    for (k, v) in &f.xattrs {
        let key = b.create_string(k);
        let value = b.create_string(v);
        let mut x = fb::XattrBuilder::new(b);
        x.add_key(key);
        x.add_value(value);
        xattrs.push(x.finish());
    }
    let xattrs = b.create_vector(&xattrs);
    let mut t = fb::FileMetadataBuilder::new(b);
    t.add_name(name);
    t.add_type_(file_type);
    t.add_uncompressed_offset(f.uncompressed_offset);
    t.add_uncompressed_size(f.uncompressed_size);
    t.add_linkname(linkname);
    t.add_mode(f.mode);
    t.add_uid(f.uid);
    t.add_gid(f.gid);
    t.add_uname(uname);
    t.add_gname(gname);
    t.add_mod_time(mod_time);
    t.add_devmajor(f.devmajor);
    t.add_devminor(f.devminor);
    t.add_xattrs(xattrs);
    t.finish()
}

/// Encodes the `zinfo.TarZinfo` table soci stores in `checkpoints` for tar layers.
pub(crate) fn encode_tar_zinfo(span_size: i64, size: i64) -> Vec<u8> {
    let mut b = FlatBufferBuilder::new();
    let mut t = zinfo::TarZinfoBuilder::new(&mut b);
    t.add_version(TAR_ZINFO_VERSION);
    t.add_span_size(span_size);
    t.add_size(size);
    let root = t.finish();
    zinfo::finish_tar_zinfo_buffer(&mut b, root);
    b.finished_data().to_vec()
}

/// Nesting of tables in the zTOC schema: Ztoc > TOC > FileMetadata > Xattr.
const SCHEMA_DEPTH: usize = 4;

/// Verifier limits that follow from the buffer itself, so that no forged buffer makes
/// the verifier (or the decoding after it) do more than linear work in its size: every
/// table takes at least 4 bytes of the buffer, and an honest buffer is read about once
/// (vtables, shared between tables, are counted again for each table that uses them),
/// so shared references that expand a small buffer into a huge tree hit the limits.
fn verifier_options(len: usize) -> VerifierOptions {
    VerifierOptions {
        max_depth: SCHEMA_DEPTH,
        max_tables: len / 4,
        max_apparent_size: len.saturating_mul(4),
        ignore_missing_null_terminator: false,
    }
}

fn invalid(what: impl Into<String>) -> ZtocError {
    ZtocError::InvalidZtoc(what.into())
}

fn refused(what: &str, err: flatbuffers::InvalidFlatbuffer) -> ZtocError {
    // The error's Display carries a multi-line trace of where it was found: keep one line.
    let detail = err
        .to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    invalid(format!("{what} fails FlatBuffers verification: {detail}"))
}

/// Decodes a zTOC (ours or soci's) after verifying it. Never panics on any input.
pub(crate) fn decode(bytes: &[u8]) -> Result<Ztoc, ZtocError> {
    let root = fb::root_as_ztoc_with_opts(&verifier_options(bytes.len()), bytes)
        .map_err(|e| refused("the zTOC", e))?;
    let files = match root.toc().and_then(|toc| toc.metadata()) {
        Some(entries) => entries.iter().map(decode_file).collect(),
        None => Vec::new(),
    };
    let (mut algorithm, mut max_span_id, mut span_digests, mut checkpoints) =
        (LayerCompression::Gzip, 0, Vec::new(), Vec::new());
    if let Some(ci) = root.compression_info() {
        algorithm = match ci.compression_algorithm() {
            fb::CompressionAlgorithm::Gzip => LayerCompression::Gzip,
            fb::CompressionAlgorithm::Uncompressed => LayerCompression::Uncompressed,
            other => {
                return Err(invalid(format!(
                    "unknown compression algorithm {}",
                    other.0
                )))
            }
        };
        max_span_id = ci.max_span_id();
        if let Some(digests) = ci.span_digests() {
            span_digests = digests.iter().map(str::to_string).collect();
        }
        if let Some(blob) = ci.checkpoints() {
            checkpoints = blob.bytes().to_vec();
        }
    }
    Ok(Ztoc {
        version: text(root.version()),
        build_tool_identifier: text(root.build_tool_identifier()),
        compressed_archive_size: root.compressed_archive_size(),
        uncompressed_archive_size: root.uncompressed_archive_size(),
        files,
        compression_algorithm: algorithm,
        max_span_id,
        span_digests,
        checkpoints,
    })
}

/// An absent string field reads as empty, as in soci's Go reader.
fn text(s: Option<&str>) -> String {
    s.unwrap_or_default().to_string()
}

fn decode_file(f: fb::FileMetadata<'_>) -> FileMetadata {
    let xattrs = f
        .xattrs()
        .map(|xs| {
            xs.iter()
                .map(|x| (text(x.key()), text(x.value())))
                .collect()
        })
        .unwrap_or_default();
    FileMetadata {
        name: text(f.name()),
        file_type: text(f.type_()),
        uncompressed_offset: f.uncompressed_offset(),
        uncompressed_size: f.uncompressed_size(),
        linkname: text(f.linkname()),
        mode: f.mode(),
        uid: f.uid(),
        gid: f.gid(),
        uname: text(f.uname()),
        gname: text(f.gname()),
        mod_time: text(f.mod_time()),
        devmajor: f.devmajor(),
        devminor: f.devminor(),
        xattrs,
    }
}

/// Decodes a `zinfo.TarZinfo` table, after verifying it: (version, span_size, size).
pub(crate) fn decode_tar_zinfo(bytes: &[u8]) -> Result<(i32, i64, i64), ZtocError> {
    let t = zinfo::root_as_tar_zinfo_with_opts(&verifier_options(bytes.len()), bytes)
        .map_err(|e| refused("the TarZinfo checkpoints table", e))?;
    Ok((t.version(), t.span_size(), t.size()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Ztoc {
        Ztoc {
            version: "0.9".into(),
            build_tool_identifier: "t".into(),
            compressed_archive_size: 10,
            uncompressed_archive_size: 2048,
            files: vec![FileMetadata {
                name: "a".into(),
                file_type: "reg".into(),
                uncompressed_offset: 512,
                uncompressed_size: 3,
                ..FileMetadata::default()
            }],
            compression_algorithm: LayerCompression::Gzip,
            max_span_id: 0,
            span_digests: vec!["sha256:00".into()],
            checkpoints: vec![7; 40],
        }
    }

    /// Where the vector of TOC entries starts (its length word), found through the
    /// generated accessors of a verified buffer.
    fn metadata_vector_at(bytes: &[u8]) -> usize {
        let root = fb::root_as_ztoc(bytes).unwrap();
        let entries = root.toc().unwrap().metadata().unwrap();
        let first = entries.get(0);
        // The element slots follow the length word; the first slot holds an offset
        // relative to itself.
        let slot_of_first = (0..bytes.len() - 4)
            .find(|&at| {
                let off = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
                at + off == first._tab.loc()
            })
            .unwrap();
        slot_of_first - 4
    }

    #[test]
    fn a_forged_count_is_a_verifier_error() {
        let mut bytes = encode(&sample());
        let at = metadata_vector_at(&bytes);
        bytes[at..at + 4].copy_from_slice(&1_000_000u32.to_le_bytes());
        let err = decode(&bytes).unwrap_err().to_string();
        assert!(err.contains("fails FlatBuffers verification"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn a_forged_offset_is_a_verifier_error() {
        let mut bytes = encode(&sample());
        let at = metadata_vector_at(&bytes);
        // The first entry's offset now points past the end of the buffer.
        let past_the_end = bytes.len() as u32;
        bytes[at + 4..at + 8].copy_from_slice(&past_the_end.to_le_bytes());
        let err = decode(&bytes).unwrap_err().to_string();
        assert!(err.contains("fails FlatBuffers verification"), "{err}");
        // And the root offset itself.
        let mut bytes = encode(&sample());
        bytes[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&bytes).is_err());
    }

    #[test]
    fn shared_tables_cannot_expand_a_small_buffer() {
        // 900 entries that are all the same table, each with 900 xattrs that are all
        // the same table: 7 KB of offsets that read as 810,000 tables.
        let mut b = FlatBufferBuilder::new();
        let key = b.create_string("k");
        let value = b.create_string("v");
        let mut x = fb::XattrBuilder::new(&mut b);
        x.add_key(key);
        x.add_value(value);
        let xattr = x.finish();
        let xattrs = b.create_vector(&vec![xattr; 900]);
        let mut f = fb::FileMetadataBuilder::new(&mut b);
        f.add_xattrs(xattrs);
        let entry = f.finish();
        let entries = b.create_vector(&vec![entry; 900]);
        let mut toc = fb::TOCBuilder::new(&mut b);
        toc.add_metadata(entries);
        let toc = toc.finish();
        let mut root = fb::ZtocBuilder::new(&mut b);
        root.add_toc(toc);
        let root = root.finish();
        fb::finish_ztoc_buffer(&mut b, root);
        let bytes = b.finished_data();
        assert!(bytes.len() < 10_000);
        // The default options accept it; ours do not.
        assert!(fb::root_as_ztoc(bytes).is_ok());
        let err = decode(bytes).unwrap_err().to_string();
        assert!(err.contains("fails FlatBuffers verification"), "{err}");
    }

    /// The checkpoints moved in pieces from the back encode as one copy does, for sizes
    /// around the piece size (the vector's padding and length word included).
    #[test]
    fn moved_checkpoints_encode_as_copied_ones() {
        for len in [0, 1, 3, PIECE - 1, PIECE, PIECE + 1, 3 * PIECE + 5] {
            let mut z = sample();
            z.checkpoints = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let expected = encode(&z);
            assert_eq!(encode_owned(z.clone()), expected, "{len} bytes");
            let mut back = z.files.clone();
            let (buffer, start) = encode_entries_from_back(z, back.len(), 1024, || back.pop());
            assert_eq!(&buffer[start..], &expected[..], "{len} bytes");
        }
    }

    #[test]
    fn every_field_round_trips_through_the_generated_code() {
        let z = sample();
        assert_eq!(decode(&encode(&z)).unwrap(), z);
        let zinfo = encode_tar_zinfo(4 << 20, 12345);
        assert_eq!(
            decode_tar_zinfo(&zinfo).unwrap(),
            (TAR_ZINFO_VERSION, 4 << 20, 12345)
        );
        assert!(decode_tar_zinfo(&zinfo[..zinfo.len() - 3]).is_err());
    }
}
