//! nf_tables spoken over netlink, in process: the nftables backend's fast path.
//!
//! Written from the kernel's uapi (`linux/netfilter/nf_tables.h`,
//! `nfnetlink.h`); no libnftnl. A [`Session`] holds one `NETLINK_NETFILTER`
//! socket opened inside the target namespace. A write encodes all ops as one
//! nfnetlink batch (one kernel transaction: all or nothing), sends it with a
//! single `sendmsg`, then sends a generation query and reads until its reply:
//! any error of the batch arrives before it. Read-back dumps only our
//! table's chains (names), rules (chain and comment, plus the jump of hook
//! chains) and set elements; rule expressions are never parsed.
//!
//! The expressions emitted are the ones `nft` itself emits for the same
//! rule text (see `nft --debug=netlink`), so `nft list table inet margay`
//! shows our rules readably.

mod decode;
mod wire;

pub use decode::{intervals_to_nets, observe_batch};

use std::collections::BTreeSet;

use ipnet::IpNet;
use margay_policy::desired::{IpVersion, PortRange};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};

use super::{hook_chain, render, TABLE};
use crate::firewall::model::{
    Action, AddressSet, CtState, GenericRule, Hook, Match, ObjectName, ObservedRuleset,
};
use crate::firewall::{FirewallError, FirewallOp};
use crate::netns::NetnsTarget;
use decode::RuleSeen;
use wire::{attrs, be32, find, messages, Builder};

// nfnetlink / nf_tables constants (uapi).
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFPROTO_INET: u8 = 1;
const AF_UNSPEC: u8 = 0;

const MSG_NEWTABLE: u8 = 0;
const MSG_DELTABLE: u8 = 2;
const MSG_NEWCHAIN: u8 = 3;
const MSG_GETCHAIN: u8 = 4;
const MSG_DELCHAIN: u8 = 5;
const MSG_NEWRULE: u8 = 6;
const MSG_GETRULE: u8 = 7;
const MSG_DELRULE: u8 = 8;
const MSG_NEWSET: u8 = 9;
const MSG_GETSET: u8 = 10;
const MSG_DELSET: u8 = 11;
const MSG_NEWSETELEM: u8 = 12;
const MSG_GETSETELEM: u8 = 13;
const MSG_DELSETELEM: u8 = 14;
const MSG_NEWGEN: u8 = 15;
const MSG_GETGEN: u8 = 16;
const NFTA_GEN_ID: u16 = 1;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

const NFTA_LIST_ELEM: u16 = 1;
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_DESC: u16 = 9;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_USERDATA: u16 = 13;
const NFTA_SET_DESC_SIZE: u16 = 1;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;

const NFT_SET_ANONYMOUS: u32 = 0x1;
const NFT_SET_CONSTANT: u32 = 0x2;
const NFT_SET_INTERVAL: u32 = 0x4;
const NFT_SET_ELEM_INTERVAL_END: u32 = 0x1;
const NFT_LOOKUP_F_INV: u32 = 0x1;
// nft's datatype ids, stored so `nft list` prints the right types.
const TYPE_IPADDR: u32 = 7;
const TYPE_IP6ADDR: u32 = 8;
const TYPE_INET_SERVICE: u32 = 13;

const REG_VERDICT: u32 = 0;
const REG_1: u32 = 1;
const META_MARK: u32 = 3;
const META_IIFNAME: u32 = 6;
const META_OIFNAME: u32 = 7;
const META_NFPROTO: u32 = 15;
const META_L4PROTO: u32 = 16;
const CT_STATE: u32 = 0;
const BASE_NETWORK: u32 = 1;
const BASE_TRANSPORT: u32 = 2;
const CMP_EQ: u32 = 0;
const CMP_NEQ: u32 = 1;
const RANGE_EQ: u32 = 0;
const RANGE_NEQ: u32 = 1;

const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
const NFT_JUMP: i32 = -3;
const NFT_GOTO: i32 = -4;
const NFT_RETURN: i32 = -5;

const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
const CT_BIT_INVALID: u32 = 1;
const CT_BIT_ESTABLISHED: u32 = 2;
const CT_BIT_RELATED: u32 = 4;

/// Userdata nft attaches to address sets (key byte order), copied so the
/// tool prints our sets exactly like its own.
const SET_USERDATA: [u8; 6] = [0x01, 0x04, 0x01, 0x00, 0x00, 0x00];

fn nl_err(op: &str, detail: impl std::fmt::Display) -> FirewallError {
    FirewallError::Netlink {
        op: op.to_owned(),
        detail: detail.to_string(),
    }
}

/// An open nf_tables socket in the target namespace.
pub struct Session {
    sock: Socket,
    seq: u32,
    sndbuf: usize,
    rbuf: Vec<u8>,
    /// The ruleset generation the last generation query answered.
    last_gen: Option<u32>,
}

