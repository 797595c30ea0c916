//! Seeing a firewall verdict change through real packets, for the
//! end-to-end latency bench.
//!
//! A prober inside the client's network namespace starts fresh TCP
//! connection attempts (one SYN each) on a fixed schedule and records for
//! each when it started and whether it was answered within
//! [`ProbeConfig::grace`]. Nothing need listen on the server: a SYN that
//! passes the firewall is answered by the server's kernel (a reset), one
//! that is dropped is not; no handshakes and no accepting thread. Before
//! the write a few sparse attempts show the old verdict; from the moment
//! the write is about to leave, an attempt starts every
//! [`ProbeConfig::spacing`]. Probing costs CPU that, on a small host, slows
//! what is measured: hence cheap attempts, dense only in the window that
//! needs them. [`classify`] then finds the first attempt of the final run
//! with the new verdict. Its start, minus the moment the write left the
//! client, is the latency; the gap to the attempt before it is the
//! resolution of that sample. A new verdict seen before the write, a
//! verdict that comes and goes, or none by the deadline are errors, never
//! clamped.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use margay_dataplane::netns::NetnsTarget;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// One connection attempt: when its SYN went out, and whether it connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// Just before `connect` was called.
    pub started: Instant,
    /// Answered within the grace time (the verdict was "allow").
    pub open: bool,
    /// How long the `connect` call itself took: the SYN's trip through the
    /// local stack, firewall included (long when packets wait on a commit).
    pub syscall: Duration,
}

/// A good sample: the new verdict first seen `latency` after the write,
/// bracketed by attempts `resolution` apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Write leaving the client → start of the first attempt with the new
    /// verdict (of the final run).
    pub latency: Duration,
    /// Start of that attempt minus the start of the one before it (which
    /// still saw the old verdict).
    pub resolution: Duration,
    /// Index of that attempt in the run.
    pub first_new: usize,
}

/// Why a sample is not a measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleError {
    /// The new verdict was already there `early` before the write left.
    BeforeWrite { early: Duration },
    /// The new verdict was seen after the write, then the old one again.
    Flapped,
    /// The last attempt still saw the old verdict (deadline passed).
    TimedOut,
    /// No attempt started before the write: nothing shows the old verdict.
    NoBaseline,
}

impl std::fmt::Display for SampleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SampleError::BeforeWrite { early } => {
                write!(f, "new verdict seen {early:?} before the write")
            }
            SampleError::Flapped => write!(f, "new verdict seen, then the old one again"),
            SampleError::TimedOut => write!(f, "new verdict not seen by the deadline"),
            SampleError::NoBaseline => write!(f, "no attempt before the write"),
        }
    }
}

/// Classifies the attempts (in start order) around a write that left the
/// client at `write_at` and should make the verdict `want_open`.
pub fn classify(
    attempts: &[Attempt],
    write_at: Instant,
    want_open: bool,
) -> Result<Sample, SampleError> {
    let Some(last) = attempts.last() else {
        return Err(SampleError::NoBaseline);
    };
    if last.open != want_open {
        return Err(SampleError::TimedOut);
    }
    // The first attempt of the final run of new verdicts.
    let first_new = attempts
        .iter()
        .rposition(|a| a.open != want_open)
        .map_or(0, |i| i + 1);
    let seen = attempts[first_new].started;
    if seen < write_at {
        return Err(SampleError::BeforeWrite {
            early: write_at - seen,
        });
    }
    let Some(before) = first_new.checked_sub(1).map(|i| attempts[i]) else {
        return Err(SampleError::NoBaseline);
    };
    // Any new verdict after the write but before the final run: it flapped.
    let flapped = attempts[..first_new]
        .iter()
        .any(|a| a.open == want_open && a.started >= write_at);
    if flapped {
        return Err(SampleError::Flapped);
    }
    Ok(Sample {
        latency: seen - write_at,
        resolution: seen - before.started,
        first_new,
    })
}

