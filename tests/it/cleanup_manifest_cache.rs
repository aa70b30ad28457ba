//! Each manifest is read from ECR once (a BatchGetImage counts as a pull), then from the
//! manifest store, against moto's ECR and S3: a second sweep over unchanged repositories
//! makes no BatchGetImage call, and a stored object that is not what its key names is
//! discarded and read again.

use crate::support;

use afterpush::catalog::ecr::manifest_cache::{ManifestCache, S3ManifestStore, MANIFEST_PREFIX};
use afterpush::catalog::ecr::{CountingEcr, EcrCatalog, SdkEcr};
use afterpush::cleanup::policy::Policy;
use afterpush::cleanup::{sweep, RunOptions};
use std::sync::atomic::Ordering;

#[tokio::test]
async fn a_second_sweep_reads_no_manifest_from_ecr() {
    let moto = support::TestMoto::start();
    let (ecr, s3) = (moto.ecr().await, moto.s3().await);
    support::create_s3_bucket(&s3, "reports").await;
    let mut digests = Vec::new();
    for repo in ["app", "web"] {
        support::create_ecr_repository(&ecr, repo).await;
        for seed in ["one", "two", "three"] {
            digests.push(
                support::put_seeded_manifest(&ecr, repo, &format!("{repo}-{seed}"), seed).await,
            );
        }
    }
    let store = S3ManifestStore::new(s3.clone(), "reports", MANIFEST_PREFIX);
    let catalog = EcrCatalog::new(CountingEcr::new(SdkEcr::new(ecr.clone())))
        .with_manifest_cache(ManifestCache::new(store.clone()));
    let policy =
        Policy::parse("repositories: ['*']\nrules: []\nprotect: {ecs: false, lambda: false}")
            .unwrap();
    let options = RunOptions::dry_run_now();
    let gets = || catalog.api().counts.batch_get_image.load(Ordering::Relaxed);

    let first = sweep(&catalog, None, &policy, &options).await.unwrap();
    assert_eq!(first.errors, Vec::<String>::new());
    // moto reports no artifactMediaType, so every manifest is read: one call per repository.
    assert_eq!(gets(), 2);
    let key = store.key(&digests[0]);
    let stored = s3
        .get_object()
        .bucket("reports")
        .key(&key)
        .send()
        .await
        .expect("the manifest is stored by digest");
    assert_eq!(key, format!("manifests/sha256/{}", digests[0].hex()));
    assert_eq!(
        stored.content_type(),
        Some(afterpush::oci::media::OCI_MANIFEST)
    );

    let second = sweep(&catalog, None, &policy, &options).await.unwrap();
    assert_eq!(gets(), 2, "the second sweep read no manifest from ECR");
    let images = |r: &afterpush::cleanup::Report| {
        r.repositories
            .iter()
            .map(|x| (x.repository.clone(), x.images))
            .collect::<Vec<_>>()
    };
    assert_eq!(images(&first), images(&second));
    assert_eq!(
        images(&second),
        [("app".to_string(), 3), ("web".to_string(), 3)]
    );

    // Someone replaces a stored manifest: it is never used, but read again and restored.
    s3.put_object()
        .bucket("reports")
        .key(&key)
        .body(b"{\"schemaVersion\":2,\"forged\":true}".to_vec().into())
        .send()
        .await
        .unwrap();
    let third = sweep(&catalog, None, &policy, &options).await.unwrap();
    assert_eq!(third.errors, Vec::<String>::new());
    assert_eq!(gets(), 3, "only the forged one is read again");
    let restored = s3
        .get_object()
        .bucket("reports")
        .key(&key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    assert_eq!(afterpush::oci::Sha256Digest::of(&restored), digests[0]);
}
