//! What attaches anything of ours to a hook, read with the kernel's own
//! tools whichever backend wrote it: our nftables base chain on the hook
//! (`nft list table inet margay`), and our jump in the hook's built-in
//! chain in either iptables variant and family (`*-save`).

use margay_dataplane::firewall::iptables::plan::{hook_chain, FAMILIES};
use margay_dataplane::firewall::iptables::Variant;
use margay_dataplane::firewall::model::Hook;
use margay_dataplane::firewall::nft::common::base_chain;
use margay_tests::netns::TestNetns;

/// The listing lines in `ns` that attach something of ours to `hook`.
pub fn hook_attachments(ns: &TestNetns, hook: Hook) -> Vec<String> {
    let nft_hook = format!("hook {} ", base_chain(hook).hook_name);
    let builtin = format!("-A {} ", hook_chain(hook).1);
    let nft = ns.exec(&["nft", "list", "table", "inet", "margay"]);
    let mut texts = vec![String::from_utf8_lossy(&nft.stdout).into_owned()];
    for v in [Variant::Nft, Variant::Legacy] {
        for family in FAMILIES {
            let save = ns.exec(&[v.save_bin(family)]);
            texts.push(String::from_utf8_lossy(&save.stdout).into_owned());
        }
    }
    texts
        .iter()
        .flat_map(|t| t.lines())
        .filter(|l| l.contains(&nft_hook) || (l.starts_with(&builtin) && l.contains("margay")))
        .map(str::to_owned)
        .collect()
}
