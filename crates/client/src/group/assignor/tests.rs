use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

fn tp(t: &str, p: i32) -> TopicPartition {
    TopicPartition::new(t, p)
}

fn topics(spec: &[(&str, i32)]) -> BTreeMap<String, i32> {
    spec.iter().map(|(t, n)| (t.to_string(), *n)).collect()
}

fn subs(spec: &[(&str, &[&str])]) -> BTreeMap<String, Subscription> {
    spec.iter()
        .map(|(m, ts)| {
            (m.to_string(), Subscription { topics: ts.iter().map(|t| t.to_string()).collect(), ..Default::default() })
        })
        .collect()
}

fn sorted(mut a: Assignment) -> Assignment {
    for v in a.values_mut() {
        v.sort();
    }
    a
}

fn parts(list: &[(&str, i32)]) -> Vec<TopicPartition> {
    list.iter().map(|(t, p)| tp(t, *p)).collect()
}

#[test]
fn range_matches_kafka_example() {
    // Kafka's RangeAssignor javadoc: C0 gets t0p0, t0p1, t1p0, t1p1; C1 gets t0p2, t1p2.
    let a =
        RangeAssignor.assign(&topics(&[("t0", 3), ("t1", 3)]), &subs(&[("C0", &["t0", "t1"]), ("C1", &["t0", "t1"])]));
    assert_eq!(a["C0"], parts(&[("t0", 0), ("t0", 1), ("t1", 0), ("t1", 1)]));
    assert_eq!(a["C1"], parts(&[("t0", 2), ("t1", 2)]));
}

#[test]
fn range_extra_partitions_go_to_the_first_members() {
    let a = RangeAssignor.assign(&topics(&[("t", 8)]), &subs(&[("a", &["t"]), ("b", &["t"]), ("c", &["t"])]));
    assert_eq!(a["a"], parts(&[("t", 0), ("t", 1), ("t", 2)]));
    assert_eq!(a["b"], parts(&[("t", 3), ("t", 4), ("t", 5)]));
    assert_eq!(a["c"], parts(&[("t", 6), ("t", 7)]));
    // More members than partitions: the last ones get nothing.
    let a = RangeAssignor.assign(&topics(&[("t", 1)]), &subs(&[("a", &["t"]), ("b", &["t"])]));
    assert_eq!(a["a"], parts(&[("t", 0)]));
    assert!(a["b"].is_empty());
}

#[test]
fn static_members_sort_first_by_instance_id() {
    let mut s = subs(&[("a", &["t"]), ("b", &["t"]), ("c", &["t"])]);
    s.get_mut("c").unwrap().group_instance_id = Some("i1".into());
    s.get_mut("b").unwrap().group_instance_id = Some("i2".into());
    let a = RangeAssignor.assign(&topics(&[("t", 3)]), &s);
    assert_eq!(a["c"], parts(&[("t", 0)]));
    assert_eq!(a["b"], parts(&[("t", 1)]));
    assert_eq!(a["a"], parts(&[("t", 2)]));
}

#[test]
fn roundrobin_matches_kafka_examples() {
    let a = RoundRobinAssignor
        .assign(&topics(&[("t0", 3), ("t1", 3)]), &subs(&[("C0", &["t0", "t1"]), ("C1", &["t0", "t1"])]));
    assert_eq!(a["C0"], parts(&[("t0", 0), ("t0", 2), ("t1", 1)]));
    assert_eq!(a["C1"], parts(&[("t0", 1), ("t1", 0), ("t1", 2)]));

    // Different subscriptions (the RoundRobinAssignor javadoc's second example).
    let a = RoundRobinAssignor.assign(
        &topics(&[("t0", 1), ("t1", 2), ("t2", 3)]),
        &subs(&[("C0", &["t0"]), ("C1", &["t0", "t1"]), ("C2", &["t0", "t1", "t2"])]),
    );
    assert_eq!(a["C0"], parts(&[("t0", 0)]));
    assert_eq!(a["C1"], parts(&[("t1", 0)]));
    assert_eq!(a["C2"], parts(&[("t1", 1), ("t2", 0), ("t2", 1), ("t2", 2)]));
}