impl Session {
    /// Opens the socket inside `netns` (it stays bound to that namespace).
    pub fn open(netns: &NetnsTarget) -> Result<Self, FirewallError> {
        let sock = netns
            .run_in(|| -> std::io::Result<Socket> {
                let mut s = Socket::new(NETLINK_NETFILTER)?;
                s.bind_auto()?;
                Ok(s)
            })?
            .map_err(|e| nl_err("open", e))?;
        let mut s = Session {
            sock,
            seq: 1,
            sndbuf: 0,
            rbuf: Vec::with_capacity(1 << 20),
            last_gen: None,
        };
        s.grow_buffers(4 << 20)?;
        Ok(s)
    }

    fn grow_buffers(&mut self, want: usize) -> Result<(), FirewallError> {
        use nix::sys::socket::{setsockopt, sockopt};
        if want <= self.sndbuf {
            return Ok(());
        }
        // The *Force variants pass wmem_max/rmem_max (we run as root);
        // fall back to the plain ones.
        if setsockopt(&self.sock, sockopt::SndBufForce, &want).is_err() {
            setsockopt(&self.sock, sockopt::SndBuf, &want).map_err(|e| nl_err("setsockopt", e))?;
        }
        if setsockopt(&self.sock, sockopt::RcvBufForce, &want).is_err() {
            let _ = setsockopt(&self.sock, sockopt::RcvBuf, &want);
        }
        self.sndbuf = want;
        Ok(())
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    /// Commits `ops` as one transaction.
    pub fn write(&mut self, ops: &[FirewallOp]) -> Result<(), FirewallError> {
        let start = self.next_seq();
        let mut b = BatchWriter::new(start);
        b.ops(ops)?;
        let (buf, descs, last) = b.finish()?;
        self.seq = last;
        self.grow_buffers(buf.len() + (64 << 10))?;
        self.send(&buf, "batch")?;
        let errors = self.sync()?;
        if errors.is_empty() {
            return Ok(());
        }
        self.last_gen = None;
        let detail: Vec<String> = errors
            .iter()
            .take(5)
            .map(|(seq, errno)| {
                let what = descs
                    .binary_search_by_key(seq, |(s, _)| *s)
                    .ok()
                    .map_or("?", |i| descs[i].1.as_str());
                format!("{what}: {}", std::io::Error::from_raw_os_error(*errno))
            })
            .collect();
        Err(nl_err("batch", detail.join("; ")))
    }

    fn send(&self, buf: &[u8], what: &str) -> Result<(), FirewallError> {
        let n = self.sock.send(buf, 0).map_err(|e| nl_err(what, e))?;
        if n != buf.len() {
            return Err(nl_err(what, format!("short send {n}/{}", buf.len())));
        }
        Ok(())
    }

    /// The namespace's nf_tables ruleset generation: the kernel bumps it by
    /// one on every committed transaction, by anyone, in any table.
    pub fn generation(&mut self) -> Result<u32, FirewallError> {
        let errors = self.sync()?;
        if let Some((_, errno)) = errors.first() {
            return Err(nl_err("getgen", std::io::Error::from_raw_os_error(*errno)));
        }
        self.last_gen
            .ok_or_else(|| nl_err("getgen", "no generation in the answer"))
    }

    /// The generation reported right after the last write's batch (its
    /// commit included), if the write succeeded.
    pub fn generation_after_write(&self) -> Option<u32> {
        self.last_gen
    }

    /// Sends a generation query and reads until its answer, collecting the
    /// (seq, errno) of every error reported before it.
    fn sync(&mut self) -> Result<Vec<(u32, i32)>, FirewallError> {
        self.last_gen = None;
        let seq = self.next_seq();
        let mut b = Builder::default();
        let m = b.msg(nft_type(MSG_GETGEN), NLM_F_REQUEST, seq, AF_UNSPEC, 0);
        b.end_msg(m);
        self.send(&b.buf, "getgen")?;
        let mut errors = Vec::new();
        loop {
            self.recv()?;
            let mut done = false;
            for m in messages(&self.rbuf) {
                if m.ty == NLMSG_ERROR {
                    let errno = error_code(m.payload);
                    if errno != 0 {
                        errors.push((m.seq, errno));
                    }
                }
                if m.seq == seq && m.ty == nft_type(MSG_NEWGEN) {
                    self.last_gen =
                        find(&attrs(m.payload.get(4..).unwrap_or(&[])), NFTA_GEN_ID).map(be32);
                }
                done |= m.seq == seq;
            }
            if done {
                return Ok(errors);
            }
        }
    }

    fn recv(&mut self) -> Result<(), FirewallError> {
        self.rbuf.clear();
        if self.rbuf.capacity() < (1 << 20) {
            self.rbuf.reserve(1 << 20);
        }
        self.sock
            .recv(&mut self.rbuf, 0)
            .map_err(|e| nl_err("recv", e))?;
        Ok(())
    }

    /// Runs a dump request and hands every answer message's attributes to `f`.
    fn dump(
        &mut self,
        msg: u8,
        build: impl FnOnce(&mut Builder),
        mut f: impl FnMut(&[u8]),
    ) -> Result<DumpEnd, FirewallError> {
        let seq = self.next_seq();
        let mut b = Builder::default();
        let m = b.msg(
            nft_type(msg),
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            NFPROTO_INET,
            0,
        );
        build(&mut b);
        b.end_msg(m);
        self.send(&b.buf, "dump")?;
        loop {
            self.recv()?;
            let rbuf = std::mem::take(&mut self.rbuf);
            let mut end = None;
            for m in messages(&rbuf) {
                if m.seq != seq {
                    continue;
                }
                match m.ty {
                    NLMSG_DONE => end = Some(DumpEnd::Done),
                    NLMSG_ERROR => {
                        let errno = error_code(m.payload);
                        end = Some(if errno == libc::ENOENT {
                            DumpEnd::NoSuchObject
                        } else if errno == 0 {
                            DumpEnd::Done
                        } else {
                            self.rbuf = rbuf;
                            return Err(nl_err("dump", std::io::Error::from_raw_os_error(errno)));
                        });
                    }
                    // Skip the nfgenmsg header.
                    _ => f(m.payload.get(4..).unwrap_or(&[])),
                }
            }
            self.rbuf = rbuf;
            if let Some(e) = end {
                return Ok(e);
            }
        }
    }

    /// Deletes our table and everything in it, in one transaction. Returns
    /// false when there was no such table. Nothing else is touched.
    pub fn delete_table(&mut self) -> Result<bool, FirewallError> {
        let start = self.next_seq();
        let mut b = BatchWriter::new(start);
        let m = b.msg(MSG_DELTABLE, 0, || format!("delete table {TABLE}"));
        b.b.put_str(NFTA_TABLE_NAME, TABLE);
        b.b.end_msg(m);
        let (buf, _, last) = b.finish()?;
        self.seq = last;
        self.send(&buf, "batch")?;
        match self.sync()?.first() {
            None => Ok(true),
            Some((_, errno)) if *errno == libc::ENOENT => Ok(false),
            Some((_, errno)) => Err(nl_err(
                "delete table",
                std::io::Error::from_raw_os_error(*errno),
            )),
        }
    }

    /// Reads back everything in our table. Rules are dumped chain by chain:
    /// the kernel resumes a dump by counting rules from the start of what it
    /// covers, so one dump of the whole table costs the square of the
    /// table's rules, and a dump per chain only the sum of each chain's square.
    pub fn observe(&mut self) -> Result<ObservedRuleset, FirewallError> {
        let mut out = ObservedRuleset::default();
        let mut chains: Vec<String> = Vec::new();
        let end = self.dump(
            MSG_GETCHAIN,
            |_| {},
            |p| {
                let Some(c) = decode::chain(p) else {
                    return;
                };
                chains.push(c.name.to_owned());
                if c.base {
                    return;
                }
                if let Some(n) = ObjectName::from_kernel(c.name) {
                    out.chains.insert(n, Vec::new());
                }
            },
        )?;
        if end == DumpEnd::NoSuchObject {
            return Ok(out);
        }
        for chain in &chains {
            self.observe_rules(chain, &mut out)?;
        }
        let mut sets: Vec<(ObjectName, IpVersion)> = Vec::new();
        self.dump(
            MSG_GETSET,
            |b| b.put_str(NFTA_SET_TABLE, TABLE),
            |p| sets.extend(decode::set(p)),
        )?;
        for (name, family) in sets {
            let members = self.observe_members(&name, family)?;
            out.sets.insert(name, AddressSet { family, members });
        }
        Ok(out)
    }

    /// Reads the rules of one chain of our table into `out`.
    fn observe_rules(
        &mut self,
        chain: &str,
        out: &mut ObservedRuleset,
    ) -> Result<(), FirewallError> {
        let mut parse_err = None;
        self.dump(
            MSG_GETRULE,
            |b| {
                b.put_str(NFTA_RULE_TABLE, TABLE);
                b.put_str(NFTA_RULE_CHAIN, chain);
            },
            |p| match decode::rule(p) {
                Some(RuleSeen::Hook(hook, Some(t), _)) => {
                    out.hooks.insert(hook, t);
                }
                Some(RuleSeen::Hook(_, None, chain)) => parse_err = Some(chain),
                Some(RuleSeen::Ours(name, fp)) => out.chains.entry(name).or_default().push(fp),
                None => {}
            },
        )?;
        if let Some(chain) = parse_err {
            tracing::debug!(chain, "hook chain without a jump");
        }
        Ok(())
    }

    fn observe_members(
        &mut self,
        set: &ObjectName,
        family: IpVersion,
    ) -> Result<BTreeSet<IpNet>, FirewallError> {
        let mut keys: Vec<(u128, bool)> = Vec::new();
        let mut bad = None;
        self.dump(
            MSG_GETSETELEM,
            |b| {
                b.put_str(NFTA_SET_ELEM_LIST_TABLE, TABLE);
                b.put_str(NFTA_SET_ELEM_LIST_SET, set.as_str());
            },
            |p| {
                if decode::elements(p, family, &mut keys).is_err() {
                    bad = Some(set.to_string());
                }
            },
        )?;
        if let Some(s) = bad {
            return Err(nl_err("set elements", format!("bad key in {s}")));
        }
        intervals_to_nets(keys, family)
    }
}

#[derive(Debug, PartialEq, Eq)]
enum DumpEnd {
    Done,
    NoSuchObject,
}

fn nft_type(msg: u8) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | u16::from(msg)
}

