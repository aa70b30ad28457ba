//! A push-style tar header parser that resolves entries the way Go's `archive/tar`
//! does (what soci-snapshotter uses): PAX records, GNU long names, ustar prefix,
//! base-256 numbers. Only headers are kept; entry data is skipped as it streams by.

use super::entries::CompactEntries;
use super::{FileMetadata, ZtocError};
use std::collections::BTreeMap;

const BLOCK: u64 = 512;
/// Largest PAX header or GNU long name/link record we hold in memory (Go uses 1 MiB too).
pub const MAX_RECORD_SIZE: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecordKind {
    Pax,
    GlobalPax,
    LongName,
    LongLink,
}

#[derive(Debug)]
enum State {
    /// Collecting a 512-byte header block.
    Header,
    /// Skipping `remaining` bytes of entry data and padding.
    Skip { remaining: u64 },
    /// Collecting a metadata record's data (`size` bytes, then padding to skip).
    Record {
        kind: RecordKind,
        size: u64,
        header_offset: u64,
    },
    /// Saw one zero block: a second one ends the archive.
    OneZeroBlock,
    /// End of archive reached; the rest of the stream is ignored.
    Done,
}

/// Streams tar bytes in; collects [`FileMetadata`] entries.
pub(crate) struct TarIndexer {
    state: State,
    /// Uncompressed offset of the next byte fed.
    offset: u64,
    block: Vec<u8>,
    record: Vec<u8>,
    pending_pax: Option<BTreeMap<String, String>>,
    pending_long_name: Option<String>,
    pending_long_link: Option<String>,
    pub(crate) files: CompactEntries,
    end_offset: Option<u64>,
    /// Offset just after the first zero block (an archive may end right there, as Go allows).
    first_zero_end: u64,
}

impl TarIndexer {
    pub(crate) fn new() -> Self {
        TarIndexer {
            state: State::Header,
            offset: 0,
            block: Vec::with_capacity(BLOCK as usize),
            record: Vec::new(),
            pending_pax: None,
            pending_long_name: None,
            pending_long_link: None,
            files: CompactEntries::default(),
            end_offset: None,
            first_zero_end: 0,
        }
    }

