//! Scratch directories, free loopback ports and a minimal HTTP GET, shared
//! by the etcd fixtures.

use super::*;

/// `/dev/shm` when writable (tmpfs: fsync is free), else the temp dir.
pub(crate) fn scratch_root() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() && nix::unistd::access(shm, nix::unistd::AccessFlags::W_OK).is_ok() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// Two distinct free loopback ports (both held while choosing).
pub(crate) fn free_port_pair() -> (u16, u16) {
    let a = bind_any();
    let b = bind_any();
    (local_port(&a), local_port(&b))
}

pub(super) fn bind_any() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("cannot bind loopback: {e}"))
}

pub(super) fn local_port(listener: &TcpListener) -> u16 {
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("no local address: {e}"))
        .port()
}

/// A minimal HTTP/1.0 GET on loopback; returns the whole response text.
pub(crate) fn http_get(port: u16, path: &str) -> Option<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}