fn error_code(payload: &[u8]) -> i32 {
    payload
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, |b: [u8; 4]| -i32::from_ne_bytes(b))
}

/// The nfnetlink batch that [`Session::write`] sends for `ops` (sequence
/// numbers from 1); [`observe_batch`] reads it back.
pub fn encode_batch(ops: &[FirewallOp]) -> Result<Vec<u8>, FirewallError> {
    let mut b = BatchWriter::new(1);
    b.ops(ops)?;
    Ok(b.finish()?.0)
}

/// An encoded batch: its bytes, each message's (seq, description) for
/// error reports, and the last sequence number used.
type Batch = (Vec<u8>, Vec<(u32, String)>, u32);

/// Encodes ops as one nfnetlink batch.
struct BatchWriter {
    b: Builder,
    seq: u32,
    descs: Vec<(u32, String)>,
    anon_id: u32,
}

impl BatchWriter {
    fn new(seq: u32) -> Self {
        let mut w = BatchWriter {
            b: Builder::default(),
            seq,
            descs: Vec::new(),
            anon_id: 0,
        };
        let m = w.b.msg(
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            seq,
            AF_UNSPEC,
            NFNL_SUBSYS_NFTABLES,
        );
        w.b.end_msg(m);
        w
    }

    /// Closes the batch. Err when some length did not fit its field (for
    /// example one rule whose expressions exceed 64 KiB): such a buffer
    /// would be misread by the kernel and is never sent.
    fn finish(mut self) -> Result<Batch, FirewallError> {
        let seq = self.seq + 1;
        let m = self.b.msg(
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            seq,
            AF_UNSPEC,
            NFNL_SUBSYS_NFTABLES,
        );
        self.b.end_msg(m);
        if self.b.overflow {
            return Err(FirewallError::Invalid {
                what: "nftables batch",
                value: "an object too large for one netlink attribute (64 KiB)".to_owned(),
            });
        }
        Ok((self.b.buf, self.descs, seq))
    }