/// How the prober works.
#[derive(Debug, Clone, Copy)]
pub struct ProbeConfig {
    /// Time between the starts of two attempts once the write is about to
    /// leave (the schedule; the real gaps are measured).
    pub spacing: Duration,
    /// The same before the write (sparse: the baseline only).
    pub spacing_before: Duration,
    /// An attempt not connected after this long saw "drop".
    pub grace: Duration,
    /// Attempts to make before the write, at `spacing_before` (the old
    /// verdict, seen).
    pub warm_up: usize,
    /// Stop once this many attempts in a row after the write saw the new
    /// verdict.
    pub settle: usize,
    /// Give up this long after the write.
    pub deadline: Duration,
}

/// What one probe run saw.
#[derive(Debug, Clone)]
pub struct ProbeRun {
    /// Every attempt, in start order.
    pub attempts: Vec<Attempt>,
    /// When the write left the client.
    pub write_at: Instant,
}

impl ProbeRun {
    /// Gaps between consecutive attempt starts after the write (the
    /// achieved dense spacing).
    pub fn gaps(&self) -> impl Iterator<Item = Duration> + '_ {
        self.attempts
            .windows(2)
            .filter(|w| w[0].started >= self.write_at)
            .map(|w| w[1].started.saturating_duration_since(w[0].started))
    }
}

/// Probes `server` from inside `ns` while `write` runs on this thread once
/// `cfg.warm_up` sparse attempts have started and the prober has gone
/// dense; `write` returns the moment its write left the client.
pub fn probe_around(
    ns: &NetnsTarget,
    server: SocketAddr,
    want_open: bool,
    cfg: &ProbeConfig,
    write: impl FnOnce() -> Instant,
) -> io::Result<ProbeRun> {
    let shared = Shared::default();
    std::thread::scope(|scope| {
        let prober = scope.spawn(|| {
            ns.run_in(|| probe_loop(server, want_open, cfg, &shared))
                .map_err(io::Error::other)?
        });
        let warm =
            wait_for_attempts(&shared, cfg.warm_up, &prober) && switch_to_dense(&shared, &prober);
        let write_at = warm.then(write);
        if let Ok(mut slot) = shared.write_at.lock() {
            *slot = write_at;
        }
        shared
            .stop_without_write
            .store(write_at.is_none(), Ordering::Relaxed);
        let attempts = prober
            .join()
            .map_err(|_| io::Error::other("prober panicked"))??;
        let write_at = write_at.ok_or_else(|| io::Error::other("prober stopped early"))?;
        Ok(ProbeRun { attempts, write_at })
    })
}

/// What the prober and the writer share.
#[derive(Default)]
struct Shared {
    started: AtomicUsize,
    /// Set by the writer: probe densely from now on.
    dense: AtomicBool,
    /// Set by the prober once it does.
    dense_acked: AtomicBool,
    write_at: Mutex<Option<Instant>>,
    stop_without_write: AtomicBool,
}

/// Asks the prober to probe densely and waits (polling, bounded) until it
/// does; false if it ended first.
fn switch_to_dense<T>(shared: &Shared, prober: &std::thread::ScopedJoinHandle<'_, T>) -> bool {
    shared.dense.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !shared.dense_acked.load(Ordering::SeqCst) {
        if prober.is_finished() || Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_micros(20));
    }
    true
}

/// Waits (polling, bounded) until `n` attempts have started; false if the
/// prober ended first.
fn wait_for_attempts<T>(
    shared: &Shared,
    n: usize,
    prober: &std::thread::ScopedJoinHandle<'_, T>,
) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while shared.started.load(Ordering::Relaxed) < n {
        if prober.is_finished() || Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    true
}

/// One attempt in flight.
struct InFlight {
    started: Instant,
    /// Known at once (`connect` itself answered).
    known: Option<bool>,
    syscall: Duration,
    socket: Socket,
}

