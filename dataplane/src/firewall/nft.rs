//! The nftables backend: everything lives in our own table `inet margay`.
//!
//! Base chains `hook-forward`, `hook-input`, `hook-output` (filter) and
//! `hook-nat-post` (nat postrouting, in the same inet table) each hold one
//! jump to the generic chain the hook calls. Every other rule carries its
//! fingerprint as comment, so read-back compares without parsing
//! expressions. This backend reads and writes nothing outside our table:
//! rules of other tables keep working (a drop in our table is final; an
//! accept only ends our table's say, so `DefaultEndpointToHostAction=ACCEPT`
//! cannot override another table's drop). The one exception, kept beside
//! this backend by the dataplane, is the workload accept in an iptables
//! `FORWARD` chain whose policy is `DROP` (Docker hosts:
//! [`super::iptables::forward_accept`]).
//!
//! Two transports, same semantics:
//! * [`NftMode::Tool`]: `nft -f -` for each write (one process, one
//!   transaction) and `nft -j list table` for read-back.
//! * [`NftMode::Netlink`] (default): nf_tables netlink spoken in process
//!   (module `netlink`): one batch per write on a socket opened once, and a
//!   dump of our table's chains, rule comments and set elements for
//!   read-back. No process per change.

pub mod common;
mod json;
pub mod netlink;
pub mod render;

use std::io::Write as _;
use std::process::{Command, Stdio};

use super::model::ObservedRuleset;
use super::{FirewallBackend, FirewallError, FirewallOp};
use crate::netns::NetnsTarget;

pub use common::{hook_chain, hook_of_chain, hook_spec, TABLE};
pub use json::parse_table;
pub use render::render_batch;

/// How the backend talks to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NftMode {
    /// Run the `nft` tool per write and read.
    Tool,
    /// Speak nf_tables netlink in process.
    Netlink,
}

/// The nftables backend.
pub struct NftBackend {
    netns: NetnsTarget,
    mode: NftMode,
    session: Option<netlink::Session>,
}

impl NftBackend {
    /// The default backend (netlink) acting in `netns`.
    pub fn new(netns: NetnsTarget) -> Result<Self, FirewallError> {
        Self::with_mode(netns, NftMode::Netlink)
    }

    /// A backend using `mode`.
    pub fn with_mode(netns: NetnsTarget, mode: NftMode) -> Result<Self, FirewallError> {
        let session = match mode {
            NftMode::Tool => None,
            NftMode::Netlink => Some(netlink::Session::open(&netns)?),
        };
        Ok(NftBackend {
            netns,
            mode,
            session,
        })
    }

    /// The transport in use.
    pub fn mode(&self) -> NftMode {
        self.mode
    }

    fn run_nft(&self, args: &[&str], stdin: Option<&str>) -> Result<String, FirewallError> {
        let mut cmd: Command = self.netns.command("nft");
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawn_err = |source| FirewallError::Spawn {
            tool: "nft".to_owned(),
            source,
        };
        let mut child = cmd.spawn().map_err(spawn_err)?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes()).map_err(spawn_err)?;
        }
        let out = child.wait_with_output().map_err(spawn_err)?;
        if !out.status.success() {
            return Err(FirewallError::Tool {
                tool: format!("nft {}", args.join(" ")),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn observe_tool(&self) -> Result<ObservedRuleset, FirewallError> {
        match self.run_nft(&["-j", "list", "table", "inet", TABLE], None) {
            Ok(json) => parse_table(&json),
            Err(FirewallError::Tool { stderr, .. })
                if stderr.contains("No such file or directory") =>
            {
                Ok(ObservedRuleset::default())
            }
            Err(e) => Err(e),
        }
    }
}

impl FirewallBackend for NftBackend {
    fn name(&self) -> &'static str {
        "nftables"
    }

    fn observe(&mut self) -> Result<ObservedRuleset, FirewallError> {
        match &mut self.session {
            Some(s) => s.observe(),
            None => self.observe_tool(),
        }
    }

    fn write(&mut self, ops: &[FirewallOp]) -> Result<(), FirewallError> {
        if ops.is_empty() {
            return Ok(());
        }
        match &mut self.session {
            Some(s) => s.write(ops),
            None => {
                let text = render_batch(ops)?;
                self.run_nft(&["-f", "-"], Some(&text)).map(|_| ())
            }
        }
    }

    fn generation(&mut self) -> Result<Option<u64>, FirewallError> {
        match &mut self.session {
            Some(s) => s.generation().map(|g| Some(u64::from(g))),
            None => Ok(None),
        }
    }

    fn generation_after_write(&self) -> Option<u64> {
        self.session
            .as_ref()
            .and_then(netlink::Session::generation_after_write)
            .map(u64::from)
    }

    fn observer(&self) -> Result<Option<Box<dyn FirewallBackend>>, FirewallError> {
        Ok(Some(Box::new(Self::with_mode(
            self.netns.clone(),
            self.mode,
        )?)))
    }
}