    /// Starts a message of the batch; `desc` names it in error reports.
    fn msg(&mut self, ty: u8, flags: u16, desc: impl FnOnce() -> String) -> usize {
        self.seq += 1;
        self.descs.push((self.seq, desc()));
        self.b.msg(
            nft_type(ty),
            NLM_F_REQUEST | flags,
            self.seq,
            NFPROTO_INET,
            0,
        )
    }

    fn ops(&mut self, ops: &[FirewallOp]) -> Result<(), FirewallError> {
        let m = self.msg(MSG_NEWTABLE, NLM_F_CREATE, || format!("table {TABLE}"));
        self.b.put_str(NFTA_TABLE_NAME, TABLE);
        self.b.end_msg(m);
        for op in ops {
            if let FirewallOp::ReplaceChain { name, .. } = op {
                self.chain(name.as_str(), None);
            }
        }
        // A deleted chain may be jumped to by another deleted chain or by a
        // chain rewritten in this batch: flush every deleted chain first and
        // delete chains last, whatever the order of `ops`.
        let is_delete = |op: &&FirewallOp| matches!(op, FirewallOp::DeleteChain { .. });
        for op in ops.iter().filter(is_delete) {
            if let FirewallOp::DeleteChain { name } = op {
                self.flush(name.as_str());
            }
        }
        for op in ops.iter().filter(|o| !is_delete(o)) {
            self.op(op)?;
        }
        for op in ops.iter().filter(is_delete) {
            self.op(op)?;
        }
        Ok(())
    }

    fn op(&mut self, op: &FirewallOp) -> Result<(), FirewallError> {
        match op {
            FirewallOp::CreateSet { name, family } => self.create_set(name, *family),
            FirewallOp::DeleteSet { name } => {
                let m = self.msg(MSG_DELSET, 0, || format!("delete set {name}"));
                self.b.put_str(NFTA_SET_TABLE, TABLE);
                self.b.put_str(NFTA_SET_NAME, name.as_str());
                self.b.end_msg(m);
            }
            FirewallOp::AddMembers {
                set,
                family,
                members,
            } => {
                self.elements(MSG_NEWSETELEM, set, *family, members)?;
            }
            FirewallOp::RemoveMembers {
                set,
                family,
                members,
            } => {
                self.elements(MSG_DELSETELEM, set, *family, members)?;
            }
            FirewallOp::ReplaceChain { name, rules } => {
                self.flush(name.as_str());
                for r in rules {
                    self.rule(name.as_str(), r)?;
                }
            }
            FirewallOp::DeleteChain { name } => {
                let m = self.msg(MSG_DELCHAIN, 0, || format!("delete chain {name}"));
                self.b.put_str(NFTA_CHAIN_TABLE, TABLE);
                self.b.put_str(NFTA_CHAIN_NAME, name.as_str());
                self.b.end_msg(m);
            }
            FirewallOp::AttachHook { hook, chain } => {
                let base = hook_chain(*hook);
                self.chain(base, Some(*hook));
                self.flush(base);
                let jump = GenericRule {
                    matches: vec![],
                    action: Action::Jump(chain.clone()),
                };
                self.rule_inner(base, &jump, false)?;
            }
        }
        Ok(())
    }

