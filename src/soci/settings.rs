//! The indexer's settings: environment variables for the Lambda (set by template.yaml
//! parameters), the same names as CLI flags.

use super::{Result, SociError};
use crate::settings::{parse_bool, parse_choice, parse_count, parse_size, SettingsError};
use crate::stitch::ArchTagTemplate;

/// Which SOCI index format to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum IndexVersion {
    /// Found through the referrers API (`subject`); ignored by soci-snapshotter >= 0.10 by default.
    V1,
    /// Bound into a new image index next to the image manifests (the default).
    V2,
}

/// Where the v2 output index is tagged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum TagMode {
    /// `<tag><suffix>` (`<tag>-soci`), like AWS's SOCI Index Builder; `<tag>` is left alone.
    Suffix,
    /// Move `<tag>` itself to the SOCI-enabled index (its digest changes).
    InPlace,
    /// Push by digest only.
    None,
}

/// Which platforms of a multi-platform image get SOCI indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlatformSelection {
    /// Every platform (`PLATFORMS=all`, the default, or empty).
    All,
    /// `os/arch[/variant]` entries.
    Only(Vec<String>),
}

impl PlatformSelection {
    /// Parses `PLATFORMS`: `all` (or empty), else a comma-separated list of `os/arch[/variant]`.
    pub fn parse(value: &str) -> Self {
        let value = value.trim();
        if value.is_empty() || value.eq_ignore_ascii_case("all") {
            return PlatformSelection::All;
        }
        PlatformSelection::Only(
            value
                .split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect(),
        )
    }
    /// True when `platform` (`os/arch[/variant]`) is selected; compared as written, without normalising.
    pub fn includes(&self, platform: &str) -> bool {
        match self {
            PlatformSelection::All => true,
            PlatformSelection::Only(list) => list.iter().any(|p| p == platform),
        }
    }
}

/// Everything the indexer can be told.
#[derive(Debug, Clone)]
pub struct SociSettings {
    /// `SPAN_SIZE`: the zTOC span size in bytes (how far apart checkpoints are, see `docs/ztoc-format.md`), 64 KiB to 1 GiB.
    pub span_size: u64,
    /// `MIN_LAYER_SIZE`: layers smaller than this many bytes get no zTOC.
    pub min_layer_size: u64,
    /// `LAYER_CONCURRENCY`: layers streamed and indexed at once.
    pub layer_concurrency: usize,
    /// `SOCI_INDEX_VERSION`.
    pub index_version: IndexVersion,
    /// `SOCI_TAG_MODE`.
    pub tag_mode: TagMode,
    /// `SOCI_TAG_SUFFIX`, default `-soci`.
    pub tag_suffix: String,
    /// `PLATFORMS`.
    pub platforms: PlatformSelection,
    /// The `com.amazon.soci.build-tool-identifier` annotation of every index (`afterpush v<version>`).
    pub build_tool_identifier: String,
    /// soci's `xattr` optimization: mark zTOCs of layers without xattrs or opaque
    /// whiteouts with `com.amazon.soci.disable-xattrs`, so the snapshotter skips xattr
    /// lookups. Off by default, as in `soci create`.
    pub xattr_optimization: bool,
    /// `ZTOC_CACHE_BUCKET`: S3 bucket for zTOC reuse; `None`: no cache.
    pub ztoc_cache_bucket: Option<String>,
    /// `AFTERPUSH_ZTOC_CACHE_PREFIX`: key prefix of zTOCs in the cache bucket, default `afterpush/ztoc/`.
    pub ztoc_cache_prefix: String,
    /// `repo-glob:tag-glob,...` for the Lambda's event filter.
    pub repository_tag_filters: String,
    /// Per-arch tags (those this `ARCH_TAG_TEMPLATE` matches) are left to the stitched
    /// index when set (`SOCI_SKIP_ARCH_TAGS=true`): teams that deploy only the stitched
    /// tag then pay for one SOCI index per image instead of two.
    pub skip_arch_tags: Option<ArchTagTemplate>,
    /// Bytes per second a layer is assumed to index at before this invocation has
    /// measured one (`AFTERPUSH_LAYER_THROUGHPUT`, a size per second): low, so that the
    /// first layers of a run near its deadline are not started on hope.
    pub layer_throughput: u64,
    /// Bytes of memory the zTOC builds of one image may take together (`MEMORY_BUDGET`;
    /// in Lambda by default the function's memory less [`super::memory::PROCESS_HEADROOM`]).
    /// `None`: no limit but `layer_concurrency` (the CLI's default).
    pub memory_budget: Option<u64>,
}

