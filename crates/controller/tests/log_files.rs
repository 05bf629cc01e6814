//! The file-backed log: recovery cuts a torn tail, and the vote survives a restart.

use std::io::Write;

use openraft::storage::RaftLogStorage;
use openraft::{CommittedLeaderId, EntryPayload, RaftLogReader};
use tern_controller::raft::codec::{encode_entry, frame};
use tern_controller::raft::{Entry, LogId, LogStore, RecordBatch, Vote};
use tern_metadata::{MetadataRecord, RemoveTopic, Uuid};

fn entry(index: u64) -> Entry {
    let record = MetadataRecord::RemoveTopic(RemoveTopic { topic_id: Uuid::from_u128(index as u128) });
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(RecordBatch(vec![record])),
    }
}

#[tokio::test]
async fn a_torn_tail_is_cut_and_the_vote_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = Vec::new();
    for i in 1..=3 {
        frame(&encode_entry(&entry(i)), &mut bytes);
    }
    let whole = bytes.len();
    let mut fourth = Vec::new();
    frame(&encode_entry(&entry(4)), &mut fourth);
    bytes.extend_from_slice(&fourth[..fourth.len() - 3]); // a crash mid-append
    std::fs::File::create(dir.path().join("log")).unwrap().write_all(&bytes).unwrap();

    let mut store = LogStore::open(dir.path()).unwrap();
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id.map(|l| l.index), Some(3));
    assert_eq!(store.try_get_log_entries(1..=3).await.unwrap(), vec![entry(1), entry(2), entry(3)]);
    assert_eq!(std::fs::metadata(dir.path().join("log")).unwrap().len() as usize, whole);

    store.save_vote(&Vote::new_committed(4, 2)).await.unwrap();
    store.purge(LogId::new(CommittedLeaderId::new(1, 1), 1)).await.unwrap();
    drop(store);
    let mut reopened = LogStore::open(dir.path()).unwrap();
    assert_eq!(reopened.read_vote().await.unwrap(), Some(Vote::new_committed(4, 2)));
    let state = reopened.get_log_state().await.unwrap();
    assert_eq!((state.last_purged_log_id.map(|l| l.index), state.last_log_id.map(|l| l.index)), (Some(1), Some(3)));
    assert_eq!(reopened.try_get_log_entries(0..10).await.unwrap(), vec![entry(2), entry(3)]);
}