impl InFlight {
    /// `Some(open)` once the outcome is known.
    /// A SYN that passed the firewall is answered by the server's kernel:
    /// a reset (nothing listens: refused) or, were something listening, a
    /// handshake. A dropped one gets no answer.
    fn outcome(&self, now: Instant, grace: Duration) -> Option<bool> {
        if self.known.is_some() {
            return self.known;
        }
        if self.socket.peer_addr().is_ok() {
            return Some(true);
        }
        match self.socket.take_error() {
            Ok(Some(e)) => Some(e.kind() == io::ErrorKind::ConnectionRefused),
            Err(_) => Some(false),
            Ok(None) => (now.saturating_duration_since(self.started) >= grace).then_some(false),
        }
    }
}

fn probe_loop(
    server: SocketAddr,
    want_open: bool,
    cfg: &ProbeConfig,
    shared: &Shared,
) -> io::Result<Vec<Attempt>> {
    make_punctual();
    let server = SockAddr::from(server);
    let begin = Instant::now();
    let mut due = begin;
    let mut pending: std::collections::VecDeque<InFlight> = Default::default();
    let mut done: Vec<Attempt> = Vec::new();
    let mut run_of_new = 0usize;
    let mut dense = false;
    loop {
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        // The writer waits for this before its write leaves.
        if !dense && shared.dense.load(Ordering::SeqCst) {
            dense = true;
            shared.dense_acked.store(true, Ordering::SeqCst);
        }
        pending.push_back(start_attempt(&server)?);
        shared.started.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let spacing = if dense {
            cfg.spacing
        } else {
            cfg.spacing_before
        };
        due = next_slot(due, now, spacing);
        while let Some(open) = pending.front().and_then(|f| f.outcome(now, cfg.grace)) {
            let Some(f) = pending.pop_front() else { break };
            done.push(Attempt {
                started: f.started,
                open,
                syscall: f.syscall,
            });
            run_of_new = if open == want_open { run_of_new + 1 } else { 0 };
        }
        let write_at = shared.write_at.lock().ok().and_then(|w| *w);
        match write_at {
            Some(at) if run_of_new >= cfg.settle || now > at + cfg.deadline => break,
            None if shared.stop_without_write.load(Ordering::Relaxed) => break,
            None if now > begin + Duration::from_secs(30) => break,
            _ => {}
        }
    }
    Ok(done)
}

/// The slot after `due` on the schedule, skipping any already missed at
/// `now` (a late wake-up is not made up by a burst of attempts).
pub fn next_slot(due: Instant, now: Instant, spacing: Duration) -> Instant {
    let next = due + spacing;
    match now.checked_duration_since(next) {
        None => next,
        Some(behind) => {
            let missed = behind.as_nanos() / spacing.as_nanos().max(1) + 1;
            next + spacing * u32::try_from(missed).unwrap_or(u32::MAX)
        }
    }
}

/// Lets the prober keep its schedule on a busy host: wake-ups without the
/// default 50 µs slack, and (as root) a real-time priority for this thread,
/// which sleeps between attempts and so takes little CPU. The prober is
/// the measuring instrument: its resolution must not depend on the load.
fn make_punctual() {
    let _ = nix::sys::prctl::set_timerslack(1);
    let tid = nix::unistd::gettid().to_string();
    let fifo = std::process::Command::new("chrt")
        .args(["--fifo", "--pid", "10", &tid])
        .stderr(std::process::Stdio::null())
        .status();
    if !fifo.is_ok_and(|s| s.success()) {
        eprintln!("prober: could not get a real-time priority (chrt); resolution may suffer");
    }
}

