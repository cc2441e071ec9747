//! The client's verified host name by forward-confirmed reverse DNS, as Postfix finds the
//! `client_name` it hands a milter: the PTR names of the address, the first of which whose
//! A (or AAAA) records contain the address again. A PTR name alone proves nothing: whoever
//! holds the address's reverse zone can write any name there.

use std::net::IpAddr;

use crate::engine::ports::Resolver;

/// At most this many PTR names are tried, as a bound on the lookups one client costs.
const MAX_PTR_NAMES: usize = 5;

/// What the lookups found: the verified name, if any, and how it was found (for the log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameCheck {
    pub name: Option<String>,
    pub detail: String,
}

/// The verified host name of `ip`, lower-case without the final dot.
pub async fn forward_confirmed(resolver: &dyn Resolver, ip: IpAddr) -> NameCheck {
    let ip = ip.to_canonical();
    let names = match resolver.ptr(ip).await {
        Ok(names) if names.is_empty() => {
            return unverified(format!("no PTR record for {ip}"));
        }
        Ok(names) => names,
        Err(e) => return unverified(format!("{e}; the client has no verified name")),
    };
    let mut tried = Vec::new();
    for name in names.iter().take(MAX_PTR_NAMES) {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let confirmed = match ip {
            IpAddr::V4(v4) => resolver.a(&name).await.map(|a| a.contains(&v4)),
            IpAddr::V6(v6) => resolver.aaaa(&name).await.map(|a| a.contains(&v6)),
        };
        match confirmed {
            Ok(true) => {
                return NameCheck {
                    detail: format!(
                        "client name {name} verified: its PTR and address records agree on {ip}"
                    ),
                    name: Some(name),
                };
            }
            Ok(false) => tried.push(format!("{name} (its address records do not hold {ip})")),
            Err(e) => tried.push(format!("{name} ({e})")),
        }
    }
    unverified(format!(
        "PTR of {ip} names {}: not confirmed, so the client has no verified name",
        tried.join(", ")
    ))
}

fn unverified(detail: String) -> NameCheck {
    NameCheck { name: None, detail }
}
