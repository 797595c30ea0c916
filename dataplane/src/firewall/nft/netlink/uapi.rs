//! The numbers of the kernel's nf_tables netlink interface, as margay uses
//! them: message types, attribute types, flags and expression constants,
//! named as in `linux/netfilter/nf_tables.h` and `nfnetlink.h`.
//!
//! Only the ones the encoder, the session and the read-back decoders need.
//! Generic netlink numbers (`NLM_F_*`, `NLMSG_*`) come from
//! `netlink-packet-core` (see `wire`).

// nfnetlink.
pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
pub const NFNL_MSG_BATCH_END: u16 = 0x11;
pub const NFPROTO_INET: u8 = 1;
pub const NFPROTO_IPV4: u8 = 2;
pub const NFPROTO_IPV6: u8 = 10;
pub const AF_UNSPEC: u8 = 0;

// nf_tables message types (`enum nf_tables_msg_types`).
pub const MSG_NEWTABLE: u8 = 0;
pub const MSG_DELTABLE: u8 = 2;
pub const MSG_NEWCHAIN: u8 = 3;
pub const MSG_GETCHAIN: u8 = 4;
pub const MSG_DELCHAIN: u8 = 5;
pub const MSG_NEWRULE: u8 = 6;
pub const MSG_GETRULE: u8 = 7;
pub const MSG_DELRULE: u8 = 8;
pub const MSG_NEWSET: u8 = 9;
pub const MSG_GETSET: u8 = 10;
pub const MSG_DELSET: u8 = 11;
pub const MSG_NEWSETELEM: u8 = 12;
pub const MSG_GETSETELEM: u8 = 13;
pub const MSG_DELSETELEM: u8 = 14;
pub const MSG_NEWGEN: u8 = 15;
pub const MSG_GETGEN: u8 = 16;

/// The netlink message type of nf_tables message `msg`.
pub fn nft_type(msg: u8) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | u16::from(msg)
}

/// The nf_tables message of a netlink message type (None: another subsystem).
pub fn nft_msg(ty: u16) -> Option<u8> {
    ty.checked_sub(nft_type(0))
        .and_then(|t| u8::try_from(t).ok())
}

// Object attributes.
pub const NFTA_GEN_ID: u16 = 1;
pub const NFTA_LIST_ELEM: u16 = 1;
pub const NFTA_TABLE_NAME: u16 = 1;
pub const NFTA_CHAIN_TABLE: u16 = 1;
pub const NFTA_CHAIN_NAME: u16 = 3;
pub const NFTA_CHAIN_HOOK: u16 = 4;
pub const NFTA_CHAIN_POLICY: u16 = 5;
pub const NFTA_CHAIN_TYPE: u16 = 7;
pub const NFTA_HOOK_HOOKNUM: u16 = 1;
pub const NFTA_HOOK_PRIORITY: u16 = 2;
pub const NFTA_RULE_TABLE: u16 = 1;
pub const NFTA_RULE_CHAIN: u16 = 2;
pub const NFTA_RULE_EXPRESSIONS: u16 = 4;
pub const NFTA_RULE_USERDATA: u16 = 7;
pub const NFTA_SET_TABLE: u16 = 1;
pub const NFTA_SET_NAME: u16 = 2;
pub const NFTA_SET_FLAGS: u16 = 3;
pub const NFTA_SET_KEY_TYPE: u16 = 4;
pub const NFTA_SET_KEY_LEN: u16 = 5;
pub const NFTA_SET_DESC: u16 = 9;
pub const NFTA_SET_ID: u16 = 10;
pub const NFTA_SET_USERDATA: u16 = 13;
pub const NFTA_SET_DESC_SIZE: u16 = 1;
pub const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
pub const NFTA_SET_ELEM_LIST_SET: u16 = 2;
pub const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
pub const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
pub const NFTA_SET_ELEM_KEY: u16 = 1;
pub const NFTA_SET_ELEM_FLAGS: u16 = 3;
pub const NFTA_DATA_VALUE: u16 = 1;
pub const NFTA_DATA_VERDICT: u16 = 2;
pub const NFTA_VERDICT_CODE: u16 = 1;
pub const NFTA_VERDICT_CHAIN: u16 = 2;

