//! Throw-away TLS material for a TLS etcd: a CA, a server certificate for
//! 127.0.0.1 and a client certificate, made with the openssl tool.

use super::*;

/// Makes a CA, a server certificate for 127.0.0.1 and a client certificate
/// under `dir/certs` (EC P-256 keys, valid one day). Panics if openssl fails.
pub(super) fn make_certs(dir: &Path) -> TlsPaths {
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", certs.display()));
    let path = |name: &str| certs.join(name).display().to_string();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run openssl: {e}"));
        if !out.status.success() {
            panic!(
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    };
    let key = |name: &str| {
        openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &path(name),
        ]);
    };
    key("ca-key.pem");
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        &path("ca-key.pem"),
        "-days",
        "1",
        "-subj",
        "/CN=mgy-test-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-out",
        &path("ca.pem"),
    ]);
    for (name, cn, ext) in [
        ("server", "127.0.0.1", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n"),
        ("client", "mgy-test-client", "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n"),
    ] {
        key(&format!("{name}-key.pem"));
        openssl(&[
            "req", "-new", "-key", &path(&format!("{name}-key.pem")), "-subj", &format!("/CN={cn}"),
            "-out", &path(&format!("{name}.csr")),
        ]);
        let ext_file = certs.join(format!("{name}.ext"));
        std::fs::write(&ext_file, ext)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", ext_file.display()));
        openssl(&[
            "x509", "-req", "-in", &path(&format!("{name}.csr")), "-CA", &path("ca.pem"),
            "-CAkey", &path("ca-key.pem"), "-CAcreateserial", "-days", "1",
            "-extfile", &ext_file.display().to_string(), "-out", &path(&format!("{name}.pem")),
        ]);
    }
    TlsPaths {
        ca: certs.join("ca.pem"),
        ca_key: certs.join("ca-key.pem"),
        cert: certs.join("client.pem"),
        key: certs.join("client-key.pem"),
    }
}
