//! IP address rejection (option "IP address rejection"): clients in listed networks are refused.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::engine::reply::SmtpReply;

/// A list of refused networks (IPv4 and IPv6 CIDR) and the reply they get.
#[derive(Clone, Debug)]
pub struct IpRejection {
    networks: Vec<IpNet>,
    reply: SmtpReply,
}

impl IpRejection {
    pub fn new(networks: Vec<IpNet>, reply: SmtpReply) -> Self {
        Self { networks, reply }
    }

    /// Number of listed networks, for the policy summary.
    pub fn len(&self) -> usize {
        self.networks.len()
    }

    /// True when no network is listed (the check is off).
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }

    /// The reply for `ip` if it lies in a listed network. IPv4-mapped IPv6 addresses
    /// (`::ffff:192.0.2.1`) are judged as the IPv4 address they carry.
    pub fn check(&self, ip: IpAddr) -> Option<&SmtpReply> {
        let ip = ip.to_canonical();
        self.networks
            .iter()
            .any(|net| net.contains(&ip))
            .then_some(&self.reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejection(nets: &[&str]) -> IpRejection {
        IpRejection::new(
            nets.iter().map(|n| n.parse().unwrap()).collect(),
            "554 5.7.1 go away".parse().unwrap(),
        )
    }

    #[test]
    fn matches_ipv4_and_ipv6_networks() {
        let r = rejection(&["192.0.2.0/24", "2001:db8::/32"]);
        assert!(r.check("192.0.2.77".parse().unwrap()).is_some());
        assert!(r.check("192.0.3.1".parse().unwrap()).is_none());
        assert!(r.check("2001:db8:1::5".parse().unwrap()).is_some());
        assert!(r.check("2001:db9::5".parse().unwrap()).is_none());
    }

    #[test]
    fn ipv4_mapped_ipv6_is_judged_as_ipv4() {
        let r = rejection(&["192.0.2.0/24"]);
        assert!(r.check("::ffff:192.0.2.9".parse().unwrap()).is_some());
    }

    #[test]
    fn empty_list_matches_nothing() {
        assert!(rejection(&[]).check("127.0.0.1".parse().unwrap()).is_none());
    }
}
