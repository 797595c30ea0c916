//! The soak: the real `margay run` in a sandbox host namespace against a
//! real etcd, fed a long stream of endpoint, profile and policy churn
//! (adds, updates, deletes, batched in transactions; see [`churn`]) while
//! etcd is compacted, etcd is restarted on the same data directory and the
//! agent gets SIGHUPs. Afterwards:
//!
//! - the kernel equals `margay plan`'s expectation (`margay plan --json`
//!   against the same etcd and kernel has nothing to do), and holds routes;
//! - resident memory at the end is less than 5 % above what it was after
//!   the warm-up, and no file descriptors were added since then;
//! - the agent process never restarted (same pid, same start time);
//! - its metrics say every update it received was applied.
//!
//! The run goes in rounds of [`SoakConfig::round`] updates. Each round ends
//! with a barrier: a marker endpoint on another host gets a new address and
//! the test waits for its route in the kernel, which proves the agent has
//! applied everything written before it. Memory and descriptors are read at
//! these barriers, when the agent is idle. The warm-up is the first
//! [`SoakConfig::warmup_rounds`] rounds: by then every key has been written
//! and every disruption (compaction, etcd restart, SIGHUP) has happened at
//! least once, so every code path has allocated what it keeps.

pub mod churn;
mod figures;
pub mod process;
mod runner;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::sandbox::{margay_bin, Cluster, Dataplane, ORCHESTRATOR, PREFIX};
use churn::{Churn, Op, Shape};
use process::Sample;

pub use figures::Figures;
pub use runner::run;

/// Allowed RSS growth from the end of the warm-up to the end of the run.
pub const MAX_RSS_GROWTH: f64 = 0.05;
/// How long one barrier may take before the run fails.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(60);
/// Updates per round of the long soak (`SOAK_ROUND` changes it).
const LONG_ROUND: u64 = 2_000;
/// The long soak prints a progress line every this many rounds.
const PROGRESS_EVERY: u64 = 25;
/// The host whose agent is soaked.
const HOST: &str = "h1";

/// What to run.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    /// Updates (key changes) to write after the seed.
    pub updates: u64,
    /// The agent's firewall backend.
    pub dataplane: Dataplane,
    /// Updates per round (between barriers).
    pub round: u64,
    /// Rounds of warm-up before the baseline reading.
    pub warmup_rounds: u64,
    /// Compact etcd in every n-th round.
    pub compact_every: u64,
    /// Restart etcd in every n-th round.
    pub restart_every: u64,
    /// SIGHUP the agent in every n-th round.
    pub sighup_every: u64,
    /// Largest transaction.
    pub max_batch: usize,
    /// The objects the stream moves between.
    pub shape: Shape,
    /// Seed of the stream.
    pub seed: u64,
}

impl SoakConfig {
    /// The test-sized soak CI runs (about a minute per backend).
    pub fn ci(dataplane: Dataplane) -> Self {
        SoakConfig {
            updates: 40_000,
            dataplane,
            round: 1_000,
            warmup_rounds: 12,
            compact_every: 3,
            restart_every: 5,
            sighup_every: 2,
            max_batch: 40,
            shape: Shape {
                local: 8,
                remote: 120,
                profiles: 8,
                policies: 6,
            },
            seed: 0x5eed,
        }
    }

    /// The long soak (`make soak`): `SOAK_UPDATES` (default 1,000,000) on
    /// `SOAK_DATAPLANE` (default nftables), disruptions spaced so a
    /// million updates see hundreds of each. The warm-up is the first tenth
    /// of the run (at least 20 rounds, 40,000 updates; `SOAK_WARMUP_ROUNDS`
    /// sets it). `SOAK_COMPACT_EVERY`, `SOAK_RESTART_EVERY` and
    /// `SOAK_SIGHUP_EVERY` space the disruptions (in rounds of 2,000
    /// updates), e.g. to tell which one costs memory.
    pub fn long_from_env() -> Self {
        let updates = env_number("SOAK_UPDATES").unwrap_or(1_000_000);
        let dataplane = match std::env::var("SOAK_DATAPLANE").as_deref() {
            Ok("iptables") => Dataplane::Iptables,
            Ok("nftables") | Err(_) => Dataplane::Nftables,
            Ok(other) => panic!("SOAK_DATAPLANE={other}: nftables or iptables"),
        };
        let round = env_number("SOAK_ROUND").unwrap_or(LONG_ROUND).max(1);
        SoakConfig {
            updates,
            dataplane,
            round,
            warmup_rounds: env_number("SOAK_WARMUP_ROUNDS")
                .unwrap_or((updates / round / 10).max(20)),
            compact_every: env_number("SOAK_COMPACT_EVERY").unwrap_or(2),
            restart_every: env_number("SOAK_RESTART_EVERY").unwrap_or(10),
            sighup_every: env_number("SOAK_SIGHUP_EVERY").unwrap_or(3),
            max_batch: 50,
            shape: Shape {
                local: 16,
                remote: 240,
                profiles: 12,
                policies: 8,
            },
            seed: env_number("SOAK_SEED").unwrap_or(0x5eed),
        }
    }
}

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let digits: String = text.chars().filter(|c| *c != '_').collect();
    Some(
        digits
            .parse()
            .unwrap_or_else(|e| panic!("{name}={text}: {e}")),
    )
}
