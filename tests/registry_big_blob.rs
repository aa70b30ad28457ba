//! A 200 MB blob streams up to and down from the real registry with bounded memory.
//! Alone in its own test binary so that no other test's allocations move the process's
//! peak RSS (VmHWM), which is what this test measures.

mod support;

use afterpush::oci::{DigestWriter, Sha256Digest};
use afterpush::registry::distribution::{DistributionRepository, RegistrySettings, RetryPolicy};
use afterpush::registry::{BlobStream, Repository};
use bytes::Bytes;
use futures::StreamExt;

const SIZE: u64 = 200 * 1024 * 1024;
const PIECE: usize = 256 * 1024;

/// Peak resident set size of this process, in bytes.
fn peak_rss() -> u64 {
    support::peak_rss::peak_rss_kib() * 1024
}

/// The same pseudo-random bytes on every call, generated piece by piece, never whole.
fn generated(seed: u64) -> BlobStream {
    let pieces = SIZE.div_ceil(PIECE as u64);
    futures::stream::iter(0..pieces)
        .map(move |i| {
            let len = (SIZE - i * PIECE as u64).min(PIECE as u64) as usize;
            let piece_seed = seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            Ok(Bytes::from(support::pseudo_random(len, piece_seed)))
        })
        .boxed()
}

#[tokio::test]
async fn a_200_mb_blob_streams_up_and_down_with_bounded_memory() {
    let registry = support::TestRegistry::start();
    let settings = RegistrySettings {
        retry: RetryPolicy::fast(),
        ..RegistrySettings::default()
    };
    let repo = DistributionRepository::connect(&settings, &registry.host(), "big").unwrap();

    let mut hasher = DigestWriter::new();
    let mut source = generated(7);
    while let Some(piece) = source.next().await {
        hasher.update(&piece.unwrap());
    }
    let digest: Sha256Digest = hasher.finish();

    let before = peak_rss();
    repo.push_blob(&digest, SIZE, generated(7)).await.unwrap();
    assert_eq!(repo.blob_size(&digest).await.unwrap(), Some(SIZE));

    // Down: the client verifies the digest itself (an error item otherwise); count and
    // hash here too so the test does not rely on that alone.
    let mut down = repo.get_blob(&digest, None).await.unwrap();
    let mut check = DigestWriter::new();
    let mut total = 0u64;
    while let Some(chunk) = down.next().await {
        let chunk = chunk.unwrap();
        total += chunk.len() as u64;
        check.update(&chunk);
    }
    assert_eq!(total, SIZE);
    assert_eq!(check.finish(), digest);

    let growth = peak_rss().saturating_sub(before);
    eprintln!(
        "peak RSS growth while streaming {} MiB up and down: {} MiB",
        SIZE >> 20,
        growth >> 20
    );
    assert!(
        growth < 64 * 1024 * 1024,
        "peak RSS grew by {growth} bytes for a {SIZE}-byte blob"
    );
}
