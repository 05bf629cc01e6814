//! InitProducerId: a fresh producer id (epoch 0) for an idempotent producer. Transactions are
//! not implemented yet: a request with a transactional id is refused.

use std::net::SocketAddr;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::blocking;
use super::groups::log_transactional_refusal;
use crate::Broker;

pub(crate) async fn handle(
    broker: &Arc<Broker>,
    request: InitProducerIdRequest,
    client_id: &str,
    peer: SocketAddr,
) -> InitProducerIdResponse {
    let mut response = InitProducerIdResponse::default().with_producer_id(ProducerId(-1)).with_producer_epoch(-1);
    if let Some(id) = &request.transactional_id {
        // FindCoordinator already refused this transactional id; a client that asks here
        // directly gets the same fatal answer (see `groups::find_coordinator`).
        log_transactional_refusal(&format!("transactional id {}", id.as_str()), client_id, peer);
        return response.with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code());
    }
    // A new id every time, also when an idempotent producer asks to bump its epoch (KIP-360):
    // the new id starts with fresh sequence numbers, which is all it needs.
    if let Some(cluster) = broker.cluster() {
        match cluster.next_producer_id().await {
            Ok(id) => {
                response.producer_id = ProducerId(id);
                response.producer_epoch = 0;
            }
            Err(code) => response.error_code = code,
        }
        return response;
    }
    let b = broker.clone();
    match blocking(move || b.producer_ids.next()).await {
        Ok(id) => {
            response.producer_id = ProducerId(id);
            response.producer_epoch = 0;
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot reserve producer ids");
            response.error_code = ResponseError::KafkaStorageError.code();
        }
    }
    response
}
