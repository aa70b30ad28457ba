//! Tag templates: `ARCH_TAG_TEMPLATE` (`{tag}-{arch}`, `{tag}-{os}-{arch}{variant}`, ...)
//! names the per-arch tags; `TARGET_TAG_TEMPLATE` (`{tag}`) names the stitched one.
//!
//! Matching a pushed tag against the arch template recovers the base tag and what the
//! tag name claims about the platform. `{os}` and `{arch}` match only GOOS/GOARCH names
//! (the values image configs use), so that `1.2.3-rc1` is not read as architecture
//! `rc1` of `1.2.3`; `{variant}` matches `v<digits>` or nothing.

use super::platform::PlatformSpec;
use super::StitchError;
use regex::Regex;

/// GOARCH values, longest first where one is a prefix of another (the regex takes the
/// first alternative that lets the whole tag match).
const ARCHES: [&str; 16] = [
    "386", "amd64p32", "amd64", "arm64be", "arm64", "armbe", "arm", "loong64", "mips64le",
    "mips64", "mipsle", "mips", "ppc64le", "ppc64", "riscv64", "s390x",
];
const EXTRA_ARCHES: [&str; 1] = ["wasm"];
/// GOOS values.
const OSES: [&str; 16] = [
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "hurd",
    "illumos",
    "ios",
    "js",
    "linux",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "wasip1",
    "windows",
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Tag,
    Os,
    Arch,
    Variant,
}

fn parse_parts(name: &str, template: &str, allowed: &[&str]) -> Result<Vec<Part>, StitchError> {
    let bad = |reason: String| StitchError::InvalidTemplate {
        name: name.to_string(),
        template: template.to_string(),
        reason,
    };
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut rest = template;
    while let Some(c) = rest.chars().next() {
        if c == '{' {
            let end = rest
                .find('}')
                .ok_or_else(|| bad("an unclosed '{'".to_string()))?;
            let placeholder = &rest[1..end];
            if !allowed.contains(&placeholder) {
                return Err(bad(format!(
                    "unknown placeholder {{{placeholder}}} (allowed: {})",
                    allowed
                        .iter()
                        .map(|a| format!("{{{a}}}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                )));
            }
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            let part = match placeholder {
                "tag" => Part::Tag,
                "os" => Part::Os,
                "arch" => Part::Arch,
                _ => Part::Variant,
            };
            if parts.contains(&part) {
                return Err(bad(format!("{{{placeholder}}} appears twice")));
            }
            parts.push(part);
            rest = &rest[end + 1..];
        } else if c == '}' {
            return Err(bad("a '}' without '{'".to_string()));
        } else {
            if !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
                return Err(bad(format!(
                    "{c:?} cannot appear in a tag (allowed: A-Z a-z 0-9 _ . -)"
                )));
            }
            literal.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    if !literal.is_empty() {
        parts.push(Part::Literal(literal));
    }
    if !parts.contains(&Part::Tag) {
        return Err(bad("{tag} is required".to_string()));
    }
    Ok(parts)
}

/// What a per-arch tag's name says about its platform. `os` and `variant` are `None`
/// when the template has no such placeholder (the name then says nothing about them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagPlatformHint {
    /// The OS the tag's `{os}` part names (GOOS).
    pub os: Option<String>,
    /// The architecture the tag's `{arch}` part names (GOARCH).
    pub architecture: String,
    /// `Some(None)`: the template has `{variant}` and the tag has none there.
    pub variant: Option<Option<String>>,
}

impl TagPlatformHint {
    /// True when the platform read from a config agrees with everything the tag name
    /// says. Both sides are normalised first (`arm` = `arm/v7`, `arm64/v8` = `arm64`).
    pub fn agrees_with(&self, platform: &PlatformSpec) -> bool {
        let os = self.os.as_deref().unwrap_or(&platform.os);
        let variant = match &self.variant {
            Some(v) => v.as_deref(),
            None => platform.variant.as_deref(),
        };
        let named = PlatformSpec::new(os, &self.architecture, variant);
        named.os == platform.os
            && named.architecture == platform.architecture
            && (self.variant.is_none() || named.variant == platform.variant)
    }
}

impl std::fmt::Display for TagPlatformHint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}",
            self.os.as_deref().unwrap_or("*"),
            self.architecture
        )?;
        match &self.variant {
            Some(Some(v)) => write!(f, "/{v}"),
            Some(None) => Ok(()),
            None => write!(f, "[/*]"),
        }
    }
}

/// A per-arch tag matched against the template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchTagMatch {
    /// The tag the per-arch tag belongs to (what `{tag}` matched): the stitched index's base.
    pub base_tag: String,
    /// What the tag's name says about its platform.
    pub hint: TagPlatformHint,
}

