//! Which network namespace the dataplane acts in.
//!
//! In production margay acts in its own namespace ([`NetnsTarget::current`]).
//! Tests, the sandbox and `margay run` under `ip netns exec` may instead name a
//! namespace from `/var/run/netns`: commands are then wrapped with
//! `ip netns exec <name>`, and sockets or `/proc/sys/net` files are opened from
//! a thread that entered the namespace (a socket's namespace is fixed when it
//! is created, so it keeps working from any thread afterwards).

use std::fs::File;
use std::process::Command;

use nix::sched::{setns, CloneFlags};
use thiserror::Error;

/// Why acting in a namespace failed.
#[derive(Debug, Error)]
pub enum NetnsError {
    /// The name is not a plain file name we accept.
    #[error("invalid network namespace name {0:?}: must match ^[A-Za-z0-9_.-]{{1,64}}$")]
    BadName(String),
    /// `/var/run/netns/<name>` could not be opened.
    #[error("cannot open network namespace {name}: {source}")]
    Open {
        name: String,
        #[source]
        source: std::io::Error,
    },
    /// setns(2) refused.
    #[error("cannot enter network namespace {name}: {source}")]
    Enter {
        name: String,
        #[source]
        source: nix::Error,
    },
    /// The worker thread panicked.
    #[error("thread acting in network namespace {0} panicked")]
    Panicked(String),
}

/// The network namespace the dataplane writes into.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetnsTarget {
    name: Option<String>,
}

impl NetnsTarget {
    /// The namespace this process runs in.
    pub fn current() -> Self {
        NetnsTarget { name: None }
    }

    /// A namespace named in `/var/run/netns` (as `ip netns add` makes them).
    pub fn named(name: &str) -> Result<Self, NetnsError> {
        let ok = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
            && name != "."
            && name != "..";
        if !ok {
            return Err(NetnsError::BadName(name.to_owned()));
        }
        Ok(NetnsTarget {
            name: Some(name.to_owned()),
        })
    }

    /// The namespace's name, or `None` for our own.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        match &self.name {
            None => Command::new(program),
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns, program]);
                cmd
            }
        }
    }

    /// Runs `f` inside the namespace: directly for our own namespace, else on
    /// a short-lived thread that entered it first.
    pub fn run_in<T, F>(&self, f: F) -> Result<T, NetnsError>
    where
        T: Send,
        F: FnOnce() -> T + Send,
    {
        let Some(name) = &self.name else {
            return Ok(f());
        };
        let path = format!("/var/run/netns/{name}");
        let file = File::open(&path).map_err(|source| NetnsError::Open {
            name: name.clone(),
            source,
        })?;
        std::thread::scope(|scope| {
            let worker = scope.spawn(move || {
                setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter {
                    name: name.clone(),
                    source,
                })?;
                Ok(f())
            });
            worker
                .join()
                .unwrap_or_else(|_| Err(NetnsError::Panicked(name.clone())))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(NetnsTarget::named("mgy-h1").is_ok());
        assert!(NetnsTarget::named("../etc").is_err());
        assert!(NetnsTarget::named("a b").is_err());
        assert!(NetnsTarget::named("").is_err());
        assert!(NetnsTarget::named("..").is_err());
    }

    #[test]
    fn commands_are_wrapped_only_for_named_namespaces() {
        let own = NetnsTarget::current().command("nft");
        assert_eq!(own.get_program(), "nft");
        let named = NetnsTarget::named("mgy-x")
            .expect("valid name")
            .command("nft");
        assert_eq!(named.get_program(), "ip");
        let args: Vec<_> = named.get_args().collect();
        assert_eq!(args, ["netns", "exec", "mgy-x", "nft"]);
    }

    #[test]
    fn run_in_current_namespace_runs_inline() {
        let v = NetnsTarget::current().run_in(|| 41 + 1).expect("runs");
        assert_eq!(v, 42);
    }

    #[test]
    fn run_in_missing_namespace_is_an_error() {
        let t = NetnsTarget::named("mgy-does-not-exist-xyz").expect("valid name");
        assert!(matches!(t.run_in(|| ()), Err(NetnsError::Open { .. })));
    }
}