    fn chain(&mut self, name: &str, hook: Option<Hook>) {
        let m = self.msg(MSG_NEWCHAIN, NLM_F_CREATE, || format!("chain {name}"));
        self.b.put_str(NFTA_CHAIN_TABLE, TABLE);
        self.b.put_str(NFTA_CHAIN_NAME, name);
        if let Some(h) = hook {
            let (num, prio, ty): (u32, i32, &str) = match h {
                Hook::Input => (1, 0, "filter"),
                Hook::Forward => (2, 0, "filter"),
                Hook::Output => (3, 0, "filter"),
                Hook::NatPostrouting => (4, 100, "nat"),
            };
            let n = self.b.nest(NFTA_CHAIN_HOOK);
            self.b.put_be32(NFTA_HOOK_HOOKNUM, num);
            self.b.put_be32(NFTA_HOOK_PRIORITY, prio as u32);
            self.b.end_nest(n);
            self.b.put_be32(NFTA_CHAIN_POLICY, NF_ACCEPT);
            self.b.put_str(NFTA_CHAIN_TYPE, ty);
        }
        self.b.end_msg(m);
    }

    fn flush(&mut self, chain: &str) {
        let m = self.msg(MSG_DELRULE, 0, || format!("flush chain {chain}"));
        self.b.put_str(NFTA_RULE_TABLE, TABLE);
        self.b.put_str(NFTA_RULE_CHAIN, chain);
        self.b.end_msg(m);
    }

    fn create_set(&mut self, name: &ObjectName, family: IpVersion) {
        let m = self.msg(MSG_NEWSET, NLM_F_CREATE, || format!("set {name}"));
        self.b.put_str(NFTA_SET_TABLE, TABLE);
        self.b.put_str(NFTA_SET_NAME, name.as_str());
        self.b.put_be32(NFTA_SET_FLAGS, NFT_SET_INTERVAL);
        let (ty, len) = match family {
            IpVersion::V4 => (TYPE_IPADDR, 4),
            IpVersion::V6 => (TYPE_IP6ADDR, 16),
        };
        self.b.put_be32(NFTA_SET_KEY_TYPE, ty);
        self.b.put_be32(NFTA_SET_KEY_LEN, len);
        self.anon_id += 1;
        self.b.put_be32(NFTA_SET_ID, self.anon_id);
        self.b.put(NFTA_SET_USERDATA, &SET_USERDATA);
        self.b.end_msg(m);
    }

    /// Interval elements: a start at the network address and an end just
    /// past the broadcast address (none when that wraps).
    fn elements(
        &mut self,
        ty: u8,
        set: &ObjectName,
        family: IpVersion,
        members: &BTreeSet<IpNet>,
    ) -> Result<(), FirewallError> {
        // A member of the other family would be a key of the wrong length:
        // refuse it here, naming it, rather than send what the kernel rejects.
        if let Some(m) = members.iter().find(|n| net_family(n) != family) {
            return Err(FirewallError::Invalid {
                what: "set member",
                value: format!("{m} in the {family:?} set {set}"),
            });
        }
        let all: Vec<&IpNet> = members.iter().collect();
        // A nested attribute holds at most 64 KiB: about 56 bytes per v4
        // member and 80 per v6 member (start and end elements).
        let per_msg = match family {
            IpVersion::V6 => 256,
            IpVersion::V4 => 768,
        };
        for chunk in all.chunks(per_msg) {
            let verb = if ty == MSG_NEWSETELEM {
                "add"
            } else {
                "delete"
            };
            let m = self.msg(ty, NLM_F_CREATE, || format!("{verb} elements of {set}"));
            self.b.put_str(NFTA_SET_ELEM_LIST_TABLE, TABLE);
            self.b.put_str(NFTA_SET_ELEM_LIST_SET, set.as_str());
            let list = self.b.nest(NFTA_SET_ELEM_LIST_ELEMENTS);
            for net in chunk {
                let (start, end) = net_bounds(net);
                self.element(&start, false);
                if let Some(e) = end {
                    self.element(&e, true);
                }
            }
            self.b.end_nest(list);
            self.b.end_msg(m);
        }
        Ok(())
    }

