//! The one DNSBL lookup (RFC 5782), shared by the RBL check and reputation zones: the
//! client's address reversed under the zone, IPv4-mapped addresses asked as IPv4, and only
//! answers inside 127.0.0.0/8 read as listings. An answer in 127.255.255.0/24 (the "query
//! refused" codes some blocklists give resolvers they consider abusive) or outside 127/8 means
//! the zone is not answering properly: an error, never a listing or a score.

use std::net::{IpAddr, Ipv4Addr};

use crate::engine::ports::Resolver;

/// An address as reversed DNS labels: octets for IPv4, nibbles for IPv6 (as in
/// `in-addr.arpa`, `ip6.arpa` and DNSBL queries).
pub fn reversed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut nibbles = Vec::with_capacity(32);
            for byte in v6.octets().iter().rev() {
                nibbles.push(format!("{:x}", byte & 0xf));
                nibbles.push(format!("{:x}", byte >> 4));
            }
            nibbles.join(".")
        }
    }
}

/// The label a client is looked up under: its reversed address, IPv4 for an IPv4-mapped one.
pub fn label(ip: IpAddr) -> String {
    reversed(ip.to_canonical())
}

/// An answer that is a listing: inside 127.0.0.0/8, outside the error range 127.255.255.0/24.
pub fn is_listing_code(a: Ipv4Addr) -> bool {
    let o = a.octets();
    o[0] == 127 && !(o[1] == 255 && o[2] == 255)
}

/// Why a zone gave no usable answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DnsblError {
    /// The lookup failed (timeout, SERVFAIL, REFUSED).
    #[error("{0}")]
    Lookup(String),
    /// The zone answered with an error code.
    #[error(
        "answered an error code rather than a listing ({0}; a blocklist refuses queries it considers abusive, e.g. through public resolvers)"
    )]
    ErrorCode(Ipv4Addr),
}

/// Looks `label` up in `zone`: the listing answers (empty when not listed), or why the zone
/// gave no usable answer.
pub async fn query(
    resolver: &dyn Resolver,
    zone: &str,
    label: &str,
) -> Result<Vec<Ipv4Addr>, DnsblError> {
    let answers = resolver
        .a(&format!("{label}.{zone}"))
        .await
        .map_err(|e| DnsblError::Lookup(e.reason))?;
    if let Some(bad) = answers.iter().find(|a| !is_listing_code(**a)) {
        return Err(DnsblError::ErrorCode(*bad));
    }
    Ok(answers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_labels_follow_rfc_5782() {
        assert_eq!(reversed("192.0.2.99".parse().unwrap()), "99.2.0.192");
        assert_eq!(
            reversed("2001:db8:1:2:3:4:567:89ab".parse().unwrap()),
            "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2"
        );
        assert_eq!(label("::ffff:192.0.2.99".parse().unwrap()), "99.2.0.192");
    }

    #[test]
    fn error_codes_are_not_listings() {
        assert!(is_listing_code("127.0.0.2".parse().unwrap()));
        assert!(!is_listing_code("127.255.255.254".parse().unwrap()));
        assert!(!is_listing_code("10.0.0.2".parse().unwrap()));
    }
}
