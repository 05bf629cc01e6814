//! The Kafka listener and the per-connection loop.
//!
//! Each connection is served by one task: read a size-prefixed frame, decode the header and
//! body with `kafka-protocol`, run the handler, write the response. Requests on a connection
//! are processed one at a time, in order, as Kafka does; a reader task reads ahead so that
//! pipelined requests are ready when the previous one finishes. Frames that cannot be parsed
//! close the connection (Kafka's behaviour); nothing in here may panic on input.
//!
//! Memory and connections are bounded by Kafka's settings (`connection_limits`): a connection's
//! buffer grows only as bytes arrive; a frame larger than a connection's own read buffer first
//! reserves its size from `queued.max.request.bytes` (shared by all connections, held until it
//! is answered), so the bytes of large requests buffered at once never exceed it; every request
//! read and not yet answered holds one of `queued.max.requests`. Every connection the broker
//! closes is logged with its reason, peer, client id, API and version (rate-limited).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader};
#[cfg(test)]
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};

use crate::connection_limits::{Activity, Limits, READ_CHUNK};
use crate::handlers::{self, Outcome};
use crate::log_limit::LogLimiter;
use crate::Broker;

/// Lines about connections refused or closed by the broker, by kind, each rate-limited.
static BAD_REQUEST_LOG: LogLimiter = LogLimiter::new();
static IDLE_LOG: LogLimiter = LogLimiter::new();
static CONNECTION_LIMIT_LOG: LogLimiter = LogLimiter::new();
static HANDLER_CLOSE_LOG: LogLimiter = LogLimiter::new();

/// Accepts connections until `shutdown` becomes true.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let limits = match Limits::new(&broker.config) {
        Ok(limits) => Arc::new(limits),
        Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())),
    };
    loop {
        // max.connections: like Kafka's acceptor, wait for a free slot before accepting more.
        let slot = match limits.connections.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if let Some(suppressed) = CONNECTION_LIMIT_LOG.allow() {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        suppressed,
                        "max.connections reached: new connections wait until one closes"
                    );
                }
                tokio::select! {
                    slot = limits.connections.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => return Ok(()),
                    },
                    _ = shutdown.changed() => return Ok(()),
                }
            }
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let ip_slot = match limits.per_ip.admit(peer.ip()) {
                    Ok(ip_slot) => ip_slot,
                    Err(limit) => {
                        if let Some(suppressed) = CONNECTION_LIMIT_LOG.allow() {
                            tracing::warn!(
                                %peer,
                                max_connections_per_ip = limit,
                                suppressed,
                                "refused connection: max.connections.per.ip reached for this address"
                            );
                        }
                        continue;
                    }
                };
                let (broker, limits) = (broker.clone(), limits.clone());
                tokio::spawn(async move {
                    serve_connection(stream, peer, broker, limits).await;
                    drop((slot, ip_slot));
                });
            }
            _ = shutdown.changed() => return Ok(()),
        }
    }
}

/// Why a connection ended.
#[derive(Debug)]
enum Close {
    /// The client closed it between requests.
    ClientClosed,
    /// The client closed it in the middle of a request.
    ClientClosedMidFrame {
        received: usize,
        size: usize,
    },
    Io(std::io::Error),
    /// `connections.max.idle.ms` passed without a byte or a request.
    Idle(Duration),
    /// A size prefix over `socket.request.max.bytes`, or negative.
    FrameSize {
        size: i32,
        max: usize,
    },
    /// A frame that could not be decoded: unknown API, unsupported version, malformed.
    BadRequest(String),
    /// A handler asked to close (e.g. a failed acks=0 produce, the only way to tell the client).
    Handler(String),
    /// A response that could not be encoded (our bug, logged where it happened).
    Internal(String),
}

/// The header fields of a frame, read without decoding it, for log lines.
#[derive(Debug, Default, Clone)]
struct RequestInfo {
    api_key: Option<i16>,
    version: Option<i16>,
    client_id: Option<String>,
}

/// The client id of a request frame (its bytes), if the header holds one.
fn client_id_bytes(frame: &[u8]) -> Option<&[u8]> {
    let len = frame.get(8..10).map(|b| i16::from_be_bytes([b[0], b[1]]))?;
    frame.get(10..10 + usize::try_from(len).ok()?)
}

impl RequestInfo {
    fn peek(frame: &[u8]) -> RequestInfo {
        let i16_at = |at: usize| frame.get(at..at + 2).map(|b| i16::from_be_bytes([b[0], b[1]]));
        let client_id = client_id_bytes(frame).map(|id| String::from_utf8_lossy(id).into_owned());
        RequestInfo { api_key: i16_at(0), version: i16_at(2), client_id }
    }

    fn api(&self) -> String {
        match self.api_key {
            Some(key) => ApiKey::try_from(key).map_or_else(|_| format!("unknown api key {key}"), |k| format!("{k:?}")),
            None => String::new(),
        }
    }
}

