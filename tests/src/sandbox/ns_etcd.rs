//! The test's own etcd client, living on a thread inside the etcd namespace
//! so that cutting the agents off etcd leaves the test able to write.

use super::*;

type Job = Box<dyn FnOnce(&mut Option<etcd_client::Client>, &tokio::runtime::Runtime) + Send>;

/// An etcd client living on a thread inside the etcd namespace, talking to
/// etcd's loopback listener (so cutting the fabric never cuts the test off).
pub(crate) struct NsEtcd {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl NsEtcd {
    pub(crate) fn new(ns: &str) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        let ns = ns.to_owned();
        let thread = std::thread::spawn(move || {
            enter_netns(&ns);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("cannot build runtime: {e}"));
            let mut client = None;
            while let Ok(job) = rx.recv() {
                job(&mut client, &rt);
            }
        });
        NsEtcd {
            jobs: Some(tx),
            thread: Some(thread),
        }
    }

    /// Runs `f` with a connected client (connecting first when needed). A
    /// failed attempt drops the client and is retried on a fresh connection
    /// (etcd may just have been restarted), up to three times in all.
    pub(crate) fn run<T, F, Fut>(&self, f: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: Fn(etcd_client::Client) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move |slot, rt| {
            let mut result = Err("not tried".to_owned());
            for attempt in 0..3 {
                if attempt > 0 {
                    std::thread::sleep(Duration::from_millis(200));
                }
                result = rt
                    .block_on(Self::attempt(slot, &f))
                    .map_err(|e| e.to_string());
                if result.is_ok() {
                    break;
                }
                *slot = None;
            }
            let _ = tx.send(result);
        });
        self.jobs
            .as_ref()
            .and_then(|jobs| jobs.send(job).ok())
            .unwrap_or_else(|| panic!("etcd client thread is gone"));
        rx.recv()
            .unwrap_or_else(|_| panic!("etcd client thread died"))
    }

    /// Writes every pair, in transactions of up to 100 puts each.
    pub(crate) fn put_many(&self, pairs: &[(String, String)]) -> Result<(), String> {
        for chunk in pairs.chunks(100) {
            let chunk = chunk.to_vec();
            self.run(move |mut c| {
                let ops: Vec<etcd_client::TxnOp> = chunk
                    .iter()
                    .map(|(k, v)| etcd_client::TxnOp::put(k.as_str(), v.as_str(), None))
                    .collect();
                async move { c.txn(etcd_client::Txn::new().and_then(ops)).await }
            })?;
        }
        Ok(())
    }

    async fn attempt<T, F, Fut>(
        slot: &mut Option<etcd_client::Client>,
        f: &F,
    ) -> Result<T, etcd_client::Error>
    where
        F: Fn(etcd_client::Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let client = match slot {
            Some(client) => client.clone(),
            None => {
                let options = etcd_client::ConnectOptions::new()
                    .with_connect_timeout(Duration::from_secs(2))
                    .with_timeout(Duration::from_secs(10));
                let client =
                    etcd_client::Client::connect(["http://127.0.0.1:2379"], Some(options)).await?;
                *slot = Some(client.clone());
                client
            }
        };
        f(client).await
    }
}

impl Drop for NsEtcd {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
