//! Image references in the forms skopeo writes them:
//! `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`, `docker://HOST/REPO[:TAG|@sha256:…]`, and bare
//! `HOST/REPO[:TAG|@sha256:…]`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Why a reference could not be parsed. Always names the reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    /// The reference does not follow the grammar of its transport (a missing host, a bad tag or digest...).
    #[error("invalid image reference {reference:?}: {reason}")]
    Invalid {
        /// The reference as given.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The reference starts with a transport other than `oci:`, `oci-archive:` or `docker://`.
    #[error("unknown transport {transport:?} in {reference:?} (expected oci:, oci-archive: or docker://)")]
    UnknownTransport {
        /// The reference as given.
        reference: String,
        /// The transport it names.
        transport: String,
    },
}

/// Where the repository lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Location {
    /// An OCI image layout directory.
    Layout(PathBuf),
    /// An `oci-archive` tarball of a layout.
    Archive(PathBuf),
    /// A registry over the OCI distribution API.
    Registry {
        /// The registry host, with its port if any (`127.0.0.1:5000`).
        host: String,
        /// The repository name (`team/app`).
        repository: String,
    },
}

/// A parsed reference: a location and, optionally, a tag and/or digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// Where the repository lives.
    pub location: Location,
    /// The tag, when the reference has one.
    pub tag: Option<String>,
    /// The digest, when the reference has one (`@sha256:...`).
    pub digest: Option<crate::oci::Sha256Digest>,
}

impl ImageRef {
    /// The tag or digest to resolve, digest first (it is exact).
    pub fn reference(&self) -> Option<String> {
        self.digest
            .as_ref()
            .map(|d| d.to_string())
            .or_else(|| self.tag.clone())
    }
    /// A copy with another tag (and no digest).
    pub fn with_tag(&self, tag: &str) -> Self {
        Self {
            location: self.location.clone(),
            tag: Some(tag.to_string()),
            digest: None,
        }
    }
}

fn invalid(reference: &str, reason: impl Into<String>) -> RefError {
    RefError::Invalid {
        reference: reference.to_string(),
        reason: reason.into(),
    }
}

/// Tags: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}` (the distribution spec's grammar).
pub fn is_valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Repository names: lowercase path components `[a-z0-9]+([._-][a-z0-9]+)*` joined by `/`.
pub fn is_valid_repository(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.split('/').all(|part| {
            !part.is_empty()
                && part.bytes().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
                })
                && part.as_bytes()[0].is_ascii_alphanumeric()
                && part.as_bytes()[part.len() - 1].is_ascii_alphanumeric()
        })
}

/// Splits `PATH[:TAG]` for layout references. A suffix after the last `:` is a tag only
/// when it is a valid tag and does not contain `/` (so `oci:C:/x` style paths survive).
fn split_path_tag(full: &str, rest: &str) -> Result<(PathBuf, Option<String>), RefError> {
    if rest.is_empty() {
        return Err(invalid(full, "the path is empty"));
    }
    match rest.rsplit_once(':') {
        Some((path, tag)) if !path.is_empty() && !tag.contains('/') => {
            if !is_valid_tag(tag) {
                return Err(invalid(full, format!("{tag:?} is not a valid tag")));
            }
            Ok((PathBuf::from(path), Some(tag.to_string())))
        }
        _ => Ok((PathBuf::from(rest), None)),
    }
}

fn parse_registry(full: &str, rest: &str) -> Result<ImageRef, RefError> {
    let (name_tag, digest) = match rest.split_once('@') {
        Some((n, d)) => (
            n,
            Some(
                d.parse()
                    .map_err(|_| invalid(full, format!("{d:?} is not a sha256 digest")))?,
            ),
        ),
        None => (rest, None),
    };
    let (host, path) = name_tag.split_once('/').ok_or_else(|| {
        invalid(
            full,
            "expected HOST/REPOSITORY (a registry host is required)",
        )
    })?;
    if host.is_empty() || !(host.contains('.') || host.contains(':') || host == "localhost") {
        return Err(invalid(
            full,
            format!("{host:?} is not a registry host (it needs a '.', a ':' or to be localhost)"),
        ));
    }
    // A ':' after the last '/' separates the tag.
    let (repository, tag) = match path.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag)),
        _ => (path, None),
    };
    if !is_valid_repository(repository) {
        return Err(invalid(
            full,
            format!("{repository:?} is not a valid repository name"),
        ));
    }
    if let Some(tag) = tag {
        if !is_valid_tag(tag) {
            return Err(invalid(full, format!("{tag:?} is not a valid tag")));
        }
    }
    Ok(ImageRef {
        location: Location::Registry {
            host: host.to_string(),
            repository: repository.to_string(),
        },
        tag: tag.map(str::to_string),
        digest,
    })
}

