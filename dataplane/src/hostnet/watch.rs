//! The link watcher: one multicast netlink socket subscribed to link,
//! address and route changes, turned into [`DataplaneEvent`]s on a channel.
//!
//! It decides nothing: it drops notifications caused by our own writer (the
//! kernel stamps them with the writer's port id; a socket filter drops them
//! in the kernel, so a big batch of our own writes never fills the socket
//! buffer, and they are checked again here) and routes outside the main
//! table, and forwards the rest. The owner of the managers applies the
//! events (`HostNetwork::handle_event`), so all state stays in one task.

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{AsyncSocket, AsyncSocketExt, TokioSocket};
use tokio::sync::mpsc;

use super::links::Link;
use super::netlink::{header_at, NetlinkError};
use super::routes::model::{RawRoute, MAIN_TABLE};

const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_IPV4_IFADDR: u32 = 5;
const RTNLGRP_IPV4_ROUTE: u32 = 7;
const RTNLGRP_IPV6_IFADDR: u32 = 9;
const RTNLGRP_IPV6_ROUTE: u32 = 11;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const ENOBUFS: i32 = 105;
const RECV_BUF: usize = 256 * 1024;
const RCVBUF: usize = 4 << 20;

/// Something changed in the kernel that may need a repair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataplaneEvent {
    /// An interface was created, changed or renamed (with its current state).
    Link { index: u32, link: Link },
    /// An interface was deleted.
    LinkGone { index: u32 },
    /// An address was added to or removed from an interface (gateways may
    /// have become reachable or unreachable).
    AddressChanged { index: u32 },
    /// Someone other than us added, replaced or deleted a main-table route
    /// (ours or not; see [`RawRoute::is_ours`]).
    Route { route: RawRoute, removed: bool },
    /// Notifications were lost: everything must be re-read.
    Overrun,
}

/// Subscribes `socket` and spawns the task forwarding events to a channel.
pub fn spawn(
    mut socket: TokioSocket,
    writer_port: u32,
) -> Result<(mpsc::Receiver<DataplaneEvent>, tokio::task::JoinHandle<()>), NetlinkError> {
    let s = socket.socket_mut();
    s.bind_auto().map_err(NetlinkError::Open)?;
    drop_notifications_from(s, writer_port).map_err(NetlinkError::Open)?;
    if let Err(e) = s.set_rx_buf_sz(RCVBUF) {
        tracing::debug!(error = %e, "could not enlarge event socket buffer");
    }
    for g in [
        RTNLGRP_LINK,
        RTNLGRP_IPV4_IFADDR,
        RTNLGRP_IPV6_IFADDR,
        RTNLGRP_IPV4_ROUTE,
        RTNLGRP_IPV6_ROUTE,
    ] {
        s.add_membership(g).map_err(NetlinkError::Open)?;
    }
    let (tx, rx) = mpsc::channel(4096);
    let task = tokio::spawn(run(socket, writer_port, tx));
    Ok((rx, task))
}

/// Attaches a classic BPF filter dropping every message whose `nlmsg_pid`
/// is `port` (our writer's echoes), before it is queued on the socket.
fn drop_notifications_from(socket: &netlink_sys::Socket, port: u32) -> std::io::Result<()> {
    use socket2::{SockFilter, SockRef};
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS (loads big-endian)
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const NLMSG_PID_OFFSET: u32 = 12;
    let port_as_loaded = u32::from_be_bytes(port.to_ne_bytes());
    let program = [
        SockFilter::new(LD_W_ABS, 0, 0, NLMSG_PID_OFFSET),
        SockFilter::new(JEQ_K, 0, 1, port_as_loaded),
        SockFilter::new(RET_K, 0, 0, 0),
        SockFilter::new(RET_K, 0, 0, u32::MAX),
    ];
    SockRef::from(socket).attach_filter(&program)
}

async fn run(socket: TokioSocket, writer_port: u32, tx: mpsc::Sender<DataplaneEvent>) {
    let mut buf = Vec::with_capacity(RECV_BUF);
    loop {
        buf.clear();
        let events = match socket.recv(&mut buf).await {
            Ok(()) => events_in(&buf, writer_port),
            Err(e) if e.raw_os_error() == Some(ENOBUFS) => vec![DataplaneEvent::Overrun],
            Err(e) => {
                tracing::error!(error = %e, "netlink event socket failed; watcher stops");
                let _ = tx.send(DataplaneEvent::Overrun).await;
                return;
            }
        };
        for ev in events {
            if tx.send(ev).await.is_err() {
                return; // nobody listens any more
            }
        }
    }
}

/// Every event in one datagram, skipping our own route notifications.
pub fn events_in(buf: &[u8], writer_port: u32) -> Vec<DataplaneEvent> {
    let mut out = Vec::new();
    let mut off = 0;
    while let Some(h) = header_at(buf, off) {
        let end = off + h.len as usize;
        let ours = matches!(h.kind, RTM_NEWROUTE | RTM_DELROUTE) && h.port == writer_port;
        if !ours {
            match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[off..end]) {
                Ok(msg) => out.extend(event_of(msg)),
                Err(e) => {
                    tracing::warn!(error = %e, kind = h.kind, "unparsable netlink notification");
                    out.push(DataplaneEvent::Overrun);
                }
            }
        }
        off += (h.len as usize + 3) & !3;
    }
    out
}

fn event_of(msg: NetlinkMessage<RouteNetlinkMessage>) -> Option<DataplaneEvent> {
    let NetlinkPayload::InnerMessage(inner) = msg.payload else {
        return None;
    };
    match inner {
        RouteNetlinkMessage::NewLink(l) => {
            Link::parse(&l).map(|(index, link)| DataplaneEvent::Link { index, link })
        }
        RouteNetlinkMessage::DelLink(l) => Some(DataplaneEvent::LinkGone {
            index: l.header.index,
        }),
        RouteNetlinkMessage::NewAddress(a) | RouteNetlinkMessage::DelAddress(a) => {
            Some(DataplaneEvent::AddressChanged {
                index: a.header.index,
            })
        }
        RouteNetlinkMessage::NewRoute(r) => route_event(&r, false),
        RouteNetlinkMessage::DelRoute(r) => route_event(&r, true),
        _ => None,
    }
}

fn route_event(
    msg: &netlink_packet_route::route::RouteMessage,
    removed: bool,
) -> Option<DataplaneEvent> {
    let route = RawRoute::parse(msg)?;
    (route.table == MAIN_TABLE).then_some(DataplaneEvent::Route { route, removed })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostnet::routes::model::{del_route, new_route, Nexthop, Overwrite};

    fn wire(mut m: NetlinkMessage<RouteNetlinkMessage>, port: u32) -> Vec<u8> {
        m.header.port_number = port;
        m.finalize();
        let mut buf = vec![0u8; m.buffer_len()];
        m.serialize(&mut buf);
        buf
    }

    #[test]
    fn our_own_route_notifications_are_dropped() {
        let dst = "10.1.2.3/32".parse().expect("net");
        let mut buf = wire(new_route(dst, Nexthop::Dev(4), 80, Overwrite::Never), 42);
        buf.extend(wire(del_route(dst, 80), 43));
        let evs = events_in(&buf, 42);
        assert_eq!(evs.len(), 1);
        match &evs[0] {
            DataplaneEvent::Route { route, removed } => {
                assert!(*removed);
                assert_eq!(route.dst, dst);
                assert!(route.is_ours(80));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