/// The header of the last request on a connection, kept for the line that logs why it closed.
/// Updated per request without allocating: the client id is copied only when it changes.
#[derive(Default)]
struct LastRequest {
    key_and_version: Vec<u8>,
    /// The last non-null client id (a request may leave it out).
    client_id: Option<Vec<u8>>,
}

impl LastRequest {
    /// Client ids longer than this are cut in the log line.
    const MAX_CLIENT_ID: usize = 256;

    fn update(&mut self, frame: &[u8]) {
        self.key_and_version.clear();
        self.key_and_version.extend_from_slice(&frame[..frame.len().min(4)]);
        if let Some(id) = client_id_bytes(frame) {
            let id = &id[..id.len().min(Self::MAX_CLIENT_ID)];
            if self.client_id.as_deref() != Some(id) {
                let kept = self.client_id.get_or_insert_with(Vec::new);
                kept.clear();
                kept.extend_from_slice(id);
            }
        }
    }

    fn info(&self) -> RequestInfo {
        let RequestInfo { api_key, version, .. } = RequestInfo::peek(&self.key_and_version);
        let client_id = self.client_id.as_deref().map(|id| String::from_utf8_lossy(id).into_owned());
        RequestInfo { api_key, version, client_id }
    }
}

/// A request frame as read, with what it holds of the shared limits until it is answered.
struct Frame {
    bytes: Bytes,
    _budget: Option<OwnedSemaphorePermit>,
    _queued: OwnedSemaphorePermit,
}

/// How many frames a connection reads ahead of the one being processed.
const READ_AHEAD: usize = 32;

async fn serve_connection(stream: TcpStream, peer: SocketAddr, broker: Arc<Broker>, limits: Arc<Limits>) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
    }
    let (read_half, mut write_half) = stream.into_split();
    let activity = Arc::new(Activity::new());
    let (tx, mut rx) = mpsc::channel::<Frame>(READ_AHEAD);
    let reader = tokio::spawn(read_frames(read_half, tx, limits.clone(), activity.clone()));
    let mut last = LastRequest::default();
    let processed = async {
        while let Some(frame) = rx.recv().await {
            let Frame { bytes, _budget, _queued } = frame;
            activity.set_busy(true);
            last.update(&bytes);
            let response = process_frame(&broker, bytes, peer).await?;
            if let Some(response) = response {
                // Most responses fit the socket buffer at once; only the rest waits, bounded:
                // a client that does not read its responses is idle too.
                let written = match write_half.try_write(&response) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
                    Err(e) => return Err(Close::Io(e)),
                };
                if written < response.len() {
                    tokio::select! {
                        written = write_half.write_all(&response[written..]) => written.map_err(Close::Io)?,
                        _ = sleep_or_never(limits.idle) => return Err(Close::Idle(limits.idle.unwrap_or_default())),
                    }
                }
            }
            activity.set_busy(false);
        }
        Ok(())
    }
    .await;
    let (close, info) = match processed {
        Err(close) => {
            reader.abort();
            (close, last.info())
        }
        Ok(()) => match reader.await {
            Ok((close, info)) => (close, info.unwrap_or_else(|| last.info())),
            Err(e) => (Close::Internal(format!("reader task: {e}")), last.info()),
        },
    };
    log_close(peer, &info, &close);
}

