//! Registration, heartbeats, fencing on a missed session, and controlled shutdown (KIP-841).

mod common;

use common::{alter_partition_data, alter_partition_request, Harness};
use tern_controller::errors::*;
use tern_controller::*;
use tern_metadata::*;

#[test]
fn the_broker_epoch_is_the_offset_of_the_registration_record() {
    let mut h = Harness::new();
    assert_eq!(h.register(1, None), 0);
    assert_eq!(h.register(2, None), 1);
    // Unfencing broker 1 takes offset 2, so broker 3's registration is at 3.
    assert!(!h.heartbeat(1).is_fenced);
    assert_eq!(h.register(3, Some("r")), 3);
    let b = h.image().broker(3).unwrap();
    assert_eq!((b.epoch, b.fenced, b.rack.as_deref(), b.endpoints[0].port), (3, true, Some("r"), 9003));
}

#[test]
fn a_second_incarnation_is_refused_while_the_first_has_a_session() {
    let mut h = Harness::new();
    h.brokers([1], &[]);
    let request = |incarnation| BrokerRegistrationRequest {
        broker_id: 1,
        incarnation_id: Uuid::from_u128(incarnation),
        listeners: vec![],
        rack: None,
    };
    h.now_ms = 9000;
    let refused = h.controller.register_broker(request(5), h.now_ms);
    assert_eq!(refused.response.error_code, DUPLICATE_BROKER_REGISTRATION);
    assert!(refused.records.is_empty());

    // The same incarnation amends its registration, keeping epoch and fencing.
    let amended = h.controller.register_broker(request(1001), h.now_ms);
    assert_eq!(amended.response, BrokerRegistrationReply { error_code: NONE, broker_epoch: 0 });
    h.commit(&amended.records);
    assert!(!h.image().broker(1).unwrap().fenced);

    // Once the session expired, a new incarnation registers with a new epoch, fenced.
    h.now_ms = 18_001;
    let records = h.tick();
    assert_eq!(records.len(), 1);
    let new = h.controller.register_broker(request(5), h.now_ms);
    assert_eq!(new.response.error_code, NONE);
    assert_eq!(new.response.broker_epoch, h.committed.offset() + 1);
    h.commit(&new.records);
    assert!(h.image().broker(1).unwrap().fenced);
}

#[test]
fn a_broker_is_unfenced_only_once_it_has_caught_up_with_its_registration() {
    let mut h = Harness::new();
    h.register(1, None);
    h.register(2, None);
    let behind = h.controller.heartbeat(
        BrokerHeartbeatRequest {
            broker_id: 2,
            broker_epoch: 1,
            current_metadata_offset: 0,
            want_fence: false,
            want_shutdown: false,
        },
        0,
    );
    assert!(behind.records.is_empty());
    assert_eq!((behind.response.is_caught_up, behind.response.is_fenced), (false, true));

    let reply = h.heartbeat(2);
    assert_eq!((reply.is_caught_up, reply.is_fenced), (true, false));
    assert!(!h.image().broker(2).unwrap().fenced);
    // A broker that asks to stay fenced stays fenced.
    assert!(h.heartbeat_with(1, true, false).is_fenced);
}

#[test]
fn heartbeats_with_a_stale_epoch_are_refused() {
    let mut h = Harness::new();
    h.brokers([1], &[]);
    let result = h.controller.heartbeat(
        BrokerHeartbeatRequest {
            broker_id: 1,
            broker_epoch: 7,
            current_metadata_offset: 0,
            want_fence: false,
            want_shutdown: false,
        },
        0,
    );
    assert_eq!(result.response.error_code, STALE_BROKER_EPOCH);
    let unknown = h.controller.heartbeat(
        BrokerHeartbeatRequest {
            broker_id: 9,
            broker_epoch: 0,
            current_metadata_offset: 0,
            want_fence: false,
            want_shutdown: false,
        },
        0,
    );
    assert_eq!(unknown.response.error_code, STALE_BROKER_EPOCH);
}

#[test]
fn a_broker_that_misses_the_session_timeout_is_fenced() {
    let mut h = Harness::new();
    h.brokers([1, 2, 3], &[]);
    assert_eq!(h.controller.next_deadline(), Some(9001));
    h.now_ms = 5000;
    h.heartbeat(1);
    h.heartbeat(2);
    h.now_ms = 9000;
    assert!(h.tick().is_empty(), "a session lasts broker.session.timeout.ms inclusive");
    h.now_ms = 9001;
    let records = h.tick();
    assert_eq!(
        records,
        vec![MetadataRecord::BrokerRegistrationChange(BrokerRegistrationChange {
            broker_id: 3,
            broker_epoch: 2,
            fenced: Some(true),
            in_controlled_shutdown: false
        })]
    );
    assert_eq!(h.image().fenced_brokers().map(|b| b.id).collect::<Vec<_>>(), vec![3]);
    assert_eq!(h.controller.next_deadline(), Some(14_001));
    // Its next heartbeat unfences it again.
    assert!(!h.heartbeat(3).is_fenced);
}

