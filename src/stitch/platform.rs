//! Platforms as the stitcher sees them: read from an image config blob, normalised the
//! way container runtimes match them (`arm` means `arm/v7`, `arm64/v8` means `arm64`),
//! and parsed from `REQUIRED_PLATFORMS` entries such as `linux/arm/v7`.

use super::StitchError;
use serde::Deserialize;
use std::fmt;

/// One platform: what an index descriptor's `platform` field says.
///
/// Field order is the sort order used for extras (platforms not in
/// `REQUIRED_PLATFORMS`): os, architecture, variant, then os.version and os.features so
/// that several Windows builds of one architecture have a stable order too.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PlatformSpec {
    /// `os` (GOOS: `linux`, `windows`...).
    pub os: String,
    /// `architecture` (GOARCH: `amd64`, `arm64`...), normalised.
    pub architecture: String,
    /// `variant` (`v7`, `v8`...), normalised (`arm` alone means `v7`; `arm64/v8` has none).
    pub variant: Option<String>,
    /// `os.version` (Windows images).
    pub os_version: Option<String>,
    /// `os.features` (Windows images).
    pub os_features: Vec<String>,
}

impl PlatformSpec {
    /// A platform from its parts, normalised.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        let mut p = PlatformSpec {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
            os_version: None,
            os_features: Vec::new(),
        };
        p.normalise();
        p
    }

    /// Parses `os/arch[/variant]` (one `REQUIRED_PLATFORMS` entry), normalised.
    pub fn parse(value: &str) -> Result<Self, StitchError> {
        let bad = |reason: &str| StitchError::InvalidPlatform {
            value: value.to_string(),
            reason: reason.to_string(),
        };
        let parts: Vec<&str> = value.trim().split('/').collect();
        if !(2..=3).contains(&parts.len()) {
            return Err(bad("expected OS/ARCH or OS/ARCH/VARIANT, e.g. linux/arm64"));
        }
        for part in &parts {
            if part.is_empty()
                || !part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
            {
                return Err(bad("each part must be non-empty [A-Za-z0-9_.-]"));
            }
        }
        let p = PlatformSpec::new(parts[0], parts[1], parts.get(2).copied());
        if p.os == "unknown" || p.architecture == "unknown" {
            // buildx marks attestation manifests `unknown/unknown`: never a platform.
            return Err(bad("unknown/unknown is not a platform"));
        }
        Ok(p)
    }

    /// Applies the normalisation runtimes use when matching platforms: lowercase names,
    /// Linux-distribution architecture aliases, `arm` without variant as `v7`,
    /// `arm64/v8` as `arm64`, `amd64/v1` as `amd64`.
    pub fn normalise(&mut self) {
        self.os = self.os.to_ascii_lowercase();
        let arch = self.architecture.to_ascii_lowercase();
        let mut variant = self
            .variant
            .take()
            .map(|v| v.to_ascii_lowercase())
            .filter(|v| !v.is_empty());
        let arch = match arch.as_str() {
            "x86_64" | "x86-64" => "amd64".to_string(),
            "aarch64" => "arm64".to_string(),
            "i386" | "i686" => "386".to_string(),
            "armhf" => {
                variant.get_or_insert_with(|| "v7".to_string());
                "arm".to_string()
            }
            "armel" => {
                variant.get_or_insert_with(|| "v6".to_string());
                "arm".to_string()
            }
            _ => arch,
        };
        match arch.as_str() {
            "arm" if variant.is_none() => variant = Some("v7".to_string()),
            "arm64" if variant.as_deref() == Some("v8") => variant = None,
            "amd64" if variant.as_deref() == Some("v1") => variant = None,
            _ => {}
        }
        self.architecture = arch;
        self.variant = variant;
        // An empty os.version or os.features means the same as none.
        if self.os_version.as_deref() == Some("") {
            self.os_version = None;
        }
    }

    /// True when `self` is the platform a `REQUIRED_PLATFORMS` entry names: os,
    /// architecture and variant agree (os.version and os.features do not take part, so
    /// `windows/amd64` covers every Windows build of amd64).
    pub fn satisfies(&self, required: &PlatformSpec) -> bool {
        self.os == required.os
            && self.architecture == required.architecture
            && self.variant == required.variant
    }
}

/// `linux/arm/v7`, `windows/amd64 (os.version 10.0.17763.1)`.
impl fmt::Display for PlatformSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        if let Some(v) = &self.os_version {
            write!(f, " (os.version {v})")?;
        }
        if !self.os_features.is_empty() {
            write!(f, " (os.features {})", self.os_features.join(","))?;
        }
        Ok(())
    }
}

/// The platform fields of an image config blob (OCI or Docker: the same JSON names).
/// Parsed leniently: everything else in a config is irrelevant here.
#[derive(Debug, Deserialize)]
struct ConfigPlatform {
    #[serde(default)]
    architecture: Option<String>,
    #[serde(default)]
    os: Option<String>,
    #[serde(default)]
    variant: Option<String>,
    #[serde(default, rename = "os.version")]
    os_version: Option<String>,
    #[serde(default, rename = "os.features")]
    os_features: Option<Vec<String>>,
}

