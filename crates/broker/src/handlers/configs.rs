//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics (and describing the broker).

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest, AlterConfigsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::blocking;
use super::metadata::str_bytes;
use crate::config::{topic_config_def, validate_topic_config, ConfigSource, ConfigType, BROKER_CONFIGS, TOPIC_CONFIGS};
use crate::errors::topic_error_code;
use crate::Broker;
use tern_metadata::ConfigResourceType;

const TOPIC: i8 = 2;
const BROKER: i8 = 4;

type ConfigResult = Result<(), (ResponseError, String)>;

fn type_code(kind: ConfigType) -> i8 {
    match kind {
        ConfigType::Boolean => 1,
        ConfigType::String => 2,
        ConfigType::Int => 3,
        ConfigType::Long => 5,
        ConfigType::Double => 6,
        ConfigType::List => 7,
    }
}

fn entry(
    name: &str,
    value: &str,
    source: ConfigSource,
    kind: ConfigType,
    read_only: bool,
) -> DescribeConfigsResourceResult {
    DescribeConfigsResourceResult::default()
        .with_name(str_bytes(name))
        .with_value(Some(str_bytes(value)))
        .with_config_source(source as i8)
        .with_config_type(type_code(kind))
        .with_read_only(read_only)
}

pub(crate) fn describe(broker: &Arc<Broker>, request: DescribeConfigsRequest, version: i16) -> DescribeConfigsResponse {
    let mut response = describe_all(broker, request);
    if version == 0 {
        // v0 has no config source, only whether a value is the default.
        for e in response.results.iter_mut().flat_map(|r| r.configs.iter_mut()) {
            e.is_default = e.config_source == ConfigSource::DefaultConfig as i8;
        }
    }
    response
}

fn describe_all(broker: &Arc<Broker>, request: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let mut response = DescribeConfigsResponse::default();
    for resource in request.resources {
        let mut result = DescribeConfigsResult::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone());
        let keys = resource.configuration_keys.as_ref();
        let wanted = |name: &str| keys.is_none_or(|k| k.iter().any(|k| k.as_str() == name));
        match resource.resource_type {
            TOPIC => match topic_overrides(broker, resource.resource_name.as_str()) {
                None => {
                    result.error_code = ResponseError::UnknownTopicOrPartition.code();
                    result.error_message =
                        Some(str_bytes(&format!("Topic '{}' does not exist.", resource.resource_name.as_str())));
                }
                Some(overrides) => {
                    for (def, value, source) in broker.config.effective_topic_configs(&overrides) {
                        if !wanted(def.name) {
                            continue;
                        }
                        let mut e = entry(def.name, &value, source, def.kind, false);
                        if request.include_synonyms {
                            e.synonyms = synonyms(broker, def.name, &overrides);
                        }
                        result.configs.push(e);
                    }
                }
            },
            BROKER => {
                let name = resource.resource_name.as_str();
                if !name.is_empty() && name.parse::<i32>().ok() != Some(broker.config.node_id()) {
                    result.error_code = ResponseError::InvalidRequest.code();
                    result.error_message =
                        Some(str_bytes(&format!("Unexpected broker id, expected {}", broker.config.node_id())));
                } else {
                    for (key, value, source, kind) in broker_configs(broker) {
                        if wanted(&key) {
                            result.configs.push(entry(&key, &value, source, kind, true));
                        }
                    }
                }
            }
            other => {
                result.error_code = ResponseError::InvalidRequest.code();
                result.error_message = Some(str_bytes(&format!("Unsupported resource type {other}")));
            }
        }
        response.results.push(result);
    }
    response
}

/// A topic's config overrides: from the metadata image on a cluster node (the topic may have
/// no replica here), from the registry on a single node; `None` if there is no such topic.
fn topic_overrides(broker: &Broker, name: &str) -> Option<BTreeMap<String, String>> {
    match broker.cluster() {
        Some(cluster) => {
            let image = cluster.image();
            image.topic_by_name(name)?;
            Some(image.configs(ConfigResourceType::TOPIC, name).cloned().unwrap_or_default())
        }
        None => broker.topics.get(name).map(|t| t.configs.clone()),
    }
}

