//! Netlink framing for nf_tables: messages (`nlmsghdr` + `nfgenmsg` +
//! attributes) and attributes (`nlattr` + payload padded to 4 bytes).
//! nf_tables integers inside attributes are big endian.
//!
//! The generic parts come from `netlink-packet-core`: the message header
//! ([`NetlinkHeader`], [`NetlinkBuffer`]), attribute headers and padding
//! ([`Nla`], [`NlaBuffer`]), error messages
//! ([`ErrorBuffer`]) and the `NLM_F_*` / `NLMSG_*` numbers. Written by hand,
//! because the crate has no equivalent:
//! * the 4-byte `nfgenmsg` after the header (netfilter's own; the
//!   `netlink-packet-netfilter` crate has it, but only together with typed
//!   message trees that lack expressions margay emits: ct, range, log, masq,
//!   counter);
//! * nested attributes whose length is known only when they close: the
//!   crate's [`Nla`] needs each value's length before emitting, that is a
//!   tree of values per rule; a batch of thousands of rules is instead
//!   streamed into one buffer and each nest's header patched when it closes
//!   (as the kernel's `nla_nest_start`/`nla_nest_end` do);
//! * length overflow: the crate truncates lengths that do not fit 16 bits
//!   silently; [`Builder`] records it so such a buffer is never sent.

// The nft transport uses netlink-packet-core at the version of
// netlink-packet-route 0.34 / rtnetlink 0.24 (see the root Cargo.toml).
use netlink_packet_core as core;

pub use core::{NLMSG_DONE, NLMSG_ERROR, NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REQUEST};

use core::{
    Emitable, ErrorBuffer, NetlinkBuffer, NetlinkHeader, Nla, NlaBuffer, NLA_ALIGNTO,
    NLA_HEADER_SIZE, NLA_TYPE_MASK,
};

/// Size of `struct nlmsghdr`.
const NLMSG_HDRLEN: usize = 16;
/// nfgenmsg version (`NFNETLINK_V0`).
const NFNETLINK_V0: u8 = 0;

fn align4(n: usize) -> usize {
    (n + NLA_ALIGNTO - 1) & !(NLA_ALIGNTO - 1)
}

/// An attribute with a borrowed payload, emitted by the crate.
struct Attr<'a> {
    kind: u16,
    value: &'a [u8],
}

impl Nla for Attr<'_> {
    fn value_len(&self) -> usize {
        self.value.len()
    }

    fn kind(&self) -> u16 {
        self.kind
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        buffer.copy_from_slice(self.value);
    }
}

/// Appends netlink messages to one buffer.
#[derive(Default)]
pub struct Builder {
    /// The encoded bytes.
    pub buf: Vec<u8>,
    /// Set when a length did not fit its header field (an attribute or
    /// nest over 64 KiB, a message over 4 GiB): the buffer is then garbage
    /// and must not be sent.
    pub overflow: bool,
}

