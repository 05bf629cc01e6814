//! Async Kafka client: producer, consumer and admin, on top of the `kafka-protocol` codecs.
//!
//! Layers: [`connection`] frames and pipelines requests to one broker; [`cluster`] keeps metadata
//! and a connection per broker; [`producer`], [`consumer`], [`group`] (consumer groups) and
//! [`admin`] build on the cluster.

pub mod admin;
pub mod cluster;
pub mod connection;
pub mod consumer;
pub mod error;
pub mod group;
pub mod partitioner;
pub mod producer;
mod records;

pub use admin::{
    Admin, ClusterDescription, ConfigEntry, ConfigOp, GroupDescription, GroupLag, GroupListing, LagMember,
    MemberDescription, PartitionLag,
};
pub use cluster::{BrokerInfo, Cluster, ClusterConfig, PartitionInfo, TopicInfo};
pub use consumer::{Consumer, ConsumerConfig, ConsumerRecord, OffsetSpec};
pub use error::{Error, Result};
pub use group::{
    GroupConsumer, GroupConsumerConfig, PartitionAssignor, RebalanceEvent, RebalanceListener, TopicPartition,
};
pub use kafka_protocol::error::ResponseError;
pub use kafka_protocol::records::Compression;
pub use partitioner::{murmur2, to_positive, DefaultPartitioner, Partitioner, RoundRobinPartitioner};
pub use producer::{DeliveryFuture, Producer, ProducerConfig, ProducerRecord, RecordMetadata};
