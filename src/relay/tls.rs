//! TLS toward relay targets, made here rather than inside the SMTP library so that what was
//! negotiated is known: the TLS version and cipher suite of each connection (logged with every
//! delivery, and what encryption rules are judged by). STARTTLS is spoken here up to the
//! handshake; the SMTP library then continues on the secured stream, told that the server
//! greeted (the greeting it already gave was before TLS).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncReadExt as _, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::engine::checks::outbound_tls::TlsRequirement;
use crate::logging::error_chain;

/// How Postern secures connections to one target: its roots (the system's and `ca_file`),
/// lowest version, and the name its certificate must carry (the target's host).
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// For a target at `host`, trusting the system's roots and `extra` CA certificates, from
    /// TLS 1.3 only or from 1.2.
    pub fn new(
        host: &str,
        extra: Vec<CertificateDer<'static>>,
        tls13_only: bool,
        client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    ) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        for cert in extra {
            roots
                .add(cert)
                .map_err(|e| format!("a CA certificate is not usable: {e}"))?;
        }
        let versions: &[&rustls::SupportedProtocolVersion] = if tls13_only {
            &[&rustls::version::TLS13]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let config = match client {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("the client certificate or key is not usable: {e}"))?,
            None => builder.with_no_client_auth(),
        };
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| format!("{host:?} cannot be checked against a certificate: {e}"))?;
        Ok(Self {
            config: Arc::new(config),
            name,
        })
    }

    /// The TLS handshake over `tcp`, the certificate validated against the roots and the
    /// target's name.
    pub async fn handshake(
        &self,
        tcp: TcpStream,
    ) -> Result<(TlsStream<TcpStream>, TlsFacts), String> {
        let stream = TlsConnector::from(self.config.clone())
            .connect(self.name.clone(), tcp)
            .await
            .map_err(|e| format!("TLS handshake failed: {}", error_chain(&e)))?;
        let (_, session) = stream.get_ref();
        let (sans, cn) = session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|cert| certificate_names(cert.as_ref()))
            .unwrap_or_default();
        let facts = TlsFacts {
            sans,
            cn,
            version: match session.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
                Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
                _ => "TLS",
            },
            cipher: session
                .negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite()))
                .unwrap_or_default(),
        };
        Ok((stream, facts))
    }
}

/// What one connection negotiated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFacts {
    /// `TLSv1.2` or `TLSv1.3`.
    pub version: &'static str,
    /// The cipher suite's IANA name (`TLS13_AES_256_GCM_SHA384`).
    pub cipher: String,
    /// The DNS names of the server certificate's subjectAltName.
    pub sans: Vec<String>,
    /// Its subject's common name.
    pub cn: Option<String>,
}

impl TlsFacts {
    /// Why this connection does not meet `requirement`; `None` when it does.
    pub fn unmet(&self, requirement: &TlsRequirement) -> Option<String> {
        requirement.unmet(self.version, &self.cipher, &self.sans, self.cn.as_deref())
    }
}

/// The DNS names in a certificate's subjectAltName and its subject's common name, read from
/// its DER. A certificate that does not parse names nothing.
pub fn certificate_names(der: &[u8]) -> (Vec<String>, Option<String>) {
    let parse = || -> Option<(Vec<String>, Option<String>)> {
        let (_, cert, _) = tlv(der)?;
        let (_, tbs, _) = tlv(cert)?;
        let mut rest = tbs;
        let mut fields = Vec::new();
        while !rest.is_empty() {
            let (tag, value, next) = tlv(rest)?;
            fields.push((tag, value));
            rest = next;
        }
        // [0] version is optional; then serial, signature, issuer, validity, subject.
        let skip = usize::from(fields.first()?.0 == 0xa0);
        let subject = fields.get(skip + 4)?.1;
        let mut cn = None;
        let mut rdns = subject;
        while !rdns.is_empty() {
            let (_, set, next) = tlv(rdns)?;
            let (_, attribute, _) = tlv(set)?;
            let (_, oid, value) = tlv(attribute)?;
            if oid == [0x55, 0x04, 0x03] {
                let (_, text, _) = tlv(value)?;
                cn = Some(String::from_utf8_lossy(text).into_owned());
            }
            rdns = next;
        }
        let mut sans = Vec::new();
        if let Some((_, extensions)) = fields.iter().find(|(tag, _)| *tag == 0xa3) {
            let (_, mut list, _) = tlv(extensions)?;
            while !list.is_empty() {
                let (_, extension, next) = tlv(list)?;
                let (_, oid, mut body) = tlv(extension)?;
                if oid == [0x55, 0x1d, 0x11] {
                    // An optional `critical` BOOLEAN, then the OCTET STRING.
                    let (tag, value, after) = tlv(body)?;
                    let value = if tag == 0x01 { tlv(after)?.1 } else { value };
                    body = value;
                    let (_, mut names, _) = tlv(body)?;
                    while !names.is_empty() {
                        let (tag, name, next) = tlv(names)?;
                        if tag == 0x82 {
                            sans.push(String::from_utf8_lossy(name).into_owned());
                        }
                        names = next;
                    }
                }
                list = next;
            }
        }
        Some((sans, cn))
    };
    parse().unwrap_or_default()
}