fn synonyms(broker: &Broker, name: &str, overrides: &BTreeMap<String, String>) -> Vec<DescribeConfigsSynonym> {
    let mut out = Vec::new();
    let syn = |n: &str, v: &str, s: ConfigSource| {
        DescribeConfigsSynonym::default().with_name(str_bytes(n)).with_value(Some(str_bytes(v))).with_source(s as i8)
    };
    if let Some(v) = overrides.get(name) {
        out.push(syn(name, v, ConfigSource::TopicConfig));
    }
    if let Some(def) = topic_config_def(name) {
        if let Some(key) = def.broker_key {
            if let Some(v) = broker.config.props.get(key) {
                out.push(syn(key, v, ConfigSource::StaticBrokerConfig));
            }
            out.push(syn(key, def.default, ConfigSource::DefaultConfig));
        }
    }
    out
}

fn broker_configs(broker: &Broker) -> Vec<(String, String, ConfigSource, ConfigType)> {
    let mut out: Vec<(String, String, ConfigSource, ConfigType)> = Vec::new();
    let source = |key: &str| {
        if broker.config.props.contains_key(key) {
            ConfigSource::StaticBrokerConfig
        } else {
            ConfigSource::DefaultConfig
        }
    };
    for def in BROKER_CONFIGS {
        let value = match def.name {
            "log.dirs" => Some(broker.config.data_dir.display().to_string()),
            "log.dir" => None,
            _ => broker.config.get(def.name),
        };
        if let Some(value) = value {
            let source = if def.name == "log.dirs" { ConfigSource::StaticBrokerConfig } else { source(def.name) };
            out.push((def.name.to_string(), value, source, def.kind));
        }
    }
    for def in TOPIC_CONFIGS {
        if let Some(key) = def.broker_key {
            if !out.iter().any(|(k, ..)| k == key) {
                out.push((key.to_string(), broker.config.get(key).unwrap_or_default(), source(key), def.kind));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Validates and stores a topic's complete new set of overrides.
async fn apply_topic_configs(
    broker: &Arc<Broker>,
    name: &str,
    build: impl FnOnce(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, (ResponseError, String)>,
    validate_only: bool,
) -> ConfigResult {
    let _guard = broker.admin_lock.lock().await;
    let unknown = || (ResponseError::UnknownTopicOrPartition, format!("Topic '{name}' does not exist."));
    if let Some(cluster) = broker.cluster() {
        // A controller operation: the image holds every topic's overrides, whichever brokers
        // host it; the reconciler applies them to the local replicas.
        let image = cluster.image();
        image.topic_by_name(name).ok_or_else(unknown)?;
        let current = image.configs(ConfigResourceType::TOPIC, name).cloned().unwrap_or_default();
        let configs = build(&current)?;
        for (k, v) in &configs {
            validate_topic_config(k, v).map_err(|e| (ResponseError::InvalidConfig, e.0))?;
        }
        if validate_only {
            return Ok(());
        }
        let mut changes: Vec<(String, Option<String>)> =
            current.keys().filter(|k| !configs.contains_key(*k)).map(|k| (k.clone(), None)).collect();
        changes.extend(
            configs.iter().filter(|(k, v)| current.get(*k) != Some(v)).map(|(k, v)| (k.clone(), Some(v.clone()))),
        );
        if changes.is_empty() {
            return Ok(());
        }
        let code = cluster
            .client
            .alter_configs(ConfigResourceType::TOPIC, name, changes)
            .await
            .map_err(|e| (ResponseError::RequestTimedOut, format!("the controller cannot be reached: {e}")))?;
        if let Some(error) = ResponseError::try_from_code(code) {
            return Err((error, format!("the controller refused the change of {name}'s configs")));
        }
        cluster
            .wait_for_image(|image| {
                image.configs(ConfigResourceType::TOPIC, name).cloned().unwrap_or_default() == configs
            })
            .await;
        return Ok(());
    }
    let topic = broker.topics.get(name).ok_or_else(unknown)?;
    let configs = build(&topic.configs)?;
    for (k, v) in &configs {
        validate_topic_config(k, v).map_err(|e| (ResponseError::InvalidConfig, e.0))?;
    }
    if validate_only {
        return Ok(());
    }
    let log_config = broker.config.log_config(&configs);
    let (b, name) = (broker.clone(), name.to_string());
    blocking(move || b.topics.set_configs(&name, configs, &log_config))
        .await
        .map_err(|e| (topic_error_code(&e), e.to_string()))
}

fn broker_resource_error() -> (ResponseError, String) {
    (
        ResponseError::InvalidRequest,
        "Dynamic broker configs are not supported; set them in server.properties or with --set".into(),
    )
}

fn resource_error(resource_type: i8) -> (ResponseError, String) {
    (ResponseError::InvalidRequest, format!("Unsupported resource type {resource_type}"))
}

pub(crate) async fn alter(broker: &Arc<Broker>, request: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut response = AlterConfigsResponse::default();
    for resource in request.resources {
        let result = match resource.resource_type {
            TOPIC => {
                let new: BTreeMap<String, String> = resource
                    .configs
                    .iter()
                    .filter_map(|c| c.value.as_ref().map(|v| (c.name.as_str().to_string(), v.as_str().to_string())))
                    .collect();
                apply_topic_configs(broker, resource.resource_name.as_str(), |_| Ok(new), request.validate_only).await
            }
            BROKER => Err(broker_resource_error()),
            other => Err(resource_error(other)),
        };
        let (code, message) = split(result);
        response.responses.push(
            alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name)
                .with_error_code(code)
                .with_error_message(message),
        );
    }
    response
}

const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;

pub(crate) async fn incremental_alter(
    broker: &Arc<Broker>,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut response = IncrementalAlterConfigsResponse::default();
    for resource in request.resources {
        let result = match resource.resource_type {
            TOPIC => {
                let ops = resource.configs.clone();
                let build = move |current: &BTreeMap<String, String>| {
                    let mut configs = current.clone();
                    for op in ops {
                        let name = op.name.as_str().to_string();
                        let def = topic_config_def(&name).ok_or_else(|| {
                            (ResponseError::InvalidConfig, format!("Unknown topic config name: {name}"))
                        })?;
                        let value = op.value.as_ref().map(|v| v.as_str().to_string());
                        match op.config_operation {
                            SET => {
                                configs.insert(name, value.unwrap_or_default());
                            }
                            DELETE => {
                                configs.remove(&name);
                            }
                            APPEND | SUBTRACT if def.kind == ConfigType::List => {
                                let base = configs.get(&name).cloned().unwrap_or_else(|| def.default.to_string());
                                let mut items: Vec<String> = base
                                    .split(',')
                                    .map(str::trim)
                                    .filter(|s| !s.is_empty())
                                    .map(String::from)
                                    .collect();
                                for v in value.unwrap_or_default().split(',').map(str::trim).filter(|s| !s.is_empty()) {
                                    if op.config_operation == APPEND && !items.iter().any(|i| i == v) {
                                        items.push(v.to_string());
                                    } else if op.config_operation == SUBTRACT {
                                        items.retain(|i| i != v);
                                    }
                                }
                                configs.insert(name, items.join(","));
                            }
                            APPEND | SUBTRACT => {
                                return Err((ResponseError::InvalidConfig, format!("Config {name} is not a list")))
                            }
                            other => {
                                return Err((
                                    ResponseError::InvalidRequest,
                                    format!("Unknown config operation {other}"),
                                ))
                            }
                        }
                    }
                    Ok(configs)
                };
                apply_topic_configs(broker, resource.resource_name.as_str(), build, request.validate_only).await
            }
            BROKER => Err(broker_resource_error()),
            other => Err(resource_error(other)),
        };
        let (code, message) = split(result);
        response.responses.push(
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name)
                .with_error_code(code)
                .with_error_message(message),
        );
    }
    response
}

fn split(result: ConfigResult) -> (i16, Option<StrBytes>) {
    match result {
        Ok(()) => (0, None),
        Err((code, message)) => (code.code(), Some(str_bytes(&message))),
    }
}
