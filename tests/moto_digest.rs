//! The moto launcher's one correction: ECR image digests are sha256 of the manifest
//! bytes as pushed (moto's own `_create_digest` hashes the joined layer digests).

mod support;

#[tokio::test]
async fn moto_ecr_digest_is_sha256_of_manifest_bytes() {
    let moto = support::TestMoto::start();
    let ecr = moto.ecr().await;
    ecr.create_repository()
        .repository_name("app")
        .send()
        .await
        .unwrap();
    let manifest = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;
    let index = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
    for (body, media_type) in [
        (manifest, "application/vnd.oci.image.manifest.v1+json"),
        (index, "application/vnd.oci.image.index.v1+json"),
    ] {
        let out = ecr
            .put_image()
            .repository_name("app")
            .image_manifest(body)
            .image_manifest_media_type(media_type)
            .image_tag(if body == manifest { "m" } else { "i" })
            .send()
            .await
            .unwrap();
        let got = out
            .image()
            .unwrap()
            .image_id()
            .unwrap()
            .image_digest()
            .unwrap()
            .to_string();
        assert_eq!(
            got,
            afterpush::oci::Sha256Digest::of(body.as_bytes()).to_string(),
            "{media_type}"
        );
    }
}
