//! The environment variables the Lambda functions read, in one table, and small helpers
//! to parse them with errors that name the variable.
//!
//! `template.yaml` sets every variable below from a stack parameter; `tests/it/template.rs`
//! checks that against [`SETTINGS`], so a setting added here without a parameter (or a
//! parameter wired to the wrong function) fails the build.

use std::fmt;

mod parse;
pub use parse::{
    parse_bool, parse_choice, parse_count, parse_duration, parse_list, parse_positive, parse_size,
};

/// One of the Lambda functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Function {
    /// The SOCI indexer (`functions/soci-indexer`): builds SOCI indexes for pushed images.
    SociIndexer,
    /// The manifest stitcher (`functions/manifest-stitcher`): stitches per-arch tags into multi-arch indexes.
    ManifestStitcher,
    /// The cache janitor (`functions/cache-janitor`): cleans up caches and old images.
    CacheJanitor,
    /// The reconciler (`functions/reconciler`): surveys the registry on a schedule for
    /// work the other functions missed, reports it and queues it.
    Reconciler,
}

impl Function {
    /// Every function.
    pub const ALL: [Function; 4] = [
        Function::SociIndexer,
        Function::ManifestStitcher,
        Function::CacheJanitor,
        Function::Reconciler,
    ];

    /// The binary (and workspace package) name, as in `functions/<name>`.
    pub fn binary(self) -> &'static str {
        match self {
            Function::SociIndexer => "soci-indexer",
            Function::ManifestStitcher => "manifest-stitcher",
            Function::CacheJanitor => "cache-janitor",
            Function::Reconciler => "reconciler",
        }
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.binary())
    }
}

/// An environment variable a function reads, with its default (the empty string means
/// "unset / feature off").
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The variable's name.
    pub name: &'static str,
    /// Its default, as the template writes it ("" for unset / feature off).
    pub default: &'static str,
    /// The functions that read it.
    pub functions: &'static [Function],
    /// What its value is, and so which parser reads it.
    pub kind: Kind,
}

/// What a setting's value is: one parser per kind (see `parse.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Free text (names, templates, a policy), checked by whoever reads it.
    Text,
    /// [`parse_bool`].
    Bool,
    /// [`parse_size`].
    Size,
    /// [`parse_positive`].
    Count,
    /// [`parse_list`].
    List,
    /// [`parse_choice`] among these values.
    Choice(&'static [&'static str]),
}

impl Kind {
    /// Parses `raw` as this kind for variable `name`, keeping only whether it parses.
    pub fn check(self, name: &str, raw: &str) -> Result<(), SettingsError> {
        match self {
            Kind::Text | Kind::List => Ok(()),
            Kind::Bool => parse_bool(name, raw).map(drop),
            Kind::Size => parse_size(name, raw).map(drop),
            Kind::Count => parse_positive(name, raw).map(drop),
            Kind::Choice(allowed) => parse_choice(name, raw, allowed).map(drop),
        }
    }
}

/// Checks `raw` with the parser of setting `name`'s kind (anything goes for a name that
/// is not in [`SETTINGS`]).
pub fn check(name: &str, raw: &str) -> Result<(), SettingsError> {
    setting(name).map_or(Ok(()), |s| s.kind.check(name, raw))
}

use Function::{CacheJanitor as J, ManifestStitcher as M, Reconciler as R, SociIndexer as S};