/// One DER TLV: its tag, its value, and what follows it.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |l, &b| (l << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

impl fmt::Display for TlsFacts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.version, self.cipher)
    }
}

/// The SMTP exchange up to a TLS handshake: reads the greeting, sends EHLO, and when the
/// target offers STARTTLS and `starttls` asks for it, sends STARTTLS and reads its 220.
/// Returns the stream, whether STARTTLS was accepted, and the greeting's bytes (for the SMTP
/// library, which wants to read a greeting itself) when it was not.
pub async fn before_tls(
    tcp: TcpStream,
    helo: &str,
    starttls: bool,
    timeout: Duration,
) -> Result<(TcpStream, Option<Vec<u8>>), String> {
    let mut reader = BufReader::new(tcp);
    let exchange = async {
        let greeting = read_reply(&mut reader).await?;
        if !greeting.starts_with(b"220") {
            return Err(format!(
                "greeted with {:?}",
                String::from_utf8_lossy(&greeting).trim_end()
            ));
        }
        if !starttls {
            return Ok(Some(greeting));
        }
        reader
            .get_mut()
            .write_all(format!("EHLO {helo}\r\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let ehlo = read_reply(&mut reader).await?;
        let offered = String::from_utf8_lossy(&ehlo).lines().skip(1).any(|l| {
            l.get(4..)
                .is_some_and(|k| k.trim().eq_ignore_ascii_case("STARTTLS"))
        });
        if !ehlo.starts_with(b"250") || !offered {
            return Ok(Some(greeting));
        }
        reader
            .get_mut()
            .write_all(b"STARTTLS\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let go = read_reply(&mut reader).await?;
        if !go.starts_with(b"220") {
            return Err(format!(
                "STARTTLS refused: {:?}",
                String::from_utf8_lossy(&go).trim_end()
            ));
        }
        Ok(None)
    };
    let plain = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| "timed out before TLS".to_owned())??;
    if !reader.buffer().is_empty() {
        return Err("the target sent more than its replies before TLS".to_owned());
    }
    Ok((reader.into_inner(), plain))
}

/// One reply, all its lines; bounded (RFC 5321 lines, at most 100 of them).
async fn read_reply(reader: &mut BufReader<TcpStream>) -> Result<Vec<u8>, String> {
    let mut reply = Vec::new();
    for _ in 0..100 {
        let mut line = Vec::new();
        let n = (&mut *reader)
            .take(1000)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".to_owned());
        }
        let last = line.get(3) != Some(&b'-');
        reply.extend_from_slice(&line);
        if last {
            return Ok(reply);
        }
    }
    Err("reply of more than 100 lines".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_subject_alt_name_and_the_common_name() {
        let mut params =
            rcgen::CertificateParams::new(vec!["mx.bank.example".into(), "*.bank.example".into()])
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Bank MX");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (sans, cn) = certificate_names(cert.der());
        assert_eq!(sans, ["mx.bank.example", "*.bank.example"]);
        assert_eq!(cn.as_deref(), Some("Bank MX"));
        assert_eq!(certificate_names(b"\x30\x03\x02"), (Vec::new(), None));
    }
}
