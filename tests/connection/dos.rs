//! DoS protection through Postfix: per-client connection limits answered with 421.

use crate::support::{MailEnv, Socket};

#[test]
fn second_simultaneous_connection_gets_421() {
    let env = MailEnv::start(
        Socket::Unix,
        "[dos_protection]\nmax_connections_per_client = 1\n",
    );
    let (_first, ehlo) = env.smtp_as("198.51.100.20");
    assert!(ehlo.starts_with("250"), "{ehlo}");
    let (mut second, ehlo) = env.smtp_as("198.51.100.20");
    assert!(
        ehlo.starts_with("421 4.7.0 Too many connections from [198.51.100.20]"),
        "{ehlo}"
    );
    assert!(second.is_closed(), "Postfix hangs up after the 421");
    // Another client is not affected.
    let (_third, ehlo) = env.smtp_as("198.51.100.21");
    assert!(ehlo.starts_with("250"), "{ehlo}");
}

#[test]
fn connection_rate_is_limited_per_minute() {
    let env = MailEnv::start(
        Socket::Unix,
        "[dos_protection]\nmax_connection_rate_per_client = 2\n",
    );
    for _ in 0..2 {
        let (_s, ehlo) = env.smtp_as("198.51.100.30");
        assert!(ehlo.starts_with("250"), "{ehlo}");
    }
    let (_s, ehlo) = env.smtp_as("198.51.100.30");
    assert!(
        ehlo.contains("421 4.7.0") && ehlo.contains("per minute"),
        "{ehlo}"
    );
}