/// Comma-separated `repo-glob:tag-glob` pairs; events for anything else are skipped (all functions).
pub const REPOSITORY_TAG_FILTERS: &str = "REPOSITORY_TAG_FILTERS";
/// `v2` (SOCI-enabled image index, default) or `v1` (index pushed as a referrer) (indexer).
pub const SOCI_INDEX_VERSION: &str = "SOCI_INDEX_VERSION";
/// Where the v2 index goes: `suffix` (default), `in-place` or `none` (indexer).
pub const SOCI_TAG_MODE: &str = "SOCI_TAG_MODE";
/// The tag suffix of v2 SOCI output, also used to recognise it (all functions).
pub const SOCI_TAG_SUFFIX: &str = "SOCI_TAG_SUFFIX";
/// zTOC span size in bytes, 64 KiB to 1 GiB (indexer).
pub const SPAN_SIZE: &str = "SPAN_SIZE";
/// Layers smaller than this many bytes get no zTOC (indexer).
pub const MIN_LAYER_SIZE: &str = "MIN_LAYER_SIZE";
/// How many layers are streamed and indexed at once (indexer).
pub const LAYER_CONCURRENCY: &str = "LAYER_CONCURRENCY";
/// Bytes of memory the indexer's zTOC builds may take together, e.g. `1536MiB`; by
/// default in Lambda the function's memory less a headroom (indexer).
pub const MEMORY_BUDGET: &str = "MEMORY_BUDGET";
/// Platforms of an index that get SOCI indexes, or `all` (indexer).
pub const PLATFORMS: &str = "PLATFORMS";
/// S3 bucket for zTOC reuse; unset for no cache (indexer).
pub const ZTOC_CACHE_BUCKET: &str = "ZTOC_CACHE_BUCKET";
/// Names of per-arch tags, placeholders `{tag}` `{os}` `{arch}` `{variant}` (stitcher, indexer).
pub const ARCH_TAG_TEMPLATE: &str = "ARCH_TAG_TEMPLATE";
/// Name of the stitched tag, placeholder `{tag}` (stitcher).
pub const TARGET_TAG_TEMPLATE: &str = "TARGET_TAG_TEMPLATE";
/// Platforms of the stitched index, in order (stitcher).
pub const REQUIRED_PLATFORMS: &str = "REQUIRED_PLATFORMS";
/// `complete` or `partial` (stitcher).
pub const STITCH_MODE: &str = "STITCH_MODE";
/// `true`: the indexer skips tags that `ARCH_TAG_TEMPLATE` matches.
pub const SOCI_SKIP_ARCH_TAGS: &str = "SOCI_SKIP_ARCH_TAGS";
/// The cleanup policy, inline YAML or JSON (janitor).
pub const CLEANUP_POLICY: &str = "CLEANUP_POLICY";
/// `true` (default): the janitor plans and reports, deletes nothing.
pub const DRY_RUN: &str = "DRY_RUN";
/// S3 bucket for the janitor's JSON reports; unset for none.
pub const REPORT_BUCKET: &str = "REPORT_BUCKET";

/// Other accounts whose ECS and Lambda workloads use the images, `account[:region,...]`
/// entries, comma-separated; empty for none (janitor).
pub const CONSUMER_ACCOUNTS: &str = "CONSUMER_ACCOUNTS";
/// The name of the read-only role the janitor assumes in each consumer account (janitor).
pub const IN_USE_READER_ROLE: &str = "IN_USE_READER_ROLE";
/// The `sts:ExternalId` the reader roles require (their stack's `ExternalId`); empty for
/// none (janitor).
pub const IN_USE_READER_EXTERNAL_ID: &str = "IN_USE_READER_EXTERNAL_ID";

/// `true`: images Amazon Inspector saw in use (ECS tasks, EKS pods) are kept, as the
/// policy's `protect.inspector` does (janitor).
pub const INSPECTOR_IN_USE: &str = "INSPECTOR_IN_USE";

/// The janitor's own work queue (an SQS FIFO queue URL): where its scheduled sweep
/// sends one message per repository; unset: the sweep runs in one invocation (janitor).
pub const JANITOR_QUEUE_URL: &str = "JANITOR_QUEUE_URL";
/// `per-repository` (default): with `JANITOR_QUEUE_URL` set, the scheduled sweep fans
/// out one repository per invocation; `off`: one invocation sweeps them all (janitor).
pub const JANITOR_FAN_OUT: &str = "JANITOR_FAN_OUT";
/// The values of [`JANITOR_FAN_OUT`].
pub const JANITOR_FAN_OUT_CHOICES: &[&str] = &["per-repository", "off"];
/// `off`, `dry` (survey and report) or `enqueue` (also send the work to the queues)
/// (reconciler).
pub const RECONCILE_MODE: &str = "RECONCILE_MODE";
/// The indexer's work queue (reconciler).
pub const INDEXER_QUEUE_URL: &str = "INDEXER_QUEUE_URL";
/// The stitcher's work queue (reconciler).
pub const STITCHER_QUEUE_URL: &str = "STITCHER_QUEUE_URL";

