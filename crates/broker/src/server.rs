//! The Kafka listener and the per-connection loop.
//!
//! Each connection is served by one task: read a size-prefixed frame, decode the header and
//! body with `kafka-protocol`, run the handler, write the response. Requests on a connection
//! are processed one at a time, in order, as Kafka does; a reader task decodes ahead so that
//! pipelined requests are ready when the previous one finishes. Frames that cannot be parsed
//! close the connection (Kafka's behaviour); nothing in here may panic on input.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader};
#[cfg(test)]
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::handlers::{self, Outcome};
use crate::Broker;

/// Accepts connections until `shutdown` becomes true.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let broker = broker.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve_connection(stream, peer, broker).await {
                        tracing::debug!(%peer, error = %e, "connection closed");
                    }
                });
            }
            _ = shutdown.changed() => return Ok(()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(String),
}

/// How many decoded requests may wait while one is processed.
const READ_AHEAD: usize = 32;
/// Read buffer size per connection; frames larger than this get a buffer of their own size.
const READ_BUFFER: usize = 64 * 1024;

async fn serve_connection(stream: TcpStream, peer: SocketAddr, broker: Arc<Broker>) -> Result<(), ConnectionError> {
    stream.set_nodelay(true)?;
    let (mut read_half, mut write_half) = stream.into_split();
    let max_frame = broker.config.socket_request_max_bytes();
    let (tx, mut rx) = mpsc::channel::<Bytes>(READ_AHEAD);
    let reader = tokio::spawn(async move {
        // Frames are split off one read buffer: no zero-filling, no second copy through a
        // BufReader, and a large produce frame is read straight into its final place.
        let mut buf = BytesMut::with_capacity(READ_BUFFER);
        loop {
            while buf.len() >= 4 {
                let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
                if len < 0 || len as usize > max_frame {
                    return Err(ConnectionError::Protocol(format!(
                        "frame of {len} bytes exceeds socket.request.max.bytes {max_frame}"
                    )));
                }
                let needed = 4 + len as usize;
                if buf.len() < needed {
                    buf.reserve(needed - buf.len());
                    break;
                }
                buf.advance(4);
                if tx.send(buf.split_to(len as usize).freeze()).await.is_err() {
                    return Ok(());
                }
            }
            if buf.capacity() - buf.len() < READ_BUFFER / 4 {
                buf.reserve(READ_BUFFER);
            }
            if read_half.read_buf(&mut buf).await? == 0 {
                return Ok(()); // the client closed; a partial frame is dropped
            }
        }
    });
    let result = async {
        while let Some(frame) = rx.recv().await {
            match process_frame(&broker, frame, peer).await {
                Ok(Some(response)) => write_half.write_all(&response).await?,
                Ok(None) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
    .await;
    reader.abort();
    result
}

/// A request frame, decoded.
#[derive(Debug)]
// One per request, moved once: boxing the large variant would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum DecodedFrame {
    Request(RequestHeader, RequestKind),
    /// An ApiVersions request of a version we do not know: answered in v0 with UNSUPPORTED_VERSION.
    UnsupportedApiVersions {
        correlation_id: i32,
    },
}

/// Decodes a request frame (without its size prefix). Never panics; an error means the
/// connection must be closed.
pub fn decode_frame(mut frame: Bytes) -> Result<DecodedFrame, String> {
    if frame.len() < 8 {
        return Err("frame shorter than a request header".into());
    }
    let api_key_raw = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api_key = ApiKey::try_from(api_key_raw).map_err(|_| format!("unknown api key {api_key_raw}"))?;
    if !handlers::is_supported(api_key, version) {
        if api_key == ApiKey::ApiVersions {
            return Ok(DecodedFrame::UnsupportedApiVersions { correlation_id });
        }
        return Err(format!("unsupported version {version} of {api_key:?}"));
    }
    let header = RequestHeader::decode(&mut frame, api_key.request_header_version(version))
        .map_err(|e| format!("bad request header: {e:#}"))?;
    let request = RequestKind::decode(api_key, &mut frame, version)
        .map_err(|e| format!("bad {api_key:?} v{version} request: {e:#}"))?;
    Ok(DecodedFrame::Request(header, request))
}

/// Decodes one request frame, runs its handler and encodes the response frame.
async fn process_frame(broker: &Arc<Broker>, frame: Bytes, peer: SocketAddr) -> Result<Option<Bytes>, ConnectionError> {
    match decode_frame(frame).map_err(ConnectionError::Protocol)? {
        DecodedFrame::UnsupportedApiVersions { correlation_id } => {
            let response = handlers::api_versions::unsupported_version_response();
            encode_response(ApiKey::ApiVersions, 0, correlation_id, &response).map(Some)
        }
        DecodedFrame::Request(header, request) => {
            let api_key =
                ApiKey::try_from(header.request_api_key).map_err(|_| ConnectionError::Protocol("api key".into()))?;
            let (version, correlation_id) = (header.request_api_version, header.correlation_id);
            match handlers::handle(broker, &header, request, peer).await {
                Outcome::Respond(response) => encode_response(api_key, version, correlation_id, &response).map(Some),
                Outcome::NoResponse => Ok(None),
                Outcome::Close(why) => Err(ConnectionError::Protocol(why)),
            }
        }
    }
}

fn encode_response(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    response: &kafka_protocol::messages::ResponseKind,
) -> Result<Bytes, ConnectionError> {
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    let encoded = header
        .encode(&mut buf, api_key.response_header_version(version))
        .and_then(|_| response.encode(&mut buf, version));
    if let Err(e) = encoded {
        // A response we cannot encode is our bug; closing is the only safe answer.
        tracing::error!(?api_key, version, error = %e, "cannot encode response");
        return Err(ConnectionError::Protocol(format!("cannot encode {api_key:?} v{version} response")));
    }
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiVersionsRequest;
    use proptest::prelude::*;

    fn frame(api_key: i16, version: i16, body: &[u8]) -> Bytes {
        let mut b = BytesMut::new();
        b.put_i16(api_key);
        b.put_i16(version);
        b.put_i32(7);
        b.put_i16(-1); // null client id
        b.put_slice(body);
        b.freeze()
    }

    proptest! {
        #[test]
        fn random_frames_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_frame(Bytes::from(data));
        }

        #[test]
        fn random_bodies_of_every_supported_api_never_panic(
            index in 0..handlers::SUPPORTED.len(),
            body in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let (key, min, max) = handlers::SUPPORTED[index];
            for version in min..=max {
                let _ = decode_frame(frame(key as i16, version, &body));
            }
        }
    }

    #[test]
    fn unknown_api_key_and_version_are_errors() {
        assert!(decode_frame(frame(9999, 0, &[])).is_err());
        assert!(decode_frame(frame(ApiKey::Produce as i16, 99, &[])).is_err());
        assert!(matches!(
            decode_frame(frame(ApiKey::ApiVersions as i16, 99, &[])),
            Ok(DecodedFrame::UnsupportedApiVersions { correlation_id: 7 })
        ));
    }

    #[test]
    fn api_versions_v3_response_omits_default_tagged_fields() {
        // librdkafka 2.0.2 mis-parses default-valued tagged fields in ApiVersions v3+ responses;
        // Kafka omits them, so the body must end in a zero tagged-field count.
        let response = kafka_protocol::messages::ResponseKind::ApiVersions(handlers::api_versions::handle());
        let encoded = encode_response(ApiKey::ApiVersions, 3, 1, &response).unwrap();
        assert_eq!(encoded.last(), Some(&0u8));
        // The whole response: size, correlation id, error code, api keys, throttle, tags.
        let n = handlers::SUPPORTED.len();
        assert_eq!(encoded.len(), 4 + 4 + 2 + 1 + n * (6 + 1) + 4 + 1);
    }

    #[test]
    fn api_versions_request_v3_decodes() {
        let mut body = BytesMut::new();
        ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("t"))
            .with_client_software_version(StrBytes::from_static_str("1"))
            .encode(&mut body, 3)
            .unwrap();
        let mut f = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(ApiKey::ApiVersions as i16)
            .with_request_api_version(3)
            .with_correlation_id(5)
            .encode(&mut f, 2)
            .unwrap();
        f.extend_from_slice(&body);
        assert!(matches!(decode_frame(f.freeze()), Ok(DecodedFrame::Request(h, _)) if h.correlation_id == 5));
    }
}
