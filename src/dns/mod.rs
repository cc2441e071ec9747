//! The one DNS resolver every check shares (hickory): nameservers from the configuration or the
//! system, a timeout and a number of attempts per query, and a cache that honours TTLs and
//! caches negative answers, so the same client twice costs no second query. It is the
//! engine's [`Resolver`] port.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use async_trait::async_trait;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ProtocolConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType};

pub use crate::engine::checks::dnsbl::reversed;
pub use crate::engine::ports::LookupError;
use crate::engine::ports::Resolver;

/// Resolver settings from `[dns]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsSettings {
    /// Nameservers (`ip:port`); empty means those of /etc/resolv.conf.
    pub nameservers: Vec<SocketAddr>,
    pub timeout: Duration,
    pub attempts: usize,
    /// Number of answers kept in the cache.
    pub cache_size: u64,
}

/// Why the resolver could not be set up.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot read the system's DNS configuration (/etc/resolv.conf): {0}; set [dns] nameservers"
)]
pub struct SetupError(String);

/// The shared resolver. Cloning is cheap and shares the cache.
#[derive(Clone)]
pub struct Dns {
    resolver: TokioResolver,
}

impl fmt::Debug for Dns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Dns")
    }
}

impl Dns {
    pub fn new(settings: &DnsSettings) -> Result<Self, SetupError> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = if settings.nameservers.is_empty() {
            hickory_resolver::Resolver::builder(provider).map_err(|e| SetupError(e.to_string()))?
        } else {
            let servers = settings
                .nameservers
                .iter()
                .map(|addr| {
                    let connection = |protocol| {
                        let mut c = ConnectionConfig::new(protocol);
                        c.port = addr.port();
                        c
                    };
                    NameServerConfig::new(
                        addr.ip(),
                        true,
                        vec![
                            connection(ProtocolConfig::Udp),
                            connection(ProtocolConfig::Tcp),
                        ],
                    )
                })
                .collect();
            hickory_resolver::Resolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                provider,
            )
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.timeout = settings.timeout;
        opts.attempts = settings.attempts;
        opts.cache_size = settings.cache_size;
        // Names are absolute (DNSBL zones, SPF domains): never append a search domain.
        opts.ndots = 0;
        // Nameservers given in [dns] answer everything, reverse lookups of client addresses
        // too: /etc/hosts (which names 127.0.0.1 "localhost") is not asked before them.
        if !settings.nameservers.is_empty() {
            opts.use_hosts_file = ResolveHosts::Never;
        }
        let resolver = builder.build().map_err(|e| SetupError(e.to_string()))?;
        Ok(Self { resolver })
    }

    async fn records<T>(
        &self,
        name: &str,
        kind: RecordType,
        pick: impl Fn(&RData) -> Option<T>,
    ) -> Result<Vec<T>, LookupError> {
        Ok(self
            .lookup(name, kind)
            .await?
            .iter()
            .filter_map(pick)
            .collect())
    }

    async fn lookup(&self, name: &str, kind: RecordType) -> Result<Vec<RData>, LookupError> {
        let fqdn = if name.ends_with('.') {
            name.to_owned()
        } else {
            format!("{name}.")
        };
        match self.resolver.lookup(fqdn.as_str(), kind).await {
            Ok(lookup) => Ok(lookup.answers().iter().map(|r| r.data.clone()).collect()),
            // Only NXDOMAIN and NOERROR-without-data are empty answers; hickory reports a
            // REFUSED or SERVFAIL the same way, and those are failures.
            Err(NetError::Dns(DnsError::NoRecordsFound(no)))
                if matches!(
                    no.response_code,
                    ResponseCode::NXDomain | ResponseCode::NoError
                ) =>
            {
                Ok(Vec::new())
            }
            Err(e) => Err(LookupError {
                name: fqdn,
                timeout: matches!(e, NetError::Timeout),
                reason: e.to_string(),
            }),
        }
    }
}

#[async_trait]
impl Resolver for Dns {
    /// IPv4 addresses of `name` (fully qualified); empty when the name does not exist.
    async fn a(&self, name: &str) -> Result<Vec<Ipv4Addr>, LookupError> {
        self.records(name, RecordType::A, |r| match r {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .await
    }

    /// IPv6 addresses of `name`; empty when the name does not exist.
    async fn aaaa(&self, name: &str) -> Result<Vec<Ipv6Addr>, LookupError> {
        self.records(name, RecordType::AAAA, |r| match r {
            RData::AAAA(a) => Some(a.0),
            _ => None,
        })
        .await
    }

    /// Mail exchangers of `name`, most preferred first; empty when there are none.
    async fn mx(&self, name: &str) -> Result<Vec<String>, LookupError> {
        let mut mx = self
            .records(name, RecordType::MX, |r| match r {
                RData::MX(mx) => Some((mx.preference, mx.exchange.to_string())),
                _ => None,
            })
            .await?;
        mx.sort_by_key(|(preference, _)| *preference);
        Ok(mx.into_iter().map(|(_, name)| name).collect())
    }

    /// TXT strings of `name`, each record's strings joined; empty when the name does not exist.
    async fn txt(&self, name: &str) -> Result<Vec<String>, LookupError> {
        self.records(name, RecordType::TXT, |r| match r {
            RData::TXT(txt) => Some(
                txt.txt_data
                    .iter()
                    .map(|s| String::from_utf8_lossy(s))
                    .collect::<String>(),
            ),
            _ => None,
        })
        .await
    }

    /// The verifier shares this resolver, its settings and its cache.
    fn authenticator(&self) -> Option<mail_auth::MessageAuthenticator> {
        Some(mail_auth::MessageAuthenticator(self.resolver.clone()))
    }

    /// Host names of an address (reverse lookup); empty when there are none.
    async fn ptr(&self, ip: IpAddr) -> Result<Vec<String>, LookupError> {
        let suffix = if ip.is_ipv4() {
            "in-addr.arpa"
        } else {
            "ip6.arpa"
        };
        let name = format!("{}.{suffix}", reversed(ip));
        self.records(&name, RecordType::PTR, |r| match r {
            RData::PTR(ptr) => Some(ptr.0.to_string()),
            _ => None,
        })
        .await
    }
}
