//! A micro benchmark of the sans-io controller, without Raft: 1,000,000 partitions, then the
//! failover of a broker that leads 10,000 of them. Run with
//! `cargo test --release -p tern-controller --test bench -- --ignored --nocapture`.
//! Prints timings; asserts only correctness.

use std::time::Instant;

use tern_controller::*;
use tern_metadata::*;

#[test]
#[ignore]
fn failover_of_a_broker_leading_10k_of_1m_partitions() {
    const BROKERS: i32 = 100;
    const TOPICS: i32 = 1000;
    const PARTITIONS: i32 = 1000;
    let mut c = Controller::new(ControllerConfig { seed: 7, ..Default::default() }, MetadataImage::new(), 0);
    for id in 1..=BROKERS {
        let r = c.register_broker(
            BrokerRegistrationRequest {
                broker_id: id,
                incarnation_id: Uuid::from_u128(id as u128),
                listeners: vec![],
                rack: Some(format!("rack-{}", id % 5)),
            },
            0,
        );
        assert_eq!(r.response.error_code, 0);
    }
    let heartbeat = |c: &mut Controller, id: BrokerId, now_ms: i64| {
        let epoch = c.image().broker(id).unwrap().epoch;
        let offset = c.image().offset();
        c.heartbeat(
            BrokerHeartbeatRequest {
                broker_id: id,
                broker_epoch: epoch,
                current_metadata_offset: offset,
                want_fence: false,
                want_shutdown: false,
            },
            now_ms,
        )
    };
    for id in 1..=BROKERS {
        assert!(!heartbeat(&mut c, id, 0).response.is_fenced);
    }

    let start = Instant::now();
    let mut records = 0;
    for t in 0..TOPICS {
        let r = c.create_topics(vec![CreatableTopic::new(&format!("topic-{t}"), PARTITIONS, 3)], false);
        assert_eq!(r.response[0].error_code, 0);
        records += r.records.len();
    }
    let create = start.elapsed();
    assert_eq!(c.image().partition_count(), 1_000_000);

    let victim = 1;
    let led = c.image().partitions_led_by(victim).len();
    let followed = c.image().partitions_followed_by(victim).len();
    for id in 2..=BROKERS {
        heartbeat(&mut c, id, 5000);
    }
    let start = Instant::now();
    let failover = c.tick(9001);
    let failover_time = start.elapsed();
    assert_eq!(c.image().partitions_led_by(victim).len(), 0);
    assert!(c.image().broker(victim).unwrap().fenced);
    assert_eq!(c.image().leaderless_partitions().count(), 0);

    // The same records applied to a follower's image, as the Raft state machine does.
    let mut follower = c.image().clone();
    let start = Instant::now();
    let snapshot = follower.encode_snapshot();
    let encode = start.elapsed();
    let start = Instant::now();
    follower = MetadataImage::decode_snapshot(&snapshot).unwrap();
    let decode = start.elapsed();
    assert_eq!(&follower, c.image());

    println!("created 1,000,000 partitions ({records} records) in {create:?}");
    println!(
        "failover of broker {victim} (leader of {led}, follower of {followed}): {} records in {failover_time:?}",
        failover.len()
    );
    println!("snapshot of the image: {} MiB, encoded in {encode:?}, decoded in {decode:?}", snapshot.len() >> 20);
}