    fn element(&mut self, key: &[u8], end: bool) {
        let e = self.b.nest(NFTA_LIST_ELEM);
        let k = self.b.nest(NFTA_SET_ELEM_KEY);
        self.b.put(NFTA_DATA_VALUE, key);
        self.b.end_nest(k);
        if end {
            self.b
                .put_be32(NFTA_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
        }
        self.b.end_nest(e);
    }

    /// An anonymous constant interval set of ports, for a rule to look up.
    fn port_set(&mut self, ports: &[PortRange]) -> u32 {
        self.anon_id += 1;
        let id = self.anon_id;
        let merged = render::merge_ports(ports);
        let m = self.msg(MSG_NEWSET, NLM_F_CREATE, || "anonymous port set".to_owned());
        self.b.put_str(NFTA_SET_TABLE, TABLE);
        self.b.put_str(NFTA_SET_NAME, "__set%d");
        self.b.put_be32(
            NFTA_SET_FLAGS,
            NFT_SET_ANONYMOUS | NFT_SET_CONSTANT | NFT_SET_INTERVAL,
        );
        self.b.put_be32(NFTA_SET_KEY_TYPE, TYPE_INET_SERVICE);
        self.b.put_be32(NFTA_SET_KEY_LEN, 2);
        self.b.put_be32(NFTA_SET_ID, id);
        let d = self.b.nest(NFTA_SET_DESC);
        self.b.put_be32(
            NFTA_SET_DESC_SIZE,
            u32::try_from(merged.len() * 2).unwrap_or(u32::MAX),
        );
        self.b.end_nest(d);
        self.b.end_msg(m);
        let m = self.msg(MSG_NEWSETELEM, NLM_F_CREATE, || {
            "anonymous port set elements".to_owned()
        });
        self.b.put_str(NFTA_SET_ELEM_LIST_TABLE, TABLE);
        self.b.put_str(NFTA_SET_ELEM_LIST_SET, "__set%d");
        self.b.put_be32(NFTA_SET_ELEM_LIST_SET_ID, id);
        let list = self.b.nest(NFTA_SET_ELEM_LIST_ELEMENTS);
        for p in merged {
            self.element(&p.lo.to_be_bytes(), false);
            if let Some(next) = p.hi.checked_add(1) {
                self.element(&next.to_be_bytes(), true);
            }
        }
        self.b.end_nest(list);
        self.b.end_msg(m);
        id
    }

    fn rule(&mut self, chain: &str, r: &GenericRule) -> Result<(), FirewallError> {
        self.rule_inner(chain, r, true)
    }

    fn rule_inner(
        &mut self,
        chain: &str,
        r: &GenericRule,
        with_comment: bool,
    ) -> Result<(), FirewallError> {
        // Anonymous sets must precede the rule using them.
        let mut anon: Vec<u32> = Vec::new();
        for m in &r.matches {
            if let Match::SrcPorts { ports, .. } | Match::DstPorts { ports, .. } = m {
                check_ports(ports)?;
                if ports.len() > 1 {
                    anon.push(self.port_set(ports));
                }
            }
        }
        let m = self.msg(MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, || {
            format!("rule in {chain}")
        });
        self.b.put_str(NFTA_RULE_TABLE, TABLE);
        self.b.put_str(NFTA_RULE_CHAIN, chain);
        let exprs = self.b.nest(NFTA_RULE_EXPRESSIONS);
        let mut e = Exprs {
            b: &mut self.b,
            anon: anon.into_iter(),
        };
        e.rule(r)?;
        self.b.end_nest(exprs);
        if with_comment {
            let text = format!("{:016x}", r.fingerprint());
            let mut ud = vec![0u8, 17];
            ud.extend_from_slice(text.as_bytes());
            ud.push(0);
            self.b.put(NFTA_RULE_USERDATA, &ud);
        }
        self.b.end_msg(m);
        Ok(())
    }
}

fn check_ports(ports: &[PortRange]) -> Result<(), FirewallError> {
    if ports.is_empty() || ports.iter().any(|p| p.lo > p.hi) {
        return Err(FirewallError::Invalid {
            what: "port list",
            value: format!("{ports:?}"),
        });
    }
    Ok(())
}

fn net_family(net: &IpNet) -> IpVersion {
    match net {
        IpNet::V4(_) => IpVersion::V4,
        IpNet::V6(_) => IpVersion::V6,
    }
}

/// Start key and (exclusive) end key of a net, big endian.
fn net_bounds(net: &IpNet) -> (Vec<u8>, Option<Vec<u8>>) {
    match net.trunc() {
        IpNet::V4(n) => {
            let start = u32::from(n.network());
            let end = u32::from(n.broadcast()).checked_add(1);
            (
                start.to_be_bytes().to_vec(),
                end.map(|e| e.to_be_bytes().to_vec()),
            )
        }
        IpNet::V6(n) => {
            let start = u128::from(n.network());
            let end = u128::from(n.broadcast()).checked_add(1);
            (
                start.to_be_bytes().to_vec(),
                end.map(|e| e.to_be_bytes().to_vec()),
            )
        }
    }
}

/// Emits one rule's expressions.
struct Exprs<'a> {
    b: &'a mut Builder,
    anon: std::vec::IntoIter<u32>,
}

