//! Where a registry may send us: redirects (blob downloads go to storage hosts) and
//! upload `Location`s, both named by the registry or by anyone between us and a
//! registry reached over plain HTTP.
//!
//! The rule ([`check_redirect`]): http(s) only; plain HTTP only where registries may use
//! it (loopback, or anywhere with `AFTERPUSH_REGISTRY_INSECURE`); never to a
//! link-local or cloud-metadata address unless the registry itself is that host, and
//! never to a loopback or private address unless the registry itself is on one. The
//! check runs before any connection is made. At most [`MAX_REDIRECTS`] hops are
//! followed. Credentials are a separate matter: they go only to the registry's own
//! origin (reqwest drops `Authorization` on a redirect to another host, and upload
//! `Location`s on another origin get none; see `client.rs`).
//!
//! Host names are classified as written: a public name that resolves to a private
//! address is not caught here (that would need our own resolver).

use super::plain_http::plain_http_allowed;
use super::plain_http::ENV_INSECURE;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use url::{Host, Url};

/// Redirect hops followed per request (storage redirects take one or two).
pub const MAX_REDIRECTS: usize = 5;

/// What kind of address a URL's host is, as far as where we may be sent goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostClass {
    Public,
    Loopback,
    /// RFC 1918 / unique local / carrier-grade NAT addresses.
    Private,
    /// Link-local addresses (169.254/16, fe80::/10) and cloud metadata names: the
    /// instance metadata service lives there.
    LinkLocalOrMetadata,
    /// 0.0.0.0, ::, broadcast, multicast, documentation ranges: nothing to go to.
    Unusable,
}