fn start_attempt(server: &SockAddr) -> io::Result<InFlight> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    // Closing sends a reset: no TIME_WAIT piles up at thousands a second.
    socket.set_linger(Some(Duration::ZERO))?;
    let started = Instant::now();
    let known = match socket.connect(server) {
        Ok(()) => Some(true),
        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EINPROGRESS as i32) => None,
        // Answered before `connect` returned.
        Err(e) => Some(e.kind() == io::ErrorKind::ConnectionRefused),
    };
    Ok(InFlight {
        started,
        known,
        syscall: started.elapsed(),
        socket,
    })
}

/// One blocking attempt from inside `ns`: true when the SYN to `server`
/// passed (connected, or refused by the server's kernel), false when it
/// met no answer within `timeout`.
pub fn passes(ns: &NetnsTarget, server: SocketAddr, timeout: Duration) -> io::Result<bool> {
    ns.run_in(
        || match std::net::TcpStream::connect_timeout(&server, timeout) {
            Ok(_) => true,
            Err(e) => e.kind() == io::ErrorKind::ConnectionRefused,
        },
    )
    .map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attempts every 100 µs from `t0`, with the given verdicts.
    fn attempts(t0: Instant, verdicts: &str) -> Vec<Attempt> {
        verdicts
            .chars()
            .enumerate()
            .map(|(i, c)| Attempt {
                started: t0 + Duration::from_micros(100 * i as u64),
                open: c == 'o',
                syscall: Duration::from_micros(10),
            })
            .collect()
    }

    #[test]
    fn the_first_new_verdict_after_the_write_is_the_sample() {
        let t0 = Instant::now();
        // Write leaves at 250 µs; attempts at 300 and 400 µs still old.
        let a = attempts(t0, "ooooo___");
        let s = classify(&a, t0 + Duration::from_micros(250), false).expect("sample");
        assert_eq!(s.latency, Duration::from_micros(250));
        assert_eq!(s.resolution, Duration::from_micros(100));
        let a = attempts(t0, "___ooo");
        let s = classify(&a, t0 + Duration::from_micros(50), true).expect("sample");
        assert_eq!(s.latency, Duration::from_micros(250));
    }

    #[test]
    fn a_verdict_before_the_write_is_an_error_not_zero() {
        let t0 = Instant::now();
        let a = attempts(t0, "oo____");
        let got = classify(&a, t0 + Duration::from_micros(450), false);
        assert_eq!(
            got,
            Err(SampleError::BeforeWrite {
                early: Duration::from_micros(250)
            })
        );
        // Already there from the first attempt: also before the write.
        let a = attempts(t0, "____");
        assert!(matches!(
            classify(&a, t0 + Duration::from_micros(150), false),
            Err(SampleError::BeforeWrite { .. })
        ));
    }

    #[test]
    fn a_late_wake_up_skips_the_missed_slots() {
        let t0 = Instant::now();
        let us = Duration::from_micros;
        assert_eq!(next_slot(t0, t0 + us(10), us(80)), t0 + us(80));
        // Woke 250 µs late: slots at 80, 160 and 240 are gone, next is 320.
        assert_eq!(next_slot(t0, t0 + us(250), us(80)), t0 + us(320));
        assert_eq!(next_slot(t0, t0 + us(80), us(80)), t0 + us(160));
    }

    #[test]
    fn timeouts_flaps_and_missing_baselines_are_errors() {
        let t0 = Instant::now();
        let write = t0 + Duration::from_micros(150);
        assert_eq!(
            classify(&attempts(t0, "oooooo"), write, false),
            Err(SampleError::TimedOut)
        );
        assert_eq!(
            classify(&attempts(t0, "ooo_o__"), write, false),
            Err(SampleError::Flapped)
        );
        assert_eq!(classify(&[], write, false), Err(SampleError::NoBaseline));
        // An old verdict after a new one before the write is no flap: the
        // final run, after the write, is what counts.
        let s = classify(
            &attempts(t0, "o_o___"),
            t0 + Duration::from_micros(250),
            false,
        )
        .expect("sample");
        assert_eq!(s.latency, Duration::from_micros(50));
    }
}