/// The tag suffix AWS's SOCI Index Builder uses, and our default.
pub const DEFAULT_SOCI_TAG_SUFFIX: &str = "-soci";

/// Every setting the functions read. Defaults are the ones the issues specify.
pub const SETTINGS: &[Setting] = &[
    Setting {
        name: REPOSITORY_TAG_FILTERS,
        default: "*:*",
        kind: Kind::Text,
        functions: &[S, M, J, R],
    },
    Setting {
        name: SOCI_INDEX_VERSION,
        default: "v2",
        kind: Kind::Choice(&["v2", "v1"]),
        functions: &[S, R],
    },
    Setting {
        name: SOCI_TAG_MODE,
        default: "suffix",
        kind: Kind::Choice(&["suffix", "in-place", "none"]),
        functions: &[S, R],
    },
    // The stitcher and the janitor need the suffix too: to recognise the indexer's output.
    Setting {
        name: SOCI_TAG_SUFFIX,
        default: DEFAULT_SOCI_TAG_SUFFIX,
        kind: Kind::Text,
        functions: &[S, M, J, R],
    },
    Setting {
        name: SPAN_SIZE,
        default: "4194304",
        kind: Kind::Size,
        functions: &[S, R],
    },
    Setting {
        name: MIN_LAYER_SIZE,
        default: "10485760",
        kind: Kind::Size,
        functions: &[S, R],
    },
    Setting {
        name: LAYER_CONCURRENCY,
        default: "4",
        kind: Kind::Count,
        functions: &[S],
    },
    // Empty: the function's memory less the process's headroom (src/soci/memory.rs).
    Setting {
        name: MEMORY_BUDGET,
        default: "",
        kind: Kind::Size,
        functions: &[S],
    },
    Setting {
        name: PLATFORMS,
        default: "all",
        kind: Kind::List,
        functions: &[S, R],
    },
    Setting {
        name: ZTOC_CACHE_BUCKET,
        default: "",
        kind: Kind::Text,
        functions: &[S],
    },
    Setting {
        name: SOCI_SKIP_ARCH_TAGS,
        default: "false",
        kind: Kind::Bool,
        functions: &[S, R],
    },
    Setting {
        name: ARCH_TAG_TEMPLATE,
        default: "{tag}-{arch}",
        kind: Kind::Text,
        functions: &[S, M, R],
    },
    Setting {
        name: TARGET_TAG_TEMPLATE,
        default: "{tag}",
        kind: Kind::Text,
        functions: &[M, R],
    },
    Setting {
        name: REQUIRED_PLATFORMS,
        default: "linux/amd64,linux/arm64",
        kind: Kind::List,
        functions: &[M, R],
    },
    Setting {
        name: STITCH_MODE,
        default: "complete",
        kind: Kind::Choice(&["complete", "partial"]),
        functions: &[M, R],
    },
    Setting {
        name: CLEANUP_POLICY,
        default: "",
        kind: Kind::Text,
        functions: &[J],
    },
    Setting {
        name: DRY_RUN,
        default: "true",
        kind: Kind::Bool,
        functions: &[J],
    },
    Setting {
        name: REPORT_BUCKET,
        default: "",
        kind: Kind::Text,
        functions: &[J, R],
    },
    // template.yaml sets these two for the cross-account in-use listing.
    Setting {
        name: CONSUMER_ACCOUNTS,
        default: "",
        kind: Kind::List,
        functions: &[J],
    },
    Setting {
        name: IN_USE_READER_ROLE,
        default: "afterpush-in-use-reader",
        kind: Kind::Text,
        functions: &[J],
    },
    Setting {
        name: IN_USE_READER_EXTERNAL_ID,
        default: "",
        kind: Kind::Text,
        functions: &[J],
    },
    Setting {
        name: INSPECTOR_IN_USE,
        default: "false",
        kind: Kind::Bool,
        functions: &[J],
    },
    // The stack sets the URL to the janitor's queue (a resource, not a parameter).
    Setting {
        name: JANITOR_QUEUE_URL,
        default: "",
        kind: Kind::Text,
        functions: &[J],
    },
    Setting {
        name: JANITOR_FAN_OUT,
        default: "per-repository",
        kind: Kind::Choice(JANITOR_FAN_OUT_CHOICES),
        functions: &[J],
    },
    Setting {
        name: RECONCILE_MODE,
        default: "dry",
        kind: Kind::Choice(&["off", "dry", "enqueue"]),
        functions: &[R],
    },
    // Set by the stack from the queues it creates.
    Setting {
        name: INDEXER_QUEUE_URL,
        default: "",
        kind: Kind::Text,
        functions: &[R],
    },
    Setting {
        name: STITCHER_QUEUE_URL,
        default: "",
        kind: Kind::Text,
        functions: &[R],
    },
];

