//! Throw-away certificates for TLS failure tests, made with the `openssl`
//! binary: a second, unrelated CA (the "wrong CA" a client may be given) and
//! client certificates signed by a test CA that have already expired.
//!
//! [`crate::etcd::EtcdServer::new_tls`] makes the server's own CA and
//! certificates; the functions here add to them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Runs `openssl args`, panicking with its stderr when it fails.
fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl: {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// An EC P-256 key at `path`.
fn make_key(path: &Path) {
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        &path_str(path),
    ]);
}

/// A self-signed CA named `name` under `dir` (`<name>.pem`, `<name>-key.pem`),
/// valid one day; returns the certificate's path.
pub fn make_ca(dir: &Path, name: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let key = dir.join(format!("{name}-key.pem"));
    let cert = dir.join(format!("{name}.pem"));
    make_key(&key);
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        &path_str(&key),
        "-days",
        "1",
        "-subj",
        &format!("/CN={name}"),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-out",
        &path_str(&cert),
    ]);
    cert
}

/// A client certificate (and key) signed by the CA at `ca` / `ca_key`,
/// valid only during 2020-01-01, so long expired. Returns (cert, key).
pub fn make_expired_client(dir: &Path, ca: &Path, ca_key: &Path) -> (PathBuf, PathBuf) {
    let work = dir.join("expired-ca");
    std::fs::create_dir_all(&work).unwrap_or_else(|e| panic!("{}: {e}", work.display()));
    let write = |name: &str, text: &str| {
        let p = work.join(name);
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        p
    };
    write("index.txt", "");
    write("serial", "1000\n");
    let config = write(
        "ca.cnf",
        &format!(
            "[ca]\ndefault_ca = test\n[test]\ndatabase = {db}\nnew_certs_dir = {dir}\n\
             serial = {dir}/serial\ndefault_md = sha256\npolicy = any\n\
             [any]\ncommonName = supplied\n[client]\nextendedKeyUsage = clientAuth\n\
             basicConstraints = CA:FALSE\n",
            db = work.join("index.txt").display(),
            dir = work.display(),
        ),
    );
    let key = dir.join("expired-client-key.pem");
    let csr = work.join("expired-client.csr");
    let cert = dir.join("expired-client.pem");
    make_key(&key);
    openssl(&[
        "req",
        "-new",
        "-key",
        &path_str(&key),
        "-subj",
        "/CN=mgy-expired-client",
        "-out",
        &path_str(&csr),
    ]);
    openssl(&[
        "ca",
        "-batch",
        "-notext",
        "-config",
        &path_str(&config),
        "-extensions",
        "client",
        "-cert",
        &path_str(ca),
        "-keyfile",
        &path_str(ca_key),
        "-startdate",
        "20200101000000Z",
        "-enddate",
        "20200102000000Z",
        "-in",
        &path_str(&csr),
        "-out",
        &path_str(&cert),
    ]);
    (cert, key)
}