    pub(crate) fn feed(&mut self, mut data: &[u8]) -> Result<(), ZtocError> {
        while !data.is_empty() {
            match &mut self.state {
                State::Done => {
                    self.offset += data.len() as u64;
                    return Ok(());
                }
                State::Skip { remaining } => {
                    let n = (*remaining).min(data.len() as u64);
                    *remaining -= n;
                    if *remaining == 0 {
                        self.state = State::Header;
                    }
                    data = &data[n as usize..];
                    self.offset += n;
                }
                State::Record { size, .. } => {
                    let want = (*size - self.record.len() as u64) as usize;
                    let n = want.min(data.len());
                    self.record.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    self.offset += n as u64;
                    if self.record.len() as u64 == *size {
                        self.finish_record()?;
                    }
                }
                State::Header | State::OneZeroBlock => {
                    let n = (BLOCK as usize - self.block.len()).min(data.len());
                    self.block.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    self.offset += n as u64;
                    if self.block.len() == BLOCK as usize {
                        let block = std::mem::take(&mut self.block);
                        let result = self.header(&block);
                        self.block = block;
                        self.block.clear();
                        result?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The tar stream ended: returns the uncompressed archive size (after the marker).
    pub(crate) fn finish(&mut self) -> Result<u64, ZtocError> {
        match (&self.state, self.end_offset) {
            (State::Done, Some(end)) => Ok(end),
            // Go's reader accepts a single zero block followed by the end of the stream.
            (State::OneZeroBlock, _) if self.block.is_empty() => Ok(self.first_zero_end),
            (State::Header, _) if self.block.is_empty() => Err(ZtocError::TruncatedTar {
                uncompressed_offset: self.offset,
                reason: "without its end-of-archive marker (two zero blocks)".into(),
            }),
            _ => Err(ZtocError::TruncatedTar {
                uncompressed_offset: self.offset,
                reason: match self.files.last_name() {
                    Some(name) => format!("inside an entry or header (last entry {name:?})"),
                    None => "inside the first header".into(),
                },
            }),
        }
    }

    fn header(&mut self, block: &[u8]) -> Result<(), ZtocError> {
        let header_offset = self.offset - BLOCK;
        let bad = |reason: String| ZtocError::InvalidTar {
            uncompressed_offset: header_offset,
            reason,
        };
        if block.iter().all(|&b| b == 0) {
            if matches!(self.state, State::OneZeroBlock) {
                self.state = State::Done;
                self.end_offset = Some(self.offset);
            } else {
                self.state = State::OneZeroBlock;
                self.first_zero_end = self.offset;
            }
            return Ok(());
        }
        if matches!(self.state, State::OneZeroBlock) {
            return Err(bad("a zero block is followed by a non-zero block".into()));
        }
        let format = Format::detect(block)
            .ok_or_else(|| bad("checksum mismatch (not a tar header, or corrupt)".into()))?;

        let num = |field: &[u8], what: &str| {
            parse_numeric(field).ok_or_else(|| bad(format!("invalid number in {what} field")))
        };
        let typeflag = block[156];
        let mut size = num(&block[124..136], "size")?;
        if size < 0 {
            return Err(bad(format!("negative size {size}")));
        }

        match typeflag {
            b'x' | b'g' | b'L' | b'K' => {
                let kind = match typeflag {
                    b'x' => RecordKind::Pax,
                    b'g' => RecordKind::GlobalPax,
                    b'L' => RecordKind::LongName,
                    _ => RecordKind::LongLink,
                };
                let size = size as u64;
                if size > MAX_RECORD_SIZE {
                    return Err(ZtocError::RecordTooLarge {
                        uncompressed_offset: header_offset,
                        size,
                        limit: MAX_RECORD_SIZE,
                    });
                }
                self.record.clear();
                self.state = State::Record {
                    kind,
                    size,
                    header_offset,
                };
                if size == 0 {
                    self.finish_record()?;
                }
                return Ok(());
            }
            _ => {}
        }

        let mut name = c_string(&block[0..100]);
        let linkname = c_string(&block[157..257]);
        let mode = num(&block[100..108], "mode")?;
        let mut uid = num(&block[108..116], "uid")?;
        let mut gid = num(&block[116..124], "gid")?;
        let mut mtime_secs = num(&block[136..148], "mtime")?;
        let mut mtime_nanos: i64 = 0;
        let (mut uname, mut gname, mut devmajor, mut devminor) = (Vec::new(), Vec::new(), 0, 0);
        if format != Format::V7 {
            uname = c_string(&block[265..297]);
            gname = c_string(&block[297..329]);
            devmajor = num(&block[329..337], "devmajor")?;
            devminor = num(&block[337..345], "devminor")?;
            if format == Format::Ustar {
                let prefix = c_string(&block[345..500]);
                if !prefix.is_empty() {
                    let mut full = prefix;
                    full.push(b'/');
                    full.extend_from_slice(&name);
                    name = full;
                }
            }
        }

        let text = |bytes: Vec<u8>, what: &str| {
            String::from_utf8(bytes).map_err(|e| {
                bad(format!(
                    "{what} {:?} is not valid UTF-8 (not supported)",
                    String::from_utf8_lossy(e.as_bytes())
                ))
            })
        };
        let mut name = text(name, "name")?;
        let mut linkname = text(linkname, "link name")?;
        let mut uname = text(uname, "user name")?;
        let mut gname = text(gname, "group name")?;

        // PAX records override header fields, then GNU long names override PAX (Go's order).
        let pax = self.pending_pax.take().unwrap_or_default();
        for (key, value) in &pax {
            let int = |v: &str| {
                v.parse::<i64>()
                    .map_err(|_| bad(format!("invalid PAX {key} value {v:?}")))
            };
            match key.as_str() {
                "path" => name = value.clone(),
                "linkpath" => linkname = value.clone(),
                "uname" => uname = value.clone(),
                "gname" => gname = value.clone(),
                "uid" => uid = int(value)?,
                "gid" => gid = int(value)?,
                "size" => {
                    size = int(value)?;
                    if size < 0 {
                        return Err(bad(format!("negative PAX size {size}")));
                    }
                }
                "mtime" => {
                    (mtime_secs, mtime_nanos) = parse_pax_time(value)
                        .ok_or_else(|| bad(format!("invalid PAX mtime {value:?}")))?
                }
                k if k.starts_with("GNU.sparse.") => {
                    return Err(ZtocError::UnsupportedEntry {
                        typeflag: typeflag as char,
                        name,
                        uncompressed_offset: header_offset,
                        reason: "PAX GNU sparse files are not supported by the zTOC format".into(),
                    })
                }
                _ => {}
            }
        }
        if let Some(n) = self.pending_long_name.take() {
            name = n;
        }
        if let Some(l) = self.pending_long_link.take() {
            linkname = l;
        }

        let file_type = match typeflag {
            b'0' => "reg",
            b'\0' if name.ends_with('/') => "dir",
            b'\0' => "reg",
            b'1' => "hardlink",
            b'2' => "symlink",
            b'3' => "char",
            b'4' => "block",
            b'5' => "dir",
            b'6' => "fifo",
            other => {
                let reason = match other {
                    b'S' => "GNU sparse files cannot be indexed by a zTOC".to_string(),
                    b'7' => "contiguous files are not supported by soci".to_string(),
                    b'V' | b'M' | b'N' => "GNU multi-volume entries cannot be indexed".to_string(),
                    _ => "unknown entry type".to_string(),
                };
                return Err(ZtocError::UnsupportedEntry {
                    typeflag: other as char,
                    name,
                    uncompressed_offset: header_offset,
                    reason,
                });
            }
        };
        // Header-only types carry no data whatever their size field says (as in Go).
        let data_size = match file_type {
            "reg" => size as u64,
            _ => 0,
        };
        let data_offset = self.offset;
        let end = data_offset
            .checked_add(data_size)
            .filter(|&e| e <= i64::MAX as u64)
            .ok_or_else(|| bad(format!("absurd size {size}")))?;
        self.files.push(FileMetadata {
            name,
            file_type: file_type.to_string(),
            uncompressed_offset: data_offset as i64,
            uncompressed_size: size,
            linkname,
            mode,
            uid: uid as u32,
            gid: gid as u32,
            uname,
            gname,
            mod_time: format_mod_time(mtime_secs, mtime_nanos),
            devmajor,
            devminor,
            xattrs: pax,
        });
        let padded = end.div_ceil(BLOCK) * BLOCK - data_offset;
        self.state = if padded == 0 {
            State::Header
        } else {
            State::Skip { remaining: padded }
        };
        Ok(())
    }

    fn finish_record(&mut self) -> Result<(), ZtocError> {
        let State::Record {
            kind,
            size,
            header_offset,
        } = self.state
        else {
            unreachable!("finish_record outside a record")
        };
        let record = std::mem::take(&mut self.record);
        let bad = |reason: String| ZtocError::InvalidTar {
            uncompressed_offset: header_offset,
            reason,
        };
        match kind {
            RecordKind::Pax => self.pending_pax = Some(parse_pax(&record).map_err(bad)?),
            RecordKind::GlobalPax => {
                // Validate, then skip: global headers describe no entry. Go returns them
                // as entries (and soci then fails the layer); we leave them out.
                parse_pax(&record).map_err(bad)?;
                self.pending_pax = None;
                self.pending_long_name = None;
                self.pending_long_link = None;
            }
            RecordKind::LongName | RecordKind::LongLink => {
                let s = String::from_utf8(c_string(&record))
                    .map_err(|_| bad("GNU long name is not valid UTF-8 (not supported)".into()))?;
                if kind == RecordKind::LongName {
                    self.pending_long_name = Some(s);
                } else {
                    self.pending_long_link = Some(s);
                }
            }
        }
        self.record = record;
        self.record.clear();
        let pad = size.div_ceil(BLOCK) * BLOCK - size;
        self.state = if pad == 0 {
            State::Header
        } else {
            State::Skip { remaining: pad }
        };
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    V7,
    /// ustar or PAX: has a prefix field.
    Ustar,
    /// GNU: no prefix (those bytes hold atime/ctime/...).
    Gnu,
}

impl Format {
    /// Checks the checksum (unsigned or signed sum, as Go accepts) and reads the magic.
    fn detect(block: &[u8]) -> Option<Format> {
        let stored = parse_octal(&block[148..156])?;
        // Sums over the whole block with the checksum field counted as spaces; summed in
        // i32 without a per-byte branch so that it vectorises (one header per entry).
        let unsigned_sum = |b: &[u8]| b.iter().map(|&c| i32::from(c)).sum::<i32>();
        let signed_sum = |b: &[u8]| b.iter().map(|&c| i32::from(c as i8)).sum::<i32>();
        let field = &block[148..156];
        let spaces = 8 * i32::from(b' ');
        let unsigned = i64::from(unsigned_sum(block) - unsigned_sum(field) + spaces);
        let signed = i64::from(signed_sum(block) - signed_sum(field) + spaces);
        if stored != unsigned && stored != signed {
            return None;
        }
        Some(match (&block[257..263], &block[263..265]) {
            (b"ustar\0", b"00") => Format::Ustar,
            (b"ustar ", b" \0") => Format::Gnu,
            _ => Format::V7,
        })
    }
}

/// Whether a 512-byte block looks like a tar header (valid checksum) or an empty archive.
pub(crate) fn looks_like_tar(block: &[u8]) -> bool {
    block.len() >= 512
        && (block[..512].iter().all(|&b| b == 0) || Format::detect(&block[..512]).is_some())
}

/// Bytes up to the first NUL.
fn c_string(b: &[u8]) -> Vec<u8> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    b[..end].to_vec()
}

/// Go's `parseNumeric`: base-256 when the high bit is set, else octal.
fn parse_numeric(b: &[u8]) -> Option<i64> {
    if let Some(&first) = b.first() {
        if first & 0x80 != 0 {
            let inv: u8 = if first & 0x40 != 0 { 0xff } else { 0 };
            let mut x: u64 = 0;
            for (i, &c) in b.iter().enumerate() {
                let mut c = c ^ inv;
                if i == 0 {
                    c &= 0x7f;
                }
                if x >> 56 > 0 {
                    return None;
                }
                x = (x << 8) | u64::from(c);
            }
            if x >> 63 > 0 {
                return None;
            }
            return Some(if inv == 0xff { !(x as i64) } else { x as i64 });
        }
    }
    parse_octal(b)
}

/// Go's `parseOctal`: trims spaces and NULs, empty is 0.
fn parse_octal(b: &[u8]) -> Option<i64> {
    let start = b
        .iter()
        .position(|&c| c != b' ' && c != 0)
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|&c| c != b' ' && c != 0)
        .map_or(start, |p| p + 1);
    let t = &b[start..end];
    if t.is_empty() {
        return Some(0);
    }
    let t = &t[..t.iter().position(|&c| c == 0).unwrap_or(t.len())];
    let s = std::str::from_utf8(t).ok()?;
    u64::from_str_radix(s, 8).ok().map(|v| v as i64)
}

/// Parses PAX records `"%d %s=%s\n"`, as Go's `parsePAX` validates them.
fn parse_pax(mut data: &[u8]) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    // Go ignores trailing NUL padding some writers leave.
    while let Some((&0, rest)) = data.split_last() {
        data = rest;
    }
    while !data.is_empty() {
        let sp = data
            .iter()
            .position(|&c| c == b' ')
            .ok_or("PAX record without length")?;
        let len: usize = std::str::from_utf8(&data[..sp])
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or("invalid PAX record length")?;
        if len <= sp + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err("invalid PAX record length".into());
        }
        let rec = &data[sp + 1..len - 1];
        let eq = rec
            .iter()
            .position(|&c| c == b'=')
            .ok_or("PAX record without '='")?;
        let key = String::from_utf8(rec[..eq].to_vec()).map_err(|_| "PAX key is not UTF-8")?;
        let value =
            String::from_utf8(rec[eq + 1..].to_vec()).map_err(|_| "PAX value is not UTF-8")?;
        if key.is_empty() || key.contains('\0') {
            return Err(format!("invalid PAX key {key:?}"));
        }
        if matches!(key.as_str(), "path" | "linkpath" | "uname" | "gname") && value.contains('\0') {
            return Err(format!("PAX {key} contains NUL"));
        }
        out.insert(key, value);
        data = &data[len..];
    }
    Ok(out)
}

/// Go's `parsePAXTime`: `[-]secs[.fraction]`, fraction truncated to nanoseconds.
fn parse_pax_time(s: &str) -> Option<(i64, i64)> {
    let (secs, frac) = match s.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    let negative = secs.starts_with('-');
    let digits = secs.trim_start_matches(['-', '+']);
    if digits.is_empty() && frac.is_none() {
        return None;
    }
    if !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    let mut nanos: i64 = 0;
    if let Some(f) = frac {
        if f.is_empty() || !f.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let mut f9: String = f.chars().take(9).collect();
        while f9.len() < 9 {
            f9.push('0');
        }
        nanos = f9.parse().ok()?;
    }
    if negative {
        Some((-secs, -nanos))
    } else {
        Some((secs, nanos))
    }
}

/// Go's `time.Unix(secs, nanos).UTC().MarshalText()`: RFC 3339 with trailing zeros of the
/// fraction trimmed; empty when the year is outside 0..=9999 (Go's MarshalText fails and
/// soci then writes an empty string).
pub(crate) fn format_mod_time(secs: i64, nanos: i64) -> String {
    let total = i128::from(secs) * 1_000_000_000 + i128::from(nanos);
    let s = total.div_euclid(1_000_000_000);
    let n = total.rem_euclid(1_000_000_000) as u32;
    let Ok(s) = i64::try_from(s) else {
        return String::new();
    };
    let Some(t) = chrono::DateTime::from_timestamp(s, n) else {
        return String::new();
    };
    use chrono::{Datelike, Timelike};
    if !(0..=9999).contains(&t.year()) {
        return String::new();
    }
    let mut out = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    if n != 0 {
        let frac = format!("{n:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mod_time_matches_go() {
        assert_eq!(format_mod_time(1_700_000_000, 0), "2023-11-14T22:13:20Z");
        assert_eq!(
            format_mod_time(1_700_000_000, 500_000_000),
            "2023-11-14T22:13:20.5Z"
        );
        assert_eq!(format_mod_time(-62135596800, 0), "0001-01-01T00:00:00Z");
        assert_eq!(format_mod_time(-1, -500_000_000), "1969-12-31T23:59:58.5Z");
    }

    #[test]
    fn numbers_octal_and_base256() {
        assert_eq!(parse_numeric(b"0000644\0"), Some(0o644));
        assert_eq!(parse_numeric(b"  17 \0"), Some(0o17));
        assert_eq!(parse_numeric(b"\0\0\0"), Some(0));
        assert_eq!(parse_numeric(&[0x80, 0, 0, 0, 0, 0, 1, 0]), Some(256));
        assert_eq!(parse_numeric(&[0xff; 8]), Some(-1));
        assert_eq!(parse_numeric(b"9\0"), None);
    }

    #[test]
    fn pax_time_and_records() {
        assert_eq!(parse_pax_time("1.5"), Some((1, 500_000_000)));
        assert_eq!(parse_pax_time("-1.25"), Some((-1, -250_000_000)));
        assert_eq!(parse_pax_time("12.1234567891"), Some((12, 123_456_789)));
        assert_eq!(parse_pax_time("x"), None);
        let r = parse_pax(b"13 path=abcd\n19 SCHILY.xattr.a=\n").unwrap();
        assert_eq!(r["path"], "abcd");
        assert_eq!(r["SCHILY.xattr.a"], "");
        assert!(parse_pax(b"99 path=a\n").is_err());
    }
}
