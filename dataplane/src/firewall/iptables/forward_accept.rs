//! The accept the nftables backend keeps in a foreign iptables `FORWARD`
//! chain whose policy is `DROP` (Docker sets it: `iptables -P FORWARD DROP`).
//!
//! Why: a packet passes a hook only if every base chain on it lets it
//! through. An accept in our `inet margay` table ends only our table's say,
//! so the iptables `FORWARD` policy would still drop every workload packet
//! margay's policy allows. Where that policy is `DROP`, we add per workload
//! interface prefix `p` (the `InterfacePrefix` setting) two rules:
//!
//! ```text
//! -A FORWARD -i p+ -m comment --comment margay-workload-accept -j ACCEPT
//! -A FORWARD -o p+ -m comment --comment margay-workload-accept -j ACCEPT
//! ```
//!
//! They end only the iptables chain's say: margay's own nft chains still
//! decide (a drop there is final), so denied traffic stays denied.
//!
//! Which variant: wherever the drop is. Docker uses whichever `iptables`
//! its host points to (nf_tables or legacy), so in each variant and family
//! whose filter `FORWARD` chain exists with policy `DROP` we keep the
//! rules, and where the policy is not (or no longer) `DROP` we keep none.
//! We never create a table: a variant not in use stays untouched (writing
//! to it would load x_tables or add an `ip filter` table that other tools
//! would then count as in use).
//!
//! Placement: appended. Docker's own rules (`DOCKER-USER`, the isolation
//! chains, the bridge rules) run first and keep their say; ours accept only
//! what would otherwise reach the policy.
//!
//! Ownership and lifecycle: ours are the `FORWARD` rules carrying the
//! comment [`TAG`]; nothing else is read as ours or touched. Each variant
//! and family is changed by one `iptables-restore --noflush` (`-D` of rules
//! of ours not wanted, `-A` of the missing ones), committed at once. A
//! restart finds the rules equal and writes nothing; drift (a rule deleted,
//! a prefix changed, Docker starting after margay) is repaired on the next
//! refresh; switching to the iptables backend removes them
//! ([`crate::firewall::switch`]). Legacy changes do not move the nf_tables
//! generation, so every refresh reads the chains: four `*-save` runs
//! (`-t filter` for nf_tables; never for legacy, where it would create the
//! table).

use margay_policy::desired::IpVersion;

use super::exec;
use super::variant::Variant;
use crate::firewall::FirewallError;
use crate::netns::NetnsTarget;

/// The comment that marks our accept rules.
pub const TAG: &str = "margay-workload-accept";

const VARIANTS: [Variant; 2] = [Variant::Nft, Variant::Legacy];
const FAMILIES: [IpVersion; 2] = [IpVersion::V4, IpVersion::V6];

/// What one variant's and family's filter `FORWARD` chain holds for us.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardChain {
    /// The chain's policy as saved (`ACCEPT`, `DROP`); `None`: no filter
    /// table or no `FORWARD` chain.
    pub policy: Option<String>,
    /// Our rules, each as saved after `-A FORWARD `.
    pub ours: Vec<String>,
}

impl ForwardChain {
    /// True when the policy drops what no rule accepts.
    pub fn drops(&self) -> bool {
        self.policy.as_deref() == Some("DROP")
    }
}

/// Reads the filter `FORWARD` chain out of one `iptables-save` output.
pub fn parse_forward(save: &str) -> ForwardChain {
    let mut chain = ForwardChain::default();
    let mut in_filter = false;
    for line in save.lines() {
        if let Some(table) = line.strip_prefix('*') {
            in_filter = table.trim() == "filter";
            continue;
        }
        if !in_filter {
            continue;
        }
        if let Some(decl) = line.strip_prefix(":FORWARD ") {
            chain.policy = decl.split_whitespace().next().map(str::to_owned);
        } else if let Some(spec) = line.strip_prefix("-A FORWARD ") {
            if is_ours(spec) {
                chain.ours.push(spec.to_owned());
            }
        }
    }
    chain
}

/// True when the rule carries our comment.
fn is_ours(spec: &str) -> bool {
    let mut words = spec.split_whitespace();
    while let Some(w) = words.next() {
        if w == "--comment" {
            return words.next().map(|c| c.trim_matches('"')) == Some(TAG);
        }
    }
    false
}

/// Our rule for `prefix` in direction `flag` (`-i`/`-o`), as iptables-save shows it.
pub fn rule_spec(flag: &str, prefix: &str) -> String {
    format!("{flag} {prefix}+ -m comment --comment {TAG} -j ACCEPT")
}

