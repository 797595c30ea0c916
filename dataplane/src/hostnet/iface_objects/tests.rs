use super::*;
use crate::hostnet::links::Link;

/// A test kind: (interface, slot) → value, configurable delete policy.
#[derive(Debug, Clone, Copy)]
struct Thing<const DELETE: u8>;

/// (interface, slot).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key(InterfaceName, u8);

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.0, self.1)
    }
}

impl<const D: u8> IfaceObject for Thing<D> {
    type Key = Key;
    type Value = char;
    const KIND: ObjectKind = ObjectKind::Neighbour;
    const NEEDS: LinkNeed = if D == 2 {
        LinkNeed::Exists
    } else {
        LinkNeed::Up
    };
    const DELETE: DeletePolicy = match D {
        0 => DeletePolicy::Send,
        1 => DeletePolicy::SendWhileUp,
        _ => DeletePolicy::Forget,
    };

    fn iface<'a>(key: &'a Key, _: &'a char) -> Option<&'a InterfaceName> {
        Some(&key.0)
    }

    fn failed_iface(key: &Key) -> Option<InterfaceName> {
        Some(key.0.clone())
    }
}

impl<const D: u8> KeyedByIface for Thing<D> {
    fn keys_of(iface: &InterfaceName) -> RangeInclusive<Key> {
        Key(iface.clone(), 0)..=Key(iface.clone(), u8::MAX)
    }
}

fn iface(s: &str) -> InterfaceName {
    InterfaceName::new(s).expect("valid")
}

fn key(i: &str, n: u8) -> Key {
    Key(iface(i), n)
}

/// cali1 up (index 2), cali2 down (index 3), cali3 missing.
fn links() -> LinkCache {
    LinkCache::from_links([
        (
            2,
            Link {
                name: "cali1".into(),
                up: true,
            },
        ),
        (
            3,
            Link {
                name: "cali2".into(),
                up: false,
            },
        ),
    ])
}

fn three_interfaces<const D: u8>() -> IfaceObjects<Thing<D>> {
    let mut o = IfaceObjects::<Thing<D>>::default();
    o.replace_desired(BTreeMap::from([
        (key("cali1", 1), 'a'),
        (key("cali2", 1), 'b'),
        (key("cali3", 1), 'c'),
    ]));
    o
}

#[test]
fn objects_wait_for_what_they_need_of_their_interface() {
    let mut up = three_interfaces::<0>();
    let plan = up.plan(&links());
    assert_eq!(
        plan.steps,
        vec![Step::Upsert {
            key: key("cali1", 1),
            value: 'a',
            existing: None,
            ifindex: Some(2),
        }]
    );
    assert_eq!(plan.waiting, 2);
    let mut exists = three_interfaces::<2>();
    let plan = exists.plan(&links());
    assert_eq!(plan.steps.len(), 2, "cali1 and cali2 exist");
    assert_eq!(plan.waiting, 1);
}

#[test]
fn deletes_follow_the_kind_s_policy() {
    fn deletes<const D: u8>() -> (Vec<Step<Key, char>>, usize) {
        let mut o = IfaceObjects::<Thing<D>>::default();
        o.tracker_mut().set_observed(key("cali1", 1), 'a');
        o.tracker_mut().set_observed(key("cali3", 1), 'c');
        let plan = o.plan(&links());
        (plan.steps, o.tracker().observed().len())
    }
    let (sent, left) = deletes::<0>();
    assert_eq!(sent.len(), 2);
    assert_eq!(left, 2);
    let (sent, left) = deletes::<1>();
    assert_eq!(
        sent,
        vec![Step::Delete {
            key: key("cali1", 1),
            ifindex: Some(2),
        }]
    );
    assert_eq!(left, 1, "cali3's object went with its interface");
    let (sent, left) = deletes::<2>();
    assert!(sent.is_empty());
    assert_eq!(left, 0, "forgotten, never reverted");
}

#[test]
fn outcomes_are_recorded_and_failures_block_until_unblocked() {
    let mut o = three_interfaces::<0>();
    let mut report = FlushReport::default();
    o.record(
        key("cali1", 1),
        WriteKind::Upsert,
        Outcome::Done,
        &mut report,
    );
    o.record(
        key("cali2", 1),
        WriteKind::Upsert,
        Outcome::Failed {
            errno: Some(22),
            block: Some(Blocked::Rejected(Some(22))),
        },
        &mut report,
    );
    o.record(
        key("cali3", 1),
        WriteKind::Upsert,
        Outcome::Failed {
            errno: None,
            block: None,
        },
        &mut report,
    );
    assert_eq!((report.upserts, report.blocked), (1, 2));
    assert_eq!(report.failures.len(), 2);
    assert_eq!(report.failures[0].iface, Some(iface("cali2")));
    assert_eq!(o.tracker().pending_len(), 2);
    let plan = o.plan(&links());
    assert_eq!(plan.blocked, 1);
    o.unblock_all();
    assert_eq!(o.plan(&links()).blocked, 0);
}

#[test]
fn one_interface_is_replaced_alone_and_vanishing_forgets_its_objects() {
    let mut o = three_interfaces::<1>();
    o.record(
        key("cali1", 1),
        WriteKind::Upsert,
        Outcome::Failed {
            errno: Some(1),
            block: Some(Blocked::Rejected(Some(1))),
        },
        &mut FlushReport::default(),
    );
    o.set_iface(&iface("cali1"), [(key("cali1", 7), 'z')]);
    assert!(o.blocked().is_empty(), "its blocks are lifted");
    let desired: Vec<_> = o.tracker().desired().keys().cloned().collect();
    assert_eq!(
        desired,
        vec![key("cali1", 7), key("cali2", 1), key("cali3", 1)]
    );
    o.record(
        key("cali1", 7),
        WriteKind::Upsert,
        Outcome::Done,
        &mut FlushReport::default(),
    );
    assert_eq!(o.tracker().observed().len(), 1);
    o.forget_iface("cali1");
    assert!(o.tracker().observed().is_empty());
    o.set_iface(&iface("cali1"), []);
    assert_eq!(o.tracker().desired().len(), 2);
}