/// The default `SPAN_SIZE`: 4 MiB.
pub const DEFAULT_SPAN_SIZE: u64 = 4 * 1024 * 1024;
/// The default `MIN_LAYER_SIZE`: 10 MiB.
pub const DEFAULT_MIN_LAYER_SIZE: u64 = 10 * 1024 * 1024;
/// Well under what a Lambda function reads from ECR in the same region, so that the
/// estimate errs on the side of leaving a layer for the retry.
pub const DEFAULT_LAYER_THROUGHPUT: u64 = 20 * 1024 * 1024;

impl Default for SociSettings {
    fn default() -> Self {
        Self {
            span_size: DEFAULT_SPAN_SIZE,
            min_layer_size: DEFAULT_MIN_LAYER_SIZE,
            layer_concurrency: 4,
            index_version: IndexVersion::V2,
            tag_mode: TagMode::Suffix,
            tag_suffix: "-soci".into(),
            platforms: PlatformSelection::All,
            build_tool_identifier: format!("afterpush v{}", env!("CARGO_PKG_VERSION")),
            xattr_optimization: false,
            ztoc_cache_bucket: None,
            ztoc_cache_prefix: "afterpush/ztoc/".into(),
            repository_tag_filters: "*:*".into(),
            skip_arch_tags: None,
            layer_throughput: DEFAULT_LAYER_THROUGHPUT,
            memory_budget: None,
        }
    }
}

