//! BGP metrics: BIRD configuration reloads (and the ones refused), whether
//! BIRD's control socket answers, and this host's BGP sessions by peer type
//! and state.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::registry::Registry;

use super::{saturating_i64, Metrics};

/// The `stage` label values of `margay_bird_config_rejected_total`: the
/// parse check (`bird -p`) refused the new file, or BIRD refused the reload.
pub const BIRD_REJECT_STAGES: &[&str] = &["parse", "reload"];

/// The `peer_type` label values of `margay_bgp_sessions`.
pub const BGP_PEER_TYPES: &[&str] = &["mesh", "global", "node"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct StageLabel {
    pub(super) stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct SessionLabel {
    pub(super) peer_type: String,
    pub(super) state: String,
}

impl Metrics {
    /// Registers the BGP families.
    pub(super) fn register_bgp(&self, registry: &mut Registry) {
        registry.register(
            "margay_bird_config_reloads",
            "BIRD reloads with a new configuration written by margay",
            self.bird_reloads.clone(),
        );
        registry.register(
            "margay_bird_config_rejected",
            "New BIRD configurations refused (by the parse check or by BIRD's reload); the previous one stays in force",
            self.bird_rejected.clone(),
        );
        registry.register(
            "margay_bird_reachable",
            "1 while BIRD's control socket answers, 0 when it does not (only with InterHostRoutes = bgp)",
            self.bird_reachable.clone(),
        );
        registry.register(
            "margay_bgp_sessions",
            "This host's BGP sessions, by peer type (mesh, global, node) and BGP state",
            self.bgp_sessions.clone(),
        );
    }

    /// Creates the reject stages and the established sessions of each peer
    /// type at zero.
    pub(super) fn precreate_bgp(&self) {
        self.set_bgp_sessions(std::iter::empty());
        for stage in BIRD_REJECT_STAGES {
            let _ = self.bird_rejected.get_or_create(&StageLabel {
                stage: stage.to_string(),
            });
        }
    }

    /// Counts one reload of BIRD with a new configuration.
    pub fn bird_reloaded(&self) {
        self.bird_reloads.inc();
    }

    /// Counts one refused configuration; `stage` is one of [`BIRD_REJECT_STAGES`].
    pub fn bird_rejected(&self, stage: &str) {
        self.bird_rejected
            .get_or_create(&StageLabel {
                stage: stage.to_string(),
            })
            .inc();
    }

    /// Records whether BIRD's control socket answered.
    pub fn set_bird_reachable(&self, reachable: bool) {
        self.bird_reachable.set(i64::from(reachable));
    }

    /// Replaces the session counts with `counts`: `(peer_type, state, n)`.
    /// Combinations not listed disappear (a session that left a state must
    /// not keep counting in it), except `established` of every peer type,
    /// which stays at zero so the family is always there.
    pub fn set_bgp_sessions<'a>(&self, counts: impl IntoIterator<Item = (&'a str, &'a str, u64)>) {
        self.bgp_sessions.clear();
        for peer_type in BGP_PEER_TYPES {
            let _ = self.bgp_sessions.get_or_create(&SessionLabel {
                peer_type: peer_type.to_string(),
                state: "established".to_string(),
            });
        }
        for (peer_type, state, n) in counts {
            self.bgp_sessions
                .get_or_create(&SessionLabel {
                    peer_type: peer_type.to_string(),
                    state: state.to_string(),
                })
                .set(saturating_i64(n));
        }
    }
}
