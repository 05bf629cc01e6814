//! Per-record delivery futures that share one completion slot per batch.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};

use tokio::sync::oneshot;

use crate::error::{Error, Result};

/// Where a produced record landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    pub topic: Arc<str>,
    pub partition: i32,
    /// -1 with acks=0.
    pub offset: i64,
    /// The create time sent, or the broker's log-append time if the topic uses it.
    pub timestamp: i64,
}

/// Completion of one batch: base offset and log-append time (-1 if create time), or an error.
pub(crate) struct Outcome {
    pub topic: Arc<str>,
    pub partition: i32,
    result: OnceLock<Result<(i64, i64)>>,
    wakers: Mutex<Vec<Waker>>,
}

impl Outcome {
    pub fn new(topic: Arc<str>, partition: i32) -> Arc<Self> {
        Arc::new(Outcome { topic, partition, result: OnceLock::new(), wakers: Mutex::new(Vec::new()) })
    }

    /// Sets the result once; later calls are ignored. Returns whether this call completed it.
    pub fn complete(&self, r: Result<(i64, i64)>) -> bool {
        if self.result.set(r).is_err() {
            return false;
        }
        let wakers = std::mem::take(&mut *self.wakers.lock().unwrap_or_else(|e| e.into_inner()));
        for w in wakers {
            w.wake();
        }
        true
    }

    fn metadata(&self, index: u32, timestamp: i64) -> Option<Result<RecordMetadata>> {
        self.result.get().map(|r| match r {
            Ok((base, log_append)) => Ok(RecordMetadata {
                topic: self.topic.clone(),
                partition: self.partition,
                offset: if *base < 0 { -1 } else { base + index as i64 },
                timestamp: if *log_append >= 0 { *log_append } else { timestamp },
            }),
            Err(e) => Err(e.clone()),
        })
    }
}

/// Handed over when a record that waited for metadata joins a batch.
pub(crate) type Placement = Result<(Arc<Outcome>, u32)>;

enum State {
    Done(Option<Result<RecordMetadata>>),
    Placing(oneshot::Receiver<Placement>),
    Waiting { outcome: Arc<Outcome>, index: u32, slot: Option<usize> },
}

/// Resolves when the broker acknowledged (or finally rejected) one record.
///
/// The record is already queued when this is returned; dropping the future does not cancel it.
/// It resolves exactly once per record: every batch ends in one outcome (see [`crate::producer`]).
#[must_use = "the future reports whether the record was delivered"]
pub struct DeliveryFuture {
    state: State,
    timestamp: i64,
}

impl std::fmt::Debug for DeliveryFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Done(_) => "done",
            State::Placing(_) => "waiting for metadata",
            State::Waiting { .. } => "queued",
        };
        f.debug_struct("DeliveryFuture").field("state", &state).finish()
    }
}

impl DeliveryFuture {
    pub(crate) fn waiting(outcome: Arc<Outcome>, index: u32, timestamp: i64) -> Self {
        DeliveryFuture { state: State::Waiting { outcome, index, slot: None }, timestamp }
    }

    pub(crate) fn placing(rx: oneshot::Receiver<Placement>, timestamp: i64) -> Self {
        DeliveryFuture { state: State::Placing(rx), timestamp }
    }
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Done(r) => return Poll::Ready(r.take().unwrap_or(Err(Error::Closed))),
                State::Placing(rx) => match Pin::new(rx).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(Ok((outcome, index)))) => this.state = State::Waiting { outcome, index, slot: None },
                    Poll::Ready(Ok(Err(e))) => this.state = State::Done(Some(Err(e))),
                    Poll::Ready(Err(_)) => this.state = State::Done(Some(Err(Error::Closed))),
                },
                State::Waiting { outcome, index, slot } => {
                    if let Some(r) = outcome.metadata(*index, this.timestamp) {
                        return Poll::Ready(r);
                    }
                    let mut wakers = outcome.wakers.lock().unwrap_or_else(|e| e.into_inner());
                    // Re-check under the lock: `complete` takes the wakers after setting the result.
                    if let Some(r) = outcome.metadata(*index, this.timestamp) {
                        return Poll::Ready(r);
                    }
                    match slot {
                        Some(i) if *i < wakers.len() => {
                            if !wakers[*i].will_wake(cx.waker()) {
                                wakers[*i] = cx.waker().clone();
                            }
                        }
                        _ => {
                            *slot = Some(wakers.len());
                            wakers.push(cx.waker().clone());
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}
