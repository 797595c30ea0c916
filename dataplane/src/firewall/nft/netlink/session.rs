//! The nf_tables socket: one `NETLINK_NETFILTER` socket opened inside the
//! target namespace and kept for the backend's life. It sends write batches
//! and waits for their acks, answers the ruleset generation, and runs dump
//! requests (which `readback` uses to read our table back).

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};

use super::batch::BatchWriter;
use super::nl_err;
use super::uapi::*;
use super::wire::{
    attrs, be32, error_code, find, messages, Builder, NLMSG_DONE, NLMSG_ERROR, NLM_F_DUMP,
    NLM_F_REQUEST,
};
use crate::firewall::{FirewallError, FirewallOp};
use crate::netns::NetnsTarget;

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
    pub(super) fn dump(
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
        b.delete_table();
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
}

/// How a dump ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum DumpEnd {
    Done,
    NoSuchObject,
}
