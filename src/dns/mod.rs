//! The one DNS resolver every check shares (hickory): nameservers from the configuration or the
//! system, a timeout and a number of attempts per query, and a cache that honours TTLs and
//! caches negative answers, so the same client twice costs no second query.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ProtocolConfig, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::{Resolver, TokioResolver};

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

/// Why a lookup gave no answer. A name that does not exist is not an error: it is an empty
/// answer.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[error("DNS lookup of {name} failed: {reason}")]
pub struct LookupError {
    pub name: String,
    pub reason: String,
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
            Resolver::builder(provider).map_err(|e| SetupError(e.to_string()))?
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
            Resolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.timeout = settings.timeout;
        opts.attempts = settings.attempts;
        opts.cache_size = settings.cache_size;
        // Names are absolute (DNSBL zones, SPF domains): never append a search domain.
        opts.ndots = 0;
        let resolver = builder.build().map_err(|e| SetupError(e.to_string()))?;
        Ok(Self { resolver })
    }

    /// IPv4 addresses of `name` (fully qualified); empty when the name does not exist.
    pub async fn a(&self, name: &str) -> Result<Vec<Ipv4Addr>, LookupError> {
        let answers = self.lookup(name, RecordType::A).await?;
        Ok(answers
            .iter()
            .filter_map(|r| match r {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect())
    }

    /// TXT strings of `name`, each record's strings joined; empty when the name does not exist.
    pub async fn txt(&self, name: &str) -> Result<Vec<String>, LookupError> {
        let answers = self.lookup(name, RecordType::TXT).await?;
        Ok(answers
            .iter()
            .filter_map(|r| match r {
                RData::TXT(txt) => Some(
                    txt.txt_data
                        .iter()
                        .map(|s| String::from_utf8_lossy(s))
                        .collect::<String>(),
                ),
                _ => None,
            })
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
            Err(e) if e.is_no_records_found() => Ok(Vec::new()),
            Err(e) => Err(LookupError {
                name: fqdn,
                reason: e.to_string(),
            }),
        }
    }
}
