//! The expression encoder: one [`GenericRule`] as the list of nf_tables
//! expressions (meta, payload, bitwise, cmp, range, lookup, ct, immediate,
//! log, masq, counter) the kernel evaluates: the ones `nft` emits for the
//! rule's text, except a single port range (one `range` where nft 1.0.6
//! emits two `cmp`s) and a prefix (the whole address masked where nft loads
//! only the prefix's bytes); see `dataplane/tests/nft_golden.rs`.

use ipnet::IpNet;
use margay_policy::desired::{IpVersion, PortRange};

use super::uapi::*;
use super::wire::Builder;
use crate::firewall::model::{Action, CtState, GenericRule, Match};
use crate::firewall::nft::common::{check_iface, check_log_prefix, need_family, net_family};
use crate::firewall::FirewallError;

/// Emits one rule's expressions.
pub(super) struct Exprs<'a> {
    b: &'a mut Builder,
    anon: std::vec::IntoIter<u32>,
}

impl<'a> Exprs<'a> {
    /// An encoder appending to `b`; `anon` are the ids of the anonymous
    /// port sets the batch declared for this rule, in match order.
    pub(super) fn new(b: &'a mut Builder, anon: Vec<u32>) -> Self {
        Exprs {
            b,
            anon: anon.into_iter(),
        }
    }

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
            b.put_be32(NFTA_META_KEY, key);
            b.put_be32(NFTA_META_DREG, REG_1);
        });
    }

    fn cmp(&mut self, op: u32, data: &[u8]) {
        self.expr("cmp", |b| {
            b.put_be32(NFTA_CMP_SREG, REG_1);
            b.put_be32(NFTA_CMP_OP, op);
            let d = b.nest(NFTA_CMP_DATA);
            b.put(NFTA_DATA_VALUE, data);
            b.end_nest(d);
        });
    }

    fn payload(&mut self, base: u32, offset: u32, len: u32) {
        self.expr("payload", |b| {
            b.put_be32(NFTA_PAYLOAD_DREG, REG_1);
            b.put_be32(NFTA_PAYLOAD_BASE, base);
            b.put_be32(NFTA_PAYLOAD_OFFSET, offset);
            b.put_be32(NFTA_PAYLOAD_LEN, len);
        });
    }

    fn bitwise(&mut self, mask: &[u8], xor: &[u8]) {
        self.expr("bitwise", |b| {
            b.put_be32(NFTA_BITWISE_SREG, REG_1);
            b.put_be32(NFTA_BITWISE_DREG, REG_1);
            b.put_be32(NFTA_BITWISE_LEN, u32::try_from(mask.len()).unwrap_or(0));
            let m = b.nest(NFTA_BITWISE_MASK);
            b.put(NFTA_DATA_VALUE, mask);
            b.end_nest(m);
            let x = b.nest(NFTA_BITWISE_XOR);
            b.put(NFTA_DATA_VALUE, xor);
            b.end_nest(x);
        });
    }

    fn lookup(&mut self, set: &str, id: Option<u32>, negated: bool) {
        self.expr("lookup", |b| {
            b.put_str(NFTA_LOOKUP_SET, set);
            b.put_be32(NFTA_LOOKUP_SREG, REG_1);
            if let Some(id) = id {
                b.put_be32(NFTA_LOOKUP_SET_ID, id);
            }
            if negated {
                b.put_be32(NFTA_LOOKUP_FLAGS, NFT_LOOKUP_F_INV);
            }
        });
    }

    fn range(&mut self, negated: bool, lo: &[u8], hi: &[u8]) {
        self.expr("range", |b| {
            b.put_be32(NFTA_RANGE_SREG, REG_1);
            b.put_be32(NFTA_RANGE_OP, if negated { RANGE_NEQ } else { RANGE_EQ });
            let f = b.nest(NFTA_RANGE_FROM_DATA);
            b.put(NFTA_DATA_VALUE, lo);
            b.end_nest(f);
            let t = b.nest(NFTA_RANGE_TO_DATA);
            b.put(NFTA_DATA_VALUE, hi);
            b.end_nest(t);
        });
    }

    fn verdict(&mut self, code: u32, chain: Option<&str>) {
        self.expr("immediate", |b| {
            b.put_be32(NFTA_IMMEDIATE_DREG, REG_VERDICT);
            let d = b.nest(NFTA_IMMEDIATE_DATA);
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

    pub(super) fn rule(&mut self, r: &GenericRule) -> Result<(), FirewallError> {
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
        let need = |what| need_family(family, what);
        match m {
            Match::Family(f) => self.family_guard(*f),
            Match::InInterface { name, prefix } | Match::OutInterface { name, prefix } => {
                check_iface(name)?;
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
                    b.put_be32(NFTA_CT_KEY, CT_STATE);
                    b.put_be32(NFTA_CT_DREG, REG_1);
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
        let f = net_family(net);
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
                check_log_prefix(prefix)?;
                self.expr("log", |b| b.put_str(NFTA_LOG_PREFIX, prefix));
            }
            Action::SetMark { value, mask } => {
                self.meta(META_MARK);
                self.bitwise(&(!mask).to_ne_bytes(), &value.to_ne_bytes());
                self.expr("meta", |b| {
                    b.put_be32(NFTA_META_KEY, META_MARK);
                    b.put_be32(NFTA_META_SREG, REG_1);
                });
            }
            Action::Masquerade => self.expr("masq", |_| {}),
            Action::Continue => self.expr("counter", |_| {}),
        }
        Ok(())
    }
}
