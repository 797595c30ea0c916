//! Rendering of single generic rules into iptables-restore lines.

use super::*;
use crate::firewall::model::Action;

fn name(s: &'static str) -> ObjectName {
    ObjectName::fixed(s)
}

fn r(matches: Vec<Match>, action: Action) -> GenericRule {
    GenericRule { matches, action }
}

fn render(rule: &GenericRule, family: IpVersion) -> String {
    let fam = rule_families(rule, &|_| None);
    let mut out = String::new();
    render_rule(
        &mut out,
        &name("margay-c"),
        3,
        rule,
        (fam, rule.fingerprint()),
        family,
    )
    .expect("renders");
    out
}

fn tagged(rule: &GenericRule, fam: char) -> String {
    format!(
        "-A margay-c -m comment --comment {:016x}:3:{fam}",
        rule.fingerprint()
    )
}

#[test]
fn plain_rule_renders_in_both_families_with_its_tag() {
    let rule = r(
        vec![Match::ConnState(CtState::EstablishedRelated)],
        Action::Accept,
    );
    let want = format!(
        "{} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n",
        tagged(&rule, 'b')
    );
    assert_eq!(render(&rule, IpVersion::V4), want);
    assert_eq!(render(&rule, IpVersion::V6), want);
}

#[test]
fn family_match_limits_the_rule_to_one_family() {
    let rule = r(
        vec![
            Match::Family(IpVersion::V6),
            Match::Protocol {
                proto: 58,
                negated: false,
            },
            Match::Icmp {
                icmp_type: 135,
                code: None,
                negated: false,
            },
        ],
        Action::Accept,
    );
    assert_eq!(render(&rule, IpVersion::V4), "");
    assert_eq!(
        render(&rule, IpVersion::V6),
        format!(
            "{} -p 58 -m icmp6 --icmpv6-type 135 -j ACCEPT\n",
            tagged(&rule, '6')
        )
    );
}

#[test]
fn icmp_implies_its_protocol_and_code() {
    let rule = r(
        vec![
            Match::Family(IpVersion::V4),
            Match::Icmp {
                icmp_type: 8,
                code: Some(0),
                negated: true,
            },
        ],
        Action::Drop,
    );
    assert_eq!(
        render(&rule, IpVersion::V4),
        format!(
            "{} -p 1 -m icmp ! --icmp-type 8/0 -j DROP\n",
            tagged(&rule, '4')
        )
    );
}

#[test]
fn nets_sets_interfaces_marks_and_second_nets() {
    let rule = r(
        vec![
            Match::InInterface {
                name: "cali".into(),
                prefix: true,
            },
            Match::OutInterface {
                name: "eth0".into(),
                prefix: false,
            },
            Match::SrcNet {
                net: "10.0.0.0/8".parse().expect("net"),
                negated: false,
            },
            Match::SrcNet {
                net: "10.1.0.0/16".parse().expect("net"),
                negated: true,
            },
            Match::DstSet {
                set: name("margay-s4-x"),
                negated: true,
            },
            Match::Mark {
                value: 0x100,
                mask: 0x300,
            },
        ],
        Action::SetMark {
            value: 0x200,
            mask: 0x200,
        },
    );
    assert_eq!(
        render(&rule, IpVersion::V4),
        format!(
            "{} -i cali+ -o eth0 -s 10.0.0.0/8 -m iprange ! --src-range 10.1.0.0-10.1.255.255 \
             -m set ! --match-set margay-s4-x dst -m mark --mark 0x100/0x300 \
             -j MARK --set-xmark 0x200/0x200\n",
            tagged(&rule, '4')
        )
    );
    assert_eq!(render(&rule, IpVersion::V6), "");
}

#[test]
fn negated_net_of_the_other_family_always_holds() {
    let rule = r(
        vec![Match::DstNet {
            net: "10.0.0.0/8".parse().expect("net"),
            negated: true,
        }],
        Action::Drop,
    );
    assert_eq!(
        render(&rule, IpVersion::V6),
        format!("{} -j DROP\n", tagged(&rule, 'b'))
    );
    assert_eq!(
        render(&rule, IpVersion::V4),
        format!("{} ! -d 10.0.0.0/8 -j DROP\n", tagged(&rule, 'b'))
    );
}

#[test]
fn known_set_family_limits_the_rule() {
    let rule = r(
        vec![Match::SrcSet {
            set: name("margay-t6-a"),
            negated: false,
        }],
        Action::Accept,
    );
    let fam = rule_families(&rule, &|s| {
        (s.as_str() == "margay-t6-a").then_some(IpVersion::V6)
    });
    assert_eq!(fam, FamTag::V6);
}

