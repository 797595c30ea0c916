//! Read-back over the session: our table's chains, the rules of each chain
//! (their fingerprints, and the jump of hook chains) and our named sets with
//! their members, dumped from the kernel and decoded by `decode`.

use std::collections::BTreeSet;

use ipnet::IpNet;
use margay_policy::desired::IpVersion;

use super::decode::{self, intervals_to_nets};
use super::nl_err;
use super::session::{DumpEnd, Session};
use super::uapi::*;
use crate::firewall::model::{AddressSet, ObjectName, ObservedRuleset};
use crate::firewall::nft::common::{record_chain, TABLE};
use crate::firewall::FirewallError;

impl Session {
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
                record_chain(c.name, c.base, &mut out);
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
        let mut jumpless = false;
        self.dump(
            MSG_GETRULE,
            |b| {
                b.put_str(NFTA_RULE_TABLE, TABLE);
                b.put_str(NFTA_RULE_CHAIN, chain);
            },
            |p| {
                if let Some(seen) = decode::rule(p) {
                    jumpless |= !seen.record(out);
                }
            },
        )?;
        if jumpless {
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
