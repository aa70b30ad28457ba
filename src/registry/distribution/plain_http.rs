//! Where plain HTTP may go: loopback always, anywhere else only with
//! `AFTERPUSH_REGISTRY_INSECURE`. Settings, token realms and redirects all ask here.

use url::Url;

/// `true`/`1`: allow plain HTTP to non-loopback hosts.
pub const ENV_INSECURE: &str = "AFTERPUSH_REGISTRY_INSECURE";

/// False for a plain-HTTP URL to a host other than loopback, unless `allow_insecure_http`.
pub fn plain_http_allowed(url: &Url, allow_insecure_http: bool) -> bool {
    url.scheme() != "http" || allow_insecure_http || url.host_str().is_some_and(is_loopback)
}

/// `localhost`, `127.x.y.z`, `::1` (with or without a port or brackets).
pub fn is_loopback(host: &str) -> bool {
    let h = host.trim();
    let name = if let Some(rest) = h.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else if h.matches(':').count() == 1 {
        h.split(':').next().unwrap_or("")
    } else {
        h
    };
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    name.parse::<std::net::IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("localhost", true)]
    #[case("localhost:5000", true)]
    #[case("127.0.0.1", true)]
    #[case("127.0.0.1:5000", true)]
    #[case("[::1]:5000", true)]
    #[case("::1", true)]
    #[case("10.0.0.1:5000", false)]
    #[case("localhost.example.com", false)]
    #[case("ghcr.io", false)]
    fn loopback_hosts(#[case] host: &str, #[case] expected: bool) {
        assert_eq!(is_loopback(host), expected);
    }
}