/// `ARCH_TAG_TEMPLATE`: placeholders `{tag}` (required), `{arch}` (required), `{os}`,
/// `{variant}`.
#[derive(Debug, Clone)]
pub struct ArchTagTemplate {
    raw: String,
    parts: Vec<Part>,
    any_base: Regex,
}

impl PartialEq for ArchTagTemplate {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}

impl ArchTagTemplate {
    /// The default `ARCH_TAG_TEMPLATE`.
    pub const DEFAULT: &'static str = "{tag}-{arch}";

    /// Parses an `ARCH_TAG_TEMPLATE`; an unknown placeholder, an unclosed `{` or a missing `{arch}` is an error.
    pub fn parse(template: &str) -> Result<Self, StitchError> {
        let parts = parse_parts(
            "ARCH_TAG_TEMPLATE",
            template,
            &["tag", "os", "arch", "variant"],
        )?;
        if !parts.contains(&Part::Arch) {
            return Err(StitchError::InvalidTemplate {
                name: "ARCH_TAG_TEMPLATE".to_string(),
                template: template.to_string(),
                reason: "{arch} is required (it tells per-arch tags apart)".to_string(),
            });
        }
        let any_base = Self::regex(&parts, None);
        Ok(Self {
            raw: template.to_string(),
            parts,
            any_base,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    fn regex(parts: &[Part], base: Option<&str>) -> Regex {
        let mut re = String::from("^");
        for part in parts {
            match part {
                Part::Literal(l) => re.push_str(&regex::escape(l)),
                Part::Tag => match base {
                    Some(b) => re.push_str(&format!("(?P<tag>{})", regex::escape(b))),
                    None => re.push_str("(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]*)"),
                },
                Part::Os => re.push_str(&format!("(?P<os>{})", OSES.join("|"))),
                Part::Arch => re.push_str(&format!(
                    "(?P<arch>{}|{})",
                    ARCHES.join("|"),
                    EXTRA_ARCHES.join("|")
                )),
                Part::Variant => re.push_str("(?P<variant>v[0-9]+)?"),
            }
        }
        re.push('$');
        Regex::new(&re).expect("the template regex is built from escaped literals")
    }

    fn hint_of(&self, caps: &regex::Captures<'_>) -> ArchTagMatch {
        ArchTagMatch {
            base_tag: caps["tag"].to_string(),
            hint: TagPlatformHint {
                os: caps.name("os").map(|m| m.as_str().to_string()),
                architecture: caps["arch"].to_string(),
                variant: self
                    .parts
                    .contains(&Part::Variant)
                    .then(|| caps.name("variant").map(|m| m.as_str().to_string())),
            },
        }
    }

    /// Matches any tag against the template (an event's pushed tag).
    pub fn match_tag(&self, tag: &str) -> Option<ArchTagMatch> {
        self.any_base.captures(tag).map(|c| self.hint_of(&c))
    }

    /// A matcher for the per-arch tags of one base tag (the tag list of a repository).
    pub fn matcher_for(&self, base_tag: &str) -> impl Fn(&str) -> Option<ArchTagMatch> + '_ {
        let re = Self::regex(&self.parts, Some(base_tag));
        move |tag| re.captures(tag).map(|c| self.hint_of(&c))
    }

    /// The per-arch tag of `base_tag` for `platform` (variant empty when it has none).
    pub fn render(&self, base_tag: &str, platform: &PlatformSpec) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(l) => out.push_str(l),
                Part::Tag => out.push_str(base_tag),
                Part::Os => out.push_str(&platform.os),
                Part::Arch => out.push_str(&platform.architecture),
                Part::Variant => out.push_str(platform.variant.as_deref().unwrap_or("")),
            }
        }
        out
    }
}