impl FromStr for ImageRef {
    type Err = RefError;
    fn from_str(s: &str) -> Result<Self, RefError> {
        if let Some(rest) = s.strip_prefix("oci:") {
            let (path, tag) = split_path_tag(s, rest)?;
            return Ok(ImageRef {
                location: Location::Layout(path),
                tag,
                digest: None,
            });
        }
        if let Some(rest) = s.strip_prefix("oci-archive:") {
            let (path, tag) = split_path_tag(s, rest)?;
            return Ok(ImageRef {
                location: Location::Archive(path),
                tag,
                digest: None,
            });
        }
        if let Some(rest) = s.strip_prefix("docker://") {
            return parse_registry(s, rest);
        }
        if let Some((transport, _)) = s.split_once(':') {
            // `host:port/repo` is a bare registry reference; `word:rest` without a '/'
            // before the ':' and a non-numeric port is a transport we do not know.
            let looks_like_port = s[transport.len() + 1..]
                .split('/')
                .next()
                .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
            if !transport.contains('/')
                && !transport.contains('.')
                && !looks_like_port
                && transport != "localhost"
            {
                return Err(RefError::UnknownTransport {
                    reference: s.to_string(),
                    transport: transport.to_string(),
                });
            }
        }
        parse_registry(s, s)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Location::Layout(p) => write!(f, "oci:{}", p.display())?,
            Location::Archive(p) => write!(f, "oci-archive:{}", p.display())?,
            Location::Registry { host, repository } => write!(f, "docker://{host}/{repository}")?,
        }
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("oci:/tmp/layout", Location::Layout("/tmp/layout".into()), None)]
    #[case("oci:/tmp/layout:v1", Location::Layout("/tmp/layout".into()), Some("v1"))]
    #[case("oci:rel/dir:1.2-amd64", Location::Layout("rel/dir".into()), Some("1.2-amd64"))]
    #[case("oci-archive:image.tar", Location::Archive("image.tar".into()), None)]
    #[case("oci-archive:/x/image.tar:latest", Location::Archive("/x/image.tar".into()), Some("latest"))]
    #[case("docker://127.0.0.1:5000/app:1.2", Location::Registry { host: "127.0.0.1:5000".into(), repository: "app".into() }, Some("1.2"))]
    #[case("docker://123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app", Location::Registry { host: "123456789012.dkr.ecr.us-east-1.amazonaws.com".into(), repository: "team/app".into() }, None)]
    #[case("localhost:5000/a/b:c", Location::Registry { host: "localhost:5000".into(), repository: "a/b".into() }, Some("c"))]
    #[case("localhost/a", Location::Registry { host: "localhost".into(), repository: "a".into() }, None)]
    fn parses(#[case] input: &str, #[case] location: Location, #[case] tag: Option<&str>) {
        let r: ImageRef = input.parse().unwrap();
        assert_eq!(r.location, location);
        assert_eq!(r.tag.as_deref(), tag);
        assert_eq!(r.to_string().parse::<ImageRef>().unwrap(), r);
    }

    #[test]
    fn parses_digest() {
        let d = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
        let r: ImageRef = format!("docker://r.example.com/app@{d}").parse().unwrap();
        assert_eq!(r.digest.unwrap().to_string(), d);
        assert_eq!(r.tag, None);
    }

    #[rstest]
    #[case("", "invalid")]
    #[case("oci:", "path is empty")]
    #[case("oci:/x:bad tag", "not a valid tag")]
    #[case("docker://app", "registry host")]
    #[case("app:latest", "unknown transport")]
    #[case("s3://bucket/x", "unknown transport")]
    #[case("docker://r.example.com/App", "not a valid repository")]
    #[case("docker://r.example.com/app@sha256:123", "not a sha256 digest")]
    fn rejects_and_names_the_reference(#[case] input: &str, #[case] fragment: &str) {
        let err = input.parse::<ImageRef>().unwrap_err().to_string();
        assert!(err.contains(fragment), "{input}: {err}");
        assert!(
            err.contains(&format!("{input:?}")) || input.is_empty(),
            "{err}"
        );
    }
}