impl Exprs<'_> {
    fn expr(&mut self, name: &str, body: impl FnOnce(&mut Builder)) {
        let e = self.b.nest(NFTA_LIST_ELEM);
        self.b.put_str(NFTA_EXPR_NAME, name);
        let d = self.b.nest(NFTA_EXPR_DATA);
        body(self.b);
        self.b.end_nest(d);
        self.b.end_nest(e);
    }

    fn meta(&mut self, key: u32) {
        self.expr("meta", |b| {
            b.put_be32(2, key); // NFTA_META_KEY
            b.put_be32(1, REG_1); // NFTA_META_DREG
        });
    }

    fn cmp(&mut self, op: u32, data: &[u8]) {
        self.expr("cmp", |b| {
            b.put_be32(1, REG_1); // NFTA_CMP_SREG
            b.put_be32(2, op); // NFTA_CMP_OP
            let d = b.nest(3); // NFTA_CMP_DATA
            b.put(NFTA_DATA_VALUE, data);
            b.end_nest(d);
        });
    }

    fn payload(&mut self, base: u32, offset: u32, len: u32) {
        self.expr("payload", |b| {
            b.put_be32(1, REG_1); // NFTA_PAYLOAD_DREG
            b.put_be32(2, base); // NFTA_PAYLOAD_BASE
            b.put_be32(3, offset); // NFTA_PAYLOAD_OFFSET
            b.put_be32(4, len); // NFTA_PAYLOAD_LEN
        });
    }

    fn bitwise(&mut self, mask: &[u8], xor: &[u8]) {
        self.expr("bitwise", |b| {
            b.put_be32(1, REG_1); // NFTA_BITWISE_SREG
            b.put_be32(2, REG_1); // NFTA_BITWISE_DREG
            b.put_be32(3, u32::try_from(mask.len()).unwrap_or(0)); // NFTA_BITWISE_LEN
            let m = b.nest(4); // NFTA_BITWISE_MASK
            b.put(NFTA_DATA_VALUE, mask);
            b.end_nest(m);
            let x = b.nest(5); // NFTA_BITWISE_XOR
            b.put(NFTA_DATA_VALUE, xor);
            b.end_nest(x);
        });
    }

    fn lookup(&mut self, set: &str, id: Option<u32>, negated: bool) {
        self.expr("lookup", |b| {
            b.put_str(1, set); // NFTA_LOOKUP_SET
            b.put_be32(2, REG_1); // NFTA_LOOKUP_SREG
            if let Some(id) = id {
                b.put_be32(4, id); // NFTA_LOOKUP_SET_ID
            }
            if negated {
                b.put_be32(5, NFT_LOOKUP_F_INV); // NFTA_LOOKUP_FLAGS
            }
        });
    }

    fn range(&mut self, negated: bool, lo: &[u8], hi: &[u8]) {
        self.expr("range", |b| {
            b.put_be32(1, REG_1); // NFTA_RANGE_SREG
            b.put_be32(2, if negated { RANGE_NEQ } else { RANGE_EQ }); // NFTA_RANGE_OP
            let f = b.nest(3); // NFTA_RANGE_FROM_DATA
            b.put(NFTA_DATA_VALUE, lo);
            b.end_nest(f);
            let t = b.nest(4); // NFTA_RANGE_TO_DATA
            b.put(NFTA_DATA_VALUE, hi);
            b.end_nest(t);
        });
    }

    fn verdict(&mut self, code: u32, chain: Option<&str>) {
        self.expr("immediate", |b| {
            b.put_be32(1, REG_VERDICT); // NFTA_IMMEDIATE_DREG
            let d = b.nest(2); // NFTA_IMMEDIATE_DATA
            let v = b.nest(NFTA_DATA_VERDICT);
            b.put_be32(NFTA_VERDICT_CODE, code);
            if let Some(c) = chain {
                b.put_str(NFTA_VERDICT_CHAIN, c);
            }
            b.end_nest(v);
            b.end_nest(d);
        });
    }

    fn family_guard(&mut self, f: IpVersion) {
        self.meta(META_NFPROTO);
        let v = if f == IpVersion::V4 {
            NFPROTO_IPV4
        } else {
            NFPROTO_IPV6
        };
        self.cmp(CMP_EQ, &[v]);
    }

    fn rule(&mut self, r: &GenericRule) -> Result<(), FirewallError> {
        let family = r.matches.iter().find_map(|m| match m {
            Match::Family(f) => Some(*f),
            _ => None,
        });
        for m in &r.matches {
            self.matcher(m, family)?;
        }
        self.action(&r.action)
    }

    fn matcher(&mut self, m: &Match, family: Option<IpVersion>) -> Result<(), FirewallError> {
        let need = |what| {
            family.ok_or(FirewallError::Invalid {
                what,
                value: "match without a family".to_owned(),
            })
        };
        match m {
            Match::Family(f) => self.family_guard(*f),
            Match::InInterface { name, prefix } | Match::OutInterface { name, prefix } => {
                render::check_iface(name)?;
                let key = if matches!(m, Match::InInterface { .. }) {
                    META_IIFNAME
                } else {
                    META_OIFNAME
                };
                self.meta(key);
                if *prefix {
                    self.cmp(CMP_EQ, name.as_bytes());
                } else {
                    let mut padded = [0u8; 16];
                    padded[..name.len()].copy_from_slice(name.as_bytes());
                    self.cmp(CMP_EQ, &padded);
                }
            }
            Match::Protocol { proto, negated } => {
                self.meta(META_L4PROTO);
                self.cmp(if *negated { CMP_NEQ } else { CMP_EQ }, &[*proto]);
            }
            Match::SrcNet { net, negated } | Match::DstNet { net, negated } => {
                let src = matches!(m, Match::SrcNet { .. });
                self.net(net, src, *negated, family);
            }
            Match::SrcSet { set, negated } | Match::DstSet { set, negated } => {
                let src = matches!(m, Match::SrcSet { .. });
                self.addr_load(need("set match")?, src);
                self.lookup(set.as_str(), None, *negated);
            }
            Match::SrcPorts { ports, negated } | Match::DstPorts { ports, negated } => {
                let offset = if matches!(m, Match::SrcPorts { .. }) {
                    0
                } else {
                    2
                };
                self.payload(BASE_TRANSPORT, offset, 2);
                self.ports(ports, *negated);
            }
            Match::Icmp {
                icmp_type,
                code,
                negated,
            } => {
                need("icmp match")?;
                self.icmp(*icmp_type, *code, *negated);
            }
            Match::Mark { value, mask } => {
                self.meta(META_MARK);
                self.bitwise(&mask.to_ne_bytes(), &[0; 4]);
                self.cmp(CMP_EQ, &value.to_ne_bytes());
            }
            Match::ConnState(s) => {
                let bits = match s {
                    CtState::EstablishedRelated => CT_BIT_ESTABLISHED | CT_BIT_RELATED,
                    CtState::Invalid => CT_BIT_INVALID,
                };
                self.expr("ct", |b| {
                    b.put_be32(2, CT_STATE); // NFTA_CT_KEY
                    b.put_be32(1, REG_1); // NFTA_CT_DREG
                });
                self.bitwise(&bits.to_ne_bytes(), &[0; 4]);
                self.cmp(CMP_NEQ, &[0; 4]);
            }
        }
        Ok(())
    }

    fn addr_load(&mut self, f: IpVersion, src: bool) {
        match (f, src) {
            (IpVersion::V4, true) => self.payload(BASE_NETWORK, 12, 4),
            (IpVersion::V4, false) => self.payload(BASE_NETWORK, 16, 4),
            (IpVersion::V6, true) => self.payload(BASE_NETWORK, 8, 16),
            (IpVersion::V6, false) => self.payload(BASE_NETWORK, 24, 16),
        }
    }

    fn net(&mut self, net: &IpNet, src: bool, negated: bool, family: Option<IpVersion>) {
        let f = match net {
            IpNet::V4(_) => IpVersion::V4,
            IpNet::V6(_) => IpVersion::V6,
        };
        if family != Some(f) {
            self.family_guard(f);
        }
        self.addr_load(f, src);
        let (addr, mask): (Vec<u8>, Vec<u8>) = match net.trunc() {
            IpNet::V4(n) => (n.network().octets().to_vec(), n.netmask().octets().to_vec()),
            IpNet::V6(n) => (n.network().octets().to_vec(), n.netmask().octets().to_vec()),
        };
        if net.prefix_len() != net.max_prefix_len() {
            self.bitwise(&mask, &vec![0; mask.len()]);
        }
        self.cmp(if negated { CMP_NEQ } else { CMP_EQ }, &addr);
    }

    fn ports(&mut self, ports: &[PortRange], negated: bool) {
        if ports.len() == 1 {
            let p = ports[0];
            if p.lo == p.hi {
                self.cmp(if negated { CMP_NEQ } else { CMP_EQ }, &p.lo.to_be_bytes());
            } else {
                self.range(negated, &p.lo.to_be_bytes(), &p.hi.to_be_bytes());
            }
            return;
        }
        let id = self.anon.next();
        self.lookup("__set%d", id, negated);
    }

    fn icmp(&mut self, ty: u8, code: Option<u8>, negated: bool) {
        match (code, negated) {
            (None, _) => {
                self.payload(BASE_TRANSPORT, 0, 1);
                self.cmp(if negated { CMP_NEQ } else { CMP_EQ }, &[ty]);
            }
            (Some(c), false) => {
                self.payload(BASE_TRANSPORT, 0, 1);
                self.cmp(CMP_EQ, &[ty]);
                self.payload(BASE_TRANSPORT, 1, 1);
                self.cmp(CMP_EQ, &[c]);
            }
            (Some(c), true) => {
                self.payload(BASE_TRANSPORT, 0, 2);
                self.cmp(CMP_NEQ, &[ty, c]);
            }
        }
    }

    fn action(&mut self, a: &Action) -> Result<(), FirewallError> {
        match a {
            Action::Accept => self.verdict(NF_ACCEPT, None),
            Action::Drop => self.verdict(NF_DROP, None),
            Action::Return => self.verdict(NFT_RETURN as u32, None),
            Action::Jump(c) => self.verdict(NFT_JUMP as u32, Some(c.as_str())),
            Action::Goto(c) => self.verdict(NFT_GOTO as u32, Some(c.as_str())),
            Action::Log { prefix } => {
                render::check_log_prefix(prefix)?;
                self.expr("log", |b| b.put_str(2, prefix)); // NFTA_LOG_PREFIX
            }
            Action::SetMark { value, mask } => {
                self.meta(META_MARK);
                self.bitwise(&(!mask).to_ne_bytes(), &value.to_ne_bytes());
                self.expr("meta", |b| {
                    b.put_be32(2, META_MARK); // NFTA_META_KEY
                    b.put_be32(3, REG_1); // NFTA_META_SREG
                });
            }
            Action::Masquerade => self.expr("masq", |_| {}),
            Action::Continue => self.expr("counter", |_| {}),
        }
        Ok(())
    }
}
