//! The cache janitor's settings: the cleanup policy, `DRY_RUN`, where reports go, the
//! consumer accounts, and whether and through which queue the scheduled sweep fans out.

use crate::cleanup::policy::Policy;
use crate::cleanup::JanitorError;
use crate::settings::{JANITOR_FAN_OUT, JANITOR_FAN_OUT_CHOICES, JANITOR_QUEUE_URL, REPORT_BUCKET};

/// `JANITOR_FAN_OUT`: whether the scheduled sweep fans out when the janitor has a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FanOutMode {
    /// One repository per invocation, through `JANITOR_QUEUE_URL` (the default; without
    /// a queue URL the sweep runs whole, as before).
    #[default]
    PerRepository,
    /// One invocation sweeps every repository.
    Off,
}

impl FanOutMode {
    /// From `JANITOR_FAN_OUT` (unset or blank: the default).
    pub fn parse(raw: Option<&str>) -> Result<Self, JanitorError> {
        let Some(raw) = raw.filter(|v| !v.trim().is_empty()) else {
            return Ok(Self::default());
        };
        match crate::settings::parse_choice(JANITOR_FAN_OUT, raw, JANITOR_FAN_OUT_CHOICES) {
            Ok("off") => Ok(FanOutMode::Off),
            Ok(_) => Ok(FanOutMode::PerRepository),
            Err(e) => Err(JanitorError::Settings {
                var: JANITOR_FAN_OUT,
                message: format!("{raw:?}: {}", e.problem),
            }),
        }
    }
}

/// What the Lambda reads from its environment.
#[derive(Debug, Clone)]
pub struct JanitorSettings {
    /// The cleanup policy, from `CLEANUP_POLICY` (or `AFTERPUSH_CLEANUP_POLICY_FILE`).
    pub policy: Policy,
    /// `DRY_RUN`, true unless set to false/0/no/off.
    pub dry_run: bool,
    /// `REPORT_BUCKET`: a JSON report object per run goes there.
    pub report_bucket: Option<String>,
    /// `AFTERPUSH_REPORT_PREFIX`, default `cache-janitor/`.
    pub report_prefix: String,
    /// `CONSUMER_ACCOUNTS` and `IN_USE_READER_ROLE`: the other accounts whose ECS and
    /// Lambda are listed, and the role assumed in each.
    pub consumers: crate::catalog::consumer_accounts::ConsumerAccounts,
    /// `JANITOR_FAN_OUT`: whether the scheduled sweep fans out when there is a queue.
    pub fan_out: FanOutMode,
    /// `JANITOR_QUEUE_URL`: the janitor's own work queue.
    pub queue_url: Option<String>,
}

