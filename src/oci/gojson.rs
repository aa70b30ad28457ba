//! Manifests as Go's `encoding/json` writes `image-spec`'s structs: the field order of
//! `ocispec.Manifest`, `ocispec.Index`, `ocispec.Descriptor` and `ocispec.Platform`,
//! maps with sorted keys, compact output, and Go's HTML-safe string escaping.
//!
//! soci-snapshotter, buildx and most registries' tooling are Go: writing the same bytes
//! they would write makes our digests equal theirs for the same content (a cheap and
//! strong conformance check), and keeps our own output deterministic.
//! The same structs also read the image manifests and indexes the SOCI indexer rewrites
//! (unknown fields are dropped, which is what Go's decoder into these structs does too).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;

/// `ocispec.Descriptor`, in Go field order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GoDescriptor {
    /// `mediaType` of the content described.
    pub media_type: String,
    /// `digest` of the content described (`sha256:<hex>`).
    pub digest: String,
    /// `size` of the content described, in bytes.
    pub size: u64,
    /// `urls` the content may also be fetched from (omitted when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// `annotations`, written with sorted keys (omitted when empty).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// `data`: the content itself, base64-encoded, when embedded (omitted when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// `platform` of an index entry (omitted when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<GoPlatform>,
    /// `artifactType` of the manifest described (omitted when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

/// `ocispec.Platform`, in Go field order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GoPlatform {
    /// `architecture`, as Go's GOARCH names it (`amd64`, `arm64`...).
    pub architecture: String,
    /// `os`, as Go's GOOS names it (`linux`, `windows`...).
    pub os: String,
    /// `os.version` (Windows images).
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    /// `os.features` (Windows images).
    #[serde(rename = "os.features", default, skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
    /// `variant` of the architecture (`v7`, `v8`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl GoPlatform {
    /// `os/arch[/variant]`, the usual short form.
    pub fn short(&self) -> String {
        match &self.variant {
            Some(v) if !v.is_empty() => format!("{}/{}/{}", self.os, self.architecture, v),
            _ => format!("{}/{}", self.os, self.architecture),
        }
    }
}

/// `ocispec.Manifest` (also reads Docker v2 schema 2 manifests, which share the shape).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GoManifest {
    /// `schemaVersion`: always 2.
    pub schema_version: u32,
    /// `mediaType` (omitted when absent, as in some older manifests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// `artifactType` (OCI 1.1 artifacts; omitted when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// `config`: the image config, or an artifact's config (a SOCI index's `{}`).
    pub config: GoDescriptor,
    /// `layers`, in order (written even when empty).
    #[serde(default)]
    pub layers: Vec<GoDescriptor>,
    /// `subject`: the manifest this one refers to (SOCI v1 indexes, signatures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<GoDescriptor>,
    /// `annotations`, written with sorted keys (omitted when empty).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// `ocispec.Index` (also reads Docker manifest lists).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GoIndex {
    /// `schemaVersion`: always 2.
    pub schema_version: u32,
    /// `mediaType` (omitted when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// `artifactType` (omitted when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// `manifests`: the platform manifests and attached artifacts, in order.
    #[serde(default)]
    pub manifests: Vec<GoDescriptor>,
    /// `subject`: the manifest this index refers to (omitted when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<GoDescriptor>,
    /// `annotations`, written with sorted keys (omitted when empty).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Serialises like Go's `json.Marshal`: compact, struct fields in declaration order,
/// and strings escaped as Go (1.22 and later) does: `<`, `>`, `&`, U+2028 and U+2029 as
/// `\u003c`, `\u003e`, `\u0026`, `\u2028`, `\u2029`; `\b`, `\f`, `\n`, `\r`, `\t` as
/// those short escapes; every other control character below U+0020 as `\u00XX`; DEL
/// (U+007F) and `/` as they are.
pub fn to_go_json<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, GoFormatter);
    value
        .serialize(&mut ser)
        .expect("serialising plain structs to memory cannot fail");
    out
}

struct GoFormatter;