#[test]
fn fencing_the_leader_elects_the_first_live_isr_member_and_shrinks_the_isr() {
    let mut h = Harness::new();
    h.brokers([1, 2, 3], &[]);
    let t = h.create_manual("t", vec![vec![1, 2, 3], vec![2, 1, 3], vec![3, 2, 1]]);
    h.now_ms = 5000;
    h.heartbeat(2);
    h.heartbeat(3);
    h.now_ms = 9001;
    h.tick();
    let p0 = h.partition(t, 0);
    assert_eq!((p0.leader, p0.isr.clone(), p0.leader_epoch, p0.partition_epoch), (2, vec![2, 3], 1, 1));
    let p1 = h.partition(t, 1);
    assert_eq!((p1.leader, p1.isr.clone(), p1.leader_epoch, p1.partition_epoch), (2, vec![2, 3], 0, 1));
    let p2 = h.partition(t, 2);
    assert_eq!((p2.leader, p2.isr.clone(), p2.leader_epoch), (3, vec![3, 2], 0));
}

#[test]
fn without_a_live_isr_member_the_partition_goes_leaderless_and_keeps_its_last_isr_member() {
    let mut h = Harness::new();
    h.brokers([1, 2], &[]);
    let t = h.create_manual("t", vec![vec![1, 2]]);
    // Broker 2 falls out of the ISR first, then broker 1 is fenced.
    let r = h.alter_partition(alter_partition_request(3, 1, 0, t, alter_partition_data(0, 0, &[(1, 0)])));
    assert_eq!(r.topics[0].partitions[0].error_code, NONE);
    h.heartbeat_with(1, true, false);
    let p = h.partition(t, 0);
    assert_eq!((p.leader, p.isr.clone(), p.leader_epoch), (NO_LEADER, vec![1], 1));
    assert_eq!(h.image().leaderless_partitions().count(), 1);

    // When broker 1 comes back, it leads again: it is the ISR.
    assert!(!h.heartbeat(1).is_fenced);
    let p = h.partition(t, 0);
    assert_eq!((p.leader, p.isr.clone(), p.leader_epoch), (1, vec![1], 2));
}

#[test]
fn unclean_leader_election_picks_a_live_replica_outside_the_isr() {
    let mut h = Harness::new();
    h.brokers([1, 2], &[]);
    let t = h.create_topic(CreatableTopic {
        assignments: vec![vec![1, 2]],
        configs: vec![(UNCLEAN_LEADER_ELECTION_ENABLE.into(), Some("true".into()))],
        ..CreatableTopic::new("t", -1, -1)
    });
    let t = t.topic_id;
    h.alter_partition(alter_partition_request(3, 1, 0, t, alter_partition_data(0, 0, &[(1, -1)])));
    h.heartbeat_with(1, true, false);
    let p = h.partition(t, 0);
    assert_eq!((p.leader, p.isr.clone()), (2, vec![2]));
}

#[test]
fn controlled_shutdown_moves_leadership_away_then_lets_the_broker_go() {
    let mut h = Harness::new();
    h.brokers([1, 2, 3], &[]);
    let t = h.create_manual("t", vec![vec![1, 2, 3], vec![2, 3, 1]]);
    let reply = h.heartbeat_with(1, false, true);
    assert_eq!(
        (reply.is_fenced, reply.in_controlled_shutdown, reply.should_shutdown),
        (false, true, false),
        "a leader is held in controlled shutdown"
    );
    let b = h.image().broker(1).unwrap();
    assert!(b.in_controlled_shutdown && !b.fenced);
    let p0 = h.partition(t, 0);
    assert_eq!((p0.leader, p0.isr.clone()), (2, vec![2, 3]));
    assert_eq!(h.partition(t, 1).isr, vec![2, 3]);
    assert!(h.image().partitions_led_by(1).is_empty());

    // Not before the active brokers have applied the shutdown's records.
    let reply = h.heartbeat_with(1, false, true);
    assert!(reply.in_controlled_shutdown && !reply.should_shutdown);
    h.heartbeat(2);
    h.heartbeat(3);
    let reply = h.heartbeat_with(1, false, true);
    assert_eq!((reply.is_fenced, reply.should_shutdown), (true, true));
    assert!(h.image().broker(1).unwrap().fenced);
    // A broker in controlled shutdown cannot join an ISR or hold new replicas.
    let created = h.create_topic(CreatableTopic::new("u", 1, 3));
    assert_eq!(created.error_code, INVALID_REPLICATION_FACTOR);
}

