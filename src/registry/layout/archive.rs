//! An `oci-archive` tarball: unpacked into a private layout directory, written back as a
//! deterministic tarball on commit.

use super::{io_err, LayoutRepository};
use crate::oci::{DescriptorSummary, Sha256Digest};
use crate::registry::{BlobRef, BlobStream, Manifest, RegistryError, Repository, Result};
use async_trait::async_trait;
use std::io::{Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// An `oci-archive` tarball, worked on as a layout unpacked into a private temporary
/// directory.
///
/// Why unpack rather than index the tar in place: writes need a layout anyway, ranged
/// and repeated reads become plain file reads, and digests are verified the same way as
/// for a directory. The cost is disk space for one copy of the archive.
///
/// Writes change only the temporary layout; [`Repository::commit`] writes a new tarball
/// next to the archive and renames it over, so the archive is either the old one or the
/// complete new one, and is untouched when the work fails before `commit`.
#[derive(Debug)]
pub struct ArchiveRepository {
    archive: PathBuf,
    layout: LayoutRepository,
    dirty: AtomicBool,
    _dir: tempfile::TempDir,
}

impl ArchiveRepository {
    /// Opens an archive for reading (and writing). A missing file is an empty layout,
    /// written by the first `commit` after a change; `must_exist` refuses that.
    pub fn open(archive: impl Into<PathBuf>, must_exist: bool) -> Result<Self> {
        let archive = archive.into();
        // The unpacked copy lives in the system temp dir: only the finished tarball is
        // written next to the archive (and renamed over it).
        let dir = tempfile::Builder::new()
            .prefix("afterpush-archive-")
            .tempdir()
            .map_err(|e| io_err(&std::env::temp_dir(), e))?;
        let layout_dir = dir.path().join("layout");
        match std::fs::File::open(&archive) {
            Ok(f) => {
                unpack_layout(f, &archive, &layout_dir)?;
                let mut layout =
                    LayoutRepository::open(&layout_dir).map_err(|e| RegistryError::Invalid {
                        location: archive.display().to_string(),
                        message: format!("not an OCI image layout archive: {e}"),
                    })?;
                layout.location = format!("oci-archive:{}", archive.display());
                Ok(Self {
                    archive,
                    layout,
                    dirty: AtomicBool::new(false),
                    _dir: dir,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => {
                let mut layout = LayoutRepository::open_or_create(&layout_dir)?;
                layout.location = format!("oci-archive:{}", archive.display());
                Ok(Self {
                    archive,
                    layout,
                    // A new archive is written on commit even when nothing was added.
                    dirty: AtomicBool::new(true),
                    _dir: dir,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(RegistryError::NotFound {
                what: "archive".into(),
                location: archive.display().to_string(),
            }),
            Err(e) => Err(io_err(&archive, e)),
        }
    }

    /// The unpacked layout (for inspection in tests and tools).
    pub fn layout(&self) -> &LayoutRepository {
        &self.layout
    }

    /// The archive path.
    pub fn path(&self) -> &Path {
        &self.archive
    }

    fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::SeqCst);
    }
}

/// Writes the layout at `root` as the tarball `archive`: a temporary file next to it,
/// renamed over it once complete.
fn write_archive(root: &Path, archive: &Path) -> Result<()> {
    let parent = archive
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = crate::files::temp_file_in(parent, ".tar").map_err(|e| io_err(parent, e))?;
    let file = tmp
        .as_file()
        .try_clone()
        .map_err(|e| io_err(tmp.path(), e))?;
    let writer = std::io::BufWriter::with_capacity(1 << 20, file);
    let writer = write_layout_tar(root, writer)?;
    let file = writer
        .into_inner()
        .map_err(|e| io_err(tmp.path(), e.into_error()))?;
    file.sync_all().map_err(|e| io_err(tmp.path(), e))?;
    tmp.persist(archive).map_err(|e| io_err(archive, e.error))?;
    Ok(())
}

/// Paths allowed in a layout archive: the layout files and the blob tree.
fn is_layout_path(path: &Path) -> bool {
    let parts: Vec<_> = path
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .map(|c| c.as_os_str().to_string_lossy().to_string())
        .collect();
    match parts.as_slice() {
        // `manifest.json` and `repositories` are the `docker load` records some
        // exporters add beside the layout; they are kept as they are.
        [f] => matches!(
            f.as_str(),
            "oci-layout" | "index.json" | "blobs" | "manifest.json" | "repositories"
        ),
        [b, alg] => b == "blobs" && alg == "sha256",
        [b, alg, hex] => {
            b == "blobs"
                && alg == "sha256"
                && hex.len() == 64
                && hex
                    .bytes()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        }
        _ => false,
    }
}

/// Unpacks a layout tarball, accepting only regular files and directories at layout
/// paths (anything else, links included, is refused naming the entry).
fn unpack_layout(file: std::fs::File, archive: &Path, dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest).map_err(|e| io_err(dest, e))?;
    let bad = |message: String| RegistryError::Invalid {
        location: archive.display().to_string(),
        message,
    };
    let mut tar = tar::Archive::new(std::io::BufReader::with_capacity(1 << 20, file));
    let entries = tar.entries().map_err(|e| io_err(archive, e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("unreadable tar: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| bad(format!("bad entry name: {e}")))?
            .into_owned();
        let kind = entry.header().entry_type();
        if !is_layout_path(&path) {
            return Err(bad(format!(
                "unexpected entry {} (an OCI layout holds oci-layout, index.json and blobs/sha256/<hex>)",
                path.display()
            )));
        }
        if kind.is_dir() {
            let d = dest.join(&path);
            std::fs::create_dir_all(&d).map_err(|e| io_err(&d, e))?;
        } else if kind.is_file() {
            let target = dest.join(&path);
            if let Some(p) = target.parent() {
                std::fs::create_dir_all(p).map_err(|e| io_err(p, e))?;
            }
            let mut out = std::fs::File::create(&target).map_err(|e| io_err(&target, e))?;
            std::io::copy(&mut entry, &mut out)
                .map_err(|e| bad(format!("entry {}: {e}", path.display())))?;
        } else {
            return Err(bad(format!(
                "entry {} is a {kind:?}, not a file or directory",
                path.display()
            )));
        }
    }
    Ok(())
}

/// Writes a layout directory as a deterministic tar, in the shape containerd's archive
/// exporter (used by `docker buildx build -o type=oci`) gives it: entries sorted by name
/// (so `blobs/` and `blobs/sha256/` come before their files), directories 0755, blobs
/// and `oci-layout` 0444, `index.json` 0644, uid/gid 0, no user names, mtime 0. The same
/// layout always gives the same bytes.
pub fn write_layout_tar<W: Write>(root: &Path, writer: W) -> Result<W> {
    let mut names: Vec<String> = Vec::new();
    for top in ["oci-layout", "index.json", "manifest.json", "repositories"] {
        if root.join(top).is_file() {
            names.push(top.to_string());
        }
    }
    let blob_dir = root.join("blobs").join("sha256");
    let mut blobs = Vec::new();
    if blob_dir.is_dir() {
        for e in std::fs::read_dir(&blob_dir).map_err(|e| io_err(&blob_dir, e))? {
            let e = e.map_err(|e| io_err(&blob_dir, e))?;
            let name = e.file_name().to_string_lossy().to_string();
            // Skip temporaries of interrupted writes.
            if name.starts_with('.') {
                continue;
            }
            blobs.push(format!("blobs/sha256/{name}"));
        }
    }
    names.extend(blobs);
    names.push("blobs/".into());
    names.push("blobs/sha256/".into());
    names.sort();

    let mut builder = tar::Builder::new(writer);
    for name in &names {
        let mut header = tar::Header::new_ustar();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        if name.ends_with('/') {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            builder
                .append_data(&mut header, name, std::io::empty())
                .map_err(|e| io_err(root, e))?;
        } else {
            let path = root.join(name);
            let mut f = std::fs::File::open(&path).map_err(|e| io_err(&path, e))?;
            let len = f.metadata().map_err(|e| io_err(&path, e))?.len();
            header.set_entry_type(tar::EntryType::Regular);
            // As containerd's archive exporter (BuildKit's `type=oci`) writes them:
            // content-addressed files read-only, index.json writable.
            let read_only = name.starts_with("blobs/") || name == "oci-layout";
            header.set_mode(if read_only { 0o444 } else { 0o644 });
            header.set_size(len);
            let reader: &mut dyn Read = &mut f;
            builder
                .append_data(&mut header, name, reader.take(len))
                .map_err(|e| io_err(&path, e))?;
        }
    }
    builder.into_inner().map_err(|e| io_err(root, e))
}

#[async_trait]
impl Repository for ArchiveRepository {
    fn location(&self) -> String {
        self.layout.location()
    }
    async fn resolve(&self, reference: &str) -> Result<BlobRef> {
        self.layout.resolve(reference).await
    }
    async fn get_manifest(&self, reference: &str) -> Result<Manifest> {
        self.layout.get_manifest(reference).await
    }
    async fn put_manifest(&self, manifest: &Manifest, tag: Option<&str>) -> Result<()> {
        self.mark_dirty();
        self.layout.put_manifest(manifest, tag).await
    }
    async fn delete_manifest(&self, digest: &Sha256Digest) -> Result<()> {
        self.mark_dirty();
        self.layout.delete_manifest(digest).await
    }
    async fn blob_size(&self, digest: &Sha256Digest) -> Result<Option<u64>> {
        self.layout.blob_size(digest).await
    }
    async fn get_blob(
        &self,
        digest: &Sha256Digest,
        range: Option<Range<u64>>,
    ) -> Result<BlobStream> {
        self.layout.get_blob(digest, range).await
    }
    async fn push_blob(&self, digest: &Sha256Digest, size: u64, data: BlobStream) -> Result<()> {
        self.mark_dirty();
        self.layout.push_blob(digest, size, data).await
    }
    async fn list_tags(&self) -> Result<Vec<String>> {
        self.layout.list_tags().await
    }
    async fn referrers(
        &self,
        digest: &Sha256Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<DescriptorSummary>> {
        self.layout.referrers(digest, artifact_type).await
    }
    async fn referrers_of_each(
        &self,
        digests: &[Sha256Digest],
        artifact_type: Option<&str>,
    ) -> Result<Vec<Vec<DescriptorSummary>>> {
        self.layout.referrers_of_each(digests, artifact_type).await
    }
    async fn commit(&self) -> Result<()> {
        if !self.dirty.load(Ordering::SeqCst) {
            return Ok(());
        }
        let _guard = self.layout.index_lock.lock().await;
        // On a blocking thread: writing the tarball reads and writes every blob.
        let (root, archive) = (self.layout.root().to_path_buf(), self.archive.clone());
        super::dir::blocking(move || write_archive(&root, &archive)).await?;
        self.dirty.store(false, Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_paths_are_checked() {
        for ok in [
            "oci-layout",
            "./index.json",
            "blobs",
            "blobs/sha256",
            "blobs/sha256/44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
        ] {
            assert!(is_layout_path(Path::new(ok)), "{ok}");
        }
        for bad in [
            "../index.json",
            "etc/passwd",
            "blobs/sha256/xyz",
            "blobs/sha512/44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
            "/index.json",
        ] {
            assert!(!is_layout_path(Path::new(bad)), "{bad}");
        }
    }
}
