//! The batch writer: [`FirewallOp`]s as one nfnetlink batch (begin, the
//! table, chains, sets, set elements, rules, end), which the kernel commits
//! as one transaction. Each message keeps a description so an error the
//! kernel reports by sequence number names the object it is about.

use std::collections::BTreeSet;

use ipnet::IpNet;
use margay_policy::desired::{IpVersion, PortRange};

use super::expr::Exprs;
use super::uapi::*;
use super::wire::{Builder, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST};
#[cfg(doc)]
use super::{observe_batch, Session};
use crate::firewall::model::{Action, GenericRule, Hook, Match, ObjectName};
use crate::firewall::nft::common::{
    base_chain, check_ports, fingerprint_comment, hook_chain, merge_ports, net_family, TABLE,
};
use crate::firewall::{FirewallError, FirewallOp};

/// The nfnetlink batch that [`Session::write`] sends for `ops` (sequence
/// numbers from 1); [`observe_batch`] reads it back.
pub fn encode_batch(ops: &[FirewallOp]) -> Result<Vec<u8>, FirewallError> {
    let mut b = BatchWriter::new(1);
    b.ops(ops)?;
    Ok(b.finish()?.0)
}

/// An encoded batch: its bytes, each message's (seq, description) for
/// error reports, and the last sequence number used.
pub(super) type Batch = (Vec<u8>, Vec<(u32, String)>, u32);

/// Encodes ops as one nfnetlink batch.
pub(super) struct BatchWriter {
    b: Builder,
    seq: u32,
    descs: Vec<(u32, String)>,
    anon_id: u32,
}

impl BatchWriter {
    pub(super) fn new(seq: u32) -> Self {
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
    pub(super) fn finish(mut self) -> Result<Batch, FirewallError> {
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

    /// Adds the deletion of our table and everything in it.
    pub(super) fn delete_table(&mut self) {
        let m = self.msg(MSG_DELTABLE, 0, || format!("delete table {TABLE}"));
        self.b.put_str(NFTA_TABLE_NAME, TABLE);
        self.b.end_msg(m);
    }

    /// Adds `ops`: our table, then every op in an order the kernel accepts.
    pub(super) fn ops(&mut self, ops: &[FirewallOp]) -> Result<(), FirewallError> {
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
            FirewallOp::DetachHook { hook, .. } => {
                // Declared first (a no-op when it exists), so the delete
                // succeeds even when someone else removed it meanwhile.
                let base = hook_chain(*hook);
                self.chain(base, Some(*hook));
                self.flush(base);
                let m = self.msg(MSG_DELCHAIN, 0, || format!("delete base chain {base}"));
                self.b.put_str(NFTA_CHAIN_TABLE, TABLE);
                self.b.put_str(NFTA_CHAIN_NAME, base);
                self.b.end_msg(m);
            }
        }
        Ok(())
    }

    fn chain(&mut self, name: &str, hook: Option<Hook>) {
        let m = self.msg(MSG_NEWCHAIN, NLM_F_CREATE, || format!("chain {name}"));
        self.b.put_str(NFTA_CHAIN_TABLE, TABLE);
        self.b.put_str(NFTA_CHAIN_NAME, name);
        if let Some(h) = hook {
            let c = base_chain(h);
            let n = self.b.nest(NFTA_CHAIN_HOOK);
            self.b.put_be32(NFTA_HOOK_HOOKNUM, c.hook_number);
            self.b.put_be32(NFTA_HOOK_PRIORITY, c.priority as u32);
            self.b.end_nest(n);
            self.b.put_be32(NFTA_CHAIN_POLICY, NF_ACCEPT);
            self.b.put_str(NFTA_CHAIN_TYPE, c.kind);
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
        let merged = merge_ports(ports);
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
        Exprs::new(&mut self.b, anon).rule(r)?;
        self.b.end_nest(exprs);
        if with_comment {
            let ud = comment_userdata(&fingerprint_comment(r.fingerprint()));
            self.b.put(NFTA_RULE_USERDATA, &ud);
        }
        self.b.end_msg(m);
        Ok(())
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

/// Rule userdata holding `text` as the rule's comment (a TLV entry of type
/// comment, NUL-terminated), as nft stores a `comment "..."`.
fn comment_userdata(text: &str) -> Vec<u8> {
    let len = u8::try_from(text.len() + 1).unwrap_or(u8::MAX);
    let mut ud = vec![UDATA_RULE_COMMENT, len];
    ud.extend_from_slice(text.as_bytes());
    ud.push(0);
    ud
}
