//! TLS settings as admins bring them from OpenSSL-based servers: cipher suites by their
//! OpenSSL names (in one `:`-separated string), intermediate certificates in a `chain_file`
//! of their own, and a private key encrypted with a pass phrase. Real clients (openssl
//! s_client, swaks) talk to the proxy; `postern check-config` names what it cannot take.

use std::path::Path;
use std::process::Command;

use crate::support::proxy::{ProxyEnv, postern, write_certificates};

fn target() -> &'static str {
    "[[relay_target]]\nname = \"sink\"\nhost = \"127.0.0.1\"\nport = {sink0}\n"
}

/// openssl s_client through STARTTLS to `port`, verifying the server for localhost against
/// `ca`: whether the handshake succeeded, and everything it printed.
fn s_client(port: u16, ca: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(["s_client", "-starttls", "smtp", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args([
            "-CAfile",
            ca,
            "-verify_hostname",
            "localhost",
            "-verify_return_error",
        ])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    crate::support::outcome(&out)
}

fn swaks_args<'a>(ca: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--from",
        "a@sender.example",
        "--to",
        "b@rcpt.example",
        "--tls",
        "--tls-verify",
        "--tls-ca-path",
        ca,
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn openssl_named_suites_are_the_only_ones_offered() {
    // rcgen's keys are ECDSA P-256: the ECDHE-ECDSA suites fit them.
    let cfg = format!(
        "hostname = \"gw.postern.test\"\n[proxy]\nlisten = [\"127.0.0.1:{{port}}\"]\n\
         certificate_file = \"{{dir}}/server.pem\"\nkey_file = \"{{dir}}/server.key\"\n\
         cipher_suites = \"ECDHE-ECDSA-AES128-GCM-SHA256:TLS_AES_256_GCM_SHA384\"\n{}",
        target()
    );
    let env = ProxyEnv::start(&cfg, &[&[]]);
    let ca = env.path("ca.pem");

    let (ok, out) = s_client(
        env.port,
        &ca,
        &[
            "-brief",
            "-tls1_2",
            "-cipher",
            "ECDHE-ECDSA-AES128-GCM-SHA256",
        ],
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("Ciphersuite: ECDHE-ECDSA-AES128-GCM-SHA256"),
        "{out}"
    );
    let (ok, out) = s_client(
        env.port,
        &ca,
        &[
            "-brief",
            "-tls1_2",
            "-cipher",
            "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305",
        ],
    );
    assert!(
        !ok,
        "a suite left out of cipher_suites was negotiated:\n{out}"
    );

    let (ok, out) = s_client(
        env.port,
        &ca,
        &[
            "-brief",
            "-tls1_3",
            "-ciphersuites",
            "TLS_AES_256_GCM_SHA384",
        ],
    );
    assert!(ok, "{out}");
    assert!(out.contains("Ciphersuite: TLS_AES_256_GCM_SHA384"), "{out}");
    let (ok, out) = s_client(
        env.port,
        &ca,
        &[
            "-brief",
            "-tls1_3",
            "-ciphersuites",
            "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256",
        ],
    );
    assert!(
        !ok,
        "a suite left out of cipher_suites was negotiated:\n{out}"
    );

    // A mail client over TLS 1.2 gets the one TLS 1.2 suite, and the message goes through.
    let (ok, out) = env.swaks(&swaks_args(&ca, &["--tls-protocol", "tlsv1_2"]));
    assert!(ok, "{out}");
    env.sinks[0].wait_delivered(1);
    env.wait_for_log("cipher=TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256");
}

/// A root CA, an intermediate CA it signed, and a server certificate for localhost that the
/// intermediate signed, in `dir`: root.pem, intermediate.pem, leaf.pem and leaf.key.
fn write_chain(dir: &Path) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    };
    let ca_params = |name: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p
    };
    let root_key = KeyPair::generate().unwrap();
    let root = ca_params("Postern test root")
        .self_signed(&root_key)
        .unwrap();
    let inter_key = KeyPair::generate().unwrap();
    let inter = ca_params("Postern test intermediate")
        .signed_by(&inter_key, &root, &root_key)
        .unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".into()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf = leaf.signed_by(&leaf_key, &inter, &inter_key).unwrap();
    std::fs::write(dir.join("root.pem"), root.pem()).unwrap();
    std::fs::write(dir.join("intermediate.pem"), inter.pem()).unwrap();
    std::fs::write(dir.join("leaf.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("leaf.key"), leaf_key.serialize_pem()).unwrap();
}

/// Encrypts `key` with `passphrase` as `openssl pkcs8 -topk8 -v2 aes-256-cbc` does, into
/// `out`; the pass phrase is written to `out`.pass.
fn encrypt_key(key: &Path, out: &Path, passphrase: &str) -> std::path::PathBuf {
    let pass = out.with_extension("pass");
    std::fs::write(&pass, format!("{passphrase}\n")).unwrap();
    let status = Command::new("openssl")
        .args(["pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in"])
        .arg(key)
        .arg("-out")
        .arg(out)
        .arg("-passout")
        .arg(format!("file:{}", pass.display()))
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(out).unwrap();
    assert!(
        text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----"),
        "{text}"
    );
    pass
}

#[test]
fn chain_file_and_an_encrypted_key() {
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    write_chain(dir);
    let pass = encrypt_key(
        &dir.join("leaf.key"),
        &dir.join("leaf-enc.key"),
        "correct horse battery staple",
    );
    let cfg = format!(
        "hostname = \"gw.postern.test\"\n[proxy]\nlisten = [\"127.0.0.1:{{port}}\"]\n\
         certificate_file = \"{d}/leaf.pem\"\nchain_file = \"{d}/intermediate.pem\"\n\
         key_file = \"{d}/leaf-enc.key\"\nkey_passphrase_file = \"{}\"\n{}",
        pass.display(),
        target(),
        d = dir.display(),
    );
    let env = ProxyEnv::start(&cfg, &[&[]]);
    let root = dir.join("root.pem").display().to_string();

    // Only the root is trusted: the chain verifies because the proxy sends the intermediate.
    let (ok, out) = s_client(env.port, &root, &["-showcerts"]);
    assert!(ok, "{out}");
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    assert!(
        out.contains(" 1 s:CN = Postern test intermediate"),
        "the intermediate is not sent:\n{out}"
    );
    assert_eq!(
        out.matches("-----BEGIN CERTIFICATE-----").count(),
        2,
        "{out}"
    );

    let (ok, out) = env.swaks(&swaks_args(&root, &[]));
    assert!(ok, "{out}");
    env.sinks[0].wait_delivered(1);
}

/// `postern check-config` on a config with `proxy` as its [proxy] section: whether it
/// passed, and what it said.
fn check_config(dir: &Path, proxy: &str) -> (bool, String) {
    let file = dir.join("postern.toml");
    std::fs::write(
        &file,
        format!("hostname = \"gw.postern.test\"\n[proxy]\n{proxy}"),
    )
    .unwrap();
    let out = postern()
        .args(["check-config", &file.display().to_string()])
        .output()
        .unwrap();
    crate::support::outcome(&out)
}

#[test]
fn check_config_names_what_it_cannot_take() {
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    write_certificates(dir);
    let d = dir.display();
    let cert = format!("certificate_file = \"{d}/server.pem\"\n");
    let key = format!("{cert}key_file = \"{d}/server.key\"\n");

    // OpenSSL and rustls names, in a list and in separated strings, all taken.
    let (ok, out) = check_config(
        dir,
        &format!(
            "{key}cipher_suites = [\"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305\", \"TLS13_AES_128_GCM_SHA256\", \"TLS_AES_256_GCM_SHA384;ECDHE-ECDSA-AES128-GCM-SHA256\"]\n"
        ),
    );
    assert!(ok, "{out}");

    // Suites rustls does not offer are named, each of them, with those it does.
    let (ok, out) = check_config(
        dir,
        &format!(
            "{key}cipher_suites = [\"ECDHE-RSA-AES128-GCM-SHA256\", \"AES128-SHA\", \"DHE-RSA-AES256-GCM-SHA384:RC4-MD5\"]\n"
        ),
    );
    assert!(!ok, "{out}");
    for expected in [
        "proxy.cipher_suites",
        r#""AES128-SHA", "DHE-RSA-AES256-GCM-SHA384", "RC4-MD5" are not supported"#,
        "choose from TLS_AES_256_GCM_SHA384",
        "ECDHE-RSA-AES128-GCM-SHA256",
    ] {
        assert!(out.contains(expected), "missing {expected:?}:\n{out}");
    }

    // TLS 1.2 suites for RSA keys with an ECDSA key: TLS 1.2 clients would all fail.
    let (ok, out) = check_config(
        dir,
        &format!("{key}cipher_suites = \"ECDHE-RSA-AES256-GCM-SHA384:TLS_AES_256_GCM_SHA384\"\n"),
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("is ECDSA, and no TLS 1.2 suite of cipher_suites signs with it"),
        "{out}"
    );

    // An OpenSSL cipher string is not a list of suites.
    let (ok, out) = check_config(dir, &format!("{key}cipher_suites = \"HIGH:!aNULL\"\n"));
    assert!(!ok, "{out}");
    assert!(
        out.contains(r#""HIGH", "!aNULL" are OpenSSL cipher-string keywords"#),
        "{out}"
    );

    // An encrypted key: without its pass phrase, with a wrong one, with the right one.
    let pass = encrypt_key(&dir.join("server.key"), &dir.join("enc.key"), "sesame");
    let enc = format!("{cert}key_file = \"{d}/enc.key\"\n");
    let (ok, out) = check_config(dir, &enc);
    assert!(!ok, "{out}");
    assert!(
        out.contains("proxy.key_file")
            && out.contains("the private key is encrypted: set key_passphrase_file")
            && out.contains(&format!("openssl pkey -in {d}/enc.key -out key-clear.pem")),
        "{out}"
    );
    let wrong = dir.join("wrong.pass");
    std::fs::write(&wrong, "open sesame\n").unwrap();
    let (ok, out) = check_config(
        dir,
        &format!("{enc}key_passphrase_file = \"{}\"\n", wrong.display()),
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("proxy.key_passphrase_file") && out.contains("cannot decrypt"),
        "{out}"
    );
    let (ok, out) = check_config(
        dir,
        &format!("{enc}key_passphrase_file = \"{}\"\n", pass.display()),
    );
    assert!(ok, "{out}");
    // A pass phrase for a key that is not encrypted is a mistake worth hearing of.
    let (ok, out) = check_config(
        dir,
        &format!("{key}key_passphrase_file = \"{}\"\n", pass.display()),
    );
    assert!(!ok && out.contains("holds no encrypted key"), "{out}");

    // OpenSSL's traditional encrypted PEM: refused with the commands that convert it.
    let status = Command::new("openssl")
        .args(["ec", "-in"])
        .arg(dir.join("server.key"))
        .args(["-aes256", "-passout", "pass:sesame", "-out"])
        .arg(dir.join("traditional.key"))
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let (ok, out) = check_config(
        dir,
        &format!(
            "{cert}key_file = \"{d}/traditional.key\"\nkey_passphrase_file = \"{}\"\n",
            pass.display()
        ),
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("Proc-Type: 4,ENCRYPTED")
            && out.contains("openssl pkcs8 -topk8 -v2 aes-256-cbc"),
        "{out}"
    );

    // The chain file is read too, and named when it is not there.
    let (ok, out) = check_config(
        dir,
        &format!("{key}chain_file = \"{d}/missing-chain.pem\"\n"),
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("proxy.chain_file") && out.contains("missing-chain.pem"),
        "{out}"
    );
    let (ok, out) = check_config(dir, &format!("chain_file = \"{d}/ca.pem\"\n"));
    assert!(
        !ok && out.contains("set certificate_file and key_file too"),
        "{out}"
    );
}
