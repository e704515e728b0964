//! Validation of tenant input: descriptions, backup targets (the SSRF rules), and
//! S3's naming rules. Every function returns a message fit for a 400 body; none
//! echoes a secret.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use url::{Host, Url};

/// Longest database description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1000;
/// Longest organization name, in characters.
pub const MAX_ORGANIZATION_NAME_CHARS: usize = 200;
/// Longest backup prefix, in bytes: `<prefix><databaseId>/logs/<name>` must stay
/// within S3's 1024-byte key limit.
pub const MAX_PREFIX_BYTES: usize = 512;
/// Longest endpoint URL, in bytes.
pub const MAX_ENDPOINT_BYTES: usize = 2048;

pub fn description(text: &str) -> Result<(), String> {
    let chars = text.chars().count();
    if chars > MAX_DESCRIPTION_CHARS {
        return Err(format!(
            "description must be at most {MAX_DESCRIPTION_CHARS} characters, got {chars}"
        ));
    }
    Ok(())
}

pub fn organization_name(name: &str) -> Result<(), String> {
    let chars = name.chars().count();
    if name.trim().is_empty() {
        return Err("name must not be empty".into());
    }
    if chars > MAX_ORGANIZATION_NAME_CHARS {
        return Err(format!(
            "name must be at most {MAX_ORGANIZATION_NAME_CHARS} characters, got {chars}"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("name must not contain control characters".into());
    }
    Ok(())
}

/// Whether an address is one the public internet routes to. Everything a tenant
/// could use to reach inside the VPC or the host is not: loopback, private,
/// shared (CGNAT), link-local (instance metadata), multicast, unspecified,
/// documentation, benchmarking and reserved ranges, and IPv6 forms that embed one.
/// The backup engine applies the same test to every address a host name resolves to.
pub fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let blocked = a == 0 // "this network", includes 0.0.0.0
        || a == 10
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || a == 127
        || (a == 169 && b == 254) // link-local, instance metadata
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // TEST-NET-1
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast
        || (a == 192 && b == 168)
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || (a == 198 && b == 51 && c == 100) // TEST-NET-2
        || (a == 203 && b == 0 && c == 113) // TEST-NET-3
        || a >= 224; // multicast, reserved, broadcast
    !blocked
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let seg = ip.segments();
    let embedded_v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if seg[0] == 0x0064 && seg[1] == 0xff9b {
        // NAT64 well-known prefix: the IPv4 address sits in the last 32 bits.
        return seg[2..6].iter().all(|s| *s == 0) && is_public_v4(embedded_v4(seg[6], seg[7]));
    }
    if seg[0] == 0x2002 {
        // 6to4: the IPv4 address follows the prefix.
        return is_public_v4(embedded_v4(seg[1], seg[2]));
    }
    let blocked = ip.is_unspecified()
        || ip.is_loopback()
        || seg[0..6].iter().all(|s| *s == 0) // IPv4-compatible (deprecated)
        || (seg[0] == 0x0100 && seg[1..4].iter().all(|s| *s == 0)) // discard-only
        || (seg[0] == 0x2001 && seg[1] == 0) // Teredo
        || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation
        || (seg[0] & 0xfe00) == 0xfc00 // unique local
        || (seg[0] & 0xffc0) == 0xfe80 // link-local
        || (seg[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (seg[0] & 0xff00) == 0xff00; // multicast
    !blocked
}

/// Whether a backup may reach this address: a public one, or with
/// `allow_insecure` (the local stack, whose emulator listens on loopback) also a
/// loopback one. Never a private, link-local (instance metadata) or other
/// non-public one, even then: the local stack refuses what production refuses.
pub fn is_allowed_ip(ip: IpAddr, allow_insecure: bool) -> bool {
    is_public_ip(ip) || (allow_insecure && is_loopback(ip))
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Whether a host name is `localhost` (or under `.localhost`): loopback by
/// definition (RFC 6761).
fn is_localhost(host: &str) -> bool {
    let host = host.trim_end_matches('.');
    host == "localhost" || host.ends_with(".localhost")
}

/// Host names that never name a public S3 endpoint.
fn is_local_name(host: &str) -> bool {
    let host = host.trim_end_matches('.');
    const LOCAL_SUFFIXES: [&str; 5] = [
        ".localhost",
        ".local",
        ".internal",
        ".localdomain",
        ".home.arpa",
    ];
    host == "localhost"
        || !host.contains('.') // single-label names resolve through the VPC's search domains
        || LOCAL_SUFFIXES.iter().any(|suffix| host.ends_with(suffix))
}

/// Checks a backup endpoint. Without `allow_insecure` it must be an `https` URL
/// whose host is public: no user info, no loopback/private/link-local/multicast/
/// unspecified address, no `localhost`. With `allow_insecure` (development only),
/// `http` is accepted, and so are loopback hosts (`localhost`, `127.0.0.0/8`,
/// `::1`: where the local emulator listens), nothing else that is not public;
/// user info never is.
/// Returns the URL normalised (scheme and host lower-cased, no trailing slash).
pub fn endpoint(raw: &str, allow_insecure: bool) -> Result<String, String> {
    if raw.len() > MAX_ENDPOINT_BYTES {
        return Err(format!(
            "endpoint must be at most {MAX_ENDPOINT_BYTES} bytes"
        ));
    }
    let url = Url::parse(raw).map_err(|e| format!("endpoint is not a valid URL: {e}"))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_insecure => {}
        "http" => return Err("endpoint must use https".into()),
        other => return Err(format!("endpoint must be an https URL, not {other}:")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("endpoint must not contain user info; pass credentials as accessKeyId and secretAccessKey".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("endpoint must not have a query or fragment".into());
    }
    if !matches!(url.path(), "" | "/") {
        return Err(
            "endpoint must not have a path; put the bucket in bucketName and the folder in prefix"
                .into(),
        );
    }
    let host = url.host().ok_or("endpoint must have a host")?;
    match host {
        Host::Domain(name) if allow_insecure && is_localhost(name) => {}
        Host::Domain(name) if is_local_name(name) => {
            return Err(format!("endpoint host {name} is not a public host name"));
        }
        Host::Domain(_) => {}
        Host::Ipv4(ip) if !is_allowed_ip(IpAddr::V4(ip), allow_insecure) => {
            return Err(format!("endpoint address {ip} is not a public address"));
        }
        Host::Ipv6(ip) if !is_allowed_ip(IpAddr::V6(ip), allow_insecure) => {
            return Err(format!("endpoint address {ip} is not a public address"));
        }
        Host::Ipv4(_) | Host::Ipv6(_) => {}
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// S3's rules for general purpose bucket names.
pub fn bucket_name(name: &str) -> Result<(), String> {
    let fail = |why: &str| Err(format!("bucketName {name:?} {why}"));
    if !(3..=63).contains(&name.len()) {
        return fail("must be 3 to 63 characters long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return fail("may contain only lower-case letters, digits, dots and hyphens");
    }
    let first_last_ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !first_last_ok(name.as_bytes()[0]) || !first_last_ok(name.as_bytes()[name.len() - 1]) {
        return fail("must begin and end with a letter or digit");
    }
    if name.contains("..") {
        return fail("must not contain two adjacent dots");
    }
    if name.parse::<Ipv4Addr>().is_ok() {
        return fail("must not be formatted as an IP address");
    }
    for prefix in ["xn--", "sthree-", "amzn-s3-demo-"] {
        if name.starts_with(prefix) {
            return fail(&format!("must not start with {prefix}"));
        }
    }
    for suffix in ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"] {
        if name.ends_with(suffix) {
            return fail(&format!("must not end with {suffix}"));
        }
    }
    Ok(())
}

/// Region names: `us-east-1`, `us-central1`, `auto` (R2) and the like.
pub fn bucket_region(region: &str) -> Result<(), String> {
    let ok = (1..=50).contains(&region.len())
        && region.as_bytes()[0].is_ascii_lowercase()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !region.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bucketRegion {region:?} must be 1 to 50 lower-case letters, digits and hyphens, starting with a letter"
        ))
    }
}

/// The key prefix the backup is written under (`<prefix><databaseId>/`).
pub fn prefix(prefix: &str) -> Result<(), String> {
    if prefix.len() > MAX_PREFIX_BYTES {
        return Err(format!("prefix must be at most {MAX_PREFIX_BYTES} bytes"));
    }
    if prefix.chars().any(char::is_control) {
        return Err("prefix must not contain control characters".into());
    }
    if prefix.starts_with('/') {
        return Err("prefix must not start with /".into());
    }
    if prefix.contains("//") || prefix.split('/').any(|seg| seg == "." || seg == "..") {
        return Err("prefix must not contain empty, . or .. path segments".into());
    }
    Ok(())
}

/// Access key ids and secret keys: printable ASCII without white space.
/// The message names the field, never the value.
pub fn credential(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.is_empty() || value.len() > max {
        return Err(format!("{field} must be 1 to {max} characters long"));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{field} must be printable ASCII without white space"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_endpoints_pass_and_are_normalised() {
        for (raw, want) in [
            (
                "https://storage.googleapis.com",
                "https://storage.googleapis.com",
            ),
            (
                "https://storage.googleapis.com/",
                "https://storage.googleapis.com",
            ),
            (
                "https://S3.US-EAST-1.amazonaws.com",
                "https://s3.us-east-1.amazonaws.com",
            ),
            (
                "https://acct.r2.cloudflarestorage.com:443",
                "https://acct.r2.cloudflarestorage.com",
            ),
            (
                "https://minio.example.com:9000",
                "https://minio.example.com:9000",
            ),
            ("https://8.8.8.8", "https://8.8.8.8"),
            ("https://[2606:4700::1111]", "https://[2606:4700::1111]"),
        ] {
            assert_eq!(endpoint(raw, false).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn ssrf_targets_are_rejected() {
        for raw in [
            "http://storage.googleapis.com",
            "ftp://storage.googleapis.com",
            "file:///etc/passwd",
            "https://user:pw@storage.googleapis.com",
            "https://user@storage.googleapis.com",
            "https://localhost",
            "https://LOCALHOST.",
            "https://api.localhost",
            "https://minio",
            "https://metadata.google.internal",
            "https://printer.local",
            "https://127.0.0.1",
            "https://127.1.2.3:9000",
            "https://10.0.0.1",
            "https://172.16.0.1",
            "https://172.31.255.255",
            "https://192.168.1.1",
            "https://169.254.169.254",
            "https://100.64.0.1",
            "https://0.0.0.0",
            "https://224.0.0.1",
            "https://255.255.255.255",
            "https://[::1]",
            "https://[::]",
            "https://[fe80::1]",
            "https://[fd00:ec2::254]",
            "https://[ff02::1]",
            "https://[::ffff:169.254.169.254]",
            "https://[::ffff:127.0.0.1]",
            "https://[64:ff9b::a9fe:a9fe]",
            "https://[2002:7f00:1::]",
            "https://0x7f.1",
            "https://2130706433",
            "https://storage.googleapis.com/bucket",
            "https://storage.googleapis.com?x=1",
            "https://storage.googleapis.com#frag",
            "not a url",
            "",
        ] {
            assert!(endpoint(raw, false).is_err(), "{raw} should be rejected");
        }
    }

    #[test]
    fn development_setting_allows_http_and_local_hosts_but_never_user_info() {
        assert!(endpoint("http://127.0.0.1:4566", true).is_ok());
        assert!(endpoint("http://localhost:9000", true).is_ok());
        assert!(endpoint("http://[::1]:9000", true).is_ok());
        // Even the local stack refuses what no emulator needs: instance
        // metadata, private and other non-public ranges, local names.
        for refused in [
            "http://169.254.169.254",
            "http://[::ffff:169.254.169.254]",
            "http://10.0.0.1:9000",
            "http://192.168.1.20",
            "http://[fd00::1]",
            "http://0.0.0.0:4566",
            "http://metadata.google.internal",
            "http://moto:4566",
        ] {
            assert!(endpoint(refused, true).is_err(), "{refused}");
        }
        assert!(endpoint("http://u:p@127.0.0.1:4566", true).is_err());
        assert!(endpoint("gopher://127.0.0.1", true).is_err());
    }

    #[test]
    fn rejection_messages_say_why() {
        assert_eq!(
            endpoint("https://169.254.169.254", false),
            Err("endpoint address 169.254.169.254 is not a public address".into())
        );
        assert_eq!(
            endpoint("http://s3.amazonaws.com", false),
            Err("endpoint must use https".into())
        );
    }

    #[test]
    fn public_ip_classification() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "2606:4700::1111",
            "2a00:1450::1",
            "172.32.0.1",
            "100.128.0.1",
        ] {
            assert!(is_public_ip(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "198.18.0.1",
            "192.0.2.1",
            "203.0.113.9",
            "240.0.0.1",
            "2001:db8::1",
            "100::1",
            "2001::1",
            "::127.0.0.1",
        ] {
            assert!(!is_public_ip(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn bucket_names_follow_s3_rules() {
        for ok in [
            "test-kv-backup",
            "abc",
            "my.bucket.name",
            "a1-b2",
            &"a".repeat(63),
        ] {
            assert!(bucket_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            &"a".repeat(64),
            "Upper",
            "under_score",
            "-start",
            "end-",
            ".dot",
            "a..b",
            "192.168.5.4",
            "xn--abc",
            "sthree-x",
            "bucket-s3alias",
            "bucket--ol-s3",
            "has space",
        ] {
            assert!(bucket_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn regions() {
        for ok in ["us-east-1", "us-central1", "auto", "eu-west-3", "us"] {
            assert!(bucket_region(ok).is_ok(), "{ok}");
        }
        for bad in ["", "US-EAST-1", "us east", "1us", "us-", &"a".repeat(51)] {
            assert!(bucket_region(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prefixes() {
        for ok in ["", "backup/", "a/b/c/", "tenant-1-", "ünicode/"] {
            assert!(prefix(ok).is_ok(), "{ok}");
        }
        for bad in [
            "/abs",
            "a//b",
            "../up",
            "a/./b",
            "a/../b",
            "tab\there",
            &"p".repeat(513),
        ] {
            assert!(prefix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn credentials_never_echo_the_value() {
        let err = credential("secretAccessKey", "has space-in-it", 256).unwrap_err();
        assert!(!err.contains("space-in-it"), "{err}");
        assert!(credential("accessKeyId", "", 128).is_err());
        assert!(credential("accessKeyId", "GOOG1EXAMPLE", 128).is_ok());
    }

    #[test]
    fn descriptions_count_characters_not_bytes() {
        assert!(description(&"é".repeat(1000)).is_ok());
        assert!(description(&"a".repeat(1001)).is_err());
        assert!(organization_name("Acme").is_ok());
        assert!(organization_name("  ").is_err());
        assert!(organization_name("a\u{0}b").is_err());
    }
}