fn classify_v4(ip: Ipv4Addr) -> HostClass {
    let o = ip.octets();
    if ip.is_loopback() {
        HostClass::Loopback
    } else if ip.is_link_local() {
        HostClass::LinkLocalOrMetadata
    } else if ip.is_private() || (o[0] == 100 && (64..128).contains(&o[1])) {
        HostClass::Private
    } else if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || o[0] == 0 {
        HostClass::Unusable
    } else {
        HostClass::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> HostClass {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let first = ip.segments()[0];
    if ip.is_loopback() {
        HostClass::Loopback
    } else if first & 0xffc0 == 0xfe80 {
        HostClass::LinkLocalOrMetadata
    } else if first & 0xfe00 == 0xfc00 {
        // Unique local, AWS's IPv6 metadata endpoint (fd00:ec2::254) among them.
        if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
            HostClass::LinkLocalOrMetadata
        } else {
            HostClass::Private
        }
    } else if ip.is_unspecified() || ip.is_multicast() {
        HostClass::Unusable
    } else {
        HostClass::Public
    }
}

fn classify(url: &Url) -> HostClass {
    match url.host() {
        Some(Host::Ipv4(ip)) => classify_v4(ip),
        Some(Host::Ipv6(ip)) => classify_v6(ip),
        Some(Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if name == "localhost" || name.ends_with(".localhost") {
                HostClass::Loopback
            } else if name == "metadata"
                || name == "metadata.google.internal"
                || name == "instance-data"
                || name.starts_with("instance-data.")
            {
                HostClass::LinkLocalOrMetadata
            } else if let Ok(ip) = name.parse::<IpAddr>() {
                match ip {
                    IpAddr::V4(v4) => classify_v4(v4),
                    IpAddr::V6(v6) => classify_v6(v6),
                }
            } else {
                HostClass::Public
            }
        }
        None => HostClass::Unusable,
    }
}

/// Whether the registry at `registry` (the URL first asked) may send us to `target`
/// (see the module docs). The error names the target and the rule.
pub fn check_redirect(
    target: &Url,
    registry: &Url,
    allow_insecure_http: bool,
) -> Result<(), String> {
    if !matches!(target.scheme(), "http" | "https") || target.host_str().is_none() {
        return Err(format!(
            "redirect to {target} refused: not an http:// or https:// URL with a host"
        ));
    }
    if !plain_http_allowed(target, allow_insecure_http) {
        return Err(format!(
            "redirect to {target} refused: plain HTTP to a host other than loopback (allowed only with {ENV_INSECURE}=true)"
        ));
    }
    let same_host = target.host() == registry.host();
    let allowed = match classify(target) {
        HostClass::Public => true,
        HostClass::Unusable => false,
        HostClass::LinkLocalOrMetadata => same_host,
        class => same_host || classify(registry) == class,
    };
    if allowed {
        Ok(())
    } else {
        Err(format!(
            "redirect to {target} refused: a link-local, metadata, loopback or private address that the registry at {} is not on",
            registry.origin().ascii_serialization()
        ))
    }
}

/// The redirect policy of the registry HTTP client: [`check_redirect`] against the
/// URL first asked, at most [`MAX_REDIRECTS`] hops.
pub(super) fn policy(allow_insecure_http: bool) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            let message = format!(
                "redirect to {} refused: more than {MAX_REDIRECTS} redirects",
                attempt.url()
            );
            return attempt.error(message);
        }
        let Some(first) = attempt.previous().first().cloned() else {
            return attempt.follow();
        };
        match check_redirect(attempt.url(), &first, allow_insecure_http) {
            Ok(()) => attempt.follow(),
            Err(message) => attempt.error(message),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rstest::rstest]
    // Storage on a public host, over HTTPS: the usual case.
    #[case(
        "https://storage.example.com/blob",
        "https://registry.example.com/v2/",
        false,
        true
    )]
    // The metadata service: never, whatever the registry and the insecure setting.
    #[case(
        "http://169.254.169.254/latest/meta-data/",
        "https://registry.example.com/v2/",
        true,
        false
    )]
    #[case(
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:5000/v2/",
        true,
        false
    )]
    #[case(
        "https://169.254.169.254/latest/meta-data/",
        "https://registry.example.com/v2/",
        false,
        false
    )]
    #[case(
        "http://[fd00:ec2::254]/latest/",
        "http://10.0.0.5:5000/v2/",
        true,
        false
    )]
    #[case(
        "http://metadata.google.internal/computeMetadata/v1/",
        "https://registry.example.com/v2/",
        true,
        false
    )]
    #[case("http://[fe80::1]/x", "https://registry.example.com/v2/", true, false)]
    // Plain HTTP to a public host: only with the insecure setting.
    #[case(
        "http://storage.example.com/blob",
        "https://registry.example.com/v2/",
        false,
        false
    )]
    #[case(
        "http://storage.example.com/blob",
        "http://registry.example.com/v2/",
        true,
        true
    )]
    // Private and loopback targets only from a registry that is itself there.
    #[case(
        "https://10.1.2.3/blob",
        "https://registry.example.com/v2/",
        false,
        false
    )]
    #[case("https://192.168.1.1/blob", "https://10.0.0.5/v2/", false, true)]
    #[case(
        "http://127.0.0.1:6000/blob",
        "https://registry.example.com/v2/",
        false,
        false
    )]
    #[case("http://127.0.0.1:6000/blob", "http://127.0.0.1:5000/v2/", false, true)]
    #[case("http://localhost:6000/blob", "http://127.0.0.1:5000/v2/", false, true)]
    // A link-local registry may redirect to itself.
    #[case(
        "http://169.254.10.10:5000/v2/x",
        "http://169.254.10.10:5000/v2/",
        true,
        true
    )]
    // Nothing but http(s), nothing unusable.
    #[case("file:///etc/passwd", "http://127.0.0.1:5000/v2/", true, false)]
    #[case(
        "https://0.0.0.0/blob",
        "https://registry.example.com/v2/",
        false,
        false
    )]
    fn where_a_registry_may_send_us(
        #[case] target: &str,
        #[case] registry: &str,
        #[case] insecure: bool,
        #[case] allowed: bool,
    ) {
        let result = check_redirect(
            &target.parse().unwrap(),
            &registry.parse().unwrap(),
            insecure,
        );
        assert_eq!(
            result.is_ok(),
            allowed,
            "{target} from {registry}: {result:?}"
        );
        if let Err(message) = result {
            assert!(message.contains("refused"), "{message}");
        }
    }
}
