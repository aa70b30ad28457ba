//! TOC entries held compactly while a layer streams by: a layer of many tiny files has
//! as many entries as it has 512-byte blocks, so their memory, not the layer's, bounds
//! what a zTOC build needs.
//!
//! Names, link targets and PAX records go into byte arenas; the strings most entries
//! share (entry type, owner and group names, modification times) are interned. An entry
//! costs about 90 bytes plus its name and its PAX records' keys and values (16 bytes
//! more per record), where a [`FileMetadata`] costs about 330 with its five heap strings,
//! and each of its PAX record maps over 500 more. Every arena is one allocation that
//! shrinks as entries are popped, so their memory goes back to the system while the
//! entries are encoded, which many small allocations would not.

use super::FileMetadata;
use std::collections::{BTreeMap, HashMap};

/// Strings stored once, named by their index.
#[derive(Default)]
struct Interner {
    ids: HashMap<Box<str>, u32>,
    strings: Vec<Box<str>>,
}

impl Interner {
    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = self.strings.len() as u32;
        self.strings.push(s.into());
        self.ids.insert(s.into(), id);
        id
    }

    fn get(&self, id: u32) -> &str {
        &self.strings[id as usize]
    }
}

/// Arenas smaller than this keep their popped space: shrinking them saves nothing.
const RELEASE_MIN: usize = 256 * 1024;

/// One entry's fixed-size part.
struct Record {
    /// Ends of the entry's name and link name in their arenas, and of its PAX records'
    /// keys and values in `CompactEntries::pax_ends` (each starts where the previous
    /// entry's ends).
    name_end: usize,
    link_end: usize,
    pax_end: usize,
    uncompressed_offset: i64,
    uncompressed_size: i64,
    mode: i64,
    devmajor: i64,
    devminor: i64,
    uid: u32,
    gid: u32,
    file_type: u32,
    uname: u32,
    gname: u32,
    mod_time: u32,
}

/// TOC entries in tar order.
#[derive(Default)]
pub(crate) struct CompactEntries {
    records: Vec<Record>,
    names: String,
    links: String,
    shared: Interner,
    /// Every PAX record's key then value, in entry order and each entry's sorted by key.
    pax_text: String,
    /// The end of each key and of each value in `pax_text`.
    pax_ends: Vec<usize>,
    /// [`CompactEntries::encoded_size_bound`], kept up to date as entries come and go.
    encoded_bound: usize,
}

/// Per entry in [`CompactEntries::encoded_size_bound`]: its slot in the TOC vector (4),
/// its table with every field present and padded (88), a vtable should it not be shared
/// (32), an empty xattrs vector (4), and per string its length prefix, NUL and padding (8).
const ENCODED_PER_ENTRY: usize = 4 + 88 + 32 + 4 + 6 * 8;
/// Per PAX record: a table with its vtable and two strings (48), and its vector slot (4).
const ENCODED_PER_XATTR: usize = 48 + 4;

/// An entry's share of [`CompactEntries::encoded_size_bound`].
fn encoded_bound_of(f: &FileMetadata) -> usize {
    let xattrs: usize = f
        .xattrs
        .iter()
        .map(|(k, v)| k.len() + v.len() + ENCODED_PER_XATTR)
        .sum();
    let strings = f.name.len() + f.linkname.len() + f.file_type.len() + f.uname.len();
    strings + f.gname.len() + f.mod_time.len() + xattrs + ENCODED_PER_ENTRY
}