/// Reads the platform from an image config blob. The error says what is wrong; the
/// caller adds which tag and blob it was.
pub fn platform_from_config(config: &[u8]) -> Result<PlatformSpec, String> {
    let c: ConfigPlatform =
        serde_json::from_slice(config).map_err(|e| format!("not valid config JSON: {e}"))?;
    let os =
        c.os.filter(|s| !s.is_empty())
            .ok_or("the config has no \"os\"")?;
    let architecture = c
        .architecture
        .filter(|s| !s.is_empty())
        .ok_or("the config has no \"architecture\"")?;
    let mut p = PlatformSpec {
        os,
        architecture,
        variant: c.variant,
        os_version: c.os_version,
        os_features: c.os_features.unwrap_or_default(),
    };
    p.normalise();
    if p.os == "unknown" || p.architecture == "unknown" {
        return Err("the config says unknown/unknown, which is not a platform".to_string());
    }
    Ok(p)
}

/// Parses a comma-separated `REQUIRED_PLATFORMS` list (blank entries skipped). A
/// platform listed twice is an error.
pub fn parse_platform_list(value: &str) -> Result<Vec<PlatformSpec>, StitchError> {
    let mut out: Vec<PlatformSpec> = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let p = PlatformSpec::parse(entry)?;
        if out.contains(&p) {
            return Err(StitchError::InvalidPlatform {
                value: value.to_string(),
                reason: format!("{p} is listed twice"),
            });
        }
        out.push(p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn normalises_the_runtime_aliases() {
        let cases = [
            ("linux/arm", "linux/arm/v7"),
            ("linux/arm/v6", "linux/arm/v6"),
            ("linux/arm64/v8", "linux/arm64"),
            ("linux/aarch64", "linux/arm64"),
            ("linux/x86_64", "linux/amd64"),
            ("linux/amd64/v1", "linux/amd64"),
            ("linux/amd64/v3", "linux/amd64/v3"),
            ("Linux/ARM64", "linux/arm64"),
            ("linux/armhf", "linux/arm/v7"),
            ("linux/i386", "linux/386"),
            ("windows/amd64", "windows/amd64"),
        ];
        for (input, want) in cases {
            assert_eq!(
                PlatformSpec::parse(input).unwrap().to_string(),
                want,
                "{input}"
            );
        }
    }

    #[test]
    fn rejects_bad_platform_strings_naming_them() {
        for bad in [
            "linux",
            "linux/",
            "/amd64",
            "linux/arm/v7/x",
            "unknown/unknown",
            "li nux/amd64",
        ] {
            let err = PlatformSpec::parse(bad).unwrap_err().to_string();
            assert!(err.contains(bad), "{bad}: {err}");
        }
        let err = parse_platform_list("linux/amd64,linux/x86_64")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listed twice"), "{err}");
    }

    #[test]
    fn reads_platform_from_config_blobs() {
        let p = platform_from_config(
            br#"{"architecture":"arm","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .unwrap();
        assert_eq!(p.to_string(), "linux/arm/v7");
        let p = platform_from_config(
            br#"{"architecture":"amd64","os":"windows","os.version":"10.0.17763.5329","os.features":["win32k"]}"#,
        )
        .unwrap();
        assert_eq!(p.os_version.as_deref(), Some("10.0.17763.5329"));
        assert_eq!(p.os_features, vec!["win32k".to_string()]);
        assert!(platform_from_config(br#"{"os":"linux"}"#)
            .unwrap_err()
            .contains("architecture"));
        assert!(platform_from_config(b"not json")
            .unwrap_err()
            .contains("JSON"));
        assert!(platform_from_config(br#"{"os":"unknown","architecture":"unknown"}"#).is_err());
    }

    fn arch_strategy() -> impl Strategy<Value = (String, Option<String>)> {
        (
            prop::sample::select(vec![
                "amd64", "x86_64", "arm64", "aarch64", "arm", "armhf", "armel", "386", "i386",
                "ppc64le", "s390x", "riscv64", "ARM64",
            ]),
            prop::option::of(prop::sample::select(vec![
                "v5", "v6", "v7", "v8", "v1", "V8", "",
            ])),
        )
            .prop_map(|(a, v)| (a.to_string(), v.map(str::to_string)))
    }

    proptest! {
        #[test]
        fn normalisation_is_idempotent((arch, variant) in arch_strategy(), os in "(linux|windows|Linux)") {
            let once = PlatformSpec::new(&os, &arch, variant.as_deref());
            let mut twice = once.clone();
            twice.normalise();
            prop_assert_eq!(&once, &twice);
            // The printed form parses back to the same platform.
            prop_assert_eq!(PlatformSpec::parse(&once.to_string()).unwrap(), once.clone());
            // arm never ends up without a variant, arm64 never with v8.
            if once.architecture == "arm" { prop_assert!(once.variant.is_some()); }
            if once.architecture == "arm64" { prop_assert_ne!(once.variant.as_deref(), Some("v8")); }
        }
    }
}