#[test]
fn unknown_topics_and_members_without_partitions() {
    for a in [&RangeAssignor as &dyn PartitionAssignor, &RoundRobinAssignor, &CooperativeStickyAssignor] {
        let got = a.assign(&topics(&[("t", 2)]), &subs(&[("a", &["t", "missing"]), ("b", &["missing"])]));
        assert_eq!(got.len(), 2, "{}", a.name());
        assert_eq!(got["a"].len(), 2, "{}", a.name());
        assert!(got["b"].is_empty(), "{}", a.name());
    }
}

/// One member of a simulated group: its subscription and what it owns.
#[derive(Debug, Clone)]
struct SimMember {
    topics: Vec<String>,
    owned: Vec<TopicPartition>,
}

/// One rebalance: members report what they own (generation `generation`), the leader assigns,
/// and each member then owns exactly its assignment. Checks the cooperative rule on the way.
fn cooperative_round(
    ppt: &BTreeMap<String, i32>,
    members: &mut BTreeMap<String, SimMember>,
    generation: i32,
) -> Result<(Assignment, usize), TestCaseError> {
    let subscriptions: BTreeMap<String, Subscription> = members
        .iter()
        .map(|(id, m)| {
            let sub = Subscription {
                topics: m.topics.clone(),
                owned_partitions: m.owned.clone(),
                generation: Some(generation),
                user_data: CooperativeStickyAssignor.subscription_user_data(generation),
                ..Default::default()
            };
            (id.clone(), sub)
        })
        .collect();
    let a = sorted(CooperativeStickyAssignor.assign(ppt, &subscriptions));
    prop_assert_eq!(a.len(), members.len());
    let mut seen = BTreeSet::new();
    let mut revoked = 0;
    for (id, parts) in &a {
        for p in parts {
            prop_assert!(seen.insert(p.clone()), "{} assigned twice", p);
            prop_assert!(members[id].topics.contains(&p.topic), "{} is not subscribed to {}", id, p);
            for (other, m) in members.iter() {
                prop_assert!(
                    other == id || !m.owned.contains(p),
                    "{} assigned to {} while {} still owns it",
                    p,
                    id,
                    other
                );
            }
        }
    }
    for (id, m) in members.iter_mut() {
        revoked += m.owned.iter().filter(|p| !a[id].contains(p)).count();
        m.owned = a[id].clone();
    }
    Ok((a, revoked))
}

fn subscribed_partitions(
    ppt: &BTreeMap<String, i32>,
    members: &BTreeMap<String, SimMember>,
) -> BTreeSet<TopicPartition> {
    let topics: BTreeSet<&String> = members.values().flat_map(|m| m.topics.iter()).collect();
    ppt.iter()
        .filter(|(t, _)| topics.contains(t))
        .flat_map(|(t, &n)| (0..n).map(move |p| TopicPartition::new(t, p)))
        .collect()
}

/// Kafka's notion of balance: no member could take a partition (of a topic it subscribes to)
/// from a member that has at least two more.
fn kafka_balanced(a: &Assignment, members: &BTreeMap<String, SimMember>) -> bool {
    for (m, mine) in a {
        for theirs in a.values() {
            if mine.len() + 1 < theirs.len() && theirs.iter().any(|p| members[m].topics.contains(&p.topic)) {
                return false;
            }
        }
    }
    true
}