#[test]
fn a_broker_that_leads_nothing_shuts_down_at_once() {
    let mut h = Harness::new();
    h.brokers([1, 2], &[]);
    h.create_manual("t", vec![vec![1, 2]]);
    let reply = h.heartbeat_with(2, false, true);
    assert_eq!((reply.is_fenced, reply.should_shutdown), (true, true));
    let p = h.image().partitions_led_by(1);
    assert_eq!(h.image().partition(p[0]).unwrap().isr, vec![1]);
}

#[test]
fn unregistering_removes_the_broker_from_isrs_first() {
    let mut h = Harness::new();
    h.brokers([1, 2], &[]);
    let t = h.create_manual("t", vec![vec![2, 1]]);
    let result = h.controller.unregister_broker(2);
    assert_eq!(result.response, NONE);
    h.commit(&result.records);
    assert!(h.image().broker(2).is_none());
    let p = h.partition(t, 0);
    assert_eq!((p.leader, p.isr.clone()), (1, vec![1]));
    assert_eq!(h.controller.unregister_broker(2).response, BROKER_ID_NOT_REGISTERED);
}

#[test]
fn a_new_controller_gives_every_broker_a_fresh_session() {
    let mut h = Harness::new();
    h.brokers([1, 2], &[]);
    let image = h.image().clone();
    let mut controller = Controller::new(ControllerConfig::default(), image, 100_000);
    assert!(controller.tick(109_000).is_empty());
    assert_eq!(controller.tick(109_001).len(), 2);
}

/// AllocateProducerIds: each broker gets its own block of 1000 ids, blocks never overlap (also
/// after the image is rebuilt from a snapshot), and a stale broker epoch gets none.
#[test]
fn producer_id_blocks_never_overlap_and_need_the_current_broker_epoch() {
    let mut h = Harness::new();
    h.brokers([1, 2], &[]);
    let epoch = |h: &Harness, id| h.image().broker(id).unwrap().epoch;
    let mut blocks = Vec::new();
    for id in [1, 2, 1] {
        let result = h.controller.allocate_producer_ids(id, epoch(&h, id));
        let block = result.response.expect("a block");
        h.commit(&result.records);
        blocks.push(block);
    }
    assert_eq!(
        blocks,
        vec![(0, PRODUCER_ID_BLOCK_SIZE), (1000, PRODUCER_ID_BLOCK_SIZE), (2000, PRODUCER_ID_BLOCK_SIZE)]
    );
    assert_eq!(h.image().next_producer_id(), 3000);
    let stale = h.controller.allocate_producer_ids(2, epoch(&h, 2) + 1);
    assert_eq!((stale.response, stale.records.len()), (Err(STALE_BROKER_EPOCH), 0));
    let rebuilt = MetadataImage::decode_snapshot(&h.image().encode_snapshot()).unwrap();
    assert_eq!(rebuilt.next_producer_id(), 3000);
}

#[test]
fn a_new_controller_lets_a_restarted_broker_replace_one_it_never_heard_from() {
    let mut h = Harness::new();
    h.brokers([1, 2], &[]);
    let request = |id, incarnation| BrokerRegistrationRequest {
        broker_id: id,
        incarnation_id: Uuid::from_u128(incarnation),
        listeners: vec![],
        rack: None,
    };
    // Every node restarted at once: a new controller becomes active over the committed image
    // and gives both registered brokers a session, having heard from neither.
    let mut controller =
        Controller::new(ControllerConfig { seed: 7, ..Default::default() }, h.committed.clone(), 50_000);
    let replaced = controller.register_broker(request(1, 77), 50_100);
    assert_eq!(replaced.response.error_code, NONE, "broker 1's new incarnation is not held back");
    assert_eq!(replaced.response.broker_epoch, h.committed.offset() + 1);
    // Once it has heard from a broker, another incarnation waits out that broker's session.
    let heartbeat = BrokerHeartbeatRequest {
        broker_id: 2,
        broker_epoch: h.committed.broker(2).unwrap().epoch,
        current_metadata_offset: h.committed.offset(),
        want_fence: false,
        want_shutdown: false,
    };
    assert_eq!(controller.heartbeat(heartbeat, 50_200).response.error_code, NONE);
    let refused = controller.register_broker(request(2, 78), 50_300);
    assert_eq!(refused.response.error_code, DUPLICATE_BROKER_REGISTRATION);
}