/// The [`Setting`] called `name`, if it is one of ours.
pub fn setting(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name)
}

/// A setting with a value that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("environment variable {name}={value:?} is invalid: {problem}")]
pub struct SettingsError {
    /// The variable's name.
    pub name: String,
    /// The value it had.
    pub value: String,
    /// Why the value cannot be used.
    pub problem: String,
}

impl SettingsError {
    /// The error for variable `name` holding `value`.
    pub fn new(name: &str, value: &str, problem: impl Into<String>) -> Self {
        Self {
            name: name.to_string(),
            value: value.to_string(),
            problem: problem.into(),
        }
    }
}

/// Where settings come from: the process environment in production, a map in tests (so
/// tests never mutate the process environment, which other test threads share).
pub trait Source {
    /// The value of variable `name`, `None` when unset.
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Source for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<S: std::hash::BuildHasher> Source for std::collections::HashMap<String, String, S> {
    fn get(&self, name: &str) -> Option<String> {
        std::collections::HashMap::get(self, name).cloned()
    }
}

impl Source for std::collections::BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        std::collections::BTreeMap::get(self, name).cloned()
    }
}

/// The trimmed value of `name`; `None` when unset or blank (CloudFormation cannot unset a
/// variable, it can only set it to the empty string, so blank means "use the default").
pub fn value(source: &dyn Source, name: &str) -> Option<String> {
    source
        .get(name)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The value of `name`, or its default from [`SETTINGS`] (empty if it has none).
pub fn value_or_default(source: &dyn Source, name: &str) -> String {
    value(source, name).unwrap_or_else(|| setting(name).map_or("", |s| s.default).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn every_setting_is_declared_once_and_used_by_some_function() {
        let mut names: Vec<_> = SETTINGS.iter().map(|s| s.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "duplicate setting names");
        assert!(SETTINGS.iter().all(|s| !s.functions.is_empty()));
    }

    #[test]
    fn blank_means_default() {
        let mut env = BTreeMap::new();
        env.insert(DRY_RUN.to_string(), "  ".to_string());
        assert_eq!(value(&env, DRY_RUN), None);
        assert_eq!(value_or_default(&env, DRY_RUN), "true");
        env.insert(DRY_RUN.to_string(), " false ".to_string());
        assert_eq!(value_or_default(&env, DRY_RUN), "false");
        assert_eq!(value_or_default(&env, "not-a-setting"), "");
    }

    #[test]
    fn every_default_parses_as_its_kind() {
        for s in SETTINGS {
            if !s.default.is_empty() {
                s.kind
                    .check(s.name, s.default)
                    .unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }

    #[test]
    fn values_are_checked_by_their_settings_kind() {
        let err = check(DRY_RUN, "ture").unwrap_err().to_string();
        assert!(err.contains("DRY_RUN") && err.contains("ture"), "{err}");
        let err = check(SPAN_SIZE, "4M").unwrap_err().to_string();
        assert!(err.contains("SPAN_SIZE"), "{err}");
        let err = check(SOCI_TAG_MODE, "inplace").unwrap_err().to_string();
        assert!(err.contains("in-place"), "{err}");
        check(LAYER_CONCURRENCY, "8").unwrap();
        check(CLEANUP_POLICY, "anything: at all").unwrap();
        check("NOT_A_SETTING", "x").unwrap();
    }
}