/// Reads frames into `tx` until the connection ends; returns why, with the header of the frame
/// that ended it if there is one.
async fn read_frames(
    mut read_half: OwnedReadHalf,
    tx: mpsc::Sender<Frame>,
    limits: Arc<Limits>,
    activity: Arc<Activity>,
) -> (Close, Option<RequestInfo>) {
    // Frames are split off one read buffer: no zero-filling, no second copy through a
    // BufReader, and a large produce frame is read straight into its final place.
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    // The current large frame's share of `queued.max.request.bytes`.
    let mut budget: Option<OwnedSemaphorePermit> = None;
    // One watch for the whole connection (re-armed only when it fires), not a timer per read.
    let idle = activity.idle_for(limits.idle);
    tokio::pin!(idle);
    loop {
        let mut pending = None;
        while buf.len() >= 4 {
            let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
            let too_large =
                |buf: &BytesMut| (Close::FrameSize { size, max: limits.max_frame }, Some(RequestInfo::peek(&buf[4..])));
            if size < 0 || size as usize > limits.max_frame {
                return too_large(&buf);
            }
            let needed = 4 + size as usize;
            if size as usize > READ_CHUNK && budget.is_none() {
                if let Some(pool) = &limits.receive_budget {
                    if size as usize > limits.receive_budget_bytes {
                        return too_large(&buf);
                    }
                    tokio::select! {
                        permit = pool.clone().acquire_many_owned(size as u32) => match permit {
                            Ok(permit) => budget = Some(permit),
                            Err(_) => return (Close::ClientClosed, None),
                        },
                        _ = &mut idle => return (Close::Idle(limits.idle.unwrap_or_default()), None),
                    }
                }
            }
            if buf.len() < needed {
                pending = Some(needed);
                break;
            }
            let queued = match limits.queued_requests.clone().acquire_owned().await {
                Ok(permit) => permit,
                Err(_) => return (Close::ClientClosed, None),
            };
            buf.advance(4);
            let frame = Frame { bytes: buf.split_to(size as usize).freeze(), _budget: budget.take(), _queued: queued };
            if tx.send(frame).await.is_err() {
                return (Close::ClientClosed, None); // the processor ended; it says why
            }
        }
        // A large frame (its size reserved) is read to its end; otherwise a chunk at most, so
        // what a connection reads beyond its current frame stays within its own buffer.
        let want = match pending {
            Some(needed) if needed > READ_CHUNK => needed - buf.len(),
            _ => READ_CHUNK,
        };
        if budget.is_some() {
            // The frame's size is reserved from the receive budget: room for all of it at once.
            buf.reserve(want);
        } else if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            // Grow with what arrives (doubling at most), never to a size a client merely
            // announced; and not at every read, or small requests pay an allocation apiece.
            buf.reserve(want.min(buf.len().max(READ_CHUNK)));
        }
        let mut limited = (&mut read_half).take(want as u64);
        let read = tokio::select! {
            read = limited.read_buf(&mut buf) => read,
            _ = &mut idle => return (Close::Idle(limits.idle.unwrap_or_default()), None),
        };
        match read {
            Ok(0) if buf.is_empty() => return (Close::ClientClosed, None),
            Ok(0) => {
                let size = pending.unwrap_or(buf.len()).saturating_sub(4);
                return (Close::ClientClosedMidFrame { received: buf.len(), size }, None);
            }
            Ok(_) => activity.touch(),
            Err(e) => return (Close::Io(e), None),
        }
    }
}

fn log_close(peer: SocketAddr, info: &RequestInfo, close: &Close) {
    let client_id = info.client_id.as_deref().unwrap_or("");
    let api = info.api();
    let version = info.version.unwrap_or(-1);
    match close {
        Close::ClientClosed => tracing::trace!(%peer, client_id, "connection closed by the client"),
        Close::ClientClosedMidFrame { received, size } => {
            tracing::debug!(%peer, client_id, received, size, "connection closed by the client in the middle of a request")
        }
        Close::Io(e) => tracing::debug!(%peer, client_id, error = %e, "connection closed"),
        Close::Idle(idle) => {
            if let Some(suppressed) = IDLE_LOG.allow() {
                let idle_ms = idle.as_millis() as u64;
                tracing::info!(%peer, client_id, idle_ms, suppressed, "closed idle connection (connections.max.idle.ms)");
            }
        }
        Close::FrameSize { size, max } => {
            if let Some(suppressed) = BAD_REQUEST_LOG.allow() {
                let reason = if *size < 0 {
                    format!("negative request size {size}")
                } else {
                    format!("request of {size} bytes exceeds socket.request.max.bytes {max}")
                };
                tracing::warn!(%peer, client_id, api, version, suppressed, "closed connection: {reason}");
            }
        }
        Close::BadRequest(why) => {
            if let Some(suppressed) = BAD_REQUEST_LOG.allow() {
                tracing::warn!(%peer, client_id, api, version, suppressed, "closed connection: {why}");
            }
        }
        Close::Handler(why) => {
            if let Some(suppressed) = HANDLER_CLOSE_LOG.allow() {
                tracing::info!(%peer, client_id, api, version, suppressed, "closed connection: {why}");
            }
        }
        Close::Internal(why) => tracing::error!(%peer, client_id, api, version, "closed connection: {why}"),
    }
}

async fn sleep_or_never(duration: Option<Duration>) {
    match duration {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
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
async fn process_frame(broker: &Arc<Broker>, frame: Bytes, peer: SocketAddr) -> Result<Option<Bytes>, Close> {
    match decode_frame(frame).map_err(Close::BadRequest)? {
        DecodedFrame::UnsupportedApiVersions { correlation_id } => {
            let response = handlers::api_versions::unsupported_version_response();
            encode_response(ApiKey::ApiVersions, 0, correlation_id, &response).map(Some)
        }
        DecodedFrame::Request(header, request) => {
            let api_key = ApiKey::try_from(header.request_api_key).map_err(|_| Close::BadRequest("api key".into()))?;
            let (version, correlation_id) = (header.request_api_version, header.correlation_id);
            match handlers::handle(broker, &header, request, peer).await {
                Outcome::Respond(response) => encode_response(api_key, version, correlation_id, &response).map(Some),
                Outcome::NoResponse => Ok(None),
                Outcome::Close(why) => Err(Close::Handler(why)),
            }
        }
    }
}

fn encode_response(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    response: &kafka_protocol::messages::ResponseKind,
) -> Result<Bytes, Close> {
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
        return Err(Close::Internal(format!("cannot encode {api_key:?} v{version} response")));
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