/// Runs rebalances until nothing is revoked; returns the stable assignment.
fn converge(
    ppt: &BTreeMap<String, i32>,
    members: &mut BTreeMap<String, SimMember>,
    generation: &mut i32,
) -> Result<Assignment, TestCaseError> {
    for _ in 0..4 {
        *generation += 1;
        let (a, revoked) = cooperative_round(ppt, members, *generation)?;
        if revoked == 0 {
            // Nothing had to be revoked, so nothing was held back: everything is assigned.
            let assigned: BTreeSet<TopicPartition> = a.values().flatten().cloned().collect();
            prop_assert_eq!(&assigned, &subscribed_partitions(ppt, members));
            return Ok(a);
        }
    }
    Err(TestCaseError::fail("no stable assignment after 4 rebalances"))
}

fn group_strategy() -> impl Strategy<Value = (BTreeMap<String, i32>, Vec<Vec<String>>, bool)> {
    let topics = prop::collection::vec(1..9i32, 1..4)
        .prop_map(|ns| ns.into_iter().enumerate().map(|(i, n)| (format!("t{i}"), n)).collect::<BTreeMap<_, _>>());
    (topics, 1..7usize, any::<bool>(), prop::collection::vec(prop::collection::vec(any::<bool>(), 3), 7)).prop_map(
        |(ppt, members, same, picks)| {
            let names: Vec<String> = ppt.keys().cloned().collect();
            let subs = (0..members)
                .map(|m| {
                    let mut ts: Vec<String> =
                        names.iter().zip(&picks[m]).filter(|(_, &pick)| pick || same).map(|(t, _)| t.clone()).collect();
                    if ts.is_empty() {
                        ts.push(names[m % names.len()].clone());
                    }
                    ts
                })
                .collect();
            (ppt, subs, same)
        },
    )
}

fn sim_members(subs: &[Vec<String>]) -> BTreeMap<String, SimMember> {
    subs.iter()
        .enumerate()
        .map(|(i, ts)| (format!("member-{i}"), SimMember { topics: ts.clone(), owned: Vec::new() }))
        .collect()
}

proptest! {
    #[test]
    fn eager_assignors_assign_every_partition_once((ppt, subs, same) in group_strategy()) {
        let members = sim_members(&subs);
        let subscriptions: BTreeMap<String, Subscription> = members
            .iter()
            .map(|(id, m)| (id.clone(), Subscription { topics: m.topics.clone(), ..Default::default() }))
            .collect();
        for assignor in [&RangeAssignor as &dyn PartitionAssignor, &RoundRobinAssignor] {
            let a = assignor.assign(&ppt, &subscriptions);
            let mut seen = BTreeSet::new();
            for (id, parts) in &a {
                for p in parts {
                    prop_assert!(seen.insert(p.clone()), "{}: {} assigned twice", assignor.name(), p);
                    prop_assert!(members[id].topics.contains(&p.topic));
                }
            }
            prop_assert_eq!(&seen, &subscribed_partitions(&ppt, &members), "{}", assignor.name());
            // Range balances each topic among its subscribers.
            if assignor.name() == "range" {
                for t in ppt.keys() {
                    let counts: Vec<usize> = a
                        .iter()
                        .filter(|(id, _)| members[*id].topics.contains(t))
                        .map(|(_, ps)| ps.iter().filter(|p| &p.topic == t).count())
                        .collect();
                    if let (Some(max), Some(min)) = (counts.iter().max(), counts.iter().min()) {
                        prop_assert!(max - min <= 1, "range unbalanced on {}: {:?}", t, counts);
                    }
                }
            }
            // With identical subscriptions round robin balances the whole assignment.
            if same && assignor.name() == "roundrobin" {
                let sizes: Vec<usize> = a.values().map(Vec::len).collect();
                prop_assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "{:?}", sizes);
            }
        }
    }

    #[test]
    fn cooperative_sticky_is_balanced_sticky_and_two_phase(
        (ppt, subs, same) in group_strategy(),
        joiners in 0..3usize,
        leavers in 0..3usize,
    ) {
        let mut members = sim_members(&subs);
        let mut generation = 0;
        let stable = converge(&ppt, &mut members, &mut generation)?;
        if same {
            let sizes: Vec<usize> = stable.values().map(Vec::len).collect();
            prop_assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "{:?}", sizes);
        } else {
            prop_assert!(kafka_balanced(&stable, &members), "unbalanced: {:?}", stable);
        }

        // Sticky: the same group rebalancing again moves nothing.
        generation += 1;
        let (again, revoked) = cooperative_round(&ppt, &mut members, generation)?;
        prop_assert_eq!(revoked, 0);
        prop_assert_eq!(&again, &stable);

        // Members leave (their partitions are simply unowned) and others join with nothing.
        let before = members.clone();
        let gone: Vec<String> = members.keys().take(leavers.min(members.len() - 1)).cloned().collect();
        for id in &gone {
            members.remove(id);
        }
        let first_topics = members.values().next().unwrap().topics.clone();
        for j in 0..joiners {
            let topics = if same { first_topics.clone() } else { subs[j % subs.len()].clone() };
            members.insert(format!("new-{j}"), SimMember { topics, owned: Vec::new() });
        }
        generation += 1;
        let (first, _) = cooperative_round(&ppt, &mut members, generation)?;
        if same && gone.is_empty() {
            // Only joiners: the existing members give up partitions in the first round, gaining none.
            for (id, parts) in &first {
                if let Some(b) = before.get(id) {
                    prop_assert!(parts.iter().all(|p| b.owned.contains(p)), "{} gained {:?} while others revoke", id, parts);
                }
            }
        }
        let settled = converge(&ppt, &mut members, &mut generation)?;
        if same {
            let sizes: Vec<usize> = settled.values().map(Vec::len).collect();
            prop_assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "{:?}", sizes);
        } else {
            prop_assert!(kafka_balanced(&settled, &members), "unbalanced: {:?}", settled);
        }
    }
}

