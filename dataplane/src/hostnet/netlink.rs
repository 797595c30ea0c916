//! The netlink sockets the host-network managers share, opened inside the
//! target namespace.
//!
//! - [`BatchWriter`]: pipelined writes. Many requests go into one datagram
//!   (the kernel handles each in turn and carries on after a failure); only
//!   the last asks for an ack, errors come back for the others by sequence
//!   number. A whole batch thus costs one `sendmsg` and about one `recvmsg`
//!   instead of a round trip per request, which is where the speed against
//!   `ip -batch` comes from. (rtnetlink's own connection sends one request
//!   per wakeup, which caps throughput at one round trip per route.)
//! - an rtnetlink [`rtnetlink::Handle`] for dumps, with strict checking on so
//!   the kernel filters route dumps by table and protocol.
//! - a multicast socket for the watcher (see `watch`).

use std::io;

use netlink_packet_core::{NetlinkMessage, NLM_F_ACK};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, AsyncSocket, AsyncSocketExt, TokioSocket};
use thiserror::Error;

use crate::netns::{NetnsError, NetnsTarget};

/// Most requests per datagram.
const MAX_BATCH: usize = 512;
/// Largest datagram we send (well below the default socket send buffer).
const MAX_DATAGRAM: usize = 64 * 1024;
/// Receive buffer we ask for (capped by `net.core.rmem_max`).
const RCVBUF: usize = 4 << 20;
/// `NLMSG_ERROR`: an error or an ack.
const NLMSG_ERROR: u16 = 2;
const ENOBUFS: i32 = 105;

