//! Logging for the functions and the CLI: JSON lines in Lambda (CloudWatch Logs Insights
//! can query their fields), human-readable lines on a terminal.

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Output format of the log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line on stdout (Lambda, CloudWatch Logs Insights).
    Json,
    /// Plain text lines on stderr (terminals, the CLI).
    Human,
}

/// What [`init_tracing`] sets up, derived from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// JSON or human-readable lines.
    pub format: LogFormat,
    /// An `EnvFilter` directive string.
    pub filter: String,
}

impl LogSettings {
    /// JSON when running in Lambda (`AWS_LAMBDA_FUNCTION_NAME` set) or when
    /// `AWS_LAMBDA_LOG_FORMAT=JSON` (the function's `LoggingConfig.LogFormat`); the filter
    /// is `RUST_LOG` if set, else Lambda's `AWS_LAMBDA_LOG_LEVEL` (the function's
    /// `ApplicationLogLevel`, mapped to tracing levels), else `info`.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Self {
        let set = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let format = if set("AWS_LAMBDA_FUNCTION_NAME").is_some()
            || set("AWS_LAMBDA_LOG_FORMAT").is_some_and(|f| f.trim().eq_ignore_ascii_case("json"))
        {
            LogFormat::Json
        } else {
            LogFormat::Human
        };
        let filter = set("RUST_LOG")
            .or_else(|| {
                set("AWS_LAMBDA_LOG_LEVEL").map(|level| {
                    match level.trim().to_ascii_uppercase().as_str() {
                        "TRACE" => "trace",
                        "DEBUG" => "debug",
                        "WARN" => "warn",
                        // Lambda's FATAL has no tracing counterpart: error is the closest.
                        "ERROR" | "FATAL" => "error",
                        _ => "info",
                    }
                    .to_string()
                })
            })
            .unwrap_or_else(|| "info".to_string());
        Self { format, filter }
    }

    /// The CLI's: human lines on stderr, `RUST_LOG` if set, else only warnings (a
    /// retried request, a failed clean-up): a command prints its results, not its steps.
    pub fn for_cli(get: impl Fn(&str) -> Option<String>) -> Self {
        Self {
            format: LogFormat::Human,
            filter: get("RUST_LOG")
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| "warn".to_string()),
        }
    }
}

/// Installs the global tracing subscriber for a function or the CLI (see
/// [`LogSettings::from_env`]). Calling it again is harmless (the first call wins). An
/// invalid `RUST_LOG` falls back to `info` with a warning instead of failing start-up.
pub fn init_tracing() {
    install(LogSettings::from_env(|name| std::env::var(name).ok()));
}

/// [`init_tracing`] for the CLI (see [`LogSettings::for_cli`]), `invoke` included.
pub fn init_cli_tracing() {
    install(LogSettings::for_cli(|name| std::env::var(name).ok()));
}

fn install(settings: LogSettings) {
    let (filter, bad_filter) = match EnvFilter::try_new(&settings.filter) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info"), Some(e)),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let installed = match settings.format {
        // Lambda stamps each line itself; the request id comes from lambda_runtime's span.
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_ansi(false)
            .with_writer(std::io::stdout)
            .try_init(),
        // stderr: the CLI's stdout carries results (JSON plans, indexes). Colours only
        // on a terminal: piped or captured logs (CI, files, Lambda's Text format) get
        // no escape codes.
        LogFormat::Human => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .try_init(),
    };
    if let (Ok(()), Some(e)) = (installed, bad_filter) {
        tracing::warn!(filter = %settings.filter, error = %e, "invalid log filter, using info");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> LogSettings {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        LogSettings::from_env(|k| map.get(k).cloned())
    }

    #[test]
    fn json_in_lambda_human_elsewhere() {
        assert_eq!(settings(&[]).format, LogFormat::Human);
        assert_eq!(
            settings(&[("AWS_LAMBDA_FUNCTION_NAME", "soci-indexer")]).format,
            LogFormat::Json
        );
        assert_eq!(
            settings(&[("AWS_LAMBDA_LOG_FORMAT", "JSON")]).format,
            LogFormat::Json
        );
        assert_eq!(
            settings(&[("AWS_LAMBDA_LOG_FORMAT", "Text")]).format,
            LogFormat::Human
        );
    }

    #[test]
    fn the_cli_logs_warnings_unless_rust_log_says_otherwise() {
        let cli = |vars: &[(&str, &str)]| {
            let map: HashMap<String, String> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            LogSettings::for_cli(|k| map.get(k).cloned())
        };
        assert_eq!(
            cli(&[("AWS_LAMBDA_FUNCTION_NAME", "x")]),
            LogSettings {
                format: LogFormat::Human,
                filter: "warn".into()
            }
        );
        assert_eq!(
            cli(&[("RUST_LOG", "afterpush=debug")]).filter,
            "afterpush=debug"
        );
    }

    #[test]
    fn rust_log_wins_then_lambda_level_then_info() {
        assert_eq!(settings(&[]).filter, "info");
        assert_eq!(
            settings(&[("AWS_LAMBDA_LOG_LEVEL", "DEBUG")]).filter,
            "debug"
        );
        assert_eq!(
            settings(&[("AWS_LAMBDA_LOG_LEVEL", "FATAL")]).filter,
            "error"
        );
        assert_eq!(
            settings(&[
                ("AWS_LAMBDA_LOG_LEVEL", "DEBUG"),
                ("RUST_LOG", "afterpush=trace")
            ])
            .filter,
            "afterpush=trace"
        );
    }
}