#[test]
fn cooperative_sticky_revokes_before_moving() {
    let ppt = topics(&[("t", 6)]);
    let mut members = sim_members(&[vec!["t".into()], vec!["t".into()]]);
    let mut generation = 0;
    let a = converge(&ppt, &mut members, &mut generation).unwrap();
    assert_eq!(a["member-0"].len(), 3);
    // A third member joins: the first rebalance takes one partition from each, giving it nothing.
    members.insert("member-2".into(), SimMember { topics: vec!["t".into()], owned: Vec::new() });
    let (first, revoked) = cooperative_round(&ppt, &mut members, generation + 1).unwrap();
    assert_eq!(revoked, 2);
    assert!(first["member-2"].is_empty());
    assert_eq!(first["member-0"].len() + first["member-1"].len(), 4);
    // The follow-up rebalance hands the two revoked partitions to it.
    let (second, revoked) = cooperative_round(&ppt, &mut members, generation + 2).unwrap();
    assert_eq!(revoked, 0);
    assert_eq!(second.values().map(Vec::len).collect::<Vec<_>>(), vec![2, 2, 2]);
}

#[test]
fn conflicting_claims_in_one_generation_are_dropped() {
    let ppt = topics(&[("t", 2)]);
    let mut s = subs(&[("a", &["t"]), ("b", &["t"])]);
    for id in ["a", "b"] {
        let sub = s.get_mut(id).unwrap();
        sub.owned_partitions = vec![tp("t", 0)];
        sub.generation = Some(3);
    }
    let a = sorted(CooperativeStickyAssignor.assign(&ppt, &s));
    // t-0 is claimed by both: neither keeps it and it is held back for one round.
    assert!(!a.values().flatten().any(|p| *p == tp("t", 0)));
    assert_eq!(a.values().flatten().count(), 1);

    // An older generation's claim loses to a newer one.
    s.get_mut("a").unwrap().generation = Some(2);
    let a = sorted(CooperativeStickyAssignor.assign(&ppt, &s));
    assert!(a["b"].contains(&tp("t", 0)));
}
