//! The quorum's wire messages: each round-trips, and no cut of one decodes or panics.

use std::collections::{BTreeMap, BTreeSet};

use openraft::error::SnapshotMismatch;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{BasicNode, CommittedLeaderId, EntryPayload, Membership, SnapshotSegmentId};
use tern_controller::raft::codec::{
    decode_reply, decode_request, encode_reply, encode_request, RaftReply, RaftRequest, RemoteFailure,
};
use tern_controller::raft::{Entry, LogId, RecordBatch, SnapshotMeta, StoredMembership, Vote};

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn membership() -> Membership<u64, BasicNode> {
    let nodes =
        (1..=3).map(|id| (id, BasicNode { addr: format!("127.0.0.1:{}", 9000 + id) })).collect::<BTreeMap<_, _>>();
    Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes)
}

fn requests() -> Vec<RaftRequest> {
    let entries = vec![
        Entry { log_id: log_id(1, 1), payload: EntryPayload::Membership(membership()) },
        Entry { log_id: log_id(2, 2), payload: EntryPayload::Blank },
        Entry { log_id: log_id(2, 3), payload: EntryPayload::Normal(RecordBatch(vec![])) },
    ];
    vec![
        RaftRequest::AppendEntries(AppendEntriesRequest {
            vote: Vote::new_committed(2, 1),
            prev_log_id: None,
            entries,
            leader_commit: Some(log_id(2, 2)),
        }),
        RaftRequest::Vote(VoteRequest { vote: Vote::new(3, 2), last_log_id: Some(log_id(2, 3)) }),
        RaftRequest::InstallSnapshot(InstallSnapshotRequest {
            vote: Vote::new_committed(2, 1),
            meta: SnapshotMeta {
                last_log_id: Some(log_id(2, 3)),
                last_membership: StoredMembership::new(Some(log_id(1, 1)), membership()),
                snapshot_id: "2-3-7".into(),
            },
            offset: 4096,
            data: vec![7; 100],
            done: true,
        }),
    ]
}

fn replies() -> Vec<RaftReply> {
    vec![
        RaftReply::AppendEntries(AppendEntriesResponse::Success),
        RaftReply::AppendEntries(AppendEntriesResponse::PartialSuccess(Some(log_id(2, 2)))),
        RaftReply::AppendEntries(AppendEntriesResponse::Conflict),
        RaftReply::AppendEntries(AppendEntriesResponse::HigherVote(Vote::new(4, 3))),
        RaftReply::Vote(VoteResponse { vote: Vote::new(3, 2), vote_granted: true, last_log_id: None }),
        RaftReply::InstallSnapshot(InstallSnapshotResponse { vote: Vote::new_committed(2, 1) }),
        RaftReply::Failed(RemoteFailure::Stopped),
        RaftReply::Failed(RemoteFailure::Fatal("disk full".into())),
        RaftReply::Failed(RemoteFailure::SnapshotMismatch(SnapshotMismatch {
            expect: SnapshotSegmentId { id: "a".into(), offset: 0 },
            got: SnapshotSegmentId { id: "b".into(), offset: 10 },
        })),
    ]
}

#[test]
fn requests_round_trip_and_no_cut_of_one_decodes() {
    for request in requests() {
        let bytes = encode_request(77, &request);
        let (correlation_id, decoded) = decode_request(&bytes).unwrap();
        assert_eq!(correlation_id, 77);
        assert_eq!(encode_request(77, &decoded), bytes, "{request:?}");
        for cut in 0..bytes.len() {
            assert!(decode_request(&bytes[..cut]).is_err(), "{cut} bytes of {request:?}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_request(&longer).is_err(), "a trailing byte after {request:?}");
    }
}

#[test]
fn replies_round_trip_and_no_cut_of_one_decodes() {
    for reply in replies() {
        let bytes = encode_reply(9, &reply);
        assert_eq!(decode_reply(&bytes).unwrap(), (9, reply));
        for cut in 0..bytes.len() {
            assert!(decode_reply(&bytes[..cut]).is_err(), "{cut} bytes of {bytes:?}");
        }
    }
}

#[test]
fn controller_frames_round_trip_and_are_told_apart_from_raft_rpcs() {
    use tern_controller::raft::codec::{
        decode_controller_reply, decode_controller_request, encode_controller_reply, encode_controller_request,
        is_controller_message,
    };
    let request = encode_controller_request(7, 63, 1, b"body");
    assert!(is_controller_message(&request));
    assert_eq!(decode_controller_request(&request).unwrap(), (7, 63, 1, &b"body"[..]));
    // The header cut short does not decode; a Raft RPC is no controller request.
    for cut in 0..9 {
        assert!(decode_controller_request(&request[..cut]).is_err(), "{cut} bytes");
    }
    assert!(decode_request(&request).is_err());
    for raft in requests() {
        let bytes = encode_request(3, &raft);
        assert!(!is_controller_message(&bytes));
        assert!(decode_controller_request(&bytes).is_err());
    }
    let reply = encode_controller_reply(7, b"answer");
    assert_eq!(decode_controller_reply(&reply).unwrap(), (7, &b"answer"[..]));
    assert!(decode_controller_reply(&reply[..4]).is_err());
}
