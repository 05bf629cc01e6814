//! Kafka error codes this crate returns or reads (numbers from Kafka's `Errors.java`).

pub const UNKNOWN_SERVER_ERROR: i16 = -1;
pub const NONE: i16 = 0;
pub const OFFSET_OUT_OF_RANGE: i16 = 1;
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
pub const REQUEST_TIMED_OUT: i16 = 7;
pub const NOT_ENOUGH_REPLICAS: i16 = 19;
pub const NOT_ENOUGH_REPLICAS_AFTER_APPEND: i16 = 20;
pub const INVALID_REQUEST: i16 = 42;
pub const OPERATION_NOT_ATTEMPTED: i16 = 55;
pub const FENCED_LEADER_EPOCH: i16 = 74;
pub const UNKNOWN_LEADER_EPOCH: i16 = 75;
pub const INVALID_UPDATE_VERSION: i16 = 95;
pub const UNKNOWN_TOPIC_ID: i16 = 100;
pub const INELIGIBLE_REPLICA: i16 = 107;
pub const NEW_LEADER_ELECTED: i16 = 108;
