//! nf_tables spoken over netlink, in process: the nftables backend's fast path.
//!
//! Written from the kernel's uapi (`linux/netfilter/nf_tables.h`,
//! `nfnetlink.h`); no libnftnl. The parts:
//! * [`uapi`]: the kernel's numbers;
//! * `wire`: netlink message and attribute framing;
//! * [`Session`] (`session`): one `NETLINK_NETFILTER` socket opened inside
//!   the target namespace; sends batches, waits for their acks, answers the
//!   ruleset generation; `readback` reads our table back over it;
//! * `batch`: turns [`FirewallOp`]s into one nfnetlink batch (one kernel
//!   transaction: all or nothing) — table, chains, sets, elements, rules;
//! * `expr`: turns one rule into its nf_tables expressions;
//! * `decode`: reads the kernel's dump answers (and our own batches) back.
//!
//! A write sends the batch with a single `sendmsg`, then sends a generation
//! query and reads until its reply: any error of the batch arrives before
//! it. Read-back dumps only our table's chains (names), rules (chain and
//! comment, plus the jump of hook chains) and set elements; rule
//! expressions are never parsed.
//!
//! The expressions emitted are the ones `nft` itself emits for the same
//! rule text (see `nft --debug=netlink`), up to two equivalent forms that
//! `dataplane/tests/nft_golden.rs` compares against a captured listing and
//! names, so `nft list table inet margay` shows our rules readably.

mod batch;
mod decode;
mod expr;
mod readback;
mod session;
pub mod uapi;
mod wire;

pub use batch::encode_batch;
pub use decode::{intervals_to_nets, observe_batch};
pub use session::Session;

use crate::firewall::FirewallError;
#[cfg(doc)]
use crate::firewall::FirewallOp;

/// A netlink error of operation `op`.
fn nl_err(op: &str, detail: impl std::fmt::Display) -> FirewallError {
    FirewallError::Netlink {
        op: op.to_owned(),
        detail: detail.to_string(),
    }
}