/// The rules a chain should hold of ours.
pub fn wanted(chain: &ForwardChain, prefixes: &[String]) -> Vec<String> {
    if !chain.drops() {
        return Vec::new();
    }
    prefixes
        .iter()
        .flat_map(|p| [rule_spec("-i", p), rule_spec("-o", p)])
        .collect()
}

/// The lines that turn `chain` into holding exactly `want` of ours.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edit {
    /// Rules of ours to delete (extras and duplicates), as `-D FORWARD` specs.
    pub delete: Vec<String>,
    /// Rules to append.
    pub append: Vec<String>,
}

impl Edit {
    /// Computes the edit (pure).
    pub fn between(chain: &ForwardChain, want: &[String]) -> Self {
        let mut kept: Vec<&str> = Vec::new();
        let mut edit = Edit::default();
        for spec in &chain.ours {
            if want.contains(spec) && !kept.contains(&spec.as_str()) {
                kept.push(spec);
            } else {
                edit.delete.push(spec.clone());
            }
        }
        edit.append = want
            .iter()
            .filter(|w| !kept.contains(&w.as_str()))
            .cloned()
            .collect();
        edit
    }

    /// True when nothing changes.
    pub fn is_empty(&self) -> bool {
        self.delete.is_empty() && self.append.is_empty()
    }

    /// The `iptables-restore --noflush` input.
    pub fn restore_input(&self) -> String {
        let mut text = String::from("*filter\n");
        for spec in &self.delete {
            text.push_str(&format!("-D FORWARD {spec}\n"));
        }
        for spec in &self.append {
            text.push_str(&format!("-A FORWARD {spec}\n"));
        }
        text.push_str("COMMIT\n");
        text
    }
}

/// What one reconcile did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AcceptReport {
    /// Rules appended.
    pub added: usize,
    /// Rules deleted.
    pub removed: usize,
    /// The variants and families holding our rules afterwards.
    pub holding: Vec<(Variant, IpVersion)>,
}

impl AcceptReport {
    /// Rules written (added or removed).
    pub fn changes(&self) -> usize {
        self.added + self.removed
    }
}

/// Keeps our accept rules in every variant and family (see the module doc).
#[derive(Debug, Clone)]
pub struct ForwardAccept {
    netns: NetnsTarget,
}

impl ForwardAccept {
    /// A reconciler for `netns`.
    pub fn new(netns: &NetnsTarget) -> Self {
        ForwardAccept {
            netns: netns.clone(),
        }
    }

