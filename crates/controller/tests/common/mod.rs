#![allow(dead_code)]

use tern_controller::*;
use tern_metadata::*;

/// A controller and a follower's image that every returned record is applied to, so each test
/// also checks that the committed records rebuild the controller's working image.
pub struct Harness {
    pub controller: Controller,
    pub committed: MetadataImage,
    pub now_ms: i64,
}

impl Harness {
    pub fn new() -> Self {
        Self::with_config(ControllerConfig { seed: 42, ..Default::default() })
    }

    pub fn with_config(config: ControllerConfig) -> Self {
        Harness {
            controller: Controller::new(config, MetadataImage::new(), 0),
            committed: MetadataImage::new(),
            now_ms: 0,
        }
    }

    pub fn commit(&mut self, records: &[MetadataRecord]) {
        for r in records {
            self.committed.apply(r).unwrap();
        }
        assert_eq!(&self.committed, self.controller.image(), "committed records rebuild the working image");
    }

    pub fn image(&self) -> &MetadataImage {
        self.controller.image()
    }

    pub fn register(&mut self, id: BrokerId, rack: Option<&str>) -> i64 {
        let result = self.controller.register_broker(
            BrokerRegistrationRequest {
                broker_id: id,
                incarnation_id: Uuid::from_u128(1000 + id as u128),
                listeners: vec![Endpoint {
                    name: "PLAINTEXT".into(),
                    host: "localhost".into(),
                    port: 9000 + id as u16,
                    security_protocol: 0,
                }],
                rack: rack.map(String::from),
            },
            self.now_ms,
        );
        assert_eq!(result.response.error_code, 0);
        self.commit(&result.records);
        result.response.broker_epoch
    }

    pub fn heartbeat_with(&mut self, id: BrokerId, want_fence: bool, want_shutdown: bool) -> BrokerHeartbeatReply {
        let epoch = self.image().broker(id).unwrap().epoch;
        let result = self.controller.heartbeat(
            BrokerHeartbeatRequest {
                broker_id: id,
                broker_epoch: epoch,
                current_metadata_offset: self.image().offset(),
                want_fence,
                want_shutdown,
            },
            self.now_ms,
        );
        self.commit(&result.records);
        result.response
    }

    pub fn heartbeat(&mut self, id: BrokerId) -> BrokerHeartbeatReply {
        self.heartbeat_with(id, false, false)
    }

    /// Registers and unfences brokers `ids`, with racks from `racks` (cycled) if given.
    pub fn brokers(&mut self, ids: impl IntoIterator<Item = BrokerId>, racks: &[&str]) {
        let ids: Vec<_> = ids.into_iter().collect();
        for (i, id) in ids.iter().enumerate() {
            let rack = if racks.is_empty() { None } else { Some(racks[i % racks.len()]) };
            self.register(*id, rack);
        }
        for id in ids {
            assert!(!self.heartbeat(id).is_fenced);
        }
    }

    pub fn create_topic(&mut self, topic: CreatableTopic) -> CreatableTopicResult {
        let result = self.controller.create_topics(vec![topic], false);
        self.commit(&result.records);
        result.response.into_iter().next().unwrap()
    }

    pub fn create(&mut self, name: &str, partitions: i32, rf: i16) -> Uuid {
        let result = self.create_topic(CreatableTopic::new(name, partitions, rf));
        assert_eq!(result.error_code, 0, "{:?}", result.error_message);
        result.topic_id
    }

    pub fn create_manual(&mut self, name: &str, assignments: Vec<Vec<BrokerId>>) -> Uuid {
        let result = self.create_topic(CreatableTopic { assignments, ..CreatableTopic::new(name, -1, -1) });
        assert_eq!(result.error_code, 0, "{:?}", result.error_message);
        result.topic_id
    }

    pub fn partition(&self, topic_id: Uuid, p: i32) -> PartitionRegistration {
        self.image().partition(TopicIdPartition::new(topic_id, p)).unwrap().clone()
    }

    pub fn tick(&mut self) -> Vec<MetadataRecord> {
        let records = self.controller.tick(self.now_ms);
        self.commit(&records);
        records
    }

    pub fn alter_partition(&mut self, request: AlterPartitionRequest) -> AlterPartitionResponse {
        let result = self.controller.alter_partition(request);
        self.commit(&result.records);
        result.response
    }
}

/// An AlterPartition from `broker` (with its broker epoch) for one partition of topic "t".
pub fn alter_partition_request(
    version: i16,
    broker: BrokerId,
    epoch: i64,
    t: Uuid,
    data: AlterPartitionData,
) -> AlterPartitionRequest {
    AlterPartitionRequest {
        version,
        broker_id: broker,
        broker_epoch: epoch,
        topics: vec![AlterPartitionTopic { topic_id: t, topic_name: "t".into(), partitions: vec![data] }],
    }
}

/// Partition 0's proposed ISR, as (broker, broker epoch) pairs, at these epochs.
pub fn alter_partition_data(leader_epoch: i32, partition_epoch: i32, isr: &[(BrokerId, i64)]) -> AlterPartitionData {
    AlterPartitionData {
        partition: 0,
        leader_epoch,
        partition_epoch,
        new_isr: isr.iter().map(|(b, e)| IsrMember { broker_id: *b, broker_epoch: *e }).collect(),
    }
}