/// `TARGET_TAG_TEMPLATE`: only `{tag}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetTagTemplate {
    raw: String,
    parts: Vec<Part>,
}

impl TargetTagTemplate {
    /// The default `TARGET_TAG_TEMPLATE`.
    pub const DEFAULT: &'static str = "{tag}";

    /// Parses a `TARGET_TAG_TEMPLATE`; any placeholder but `{tag}` is an error.
    pub fn parse(template: &str) -> Result<Self, StitchError> {
        let parts = parse_parts("TARGET_TAG_TEMPLATE", template, &["tag"])?;
        Ok(Self {
            raw: template.to_string(),
            parts,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The target tag for `base_tag`: the template with `{tag}` replaced.
    pub fn render(&self, base_tag: &str) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Literal(l) => l.as_str(),
                _ => base_tag,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::reference::is_valid_tag;
    use proptest::prelude::*;

    fn hint(os: Option<&str>, arch: &str, variant: Option<Option<&str>>) -> TagPlatformHint {
        TagPlatformHint {
            os: os.map(str::to_string),
            architecture: arch.to_string(),
            variant: variant.map(|v| v.map(str::to_string)),
        }
    }

    #[test]
    fn default_template_matches_per_arch_tags_only() {
        let t = ArchTagTemplate::parse(ArchTagTemplate::DEFAULT).unwrap();
        let m = t.match_tag("1.2.3-amd64").unwrap();
        assert_eq!(m.base_tag, "1.2.3");
        assert_eq!(m.hint, hint(None, "amd64", None));
        assert_eq!(
            t.match_tag("1.2.3-rc1-arm64").unwrap().base_tag,
            "1.2.3-rc1"
        );
        assert_eq!(t.match_tag("v2-arm").unwrap().hint.architecture, "arm");
        for not_arch in [
            "1.2.3",
            "1.2.3-rc1",
            "latest",
            "1.2.3-amd64-extra",
            "-amd64",
            "1.2.3-AMD64",
        ] {
            assert_eq!(t.match_tag(not_arch), None, "{not_arch}");
        }
        let only_123 = t.matcher_for("1.2.3");
        assert!(only_123("1.2.3-arm64").is_some());
        assert!(only_123("1.2.3-rc1-arm64").is_none());
        assert!(
            only_123("1x2.3-arm64").is_none(),
            "the base tag is a literal, not a regex"
        );
    }

    #[test]
    fn variant_and_os_placeholders() {
        let t = ArchTagTemplate::parse("{tag}-{os}-{arch}{variant}").unwrap();
        let m = t.match_tag("1.0-linux-armv7").unwrap();
        assert_eq!(m.hint, hint(Some("linux"), "arm", Some(Some("v7"))));
        let m = t.match_tag("1.0-linux-arm64").unwrap();
        assert_eq!(m.hint, hint(Some("linux"), "arm64", Some(None)));
        let m = t.match_tag("1.0-windows-amd64").unwrap();
        assert_eq!(m.hint.os.as_deref(), Some("windows"));
        assert_eq!(
            t.render("1.0", &PlatformSpec::parse("linux/arm/v6").unwrap()),
            "1.0-linux-armv6"
        );
        assert_eq!(
            t.render("1.0", &PlatformSpec::parse("linux/arm64/v8").unwrap()),
            "1.0-linux-arm64"
        );
    }

    #[test]
    fn hints_agree_after_normalisation() {
        let p = |s: &str| PlatformSpec::parse(s).unwrap();
        assert!(hint(None, "arm", None).agrees_with(&p("linux/arm/v6")));
        assert!(hint(None, "arm", Some(None)).agrees_with(&p("linux/arm")));
        assert!(!hint(None, "arm", Some(None)).agrees_with(&p("linux/arm/v6")));
        assert!(hint(None, "arm64", Some(Some("v8"))).agrees_with(&p("linux/arm64")));
        assert!(!hint(None, "amd64", None).agrees_with(&p("linux/arm64")));
        assert!(!hint(Some("windows"), "amd64", None).agrees_with(&p("linux/amd64")));
    }

    #[test]
    fn bad_templates_are_named() {
        for (bad, why) in [
            ("{arch}", "{tag} is required"),
            ("{tag}", "{arch} is required"),
            ("{tag}-{cpu}", "unknown placeholder {cpu}"),
            ("{tag}-{arch", "unclosed"),
            ("{tag}}-{arch}", "without '{'"),
            ("{tag}-{arch}-{arch}", "twice"),
            ("{tag}:{arch}", "cannot appear in a tag"),
        ] {
            let err = ArchTagTemplate::parse(bad).unwrap_err().to_string();
            assert!(err.contains(bad) && err.contains(why), "{bad}: {err}");
        }
        assert!(TargetTagTemplate::parse("{tag}-{arch}").is_err());
        let t = TargetTagTemplate::parse("{tag}-multi").unwrap();
        assert_eq!(t.render("1.2.3"), "1.2.3-multi");
        assert_eq!(TargetTagTemplate::parse("{tag}").unwrap().render("x"), "x");
    }

    fn platform_strategy() -> impl Strategy<Value = PlatformSpec> {
        prop::sample::select(vec![
            "linux/amd64",
            "linux/arm64",
            "linux/arm/v7",
            "linux/arm/v6",
            "linux/arm/v5",
            "linux/386",
            "linux/ppc64le",
            "linux/s390x",
            "linux/riscv64",
            "linux/mips64le",
            "windows/amd64",
            "windows/arm64",
            "freebsd/amd64",
            "linux/amd64/v3",
        ])
        .prop_map(|s| PlatformSpec::parse(s).unwrap())
    }

    proptest! {
        /// render then match gives back the base tag and a hint that agrees with the
        /// platform, for every template shape and base tag.
        #[test]
        fn render_then_match_round_trips(
            base in "[A-Za-z0-9_][A-Za-z0-9_.-]{0,30}",
            platform in platform_strategy(),
            template in prop::sample::select(vec![
                "{tag}-{arch}", "{tag}-{os}-{arch}{variant}", "{tag}_{arch}-{variant}",
                "{arch}-{tag}", "{tag}-{os}-{arch}", "{tag}.{arch}{variant}", "{os}{arch}{variant}{tag}",
            ]),
        ) {
            let t = ArchTagTemplate::parse(template).unwrap();
            let tag = t.render(&base, &platform);
            let m = t.matcher_for(&base)(&tag);
            prop_assert!(m.is_some(), "{} did not match {}", tag, template);
            let m = m.unwrap();
            prop_assert_eq!(&m.base_tag, &base);
            prop_assert!(m.hint.agrees_with(&platform), "{} vs {}", m.hint, platform);
            if is_valid_tag(&tag) && template == "{tag}-{arch}" {
                let any = t.match_tag(&tag).unwrap();
                prop_assert!(any.hint.agrees_with(&platform));
            }
        }

        /// A tag whose name is not the template's shape never matches the exact base.
        #[test]
        fn base_tags_never_match_themselves(base in "[A-Za-z0-9_][A-Za-z0-9_.-]{0,30}") {
            let t = ArchTagTemplate::parse(ArchTagTemplate::DEFAULT).unwrap();
            prop_assert!(t.matcher_for(&base)(&base).is_none());
        }
    }
}