impl Builder {
    /// Starts a message with an nfgenmsg header; returns its offset for [`Builder::end_msg`].
    pub fn msg(&mut self, ty: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> usize {
        let start = self.buf.len();
        let mut header = NetlinkHeader::default();
        header.message_type = ty;
        header.flags = flags;
        header.sequence_number = seq;
        // Length: fixed in end_msg. Port id 0: the kernel fills it.
        self.buf.resize(start + header.buffer_len(), 0);
        header.emit(&mut self.buf[start..]);
        self.buf.push(family);
        self.buf.push(NFNETLINK_V0);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        start
    }

    /// Finishes the message started at `start`.
    pub fn end_msg(&mut self, start: usize) {
        let len = u32::try_from(self.buf.len() - start).unwrap_or_else(|_| {
            self.overflow = true;
            u32::MAX
        });
        NetlinkBuffer::new(&mut self.buf[start..]).set_length(len);
    }

    /// Appends an attribute with raw payload.
    pub fn put(&mut self, ty: u16, data: &[u8]) {
        if u16::try_from(NLA_HEADER_SIZE + data.len()).is_err() {
            // The buffer is garbage from here on and never sent.
            self.overflow = true;
            return;
        }
        let attr = Attr {
            kind: ty,
            value: data,
        };
        let at = self.buf.len();
        self.buf.resize(at + attr.buffer_len(), 0);
        attr.emit(&mut self.buf[at..]);
    }

    /// Appends a NUL-terminated string attribute.
    pub fn put_str(&mut self, ty: u16, s: &str) {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.put(ty, &v);
    }

    /// Appends a big-endian u32 attribute.
    pub fn put_be32(&mut self, ty: u16, v: u32) {
        self.put(ty, &v.to_be_bytes());
    }

    /// Opens a nested attribute; returns its offset for [`Builder::end_nest`].
    pub fn nest(&mut self, ty: u16) -> usize {
        let at = self.buf.len();
        self.buf.resize(at + NLA_HEADER_SIZE, 0);
        let mut header = NlaBuffer::new(&mut self.buf[at..]);
        header.set_kind(ty);
        // Set as nft does; the kernel masks it off.
        header.set_nested_flag();
        at
    }

    /// Closes the nested attribute opened at `at`.
    pub fn end_nest(&mut self, at: usize) {
        // Nested lengths above 64 KiB cannot be expressed; callers chunk,
        // and what still does not fit marks the buffer as overflowed.
        let len = u16::try_from(self.buf.len() - at).unwrap_or_else(|_| {
            self.overflow = true;
            u16::MAX
        });
        NlaBuffer::new(&mut self.buf[at..]).set_length(len);
    }
}

/// One received message.
pub struct Msg<'a> {
    /// nlmsg_type.
    pub ty: u16,
    /// nlmsg_seq.
    pub seq: u32,
    /// Everything after the nlmsghdr.
    pub payload: &'a [u8],
}

/// The messages in a received datagram (stops at the first malformed one).
pub fn messages(buf: &[u8]) -> Vec<Msg<'_>> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(rest) = buf.get(at..).filter(|r| r.len() >= NLMSG_HDRLEN) {
        let Ok(m) = NetlinkBuffer::new_checked(rest) else {
            break;
        };
        let Ok(len) = usize::try_from(m.length()) else {
            break;
        };
        out.push(Msg {
            ty: m.message_type(),
            seq: m.sequence_number(),
            payload: m.payload(),
        });
        at += align4(len);
    }
    out
}

/// The errno an `NLMSG_ERROR` payload reports (0: an ack; 0 too when the
/// payload is too short to hold a code).
pub fn error_code(payload: &[u8]) -> i32 {
    ErrorBuffer::new_checked(payload)
        .ok()
        .and_then(|e| e.code())
        .map_or(0, |c| -c.get())
}

/// The attributes in `buf`, as (type without flags, payload).
///
/// Walked by hand rather than with `NlasIterator`: read-back decodes every
/// attribute of every rule of the table (hundreds of thousands at scale),
/// and the crate's checked buffers made the full-table read-back about 15 %
/// slower in the `nft` bench.
pub fn attrs(buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut rest = buf;
    while let Some((len, kind)) = attr_header(rest) {
        let Some(payload) = rest.get(NLA_HEADER_SIZE..len) else {
            break;
        };
        out.push((kind & NLA_TYPE_MASK, payload));
        rest = rest.get(align4(len)..).unwrap_or_default();
    }
    out
}

/// An attribute header's (length, type), when it is well formed.
fn attr_header(b: &[u8]) -> Option<(usize, u16)> {
    let len = usize::from(u16::from_ne_bytes(b.get(0..2)?.try_into().ok()?));
    let kind = u16::from_ne_bytes(b.get(2..4)?.try_into().ok()?);
    (len >= NLA_HEADER_SIZE).then_some((len, kind))
}

/// The payload of the first attribute of type `ty`.
pub fn find<'a>(a: &[(u16, &'a [u8])], ty: u16) -> Option<&'a [u8]> {
    a.iter().find(|(t, _)| *t == ty).map(|(_, p)| *p)
}

/// The payload of attribute `ty` inside the nested attribute payload `buf`.
pub fn nested(buf: &[u8], ty: u16) -> Option<&[u8]> {
    find(&attrs(buf), ty)
}