/// Why a netlink socket could not be used.
#[derive(Debug, Error)]
pub enum NetlinkError {
    /// The sockets could not be opened in the target namespace.
    #[error("cannot open a netlink socket: {0}")]
    Open(#[source] io::Error),
    /// The target namespace could not be entered.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// Sending to the kernel failed.
    #[error("netlink send failed: {0}")]
    Send(#[source] io::Error),
    /// Receiving from the kernel failed.
    #[error("netlink receive failed: {0}")]
    Recv(#[source] io::Error),
    /// A dump failed.
    #[error("dump of {what} failed: {source}")]
    Dump {
        what: &'static str,
        #[source]
        source: rtnetlink::Error,
    },
}

/// What the kernel said about one request of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteResult {
    /// Done.
    Ok,
    /// Refused with this errno (positive).
    Errno(i32),
    /// Replies were lost (receive buffer overrun): state must be re-read.
    Unknown,
}

/// The sockets of one namespace.
pub struct NetlinkSockets {
    /// Pipelined writer.
    pub writer: BatchWriter,
    /// rtnetlink handle for dumps (its connection task is already spawned).
    pub handle: rtnetlink::Handle,
    /// Unsubscribed socket for the watcher to subscribe.
    pub events: TokioSocket,
}

/// Opens every socket inside `target`; must be called within a tokio runtime.
pub fn open(target: &NetnsTarget) -> Result<NetlinkSockets, NetlinkError> {
    let rt = tokio::runtime::Handle::current();
    let (writer, (mut conn, handle, _), events) = target
        .run_in(move || -> io::Result<_> {
            let _entered = rt.enter();
            Ok((
                TokioSocket::new(NETLINK_ROUTE)?,
                rtnetlink::new_connection()?,
                TokioSocket::new(NETLINK_ROUTE)?,
            ))
        })?
        .map_err(NetlinkError::Open)?;
    conn.socket_mut()
        .socket_mut()
        .set_netlink_get_strict_chk(true)
        .map_err(NetlinkError::Open)?;
    tokio::spawn(conn);
    Ok(NetlinkSockets {
        writer: BatchWriter::new(writer)?,
        handle,
        events,
    })
}

/// Sends many requests per datagram and matches replies by sequence number.
pub struct BatchWriter {
    socket: TokioSocket,
    port: u32,
    seq: u32,
    tx: Vec<u8>,
    rx: Vec<u8>,
}

impl BatchWriter {
    fn new(mut socket: TokioSocket) -> Result<Self, NetlinkError> {
        let s = socket.socket_mut();
        let addr = s.bind_auto().map_err(NetlinkError::Open)?;
        s.set_cap_ack(true).map_err(NetlinkError::Open)?;
        // Best effort: a smaller buffer only means more replies lost on overrun.
        if let Err(e) = s.set_rx_buf_sz(RCVBUF) {
            tracing::debug!(error = %e, "could not enlarge netlink receive buffer");
        }
        Ok(BatchWriter {
            socket,
            port: addr.port_number(),
            seq: 0,
            tx: Vec::with_capacity(MAX_DATAGRAM),
            rx: Vec::with_capacity(MAX_DATAGRAM),
        })
    }

    /// Our netlink port id: notifications caused by our own writes carry it.
    pub fn port_id(&self) -> u32 {
        self.port
    }

    /// Sends every request and returns one result per request, in order.
    /// Individual refusals are results, not errors; only a broken socket is.
    pub async fn execute(
        &mut self,
        mut reqs: Vec<NetlinkMessage<RouteNetlinkMessage>>,
    ) -> Result<Vec<WriteResult>, NetlinkError> {
        let mut results = Vec::with_capacity(reqs.len());
        let mut start = 0;
        while start < reqs.len() {
            let end = self.pack(&mut reqs, start);
            let base = self.seq.wrapping_sub((end - start) as u32);
            self.socket
                .send(&self.tx)
                .await
                .map_err(NetlinkError::Send)?;
            results.extend(self.collect_replies(base, end - start).await?);
            start = end;
        }
        Ok(results)
    }

    /// Serialises requests from `start` into the send buffer, numbering them;
    /// the last one asks for an ack. Returns the end of the packed range.
    fn pack(&mut self, reqs: &mut [NetlinkMessage<RouteNetlinkMessage>], start: usize) -> usize {
        self.tx.clear();
        let mut end = start;
        while end < reqs.len() && end - start < MAX_BATCH {
            let req = &mut reqs[end];
            req.header.sequence_number = self.seq;
            req.header.port_number = 0;
            req.finalize();
            let len = req.buffer_len();
            if end > start && self.tx.len() + len > MAX_DATAGRAM {
                break;
            }
            self.seq = self.seq.wrapping_add(1);
            end += 1;
        }
        if let Some(last) = reqs[start..end].last_mut() {
            last.header.flags |= NLM_F_ACK;
        }
        for req in &reqs[start..end] {
            let at = self.tx.len();
            self.tx.resize(at + req.buffer_len(), 0);
            req.serialize(&mut self.tx[at..]);
        }
        end
    }

    /// Reads replies until the ack (or error) of the last request arrives.
    async fn collect_replies(
        &mut self,
        base: u32,
        count: usize,
    ) -> Result<Vec<WriteResult>, NetlinkError> {
        let mut results = vec![WriteResult::Ok; count];
        let last = base.wrapping_add(count as u32 - 1);
        loop {
            self.rx.clear();
            match self.socket.recv(&mut self.rx).await {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(ENOBUFS) => {
                    self.drain();
                    return Ok(overrun(results));
                }
                Err(e) => return Err(NetlinkError::Recv(e)),
            }
            let mut done = false;
            for (seq, code) in errors_in(&self.rx) {
                let idx = seq.wrapping_sub(base) as usize;
                if idx < count {
                    if code != 0 {
                        results[idx] = WriteResult::Errno(-code);
                    }
                    done |= seq == last;
                }
            }
            if done {
                return Ok(results);
            }
        }
    }

    /// Discards whatever replies are still queued (after an overrun).
    fn drain(&mut self) {
        loop {
            self.rx.clear();
            if self
                .socket
                .socket_ref()
                .recv(&mut self.rx, libc::MSG_DONTWAIT)
                .is_err()
            {
                return;
            }
        }
    }
}

/// After lost replies only the refusals we saw are certain.
fn overrun(results: Vec<WriteResult>) -> Vec<WriteResult> {
    results
        .into_iter()
        .map(|r| match r {
            WriteResult::Ok => WriteResult::Unknown,
            other => other,
        })
        .collect()
}

/// `(sequence, error code)` of every `NLMSG_ERROR` message in a datagram
/// (code 0 is an ack). Truncated trailing data is ignored.
pub fn errors_in(buf: &[u8]) -> Vec<(u32, i32)> {
    let mut out = Vec::new();
    let mut off = 0;
    while let Some(h) = header_at(buf, off) {
        if h.kind == NLMSG_ERROR {
            if let Some(code) = read_u32(buf, off + 16) {
                out.push((h.seq, code as i32));
            }
        }
        off += (h.len as usize + 3) & !3;
    }
    out
}

/// The fixed part of a netlink message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawHeader {
    /// Total length including the header.
    pub len: u32,
    /// Message type.
    pub kind: u16,
    /// Sequence number.
    pub seq: u32,
    /// Port id of the sender (for notifications: of whoever caused them).
    pub port: u32,
}

/// The header of the message starting at `off`, if a whole message is there.
pub fn header_at(buf: &[u8], off: usize) -> Option<RawHeader> {
    let len = read_u32(buf, off)?;
    if (len as usize) < 16 || off + len as usize > buf.len() {
        return None;
    }
    let kind = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
    Some(RawHeader {
        len,
        kind,
        seq: read_u32(buf, off + 8)?,
        port: read_u32(buf, off + 12)?,
    })
}

fn read_u32(buf: &[u8], off: usize) -> Option<u32> {
    let b = buf.get(off..off + 4)?;
    Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: u16, seq: u32, code: i32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&36u32.to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(&0u16.to_ne_bytes());
        v.extend_from_slice(&seq.to_ne_bytes());
        v.extend_from_slice(&7u32.to_ne_bytes());
        v.extend_from_slice(&code.to_ne_bytes());
        v.extend_from_slice(&[0u8; 16]);
        v
    }

    #[test]
    fn acks_and_errors_are_found_by_sequence() {
        let mut buf = msg(NLMSG_ERROR, 5, -17);
        buf.extend(msg(NLMSG_ERROR, 6, 0));
        buf.extend(msg(24, 7, 0));
        assert_eq!(errors_in(&buf), vec![(5, -17), (6, 0)]);
        let h = header_at(&buf, 72).expect("third header");
        assert_eq!((h.kind, h.seq, h.port), (24, 7, 7));
    }

    #[test]
    fn truncated_data_is_ignored() {
        let buf = msg(NLMSG_ERROR, 1, 0);
        assert!(errors_in(&buf[..20]).is_empty());
        assert!(header_at(&buf, 30).is_none());
    }

    #[test]
    fn an_overrun_makes_unconfirmed_results_unknown() {
        let r = overrun(vec![WriteResult::Ok, WriteResult::Errno(17)]);
        assert_eq!(r, vec![WriteResult::Unknown, WriteResult::Errno(17)]);
    }
}