    /// Makes every `FORWARD` chain with policy `DROP` hold our rules for
    /// `prefixes` (and every other chain none). Every variant and family is
    /// tried; the first failure is returned after the others ran.
    pub fn reconcile(&self, prefixes: &[String]) -> Result<AcceptReport, FirewallError> {
        let mut report = AcceptReport::default();
        let mut first_err = None;
        for variant in VARIANTS {
            for family in FAMILIES {
                match self.reconcile_one(variant, family, prefixes, &mut report) {
                    Ok(()) => {}
                    Err(e) if tool_missing(&e) => {}
                    Err(e) => {
                        tracing::warn!(
                            variant = variant.name(),
                            family = ?family,
                            error = %e,
                            "could not reconcile the workload accept in iptables FORWARD"
                        );
                        first_err.get_or_insert(e);
                    }
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    /// Removes every rule of ours, whatever the policy.
    pub fn remove(&self) -> Result<usize, FirewallError> {
        self.reconcile(&[]).map(|r| r.removed)
    }

    fn reconcile_one(
        &self,
        variant: Variant,
        family: IpVersion,
        prefixes: &[String],
        report: &mut AcceptReport,
    ) -> Result<(), FirewallError> {
        let save = exec::run(
            &self.netns,
            variant.save_bin(family),
            save_args(variant),
            None,
        )?;
        let chain = parse_forward(&save);
        let want = wanted(&chain, prefixes);
        let edit = Edit::between(&chain, &want);
        if !want.is_empty() {
            report.holding.push((variant, family));
        }
        if edit.is_empty() {
            return Ok(());
        }
        let input = edit.restore_input();
        exec::run(
            &self.netns,
            variant.restore_bin(family),
            Variant::RESTORE_ARGS,
            Some(&input),
        )?;
        tracing::info!(
            variant = variant.name(),
            family = ?family,
            added = edit.append.len(),
            removed = edit.delete.len(),
            "workload accept in iptables FORWARD updated"
        );
        report.added += edit.append.len();
        report.removed += edit.delete.len();
        Ok(())
    }
}

/// The `-save` arguments: only the filter table where that reads without
/// creating it (nf_tables); legacy `-save -t filter` would create the legacy
/// filter table, so there every existing table is read.
fn save_args(variant: Variant) -> &'static [&'static str] {
    match variant {
        Variant::Nft => &["-t", "filter"],
        Variant::Legacy => &[],
    }
}

/// The tool is not installed: that variant is not in use here.
fn tool_missing(e: &FirewallError) -> bool {
    matches!(e, FirewallError::Spawn { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
}

/// [`ForwardAccept`] as the dataplane drives it: after an apply whose
/// prefixes differ from the last ones, and on every refresh (which also
/// retries a failed reconcile).
#[derive(Debug, Clone)]
pub struct ManagedAccept {
    accept: ForwardAccept,
    /// The prefixes of the last apply; `None` before the first.
    prefixes: Option<Vec<String>>,
}

impl ManagedAccept {
    /// Nothing reconciled yet.
    pub fn new(netns: &NetnsTarget) -> Self {
        ManagedAccept {
            accept: ForwardAccept::new(netns),
            prefixes: None,
        }
    }

    /// After an apply: reconciles when `prefixes` are new. Returns the
    /// rules written; a failure is logged and retried by the next refresh
    /// (not by every apply: a broken iptables must not slow each one down).
    pub fn after_apply(&mut self, prefixes: &[String]) -> usize {
        if self.prefixes.as_deref() == Some(prefixes) {
            return 0;
        }
        self.prefixes = Some(prefixes.to_vec());
        self.run()
    }

    /// On a refresh: re-reads the chains and repairs them for the last
    /// applied prefixes (nothing before the first apply). Returns the
    /// rules written.
    pub fn refresh(&mut self) -> usize {
        self.run()
    }

    fn run(&self) -> usize {
        let Some(prefixes) = &self.prefixes else {
            return 0;
        };
        // A failure is logged per variant and family.
        self.accept
            .reconcile(prefixes)
            .map_or(0, |report| report.changes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCKER: &str = "# Generated by iptables-save v1.8.9\n*nat\n:PREROUTING ACCEPT [0:0]\n\
        -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\nCOMMIT\n*filter\n\
        :INPUT ACCEPT [0:0]\n:FORWARD DROP [3:180]\n:OUTPUT ACCEPT [0:0]\n:DOCKER - [0:0]\n\
        -A FORWARD -j DOCKER-USER\n-A FORWARD -i cali+ -m comment --comment margay-workload-accept -j ACCEPT\n\
        -A FORWARD -o tap+ -m comment --comment \"margay-workload-accept\" -j ACCEPT\n\
        -A FORWARD -i cali+ -m comment --comment margay-workload-accept -j ACCEPT\n\
        -A FORWARD -i x -m comment --comment other -j ACCEPT\nCOMMIT\n";

    fn p(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn reads_policy_and_only_our_rules() {
        let c = parse_forward(DOCKER);
        assert_eq!(c.policy.as_deref(), Some("DROP"));
        assert!(c.drops());
        assert_eq!(c.ours.len(), 3);
        assert!(c.ours.iter().all(|r| r.contains(TAG)));
        assert_eq!(parse_forward("").policy, None);
        assert!(!parse_forward("*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n").drops());
    }

    #[test]
    fn edit_keeps_wanted_drops_duplicates_and_extras() {
        let c = parse_forward(DOCKER);
        let want = wanted(&c, &p(&["cali"]));
        assert_eq!(want, vec![rule_spec("-i", "cali"), rule_spec("-o", "cali")]);
        let e = Edit::between(&c, &want);
        assert_eq!(e.append, vec![rule_spec("-o", "cali")]);
        assert_eq!(e.delete.len(), 2, "{e:?}");
        assert_eq!(
            e.restore_input()
                .lines()
                .filter(|l| l.starts_with("-D"))
                .count(),
            2
        );
        // Applied, the chain needs nothing more.
        let after = ForwardChain {
            policy: c.policy.clone(),
            ours: want.clone(),
        };
        assert!(Edit::between(&after, &want).is_empty());
    }

    #[test]
    fn accept_policy_wants_none_of_ours() {
        let mut c = parse_forward(DOCKER);
        c.policy = Some("ACCEPT".into());
        let want = wanted(&c, &p(&["cali"]));
        assert!(want.is_empty());
        assert_eq!(Edit::between(&c, &want).delete.len(), 3);
        let none = ForwardChain::default();
        assert!(Edit::between(&none, &wanted(&none, &p(&["cali"]))).is_empty());
    }

    #[test]
    fn restore_input_is_one_filter_commit() {
        let e = Edit {
            delete: vec![rule_spec("-i", "tap")],
            append: vec![rule_spec("-o", "cali")],
        };
        assert_eq!(
            e.restore_input(),
            "*filter\n-D FORWARD -i tap+ -m comment --comment margay-workload-accept -j ACCEPT\n\
             -A FORWARD -o cali+ -m comment --comment margay-workload-accept -j ACCEPT\nCOMMIT\n"
        );
    }
}
