//! Keeps glibc's malloc from holding on to the memory of finished zTOC builds.
//!
//! glibc serves blocks of at least its mmap threshold (128 KiB) with `mmap` and unmaps
//! them when freed, but each such free raises the threshold to the freed block's size
//! (up to 32 MiB). From then on blocks below it come from malloc's heaps, where a freed
//! block stays resident until something reuses it. A zTOC build grows and frees blocks of
//! several MiB (checkpoints, entries, the encoded zTOC), layer after layer and from
//! several threads (each with its own heap), so with the moving threshold the process
//! kept far more than the builds held: four layers with 15 MB zTOCs, built one at a time,
//! peaked at 80 MiB RSS against 47 MiB with the threshold fixed. Setting it (`mallopt`)
//! turns the adjustment off, so large blocks go back to the system as soon as they are
//! freed, and the memory budget (`crate::soci::memory`) matches what the process uses.
//! Other C libraries (musl) unmap large blocks anyway.

/// Fixes glibc's mmap threshold at its default, once per process.
pub(crate) fn return_large_blocks_when_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // SAFETY: mallopt only sets a malloc parameter (under malloc's own lock); no
            // memory is touched. Its result (0 on a refused value) leaves malloc as it was.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
            }
        });
    }
}