/// A big-endian u32 payload (0 when too short).
pub fn be32(b: &[u8]) -> u32 {
    b.get(..4)
        .and_then(|x| x.try_into().ok())
        .map_or(0, u32::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_nested_attributes_round_trip() {
        let mut b = Builder::default();
        let m = b.msg(0x0a06, 1, 7, 1, 0);
        b.put_str(1, "margay");
        let n = b.nest(4);
        b.put_be32(2, 0xdead_beef);
        b.put(3, &[1, 2, 3]);
        b.end_nest(n);
        b.end_msg(m);
        let msgs = messages(&b.buf);
        assert_eq!(msgs.len(), 1);
        assert_eq!((msgs[0].ty, msgs[0].seq), (0x0a06, 7));
        let a = attrs(&msgs[0].payload[4..]);
        assert_eq!(find(&a, 1), Some(&b"margay\0"[..]));
        let inner = find(&a, 4).expect("nested");
        assert_eq!(nested(inner, 2).map(be32), Some(0xdead_beef));
        assert_eq!(nested(inner, 3), Some(&[1u8, 2, 3][..]));
    }

    #[test]
    fn attribute_walk_stops_at_a_malformed_header() {
        let mut b = Builder::default();
        b.put_be32(1, 7);
        b.put(2 | 0x8000, &[9]);
        let good = b.buf.clone();
        let a = attrs(&good);
        assert_eq!(a, vec![(1, &7u32.to_be_bytes()[..]), (2, &[9u8][..])]);
        // A length past the end, a length below the header, a cut header.
        let mut long = good.clone();
        long[8..10].copy_from_slice(&200u16.to_ne_bytes());
        assert_eq!(attrs(&long).len(), 1);
        let mut short = good.clone();
        short[8..10].copy_from_slice(&2u16.to_ne_bytes());
        assert_eq!(attrs(&short).len(), 1);
        assert_eq!(attrs(&good[..10]).len(), 1);
    }

    #[test]
    fn the_bytes_are_the_kernels_layout() {
        let mut b = Builder::default();
        let m = b.msg(0x0a10, NLM_F_REQUEST, 0x0102_0304, 1, 10);
        let n = b.nest(2);
        b.put(1, &[0xab]);
        b.end_nest(n);
        b.end_msg(m);
        let mut want: Vec<u8> = Vec::new();
        want.extend_from_slice(&32u32.to_ne_bytes());
        want.extend_from_slice(&0x0a10u16.to_ne_bytes());
        want.extend_from_slice(&1u16.to_ne_bytes());
        want.extend_from_slice(&0x0102_0304u32.to_ne_bytes());
        want.extend_from_slice(&[0; 4]);
        want.extend_from_slice(&[1, 0, 0, 10]);
        want.extend_from_slice(&12u16.to_ne_bytes());
        want.extend_from_slice(&(2u16 | 0x8000).to_ne_bytes());
        want.extend_from_slice(&5u16.to_ne_bytes());
        want.extend_from_slice(&1u16.to_ne_bytes());
        want.extend_from_slice(&[0xab, 0, 0, 0]);
        assert_eq!(b.buf, want);
        assert!(!b.overflow);
    }

    #[test]
    fn lengths_that_do_not_fit_are_flagged() {
        let mut b = Builder::default();
        b.put(1, &vec![0; 70_000]);
        assert!(b.overflow);
    }

    #[test]
    fn errors_and_acks_read_as_errno() {
        let mut nack = (-libc::ENOENT).to_ne_bytes().to_vec();
        nack.extend_from_slice(&[0; 16]);
        assert_eq!(error_code(&nack), libc::ENOENT);
        let mut ack = 0i32.to_ne_bytes().to_vec();
        ack.extend_from_slice(&[0; 16]);
        assert_eq!(error_code(&ack), 0);
        assert_eq!(error_code(&[1, 2]), 0);
    }

    #[test]
    fn truncated_input_is_ignored_not_a_panic() {
        assert!(messages(&[1, 2, 3]).is_empty());
        assert!(attrs(&[200, 0, 1, 0, 9]).is_empty());
        assert_eq!(be32(&[1]), 0);
    }
}
