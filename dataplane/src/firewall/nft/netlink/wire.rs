//! Netlink message and attribute encoding/decoding (just what nf_tables needs).
//!
//! Messages are `nlmsghdr` (native endian) + `nfgenmsg` + attributes; every
//! attribute is `nlattr` (len, type) + payload padded to 4 bytes. nf_tables
//! integers inside attributes are big endian.

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_APPEND: u16 = 0x800;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;

/// Size of `struct nlmsghdr`.
const NLMSG_HDRLEN: usize = 16;
/// Nested-attribute flag (set as nft does; the kernel masks it off).
const NLA_F_NESTED: u16 = 0x8000;
/// Type bits of an attribute header.
const NLA_TYPE_MASK: u16 = 0x3fff;

fn align4(n: usize) -> usize {
    (n + 3) & !3
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
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // length, fixed in end_msg
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
        self.buf.push(family);
        self.buf.push(0); // NFNETLINK_V0
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        start
    }

    /// Finishes the message started at `start`.
    pub fn end_msg(&mut self, start: usize) {
        let len = u32::try_from(self.buf.len() - start).unwrap_or_else(|_| {
            self.overflow = true;
            u32::MAX
        });
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    /// Appends an attribute with raw payload.
    pub fn put(&mut self, ty: u16, data: &[u8]) {
        let len = u16::try_from(4 + data.len()).unwrap_or_else(|_| {
            self.overflow = true;
            u16::MAX
        });
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(align4(self.buf.len()), 0);
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
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
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
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
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

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The messages in a received datagram (stops at the first malformed one).
pub fn messages(buf: &[u8]) -> Vec<Msg<'_>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + NLMSG_HDRLEN <= buf.len() {
        let Some(len) = u32_at(buf, at).and_then(|l| usize::try_from(l).ok()) else {
            break;
        };
        if len < NLMSG_HDRLEN || at + len > buf.len() {
            break;
        }
        let (Some(ty), Some(seq)) = (u16_at(buf, at + 4), u32_at(buf, at + 8)) else {
            break;
        };
        out.push(Msg {
            ty,
            seq,
            payload: &buf[at + NLMSG_HDRLEN..at + len],
        });
        at += align4(len);
    }
    out
}

/// The attributes in `buf`, as (type without flags, payload).
pub fn attrs(buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= buf.len() {
        let (Some(len), Some(ty)) = (u16_at(buf, at), u16_at(buf, at + 2)) else {
            break;
        };
        let len = usize::from(len);
        if len < 4 || at + len > buf.len() {
            break;
        }
        out.push((ty & NLA_TYPE_MASK, &buf[at + 4..at + len]));
        at += align4(len);
    }
    out
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
    fn truncated_input_is_ignored_not_a_panic() {
        assert!(messages(&[1, 2, 3]).is_empty());
        assert!(attrs(&[200, 0, 1, 0, 9]).is_empty());
        assert_eq!(be32(&[1]), 0);
    }
}
