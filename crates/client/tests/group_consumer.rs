//! GroupConsumer and the group admin calls against the fake broker's group coordinator.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::consumers::{produce, Running, Watch, DEADLINE};
use common::FakeBroker;
use tern_client::group::{CooperativeStickyAssignor, RangeAssignor};
use tern_client::{Admin, GroupConsumer, GroupConsumerConfig, OffsetSpec, RebalanceEvent, TopicPartition};
use tokio::sync::mpsc;

fn config(addr: &str, group: &str) -> GroupConsumerConfig {
    let mut c = GroupConsumerConfig::new(addr, group);
    c.consumer.fetch_max_wait = Duration::from_millis(50);
    c.consumer.auto_offset_reset = OffsetSpec::Earliest;
    c.heartbeat_interval = Duration::from_millis(100);
    c.session_timeout = Duration::from_secs(3);
    c.max_poll_interval = Duration::from_secs(5);
    c.auto_commit_interval = Duration::from_millis(200);
    c.retry_backoff = Duration::from_millis(20);
    c
}

fn all(topic: &str, n: i32) -> BTreeSet<TopicPartition> {
    (0..n).map(|p| TopicPartition::new(topic, p)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_split_partitions_and_take_over_from_committed_offsets() {
    let fake = FakeBroker::start(&[("events", 6)]).await;
    let addr = fake.addr();
    produce(&addr, "events", 6, 50).await;

    let (tx, rx) = mpsc::unbounded_channel();
    // Under the eager protocol a member can give up and get back partitions within one poll,
    // so reports cannot show exclusive ownership; the cooperative test checks it.
    let mut watch = Watch::new(rx, false);
    let mut c1 = GroupConsumer::new(config(&addr, "g1")).await.unwrap();
    c1.subscribe(["events"]);
    let mut events1 = c1.rebalance_events();
    let r1 = Running::start(c1, "c1", tx.clone());
    watch.until("c1 owns everything", |w| w.sizes() == vec![6]).await;

    let mut c2 = GroupConsumer::new(config(&addr, "g1")).await.unwrap();
    c2.subscribe(["events"]);
    let r2 = Running::start(c2, "c2", tx.clone());
    watch.until("both own three", |w| w.sizes() == vec![3, 3]).await;
    let union: BTreeSet<&TopicPartition> = watch.assignments.values().flatten().collect();
    assert_eq!(union.len(), 6);
    watch.until("all 300 records", |w| w.records.len() >= 300).await;
    let distinct: BTreeSet<(i32, i64)> = watch.records.iter().copied().collect();
    assert_eq!(distinct.len(), watch.records.len(), "a record was read twice");
    assert_eq!(distinct.len(), 300);

    // The eager protocol revokes everything before each rebalance.
    let mut c1 = r1.stop().await;
    let mut saw = Vec::new();
    while let Ok(e) = events1.try_recv() {
        saw.push(e);
    }
    assert!(matches!(saw.first(), Some(RebalanceEvent::Assigned(p)) if p.len() == 6), "{saw:?}");
    assert!(saw.contains(&RebalanceEvent::Revoked(all("events", 6).into_iter().collect())), "{saw:?}");
    assert_eq!(c1.protocol(), Some("range"));
    assert!(!c1.is_cooperative());
    c1.close().await.unwrap();
    watch.forget("c1");

    // c2 takes over all partitions and continues where c1 committed.
    watch.until("c2 owns everything", |w| w.sizes() == vec![6]).await;
    produce(&addr, "events", 6, 10).await;
    watch.until("the 60 new records", |w| w.records.len() >= 360).await;
    let distinct: BTreeSet<(i32, i64)> = watch.records.iter().copied().collect();
    assert_eq!(distinct.len(), 360, "records read twice or missed after the takeover");
    let mut c2 = r2.stop().await;
    c2.commit_sync().await.unwrap();
    let committed = c2.committed(&all("events", 6).into_iter().collect::<Vec<_>>()).await.unwrap();
    assert_eq!(committed.values().copied().collect::<Vec<_>>(), vec![60; 6]);

    let admin = Admin::new(&addr).await.unwrap();
    let lag = admin.group_lag("g1").await.unwrap();
    assert_eq!(lag.state, "Stable");
    assert_eq!(lag.members, 1);
    assert_eq!(lag.partitions.len(), 6);
    assert_eq!(lag.total_lag(), 0);
    assert!(lag.partitions.iter().all(|p| p.member.as_ref().is_some_and(|m| m.member_id == c2.member_id())));
    c2.close().await.unwrap();
    assert_eq!(fake.groups.describe("g1").map(|d| (d.0, d.1)), Some(("Empty", 0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cooperative_members_never_own_a_partition_twice() {
    let fake = FakeBroker::start(&[("coop", 6)]).await;
    let addr = fake.addr();
    produce(&addr, "coop", 6, 20).await;
    let cooperative = |tag| {
        let mut c = config(&addr, "g-coop");
        c.assignors = vec![Arc::new(CooperativeStickyAssignor)];
        c.consumer.client_id = tag;
        c
    };

    let (tx, rx) = mpsc::unbounded_channel();
    let mut watch = Watch::new(rx, true);
    let mut c1 = GroupConsumer::new(cooperative("c1".into())).await.unwrap();
    assert!(c1.is_cooperative());
    c1.subscribe(["coop"]);
    let mut events1 = c1.rebalance_events();
    let r1 = Running::start(c1, "c1", tx.clone());
    watch.until("c1 owns everything", |w| w.sizes() == vec![6]).await;
    let before: BTreeSet<TopicPartition> = watch.assignments["c1"].iter().cloned().collect();

    let mut c2 = GroupConsumer::new(cooperative("c2".into())).await.unwrap();
    c2.subscribe(["coop"]);
    let r2 = Running::start(c2, "c2", tx.clone());
    watch.until("three each", |w| w.sizes() == vec![3, 3]).await;
    // Sticky: c1 kept half of what it had, and was never left with nothing.
    assert!(watch.assignments["c1"].iter().all(|tp| before.contains(tp)));

    let mut c3 = GroupConsumer::new(cooperative("c3".into())).await.unwrap();
    c3.subscribe(["coop"]);
    let r3 = Running::start(c3, "c3", tx.clone());
    watch.until("two each", |w| w.sizes() == vec![2, 2, 2]).await;
    watch.until("all records", |w| w.records.len() >= 120).await;

    let c1 = r1.stop().await;
    let mut saw = Vec::new();
    while let Ok(e) = events1.try_recv() {
        saw.push(e);
    }
    // Only the partitions that moved were revoked, never everything at once.
    let revoked: usize = saw.iter().map(|e| if let RebalanceEvent::Revoked(p) = e { p.len() } else { 0 }).sum();
    assert_eq!(revoked, 4, "{saw:?}");
    assert!(!saw.iter().any(|e| matches!(e, RebalanceEvent::Lost(_))), "{saw:?}");
    for mut c in [c1, r2.stop().await, r3.stop().await] {
        c.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn static_members_skip_member_id_required_and_do_not_leave() {
    let fake = FakeBroker::start(&[("s", 2)]).await;
    let addr = fake.addr();
    let mut c = config(&addr, "g-static");
    c.group_instance_id = Some("instance-1".into());
    let mut consumer = GroupConsumer::new(c).await.unwrap();
    consumer.subscribe(["s"]);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while consumer.assignment().len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "static member never got its partitions");
        consumer.poll().await.unwrap();
    }
    assert_eq!(fake.groups.joins.load(Ordering::SeqCst), 1, "no MEMBER_ID_REQUIRED round trip for static members");
    consumer.close().await.unwrap();
    assert_eq!(fake.groups.describe("g-static").map(|d| d.1), Some(1), "a static member does not send LeaveGroup");

    // A dynamic member first gets a member id, then joins with it.
    let mut dynamic = GroupConsumer::new(config(&addr, "g-dynamic")).await.unwrap();
    dynamic.subscribe(["s"]);
    while dynamic.assignment().is_empty() {
        dynamic.poll().await.unwrap();
    }
    assert_eq!(fake.groups.joins.load(Ordering::SeqCst), 3);
    assert!(!dynamic.member_id().is_empty());
    dynamic.close().await.unwrap();
    assert_eq!(fake.groups.describe("g-dynamic").map(|d| d.1), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn manual_commits_and_poll_timeout() {
    let fake = FakeBroker::start(&[("m", 1)]).await;
    let addr = fake.addr();
    produce(&addr, "m", 1, 30).await;
    let mut c = config(&addr, "g-manual");
    c.enable_auto_commit = false;
    c.assignors = vec![Arc::new(RangeAssignor)];
    c.max_poll_interval = Duration::from_millis(600);
    let mut consumer = GroupConsumer::new(c.clone()).await.unwrap();
    consumer.subscribe(["m"]);
    let mut events = consumer.rebalance_events();
    let mut got = Vec::new();
    while got.len() < 30 {
        got.extend(consumer.poll().await.unwrap());
    }
    let tp = TopicPartition::new("m", 0);
    assert_eq!(consumer.position(&tp), Some(30));
    consumer.commit_offsets_sync(&[(tp.clone(), 12)]).await.unwrap();
    assert_eq!(consumer.committed(std::slice::from_ref(&tp)).await.unwrap().get(&tp), Some(&12));

    // No poll for longer than max.poll.interval: the heartbeat leaves the group, and the next
    // poll gives the partitions up as lost and joins again as a new member.
    let member = consumer.member_id().to_owned();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(fake.groups.describe("g-manual").map(|d| d.1), Some(0), "the member left on poll timeout");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut again = Vec::new();
    while again.len() < 18 {
        assert!(tokio::time::Instant::now() < deadline);
        again.extend(consumer.poll().await.unwrap());
    }
    assert_ne!(consumer.member_id(), member);
    // Without auto-commit it restarts from the explicit commit.
    assert_eq!(again[0].offset, 12);
    let mut saw = Vec::new();
    while let Ok(e) = events.try_recv() {
        saw.push(e);
    }
    assert!(saw.contains(&RebalanceEvent::Lost(vec![tp.clone()])), "{saw:?}");
    consumer.commit_sync().await.unwrap();
    consumer.close().await.unwrap();
    assert_eq!(consumer.poll().await.unwrap_err().to_string(), "client is closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_group_calls() {
    let fake = FakeBroker::start(&[("a", 3)]).await;
    let addr = fake.addr();
    produce(&addr, "a", 3, 10).await;
    let admin = Admin::new(&addr).await.unwrap();
    assert!(admin.list_groups(&[]).await.unwrap().is_empty());

    let mut consumer = GroupConsumer::new(config(&addr, "g-admin")).await.unwrap();
    consumer.subscribe(["a"]);
    let mut n = 0;
    while n < 30 {
        n += consumer.poll().await.unwrap().len();
    }
    consumer.commit_sync().await.unwrap();

    let groups = admin.list_groups(&[]).await.unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].state.as_deref(), Some("Stable"));
    assert!(admin.list_groups(&["Empty"]).await.unwrap().is_empty());
    let d = &admin.describe_groups(&["g-admin"]).await.unwrap()[0];
    assert_eq!((d.state.as_str(), d.protocol.as_str(), d.members.len()), ("Stable", "range", 1));
    assert_eq!(d.members[0].assignment, all("a", 3).into_iter().collect::<Vec<_>>());
    assert_eq!(d.members[0].subscription, vec!["a".to_string()]);
    assert_eq!(d.members[0].client_id, "tern-consumer");

    // Offsets of an active group cannot be altered, nor the group deleted.
    let tp0 = TopicPartition::new("a", 0);
    let err = admin.alter_group_offsets("g-admin", &[(tp0.clone(), 0)]).await.unwrap_err();
    assert!(err.to_string().contains("UNKNOWN_MEMBER_ID"), "{err}");
    let deleted = admin.delete_groups(&["g-admin"]).await.unwrap();
    assert!(deleted[0].1.as_ref().unwrap_err().to_string().contains("NON_EMPTY_GROUP"));

    consumer.close().await.unwrap();
    admin.alter_group_offsets("g-admin", &[(tp0.clone(), 4)]).await.unwrap();
    let offsets = admin.list_group_offsets("g-admin").await.unwrap();
    assert_eq!(offsets.get(&tp0), Some(&4));
    let lag = admin.group_lag("g-admin").await.unwrap();
    assert_eq!((lag.state.as_str(), lag.members, lag.total_lag()), ("Empty", 0, 6));
    assert!(lag.partitions.iter().all(|p| p.member.is_none() && p.log_end_offset == Some(10)));

    let deleted = admin.delete_groups(&["g-admin", "nope"]).await.unwrap();
    assert!(deleted[0].1.is_ok());
    assert!(deleted[1].1.as_ref().unwrap_err().to_string().contains("GROUP_ID_NOT_FOUND"));
    assert_eq!(admin.describe_groups(&["g-admin"]).await.unwrap()[0].state, "Dead");
}