impl CompactEntries {
    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    pub(crate) fn push(&mut self, f: FileMetadata) {
        self.encoded_bound += encoded_bound_of(&f);
        self.names.push_str(&f.name);
        self.links.push_str(&f.linkname);
        for (key, value) in &f.xattrs {
            for s in [key, value] {
                self.pax_text.push_str(s);
                self.pax_ends.push(self.pax_text.len());
            }
        }
        self.records.push(Record {
            name_end: self.names.len(),
            link_end: self.links.len(),
            pax_end: self.pax_ends.len(),
            uncompressed_offset: f.uncompressed_offset,
            uncompressed_size: f.uncompressed_size,
            mode: f.mode,
            devmajor: f.devmajor,
            devminor: f.devminor,
            uid: f.uid,
            gid: f.gid,
            file_type: self.shared.intern(&f.file_type),
            uname: self.shared.intern(&f.uname),
            gname: self.shared.intern(&f.gname),
            mod_time: self.shared.intern(&f.mod_time),
        });
    }

    /// The last entry's name.
    pub(crate) fn last_name(&self) -> Option<&str> {
        let n = self.records.len();
        let last = self.records.last()?;
        let start = if n >= 2 {
            self.records[n - 2].name_end
        } else {
            0
        };
        Some(&self.names[start..last.name_end])
    }

    /// Removes and returns the last entry, releasing memory as the entries shrink.
    pub(crate) fn pop(&mut self) -> Option<FileMetadata> {
        let r = self.records.pop()?;
        let (name_start, link_start, pax_start) = self
            .records
            .last()
            .map_or((0, 0, 0), |p| (p.name_end, p.link_end, p.pax_end));
        let name = self.names[name_start..r.name_end].to_string();
        let linkname = self.links[link_start..r.link_end].to_string();
        self.names.truncate(name_start);
        self.links.truncate(link_start);
        let xattrs = self.pop_pax(pax_start);
        self.release_popped();
        let f = FileMetadata {
            name,
            file_type: self.shared.get(r.file_type).to_string(),
            uncompressed_offset: r.uncompressed_offset,
            uncompressed_size: r.uncompressed_size,
            linkname,
            mode: r.mode,
            uid: r.uid,
            gid: r.gid,
            uname: self.shared.get(r.uname).to_string(),
            gname: self.shared.get(r.gname).to_string(),
            mod_time: self.shared.get(r.mod_time).to_string(),
            devmajor: r.devmajor,
            devminor: r.devminor,
            xattrs,
        };
        self.encoded_bound -= encoded_bound_of(&f);
        Some(f)
    }

    /// Removes the PAX records from `pax_ends[start..]` on (the last entry's).
    fn pop_pax(&mut self, start: usize) -> BTreeMap<String, String> {
        let text_start = match start {
            0 => 0,
            i => self.pax_ends[i - 1],
        };
        let mut records = BTreeMap::new();
        let mut at = text_start;
        for pair in self.pax_ends[start..].chunks_exact(2) {
            let key = self.pax_text[at..pair[0]].to_string();
            let value = self.pax_text[pair[0]..pair[1]].to_string();
            records.insert(key, value);
            at = pair[1];
        }
        self.pax_ends.truncate(start);
        self.pax_text.truncate(text_start);
        records
    }

    /// Gives back the memory of popped entries once they are an eighth of what is held.
    ///
    /// The encoder pops entries while its output grows, so what the two hold together
    /// peaks at whichever is larger, the entries or their encoding, not at their sum as
    /// it did when the memory came back only once half the entries were gone. glibc
    /// shrinks a block this large in place (`mremap`); an allocator that copies instead
    /// copies at most eight times the entries' size in all.
    fn release_popped(&mut self) {
        /// Whether an arena of `capacity` slots of `size` bytes, `len` in use, should shrink.
        fn worth_shrinking(capacity: usize, len: usize, size: usize) -> bool {
            capacity * size >= RELEASE_MIN && (capacity - len) * 8 >= capacity
        }
        fn shrink_vec<T>(v: &mut Vec<T>) {
            if worth_shrinking(v.capacity(), v.len(), std::mem::size_of::<T>()) {
                v.shrink_to_fit();
            }
        }
        fn shrink_string(s: &mut String) {
            if worth_shrinking(s.capacity(), s.len(), 1) {
                s.shrink_to_fit();
            }
        }
        shrink_vec(&mut self.records);
        shrink_vec(&mut self.pax_ends);
        shrink_string(&mut self.names);
        shrink_string(&mut self.links);
        shrink_string(&mut self.pax_text);
    }

