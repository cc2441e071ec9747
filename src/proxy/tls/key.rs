//! The server's private key: clear PEM (PKCS#8, PKCS#1 or SEC1), or encrypted PKCS#8
//! (`-----BEGIN ENCRYPTED PRIVATE KEY-----`, as `openssl pkcs8 -topk8 -v2 aes-256-cbc` writes
//! it) with its pass phrase in `key_passphrase_file`. OpenSSL's older encrypted PEM
//! (`Proc-Type: 4,ENCRYPTED`) is refused with the command that converts it.

use std::path::Path;

use pkcs8::EncryptedPrivateKeyInfo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use super::TlsError;

const BEGIN_ENCRYPTED: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----";
const END_ENCRYPTED: &str = "-----END ENCRYPTED PRIVATE KEY-----";

/// Reads the key of `key_file`, decrypting it with the pass phrase of `passphrase_file`.
pub(super) fn load(
    key_file: &Path,
    passphrase_file: Option<&Path>,
) -> Result<PrivateKeyDer<'static>, TlsError> {
    let key = |message: String| TlsError::new("key_file", message);
    let shown = key_file.display();
    let pem = crate::secret_file::read_to_string(key_file, "TLS private key")
        .map_err(|e| key(e.to_string()))?;
    if pem.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(key(format!(
            "{shown}: the key is encrypted in OpenSSL's traditional format (Proc-Type: 4,ENCRYPTED), which Postern cannot decrypt; convert it to encrypted PKCS#8 and keep key_passphrase_file: `openssl pkcs8 -topk8 -v2 aes-256-cbc -in {shown} -out key-pkcs8.pem`, or decrypt it: `openssl pkey -in {shown} -out key-clear.pem`"
        )));
    }
    let encrypted = pem.contains(BEGIN_ENCRYPTED);
    match (encrypted, passphrase_file) {
        (false, None) => PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| {
            key(format!(
                "{shown}: cannot read the private key (PEM, PKCS#8, PKCS#1 or SEC1): {e}"
            ))
        }),
        (false, Some(p)) => Err(TlsError::new(
            "key_passphrase_file",
            format!(
                "{} is set but {shown} holds no encrypted key (-----BEGIN ENCRYPTED PRIVATE KEY-----): remove key_passphrase_file, or give the encrypted key",
                p.display()
            ),
        )),
        (true, None) => Err(key(format!(
            "{shown}: the private key is encrypted: set key_passphrase_file to a file holding its pass phrase, or decrypt it: `openssl pkey -in {shown} -out key-clear.pem`"
        ))),
        (true, Some(p)) => decrypt(&pem, key_file, p),
    }
}

fn decrypt(
    pem: &str,
    key_file: &Path,
    passphrase_file: &Path,
) -> Result<PrivateKeyDer<'static>, TlsError> {
    let shown = key_file.display();
    let phrase = |message: String| TlsError::new("key_passphrase_file", message);
    let passphrase = crate::secret_file::read(passphrase_file, "TLS key pass phrase file")
        .map_err(|e| {
            phrase(format!(
                "{e}; give the file that holds the pass phrase of key_file on its first line"
            ))
        })?;
    // The first line, as OpenSSL's `-passin file:` reads it.
    let line = passphrase.split(|&b| b == b'\n').next().unwrap_or_default();
    let passphrase = line.strip_suffix(b"\r").unwrap_or(line);
    if passphrase.is_empty() {
        return Err(phrase(format!(
            "{}: the first line is empty: write the pass phrase on it",
            passphrase_file.display()
        )));
    }
    let block = pem
        .find(BEGIN_ENCRYPTED)
        .and_then(|start| {
            let end = pem[start..].find(END_ENCRYPTED)? + start + END_ENCRYPTED.len();
            Some(&pem[start..end])
        })
        .ok_or_else(|| {
            TlsError::new(
                "key_file",
                format!("{shown}: the ENCRYPTED PRIVATE KEY block has no END line"),
            )
        })?;
    let (_, der) = pkcs8::der::pem::decode_vec(block.as_bytes()).map_err(|e| {
        TlsError::new(
            "key_file",
            format!("{shown}: the ENCRYPTED PRIVATE KEY block is not valid PEM: {e}"),
        )
    })?;
    let info = EncryptedPrivateKeyInfo::try_from(der.as_slice()).map_err(|e| {
        TlsError::new(
            "key_file",
            format!("{shown}: not an encrypted PKCS#8 key: {e}"),
        )
    })?;
    let clear = info.decrypt(passphrase).map_err(|e| {
        phrase(format!(
            "cannot decrypt {shown} with the pass phrase of {} ({e}): the pass phrase is wrong, or the key uses a scheme Postern does not know (it knows PBES2 with PBKDF2 or scrypt and AES-CBC, as `openssl pkcs8 -topk8 -v2 aes-256-cbc` writes); check it with `openssl pkey -in {shown} -passin file:{} -noout`, or decrypt it: `openssl pkey -in {shown} -out key-clear.pem`",
            passphrase_file.display(),
            passphrase_file.display()
        ))
    })?;
    Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        clear.as_bytes().to_vec(),
    )))
}
