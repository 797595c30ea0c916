//! This host's BGP configuration, published to the BIRD task
//! ([`crate::bird_sync`]) and the `InterHostRoutes` mode.
//!
//! The calculation marks `Changes::bgp` when anything the configuration
//! depends on may have changed; the loop publishes a fresh [`BgpConfig`]
//! at the end of such a turn, once the datastore is in sync and `/Ready`
//! (never from a half-listed view). Outside bgp mode it publishes `None`:
//! BIRD's file is left alone.

use margay_config::InterHostRoutes;
use margay_policy::bgp::BgpConfig;

use super::{Agent, Driver};

impl<D: Driver> Agent<D> {
    /// Takes the calculation's changes into the pending set, noting whether
    /// the BGP configuration may have changed (the dataplane has no use for
    /// that flag: a batch that changes only BGP applies nothing).
    pub(super) fn collect_calc_changes(&mut self) {
        let mut changes = self.calc.take_changes();
        self.bgp_dirty |= std::mem::take(&mut changes.bgp);
        self.pending.merge(changes);
    }

    /// Tells the calculation whether to route remote workloads itself
    /// (`direct`) or leave that to BIRD (`bgp`) or nobody (`none`).
    pub(super) fn adopt_inter_host_routes(&mut self) {
        let mode = self.settings.inter_host_routes;
        self.calc.set_remote_routes(mode == InterHostRoutes::Direct);
        self.bgp_dirty = true;
        self.collect_calc_changes();
    }

    /// Publishes the BGP configuration if it may have changed and the view
    /// is complete.
    pub(super) fn publish_bgp(&mut self) {
        if !self.bgp_dirty || !self.in_sync || self.listing || !self.calc.ready() {
            return;
        }
        self.bgp_dirty = false;
        let desired = self.desired_bgp();
        if let Some(tx) = &self.out.bgp {
            tx.send_if_modified(|current| {
                let changed = *current != desired;
                if changed {
                    *current = desired;
                }
                changed
            });
        }
    }

    /// The configuration to publish: `None` outside bgp mode, and while this
    /// host has no IPv4 BGP address (logged once until it has one).
    fn desired_bgp(&mut self) -> Option<BgpConfig> {
        if self.settings.inter_host_routes != InterHostRoutes::Bgp {
            return None;
        }
        match self.calc.bgp_config() {
            Ok(config) => {
                self.bgp_unavailable_logged = false;
                Some(config)
            }
            Err(reason) => {
                if !self.bgp_unavailable_logged {
                    tracing::warn!(%reason, "InterHostRoutes is bgp but no BIRD configuration can be rendered; BIRD's file is left as it is");
                    self.bgp_unavailable_logged = true;
                }
                None
            }
        }
    }
}