    /// Whether any entry needs xattrs (see [`super::Ztoc::uses_xattrs`]).
    pub(crate) fn uses_xattrs(&self) -> bool {
        // Keys are the even strings of `pax_text`.
        let mut start = 0;
        let any_xattr = self.pax_ends.chunks_exact(2).any(|pair| {
            let key = &self.pax_text[start..pair[0]];
            start = pair[1];
            key.starts_with("SCHILY.xattr.")
        });
        any_xattr
            || (0..self.records.len()).any(|i| {
                let start = if i == 0 {
                    0
                } else {
                    self.records[i - 1].name_end
                };
                super::is_opaque_whiteout(&self.names[start..self.records[i].name_end])
            })
    }

    /// An upper bound of the entries' FlatBuffers size (see [`ENCODED_PER_ENTRY`] and
    /// [`ENCODED_PER_XATTR`]). Close to the real size, so that the encoder neither grows
    /// its buffer (a copy) nor reserves much more than it writes.
    pub(crate) fn encoded_size_bound(&self) -> usize {
        self.encoded_bound
    }

    /// The heap bytes the entries hold (capacities, so an upper bound of their share of
    /// the process's memory; the few interned strings are left out).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.records.capacity() * std::mem::size_of::<Record>()
            + self.names.capacity()
            + self.links.capacity()
            + self.pax_text.capacity()
            + self.pax_ends.capacity() * std::mem::size_of::<usize>()
    }

    /// Every entry, in tar order.
    pub(crate) fn into_vec(mut self) -> Vec<FileMetadata> {
        let mut out = Vec::with_capacity(self.len());
        while let Some(f) = self.pop() {
            out.push(f);
        }
        out.reverse();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_back_as_they_went_in() {
        let entry = |i: usize| FileMetadata {
            name: format!("dir/{i}"),
            file_type: ["reg", "dir", "symlink"][i % 3].into(),
            uncompressed_offset: i as i64 * 512,
            uncompressed_size: i as i64,
            linkname: if i % 3 == 2 {
                format!("t{i}")
            } else {
                String::new()
            },
            mode: 0o644,
            uid: i as u32,
            gid: 7,
            uname: "root".into(),
            gname: if i % 2 == 0 { "root" } else { "staff" }.into(),
            mod_time: "2023-11-14T22:13:20Z".into(),
            devmajor: i as i64 % 5,
            devminor: -(i as i64),
            xattrs: if i % 4 == 1 {
                [("SCHILY.xattr.user.k".to_string(), format!("v{i}"))].into()
            } else {
                BTreeMap::new()
            },
        };
        let all: Vec<FileMetadata> = (0..1000).map(entry).collect();
        let mut compact = CompactEntries::default();
        for f in all.clone() {
            compact.push(f);
        }
        assert_eq!(compact.len(), 1000);
        assert_eq!(compact.last_name(), Some("dir/999"));
        assert!(compact.uses_xattrs());
        assert_eq!(compact.shared.strings.len(), 6, "interned once each");
        let bound: usize = all.iter().map(encoded_bound_of).sum();
        assert_eq!(compact.encoded_size_bound(), bound);
        assert!(compact.heap_bytes() > compact.names.len() + 1000 * 80);
        assert_eq!(compact.into_vec(), all);
        let mut emptied = CompactEntries::default();
        all.iter().cloned().for_each(|f| emptied.push(f));
        while emptied.pop().is_some() {}
        assert_eq!(emptied.encoded_size_bound(), 0);
        assert!(emptied.pax_text.is_empty() && emptied.pax_ends.is_empty());
    }
}