impl JanitorSettings {
    /// From `CLEANUP_POLICY` (inline YAML/JSON) or `AFTERPUSH_CLEANUP_POLICY_FILE`, `DRY_RUN`, `REPORT_BUCKET`,
    /// `AFTERPUSH_REPORT_PREFIX`.
    pub fn from_env() -> Result<Self, JanitorError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// As [`Self::from_env`], reading variables through `get` (testable).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, JanitorError> {
        let policy = match (get("CLEANUP_POLICY"), get("AFTERPUSH_CLEANUP_POLICY_FILE")) {
            (Some(text), None) => Policy::parse(&text).map_err(|e| JanitorError::Settings {
                var: "CLEANUP_POLICY",
                message: e.to_string(),
            })?,
            (None, Some(path)) => {
                Policy::load(std::path::Path::new(&path)).map_err(|e| JanitorError::Settings {
                    var: "AFTERPUSH_CLEANUP_POLICY_FILE",
                    message: e.to_string(),
                })?
            }
            (Some(_), Some(_)) => {
                return Err(JanitorError::Settings {
                    var: "CLEANUP_POLICY",
                    message: "set CLEANUP_POLICY or AFTERPUSH_CLEANUP_POLICY_FILE, not both".into(),
                })
            }
            (None, None) => {
                return Err(JanitorError::Settings {
                    var: "CLEANUP_POLICY",
                    message: "neither CLEANUP_POLICY nor AFTERPUSH_CLEANUP_POLICY_FILE is set"
                        .into(),
                })
            }
        };
        let mut policy = policy;
        if let Some(v) = get(crate::settings::INSPECTOR_IN_USE).filter(|v| !v.trim().is_empty()) {
            // On here, or in the policy: either turns the Inspector source on.
            policy.protect.inspector |=
                crate::settings::parse_bool(crate::settings::INSPECTOR_IN_USE, &v).map_err(
                    |e| JanitorError::Settings {
                        var: crate::settings::INSPECTOR_IN_USE,
                        message: format!("{v:?}: {}", e.problem),
                    },
                )?;
        }
        let dry_run = match get("DRY_RUN").filter(|v| !v.trim().is_empty()) {
            None => true,
            Some(v) => {
                crate::settings::parse_bool("DRY_RUN", &v).map_err(|e| JanitorError::Settings {
                    var: "DRY_RUN",
                    message: format!("{v:?}: {}", e.problem),
                })?
            }
        };
        let consumers = crate::catalog::consumer_accounts::ConsumerAccounts::parse(
            &get(crate::settings::CONSUMER_ACCOUNTS).unwrap_or_default(),
            &get(crate::settings::IN_USE_READER_ROLE).unwrap_or_default(),
        )
        .and_then(|c| {
            c.with_external_id(&get(crate::settings::IN_USE_READER_EXTERNAL_ID).unwrap_or_default())
        })
        .map_err(|e| JanitorError::Settings {
            var: [
                crate::settings::IN_USE_READER_ROLE,
                crate::settings::IN_USE_READER_EXTERNAL_ID,
            ]
            .into_iter()
            .find(|v| *v == e.name)
            .unwrap_or(crate::settings::CONSUMER_ACCOUNTS),
            message: format!("{:?}: {}", e.value, e.problem),
        })?;
        let fan_out = FanOutMode::parse(get(crate::settings::JANITOR_FAN_OUT).as_deref())?;
        Ok(JanitorSettings {
            fan_out,
            queue_url: get(crate::settings::JANITOR_QUEUE_URL)
                .map(|u| u.trim().to_string())
                .filter(|u| !u.is_empty()),
            consumers,
            policy,
            dry_run,
            report_bucket: get("REPORT_BUCKET").filter(|b| !b.is_empty()),
            report_prefix: get("AFTERPUSH_REPORT_PREFIX")
                .unwrap_or_else(|| "cache-janitor/".into()),
        })
    }
}

impl JanitorSettings {
    /// The queue the scheduled sweep fans out through, from `JANITOR_FAN_OUT`,
    /// `JANITOR_QUEUE_URL` and `REPORT_BUCKET`: `None` when the sweep runs whole.
    pub fn fan_out_queue_url(&self) -> Result<Option<&str>, JanitorError> {
        let url = match (self.fan_out, self.queue_url.as_deref()) {
            (FanOutMode::PerRepository, Some(url)) => url,
            _ => return Ok(None),
        };
        if self.report_bucket.is_none() {
            return Err(JanitorError::Settings {
                var: REPORT_BUCKET,
                message: format!(
                    "{JANITOR_QUEUE_URL} is set and {JANITOR_FAN_OUT} is per-repository, but a \
                     sweep that fans out keeps its manifest and parts in the report bucket: set \
                     {REPORT_BUCKET}, or {JANITOR_FAN_OUT}=off"
                ),
            });
        }
        Ok(Some(url))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mode_defaults_to_per_repository_and_names_a_bad_value() {
        assert_eq!(FanOutMode::parse(None).unwrap(), FanOutMode::PerRepository);
        assert_eq!(
            FanOutMode::parse(Some(" ")).unwrap(),
            FanOutMode::PerRepository
        );
        assert_eq!(FanOutMode::parse(Some("off")).unwrap(), FanOutMode::Off);
        assert_eq!(
            FanOutMode::parse(Some("Per-Repository")).unwrap(),
            FanOutMode::PerRepository
        );
        let err = FanOutMode::parse(Some("sometimes"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "setting JANITOR_FAN_OUT: \"sometimes\": expected one of per-repository, off"
        );
    }
}