// Expression attributes.
pub const NFTA_EXPR_NAME: u16 = 1;
pub const NFTA_EXPR_DATA: u16 = 2;
pub const NFTA_META_DREG: u16 = 1;
pub const NFTA_META_KEY: u16 = 2;
pub const NFTA_META_SREG: u16 = 3;
pub const NFTA_CMP_SREG: u16 = 1;
pub const NFTA_CMP_OP: u16 = 2;
pub const NFTA_CMP_DATA: u16 = 3;
pub const NFTA_PAYLOAD_DREG: u16 = 1;
pub const NFTA_PAYLOAD_BASE: u16 = 2;
pub const NFTA_PAYLOAD_OFFSET: u16 = 3;
pub const NFTA_PAYLOAD_LEN: u16 = 4;
pub const NFTA_BITWISE_SREG: u16 = 1;
pub const NFTA_BITWISE_DREG: u16 = 2;
pub const NFTA_BITWISE_LEN: u16 = 3;
pub const NFTA_BITWISE_MASK: u16 = 4;
pub const NFTA_BITWISE_XOR: u16 = 5;
pub const NFTA_LOOKUP_SET: u16 = 1;
pub const NFTA_LOOKUP_SREG: u16 = 2;
pub const NFTA_LOOKUP_SET_ID: u16 = 4;
pub const NFTA_LOOKUP_FLAGS: u16 = 5;
pub const NFTA_RANGE_SREG: u16 = 1;
pub const NFTA_RANGE_OP: u16 = 2;
pub const NFTA_RANGE_FROM_DATA: u16 = 3;
pub const NFTA_RANGE_TO_DATA: u16 = 4;
pub const NFTA_IMMEDIATE_DREG: u16 = 1;
pub const NFTA_IMMEDIATE_DATA: u16 = 2;
pub const NFTA_CT_DREG: u16 = 1;
pub const NFTA_CT_KEY: u16 = 2;
pub const NFTA_LOG_PREFIX: u16 = 2;

// Flags.
pub const NFT_SET_ANONYMOUS: u32 = 0x1;
pub const NFT_SET_CONSTANT: u32 = 0x2;
pub const NFT_SET_INTERVAL: u32 = 0x4;
pub const NFT_SET_ELEM_INTERVAL_END: u32 = 0x1;
pub const NFT_LOOKUP_F_INV: u32 = 0x1;

/// nft's datatype ids, stored so `nft list` prints the right types.
pub const TYPE_IPADDR: u32 = 7;
pub const TYPE_IP6ADDR: u32 = 8;
pub const TYPE_INET_SERVICE: u32 = 13;

// Registers, keys, bases, operators.
pub const REG_VERDICT: u32 = 0;
pub const REG_1: u32 = 1;
pub const META_MARK: u32 = 3;
pub const META_IIFNAME: u32 = 6;
pub const META_OIFNAME: u32 = 7;
pub const META_NFPROTO: u32 = 15;
pub const META_L4PROTO: u32 = 16;
pub const CT_STATE: u32 = 0;
pub const BASE_NETWORK: u32 = 1;
pub const BASE_TRANSPORT: u32 = 2;
pub const CMP_EQ: u32 = 0;
pub const CMP_NEQ: u32 = 1;
pub const RANGE_EQ: u32 = 0;
pub const RANGE_NEQ: u32 = 1;

// Verdicts.
pub const NF_DROP: u32 = 0;
pub const NF_ACCEPT: u32 = 1;
pub const NFT_JUMP: i32 = -3;
pub const NFT_GOTO: i32 = -4;
pub const NFT_RETURN: i32 = -5;

// Conntrack state bits.
pub const CT_BIT_INVALID: u32 = 1;
pub const CT_BIT_ESTABLISHED: u32 = 2;
pub const CT_BIT_RELATED: u32 = 4;

/// Userdata nft attaches to address sets (key byte order), copied so the
/// tool prints our sets exactly like its own.
pub const SET_USERDATA: [u8; 6] = [0x01, 0x04, 0x01, 0x00, 0x00, 0x00];

/// The type of the comment entry in rule userdata (`NFTNL_UDATA_RULE_COMMENT`).
pub const UDATA_RULE_COMMENT: u8 = 0;