#[test]
fn long_port_lists_become_disjoint_pieces() {
    let ports: Vec<PortRange> = (1..=20)
        .map(|p| PortRange {
            lo: p * 10,
            hi: p * 10,
        })
        .collect();
    let rule = r(
        vec![
            Match::Protocol {
                proto: 6,
                negated: false,
            },
            Match::DstPorts {
                ports,
                negated: false,
            },
            Match::SrcPorts {
                ports: vec![PortRange { lo: 5, hi: 5 }, PortRange { lo: 1, hi: 4 }],
                negated: true,
            },
        ],
        Action::Accept,
    );
    let text = render(&rule, IpVersion::V4);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    let fp = rule.fingerprint();
    assert!(lines[0].starts_with(&format!(
        "-A margay-c -m comment --comment {fp:016x}:3:b:0/2 -p 6"
    )));
    assert!(lines[0].contains(" -m multiport ! --sports 1:5 "));
    assert!(lines[0].contains(
        " -m multiport --dports 10,20,30,40,50,60,70,80,90,100,110,120,130,140,150 -j ACCEPT"
    ));
    assert!(lines[1].contains(":3:b:1/2 "));
    assert!(lines[1].contains(" -m multiport --dports 160,170,180,190,200 -j ACCEPT"));
}

#[test]
fn port_chunks_merge_and_weigh_ranges() {
    let p = |lo, hi| PortRange { lo, hi };
    assert_eq!(
        port_chunks(&[p(80, 80), p(81, 90), p(443, 443)]),
        vec!["80:90,443"]
    );
    let many: Vec<PortRange> = (0..8).map(|i| p(i * 100, i * 100 + 1)).collect();
    assert_eq!(port_chunks(&many).len(), 2);
    assert!(port_chunks(&[]).is_empty());
}

#[test]
fn contradictions_become_counter_lines() {
    let rule = r(
        vec![
            Match::Protocol {
                proto: 6,
                negated: false,
            },
            Match::Protocol {
                proto: 6,
                negated: true,
            },
        ],
        Action::Accept,
    );
    assert_eq!(
        render(&rule, IpVersion::V4),
        format!("{}\n", tagged(&rule, 'b'))
    );
    let nowhere = r(
        vec![Match::Family(IpVersion::V4), Match::Family(IpVersion::V6)],
        Action::Drop,
    );
    assert_eq!(
        render(&nowhere, IpVersion::V4),
        format!("{}\n", tagged(&nowhere, 'n'))
    );
    assert_eq!(render(&nowhere, IpVersion::V6), "");
}

#[test]
fn actions_render() {
    assert_eq!(
        render_action(&Action::Goto(name("margay-x"))),
        Ok(" -g margay-x".into())
    );
    assert_eq!(
        render_action(&Action::Jump(name("margay-x"))),
        Ok(" -j margay-x".into())
    );
    assert_eq!(
        render_action(&Action::Masquerade),
        Ok(" -j MASQUERADE".into())
    );
    assert_eq!(render_action(&Action::Continue), Ok(String::new()));
    assert_eq!(
        render_action(&Action::Log {
            prefix: "calico-packet: ".into()
        }),
        Ok(" -j LOG --log-prefix \"calico-packet: \"".into())
    );
    assert_eq!(
        render_action(&Action::SetMark {
            value: 0x1,
            mask: 0x2
        }),
        Ok(" -j MARK --set-xmark 0x1/0x3".into())
    );
}

#[test]
fn hostile_text_is_refused() {
    assert!(render_action(&Action::Log {
        prefix: "x\" -j ACCEPT".into()
    })
    .is_err());
    assert!(render_action(&Action::Jump(name("INPUT"))).is_err());
    let rule = r(
        vec![Match::InInterface {
            name: "eth0 -j ACCEPT".into(),
            prefix: false,
        }],
        Action::Drop,
    );
    let mut out = String::new();
    assert!(render_rule(
        &mut out,
        &name("margay-c"),
        0,
        &rule,
        (FamTag::Both, rule.fingerprint()),
        IpVersion::V4
    )
    .is_err());
    let two = r(
        vec![
            Match::InInterface {
                name: "a".into(),
                prefix: false,
            },
            Match::InInterface {
                name: "b".into(),
                prefix: false,
            },
        ],
        Action::Drop,
    );
    assert!(render_rule(
        &mut out,
        &name("margay-c"),
        0,
        &two,
        (FamTag::Both, two.fingerprint()),
        IpVersion::V4
    )
    .is_err());
}

#[test]
fn ports_need_a_port_protocol() {
    let rule = r(
        vec![Match::DstPorts {
            ports: vec![PortRange { lo: 1, hi: 1 }],
            negated: false,
        }],
        Action::Drop,
    );
    let mut out = String::new();
    assert!(render_rule(
        &mut out,
        &name("margay-c"),
        0,
        &rule,
        (FamTag::Both, rule.fingerprint()),
        IpVersion::V4
    )
    .is_err());
}