impl serde_json::ser::Formatter for GoFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let escape = match c {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            writer.write_all(&fragment.as_bytes()[start..i])?;
            writer.write_all(escape.as_bytes())?;
            start = i + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }

    fn write_char_escape<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        escape: serde_json::ser::CharEscape,
    ) -> io::Result<()> {
        use serde_json::ser::CharEscape::*;
        let s: String = match escape {
            Quote => "\\\"".into(),
            ReverseSolidus => "\\\\".into(),
            LineFeed => "\\n".into(),
            CarriageReturn => "\\r".into(),
            Tab => "\\t".into(),
            // Go has written these two short forms since 1.22 (before: `\u0008`, `\u000c`).
            Backspace => "\\b".into(),
            FormFeed => "\\f".into(),
            Solidus => "/".into(),
            AsciiControl(b) => format!("\\u{:04x}", b),
        };
        writer.write_all(s.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_go_field_order_and_escaping() {
        let mut d = GoDescriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: "sha256:aa".into(),
            size: 7,
            platform: Some(GoPlatform {
                architecture: "arm".into(),
                os: "linux".into(),
                variant: Some("v7".into()),
                ..Default::default()
            }),
            artifact_type: Some("application/vnd.amazon.soci.index.v2+json".into()),
            ..Default::default()
        };
        d.annotations.insert("z".into(), "a<b>&c\u{8}".into());
        d.annotations.insert("a".into(), "1".into());
        let json = String::from_utf8(to_go_json(&d)).unwrap();
        assert_eq!(
            json,
            r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:aa","size":7,"annotations":{"a":"1","z":"a\u003cb\u003e\u0026c\b"},"platform":{"architecture":"arm","os":"linux","variant":"v7"},"artifactType":"application/vnd.amazon.soci.index.v2+json"}"#
        );
        let back: GoDescriptor = serde_json::from_str(&json).unwrap();
        assert_eq!(back, d);
    }

    /// The expected bytes are what Go 1.27.3 (linux/amd64) printed for a program that
    /// runs `json.Marshal` on each input string and prints the result with `%s`:
    ///
    /// ```text
    /// for _, s := range []string{"\b", "\f", "\n\r\t", "\x00\x01\x1f\x7f", "<>&",
    ///     "\u2028\u2029", "\"\\/", "é€😀"} {
    ///     b, _ := json.Marshal(s)
    ///     fmt.Printf("%s\n", b)
    /// }
    /// ```
    ///
    /// Go also turns each byte of invalid UTF-8 into U+FFFD; a Rust `&str` cannot hold
    /// invalid UTF-8, so that case cannot reach this encoder.
    #[test]
    fn escapes_strings_as_go_json_marshal_does() {
        let cases: [(&str, &[u8]); 8] = [
            ("\u{8}", br#""\b""#),
            ("\u{c}", br#""\f""#),
            ("\n\r\t", br#""\n\r\t""#),
            ("\u{0}\u{1}\u{1f}\u{7f}", b"\"\\u0000\\u0001\\u001f\x7f\""),
            ("<>&", br#""\u003c\u003e\u0026""#),
            ("\u{2028}\u{2029}", br#""\u2028\u2029""#),
            ("\"\\/", br#""\"\\/""#),
            ("é€😀", "\"é€😀\"".as_bytes()),
        ];
        for (input, go_wrote) in cases {
            assert_eq!(
                to_go_json(&input),
                go_wrote,
                "{input:?}: ours {:?}, Go's {:?}",
                String::from_utf8_lossy(&to_go_json(&input)),
                String::from_utf8_lossy(go_wrote)
            );
        }
    }

    #[test]
    fn manifest_keeps_empty_layers_and_drops_unknown_fields() {
        let m: GoManifest = serde_json::from_str(r#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:b","size":2},"extra":1}"#).unwrap();
        assert_eq!(
            String::from_utf8(to_go_json(&m)).unwrap(),
            r#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:b","size":2},"layers":[]}"#
        );
    }
}
