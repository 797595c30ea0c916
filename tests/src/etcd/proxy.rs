//! [`CutoffProxy`]: a loopback TCP proxy in front of etcd that a test cuts
//! and restores, to cut a client off while the server keeps running.

use super::*;

/// A loopback TCP proxy in front of an etcd server that a test can cut and
/// restore, to cut an agent off from etcd while the server itself keeps
/// running (and can be written to and compacted meanwhile).
#[derive(Debug)]
pub struct CutoffProxy {
    port: u16,
    state: Arc<ProxyState>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug, Default)]
pub(super) struct ProxyState {
    open: AtomicBool,
    stopping: AtomicBool,
    sockets: Mutex<Vec<TcpStream>>,
}

impl ProxyState {
    fn close_all(&self) {
        let mut sockets = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
        for s in sockets.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl CutoffProxy {
    /// Starts forwarding a free loopback port to `127.0.0.1:upstream_port`.
    pub fn new(upstream_port: u16) -> Self {
        let listener = bind_any();
        let port = local_port(&listener);
        let state = Arc::new(ProxyState::default());
        state.open.store(true, Ordering::SeqCst);
        let st = state.clone();
        let acceptor = std::thread::spawn(move || accept_loop(listener, upstream_port, &st));
        CutoffProxy {
            port,
            state,
            acceptor: Some(acceptor),
        }
    }

    /// The URL clients should use, e.g. `http://127.0.0.1:40124`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Drops every open connection and refuses new ones until [`Self::restore`].
    pub fn cut(&self) {
        self.state.open.store(false, Ordering::SeqCst);
        self.state.close_all();
    }

    /// Accepts and forwards connections again.
    pub fn restore(&self) {
        self.state.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for CutoffProxy {
    fn drop(&mut self) {
        self.state.stopping.store(true, Ordering::SeqCst);
        self.state.open.store(false, Ordering::SeqCst);
        // Wake the acceptor.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
        self.state.close_all();
    }
}

pub(super) fn accept_loop(listener: TcpListener, upstream_port: u16, state: &Arc<ProxyState>) {
    for conn in listener.incoming() {
        if state.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = conn else { continue };
        if !state.open.load(Ordering::SeqCst) {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(upstream) = TcpStream::connect(("127.0.0.1", upstream_port)) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let pipes = (client.try_clone(), upstream.try_clone());
        let (Ok(client2), Ok(upstream2)) = pipes else {
            continue;
        };
        {
            let mut sockets = state.sockets.lock().unwrap_or_else(|p| p.into_inner());
            for s in [&client, &upstream] {
                if let Ok(c) = s.try_clone() {
                    sockets.push(c);
                }
            }
        }
        std::thread::spawn(move || pipe(client, upstream2));
        std::thread::spawn(move || pipe(upstream, client2));
    }
}

/// Copies `from` to `to` until either side closes, then closes both.
pub(super) fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
