//! One parser per kind of setting value (boolean, size, duration, count, list, choice),
//! shared by every reader of the environment and by the CLI's flags of the same names.
//! Every error names the variable and its value; nothing unreadable is taken for a default.

use super::SettingsError;
use std::time::Duration;

/// A boolean: `true/false`, `1/0`, `yes/no`, `on/off` (any case). Anything else, a typo
/// such as `ture` included, is an error.
pub fn parse_bool(name: &str, raw: &str) -> Result<bool, SettingsError> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(SettingsError::new(
            name,
            raw,
            "expected true or false (or 1/0, yes/no, on/off)",
        )),
    }
}

/// A byte size: a number of bytes, or a whole number with a unit as the README writes
/// them: `KiB`/`MiB`/`GiB`/`TiB` (powers of 1024) or `KB`/`MB`/`GB`/`TB` (powers of
/// 1000), any case, e.g. `4MiB`, `10485760`. A bare `K`/`M`/`G` is refused as ambiguous.
pub fn parse_size(name: &str, raw: &str) -> Result<u64, SettingsError> {
    let text = raw.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits.parse().map_err(|_| {
        SettingsError::new(
            name,
            raw,
            "expected a number of bytes, e.g. 4194304 or 4MiB",
        )
    })?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "k" | "m" | "g" | "t" => {
            return Err(SettingsError::new(
                name,
                raw,
                format!(
                    "ambiguous unit {:?}: write {0}iB (powers of 1024) or {0}B (powers of 1000)",
                    unit.trim().to_ascii_uppercase()
                ),
            ))
        }
        other => {
            return Err(SettingsError::new(
                name,
                raw,
                format!("unknown unit {other:?} (use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)"),
            ))
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| SettingsError::new(name, raw, "too large"))
}

/// A duration as humantime reads it: `30s`, `2m`, `1h 30m`, `14d`.
pub fn parse_duration(name: &str, raw: &str) -> Result<Duration, SettingsError> {
    humantime::parse_duration(raw.trim()).map_err(|e| {
        SettingsError::new(
            name,
            raw,
            format!("expected a duration, e.g. 30s, 2m, 14d: {e}"),
        )
    })
}

/// A whole number within `range` (e.g. `LAYER_CONCURRENCY`, 1 to 64).
pub fn parse_count(
    name: &str,
    raw: &str,
    range: std::ops::RangeInclusive<usize>,
) -> Result<usize, SettingsError> {
    raw.trim()
        .parse::<usize>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            SettingsError::new(
                name,
                raw,
                format!(
                    "expected a whole number from {} to {}",
                    range.start(),
                    range.end()
                ),
            )
        })
}

/// A positive count (a whole number ≥ 1).
pub fn parse_positive(name: &str, raw: &str) -> Result<usize, SettingsError> {
    match raw.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(SettingsError::new(name, raw, "expected a whole number ≥ 1")),
    }
}

/// A comma-separated list, entries trimmed, empty entries dropped.
pub fn parse_list(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// One of `allowed`, in any case (`V2` is `v2`); returns the value as `allowed` writes it.
pub fn parse_choice<'a>(
    name: &str,
    raw: &str,
    allowed: &[&'a str],
) -> Result<&'a str, SettingsError> {
    let raw_trimmed = raw.trim();
    allowed
        .iter()
        .copied()
        .find(|a| a.eq_ignore_ascii_case(raw_trimmed))
        .ok_or_else(|| {
            SettingsError::new(name, raw, format!("expected one of {}", allowed.join(", ")))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_binary_and_decimal_units_as_the_readme_writes_them() {
        let size = |raw: &str| parse_size("SPAN_SIZE", raw);
        assert_eq!(size("4194304"), Ok(4 << 20));
        assert_eq!(size("4MiB"), Ok(4 << 20));
        assert_eq!(size("4 mib"), Ok(4 << 20));
        assert_eq!(size("1 GiB"), Ok(1 << 30));
        assert_eq!(size("10 MB"), Ok(10_000_000));
        assert_eq!(size("2KB"), Ok(2_000));
        assert_eq!(size("3B"), Ok(3));
        for bad in ["4M", "10k", "1G"] {
            let err = size(bad).unwrap_err();
            assert!(err.problem.contains("ambiguous"), "{err}");
        }
        for bad in ["ten", "", "4PiB", "-1MiB", "1.5MiB", "99999999999999999999"] {
            let err = size(bad).unwrap_err().to_string();
            assert!(err.contains("SPAN_SIZE"), "{err}");
        }
        assert!(size("18446744073709551615GiB")
            .unwrap_err()
            .problem
            .contains("too large"));
    }

    #[test]
    fn a_typo_in_a_boolean_is_an_error_naming_the_variable() {
        for yes in ["true", "TRUE", "1", "yes", "on", " On "] {
            assert_eq!(parse_bool("DRY_RUN", yes), Ok(true), "{yes}");
        }
        for no in ["false", "False", "0", "no", "off"] {
            assert_eq!(parse_bool("DRY_RUN", no), Ok(false), "{no}");
        }
        for typo in ["ture", "flase", "", "maybe", "2"] {
            let err = parse_bool("DRY_RUN", typo).unwrap_err().to_string();
            assert!(err.contains("DRY_RUN"), "{err}");
        }
    }

    #[test]
    fn durations_counts_lists_and_choices() {
        assert_eq!(
            parse_duration("AFTERPUSH_DEADLINE_MARGIN", "2m"),
            Ok(Duration::from_secs(120))
        );
        let err = parse_duration("AFTERPUSH_DEADLINE_MARGIN", "soon")
            .unwrap_err()
            .to_string();
        assert!(err.contains("AFTERPUSH_DEADLINE_MARGIN"), "{err}");
        assert_eq!(parse_count("LAYER_CONCURRENCY", "64", 1..=64), Ok(64));
        let err = parse_count("LAYER_CONCURRENCY", "65", 1..=64).unwrap_err();
        assert!(err.problem.contains("1 to 64"), "{err}");
        assert_eq!(parse_positive("X", "8"), Ok(8));
        assert!(parse_positive("X", "0").is_err());
        assert_eq!(parse_list(" a, ,b ,"), vec!["a", "b"]);
        assert_eq!(parse_choice("V", "v1", &["v2", "v1"]), Ok("v1"));
        assert_eq!(parse_choice("V", " V2 ", &["v2", "v1"]), Ok("v2"));
        let err = parse_choice("V", "v3", &["v2", "v1"]).unwrap_err();
        assert!(err.to_string().contains("v2, v1"), "{err}");
    }
}
