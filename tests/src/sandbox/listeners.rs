//! TCP listeners inside namespaces (workload ports, the outside server) that
//! record which peers connected, driven from one background thread.

use super::*;

/// What the listener thread is told.
enum ListenerCmd {
    /// Serve this listener under a tag; record peers when the flag is set.
    Add(String, TcpListener, bool),
    /// Close every listener with this tag (so its namespace can go away).
    Remove(String, mpsc::Sender<()>),
}

/// One thread that keeps accepting (and closing) connections on every
/// listener, recording the peers of those marked to be recorded.
pub(super) struct Listeners {
    cmds: mpsc::Sender<ListenerCmd>,
    seen: Arc<Mutex<BTreeMap<String, Vec<SocketAddr>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listeners {
    pub(super) fn new() -> Self {
        let (cmds, rx) = mpsc::channel::<ListenerCmd>();
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let seen = Arc::clone(&seen);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || Self::pump(&rx, &seen, &stop))
        };
        Listeners {
            cmds,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn pump(
        rx: &mpsc::Receiver<ListenerCmd>,
        seen: &Mutex<BTreeMap<String, Vec<SocketAddr>>>,
        stop: &AtomicBool,
    ) {
        let mut all: Vec<(String, TcpListener, bool)> = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            while let Ok(cmd) = rx.try_recv() {
                match cmd {
                    ListenerCmd::Add(tag, listener, record) => all.push((tag, listener, record)),
                    ListenerCmd::Remove(tag, done) => {
                        all.retain(|(t, _, _)| *t != tag);
                        let _ = done.send(());
                    }
                }
            }
            for (tag, listener, record) in &all {
                while let Ok((stream, peer)) = listener.accept() {
                    // Record before closing: the prober waits for the close.
                    if *record {
                        if let Ok(mut seen) = seen.lock() {
                            seen.entry(tag.clone()).or_default().push(peer);
                        }
                    }
                    drop(stream);
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Listens on `addr` inside `ns`; `tag` names it for [`Self::peers`].
    pub(super) fn listen(&self, ns: &str, tag: &str, addr: SocketAddr, record: bool) {
        let listener = in_netns(ns, || TcpListener::bind(addr))
            .unwrap_or_else(|e| panic!("cannot listen on {addr} in {ns}: {e}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("cannot make listener non-blocking: {e}"));
        self.cmds
            .send(ListenerCmd::Add(tag.to_owned(), listener, record))
            .unwrap_or_else(|_| panic!("listener thread is gone"));
    }

    /// Closes the listeners tagged `tag` and waits until they are closed.
    pub(super) fn remove(&self, tag: &str) {
        let (tx, rx) = mpsc::channel();
        if self
            .cmds
            .send(ListenerCmd::Remove(tag.to_owned(), tx))
            .is_ok()
        {
            let _ = rx.recv_timeout(Duration::from_secs(5));
        }
    }

    pub(super) fn peers(&self, tag: &str) -> Vec<SocketAddr> {
        self.seen
            .lock()
            .map(|seen| seen.get(tag).cloned().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