impl SociSettings {
    /// Reads the settings from the environment; unset variables keep their defaults.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Same as [`from_env`](Self::from_env) over any lookup (tests, `afterpush invoke`).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let bad = |name: &str, value: &str, message: &str| SociError::Setting {
            name: name.into(),
            value: value.into(),
            message: message.into(),
        };
        let refused = |e: SettingsError| SociError::Setting {
            name: e.name,
            value: e.value,
            message: e.problem,
        };
        let mut s = Self::default();
        if let Some(v) = get("SPAN_SIZE") {
            let size = parse_size("SPAN_SIZE", &v).map_err(refused)?;
            s.span_size = crate::ztoc::check_span_size(size)
                .map_err(|e| bad("SPAN_SIZE", &v, &e.to_string()))?;
        }
        if let Some(v) = get("MIN_LAYER_SIZE") {
            s.min_layer_size = parse_size("MIN_LAYER_SIZE", &v).map_err(refused)?;
        }
        if let Some(v) = get("LAYER_CONCURRENCY") {
            s.layer_concurrency = parse_count("LAYER_CONCURRENCY", &v, 1..=64).map_err(refused)?;
        }
        if let Some(v) = get("SOCI_INDEX_VERSION") {
            s.index_version =
                match parse_choice("SOCI_INDEX_VERSION", &v, &["v1", "v2"]).map_err(refused)? {
                    "v1" => IndexVersion::V1,
                    _ => IndexVersion::V2,
                };
        }
        if let Some(v) = get("SOCI_TAG_MODE") {
            s.tag_mode = match parse_choice("SOCI_TAG_MODE", &v, &["suffix", "in-place", "none"])
                .map_err(refused)?
            {
                "suffix" => TagMode::Suffix,
                "in-place" => TagMode::InPlace,
                _ => TagMode::None,
            };
        }
        if let Some(v) = get("SOCI_TAG_SUFFIX") {
            if v.is_empty()
                || !v
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            {
                return Err(bad(
                    "SOCI_TAG_SUFFIX",
                    &v,
                    "expected tag characters, e.g. -soci",
                ));
            }
            s.tag_suffix = v;
        }
        if let Some(v) = get("PLATFORMS") {
            s.platforms = PlatformSelection::parse(&v);
        }
        if let Some(v) = get("AFTERPUSH_SOCI_XATTR_OPTIMIZATION") {
            s.xattr_optimization =
                parse_bool("AFTERPUSH_SOCI_XATTR_OPTIMIZATION", &v).map_err(refused)?;
        }
        if let Some(v) = get("AFTERPUSH_LAYER_THROUGHPUT") {
            s.layer_throughput = parse_size("AFTERPUSH_LAYER_THROUGHPUT", &v)
                .map_err(refused)
                .and_then(|n| {
                    (n > 0)
                        .then_some(n)
                        .ok_or_else(|| bad("AFTERPUSH_LAYER_THROUGHPUT", &v, "must be above 0"))
                })?;
        }
        s.ztoc_cache_bucket = get("ZTOC_CACHE_BUCKET").filter(|v| !v.trim().is_empty());
        if let Some(v) = get("AFTERPUSH_ZTOC_CACHE_PREFIX") {
            s.ztoc_cache_prefix = v;
        }
        if let Some(v) = get("REPOSITORY_TAG_FILTERS") {
            s.repository_tag_filters = v;
        }
        s.memory_budget = match get("MEMORY_BUDGET").filter(|v| !v.trim().is_empty()) {
            Some(v) => match parse_size("MEMORY_BUDGET", &v).map_err(refused)? {
                0 => return Err(bad("MEMORY_BUDGET", &v, "must be above 0, e.g. 512MiB")),
                budget => Some(budget),
            },
            None => get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
                .and_then(|mb| super::memory::budget_from_function_memory(&mb)),
        };
        if let Some(v) = get("SOCI_SKIP_ARCH_TAGS") {
            let skip = parse_bool("SOCI_SKIP_ARCH_TAGS", &v).map_err(refused)?;
            if skip {
                let template = get("ARCH_TAG_TEMPLATE")
                    .filter(|t| !t.trim().is_empty())
                    .unwrap_or_else(|| ArchTagTemplate::DEFAULT.to_string());
                s.skip_arch_tags = Some(
                    ArchTagTemplate::parse(&template)
                        .map_err(|e| bad("ARCH_TAG_TEMPLATE", &template, &e.to_string()))?,
                );
            }
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Settings read from exactly these variables.
    fn read(pairs: &[(&str, &str)]) -> Result<SociSettings, SociError> {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        SociSettings::from_lookup(|k| env.get(k).cloned())
    }

    #[test]
    fn a_typo_in_the_xattr_optimization_is_an_error_not_false() {
        assert!(
            read(&[("AFTERPUSH_SOCI_XATTR_OPTIMIZATION", "on")])
                .unwrap()
                .xattr_optimization
        );
        let err = read(&[("AFTERPUSH_SOCI_XATTR_OPTIMIZATION", "ture")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("AFTERPUSH_SOCI_XATTR_OPTIMIZATION") && err.contains("ture"),
            "{err}"
        );
    }

    #[test]
    fn sizes_read_mb_as_decimal_and_mib_as_binary() {
        assert_eq!(
            read(&[("MIN_LAYER_SIZE", "10MB")]).unwrap().min_layer_size,
            10_000_000
        );
        assert_eq!(
            read(&[("MIN_LAYER_SIZE", "10MiB")]).unwrap().min_layer_size,
            10 << 20
        );
        let err = read(&[("MIN_LAYER_SIZE", "10M")]).unwrap_err().to_string();
        assert!(
            err.contains("MIN_LAYER_SIZE") && err.contains("ambiguous"),
            "{err}"
        );
    }

    #[test]
    fn reads_environment_and_names_bad_values() {
        let env: HashMap<&str, &str> = [
            ("SPAN_SIZE", "1MiB"),
            ("SOCI_TAG_MODE", "in-place"),
            ("PLATFORMS", "linux/amd64, linux/arm64"),
        ]
        .into();
        let s = SociSettings::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(s.span_size, 1 << 20);
        assert_eq!(s.tag_mode, TagMode::InPlace);
        assert!(s.platforms.includes("linux/arm64") && !s.platforms.includes("linux/arm/v7"));
        let err =
            SociSettings::from_lookup(|k| (k == "SOCI_INDEX_VERSION").then(|| "v3".to_string()))
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("SOCI_INDEX_VERSION") && err.contains("v3"),
            "{err}"
        );
    }

    #[test]
    fn memory_budget_is_set_or_derived_from_the_function_memory() {
        assert_eq!(read(&[]).unwrap().memory_budget, None);
        assert_eq!(
            read(&[("MEMORY_BUDGET", "512MiB")]).unwrap().memory_budget,
            Some(512 << 20)
        );
        let lambda = ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "2048");
        assert_eq!(
            read(&[lambda, ("MEMORY_BUDGET", "")])
                .unwrap()
                .memory_budget,
            Some((2048 << 20) - crate::soci::memory::PROCESS_HEADROOM)
        );
        assert_eq!(
            read(&[lambda, ("MEMORY_BUDGET", "1GiB")])
                .unwrap()
                .memory_budget,
            Some(1 << 30)
        );
        for bad in ["0", "lots", "-1MiB"] {
            let err = read(&[("MEMORY_BUDGET", bad)]).unwrap_err().to_string();
            assert!(err.contains("MEMORY_BUDGET") && err.contains(bad), "{err}");
        }
    }

    #[test]
    fn span_size_outside_64kib_to_1gib_is_refused() {
        let read = |v: &str| SociSettings::from_lookup(|k| (k == "SPAN_SIZE").then(|| v.into()));
        assert_eq!(read("64KiB").unwrap().span_size, 64 << 10);
        assert_eq!(read("1GiB").unwrap().span_size, 1 << 30);
        for bad in ["0", "1KiB", "65535", "1073741825", "18446744073709551615"] {
            let err = read(bad).unwrap_err().to_string();
            assert!(
                err.contains("SPAN_SIZE") && err.contains(bad) && err.contains("out of range"),
                "{err}"
            );
        }
    }

    #[test]
    fn skip_arch_tags_uses_the_stitchers_template() {
        assert!(read(&[]).unwrap().skip_arch_tags.is_none());
        assert!(read(&[("SOCI_SKIP_ARCH_TAGS", "false")])
            .unwrap()
            .skip_arch_tags
            .is_none());
        let default = read(&[("SOCI_SKIP_ARCH_TAGS", "true")]).unwrap();
        let t = default.skip_arch_tags.unwrap();
        assert!(t.match_tag("1.2-arm64").is_some());
        assert!(t.match_tag("1.2").is_none() && t.match_tag("1.2-beta").is_none());
        let custom = read(&[
            ("SOCI_SKIP_ARCH_TAGS", "yes"),
            ("ARCH_TAG_TEMPLATE", "{arch}-{tag}"),
        ])
        .unwrap();
        let t = custom.skip_arch_tags.unwrap();
        assert!(t.match_tag("amd64-1.2").is_some() && t.match_tag("1.2-amd64").is_none());
        let err = read(&[("SOCI_SKIP_ARCH_TAGS", "maybe")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("SOCI_SKIP_ARCH_TAGS") && err.contains("maybe"),
            "{err}"
        );
        let err = read(&[("SOCI_SKIP_ARCH_TAGS", "1"), ("ARCH_TAG_TEMPLATE", "{tag}")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("ARCH_TAG_TEMPLATE"), "{err}");
    }
}
