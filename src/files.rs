//! Files afterpush writes for the user (layout blobs and `index.json`, archives, zTOCs):
//! written to a temporary file in the target's directory and renamed into place, so no
//! reader sees half a file, with the permissions `cp` gives a new file (0666 less the
//! umask) rather than the 0600 of a private temporary file.

use std::io::Write;
use std::path::Path;
use tempfile::NamedTempFile;

/// A temporary file in `dir` (`.afterpush-tmp-*SUFFIX`), to be renamed over its target.
pub fn temp_file_in(dir: &Path, suffix: &str) -> std::io::Result<NamedTempFile> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(".afterpush-tmp-").suffix(suffix);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // The mode given to open(2), which takes the umask off it as for any new file.
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    builder.tempfile_in(dir)
}

/// Writes `path` through [`temp_file_in`] in its directory and a rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomically_with(path, |out| out.write_all(bytes))
}

/// Like [`write_atomically`], with the content written by `write` (for output that is
/// streamed rather than held whole); an error from `write` leaves nothing behind.
pub fn write_atomically_with<E: From<std::io::Error>>(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<(), E>,
) -> Result<(), E> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = temp_file_in(dir, "")?;
    write(tmp.as_file_mut())?;
    // On disk before the rename, so that a crash leaves the old file or the new one.
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
