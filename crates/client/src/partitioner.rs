//! Choosing a partition for a record, compatible with the Java client's default partitioner.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Picks the partition of a record that did not name one.
pub trait Partitioner: Send + Sync {
    /// Returns a partition in `0..num_partitions`.
    fn partition(&self, topic: &str, key: Option<&[u8]>, num_partitions: i32) -> i32;

    /// Called when the batch of `topic`/`prev_partition` was closed (full or sent), so sticky
    /// partitioners can move on.
    fn on_new_batch(&self, topic: &str, num_partitions: i32, prev_partition: i32) {
        let _ = (topic, num_partitions, prev_partition);
    }
}

/// Murmur2 exactly as `org.apache.kafka.common.utils.Utils.murmur2`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    // Java masks every byte with 0xff: bytes are unsigned here too.
    if rest.len() >= 3 {
        h ^= (rest[2] as u32) << 16;
    }
    if rest.len() >= 2 {
        h ^= (rest[1] as u32) << 8;
    }
    if !rest.is_empty() {
        h ^= rest[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// `x & 0x7fffffff`, as the Java client's `Utils.toPositive`.
pub fn to_positive(x: i32) -> i32 {
    x & 0x7fff_ffff
}

/// Partition of a keyed record under the Java client's default partitioner.
pub fn key_partition(key: &[u8], num_partitions: i32) -> i32 {
    to_positive(murmur2(key)) % num_partitions
}

/// A small lock-free xorshift generator, seeded from the process's random hasher keys.
struct Rng(AtomicU64);

impl Rng {
    fn new() -> Self {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x5eed);
        Rng(AtomicU64::new(h.finish() | 1))
    }

    fn next(&self) -> u64 {
        let mut x = self.0.load(Ordering::Relaxed);
        loop {
            let mut y = x;
            y ^= y << 13;
            y ^= y >> 7;
            y ^= y << 17;
            match self.0.compare_exchange_weak(x, y, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return y,
                Err(cur) => x = cur,
            }
        }
    }

    fn below(&self, n: i32) -> i32 {
        (self.next() % n.max(1) as u64) as i32
    }
}

/// Keyed records: murmur2 of the key. Keyless records: sticky (KIP-480) — stay on one random
/// partition until its batch closes, then move to another.
pub struct DefaultPartitioner {
    sticky: Mutex<HashMap<String, i32>>,
    rng: Rng,
}

impl Default for DefaultPartitioner {
    fn default() -> Self {
        DefaultPartitioner { sticky: Mutex::new(HashMap::new()), rng: Rng::new() }
    }
}

impl DefaultPartitioner {
    /// A new partitioner with no sticky choices yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn sticky_partition(&self, topic: &str, num_partitions: i32) -> i32 {
        let mut map = self.sticky.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(topic) {
            Some(&p) if p < num_partitions => p,
            _ => {
                let p = self.rng.below(num_partitions);
                map.insert(topic.to_owned(), p);
                p
            }
        }
    }
}

impl Partitioner for DefaultPartitioner {
    fn partition(&self, topic: &str, key: Option<&[u8]>, num_partitions: i32) -> i32 {
        match key {
            Some(k) => key_partition(k, num_partitions),
            None => self.sticky_partition(topic, num_partitions),
        }
    }

    fn on_new_batch(&self, topic: &str, num_partitions: i32, prev_partition: i32) {
        let mut map = self.sticky.lock().unwrap_or_else(|e| e.into_inner());
        let Some(cur) = map.get_mut(topic) else {
            return;
        };
        // Only the batch of the current sticky partition moves us on.
        if *cur != prev_partition {
            return;
        }
        if num_partitions > 1 {
            let r = self.rng.below(num_partitions - 1);
            *cur = if r >= prev_partition { r + 1 } else { r };
        }
    }
}

/// Keyless records rotate over all partitions; keyed records hash like the default partitioner.
#[derive(Default)]
pub struct RoundRobinPartitioner {
    counter: AtomicU64,
}

impl Partitioner for RoundRobinPartitioner {
    fn partition(&self, _topic: &str, key: Option<&[u8]>, num_partitions: i32) -> i32 {
        match key {
            Some(k) => key_partition(k, num_partitions),
            None => (self.counter.fetch_add(1, Ordering::Relaxed) % num_partitions.max(1) as u64) as i32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn murmur2_matches_java() {
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
            (b"abc", 479470107),
        ];
        for (input, want) in cases {
            assert_eq!(murmur2(input), *want, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn to_positive_masks_sign_bit() {
        assert_eq!(to_positive(-1), i32::MAX);
        assert_eq!(to_positive(i32::MIN), 0);
        assert_eq!(to_positive(5), 5);
    }

    proptest! {
        #[test]
        fn key_partition_in_range(key in proptest::collection::vec(any::<u8>(), 0..64), n in 1i32..10_000) {
            let p = key_partition(&key, n);
            prop_assert!((0..n).contains(&p));
            let d = DefaultPartitioner::new();
            prop_assert_eq!(d.partition("t", Some(&key), n), p);
        }
    }

    #[test]
    fn sticky_stays_until_new_batch() {
        let d = DefaultPartitioner::new();
        let first = d.partition("t", None, 8);
        for _ in 0..100 {
            assert_eq!(d.partition("t", None, 8), first);
        }
        // A batch closing on another partition changes nothing.
        d.on_new_batch("t", 8, (first + 1) % 8);
        assert_eq!(d.partition("t", None, 8), first);
        d.on_new_batch("t", 8, first);
        let second = d.partition("t", None, 8);
        assert_ne!(second, first);
        assert!((0..8).contains(&second));
        for _ in 0..100 {
            assert_eq!(d.partition("t", None, 8), second);
        }
    }

    #[test]
    fn sticky_single_partition_and_topics_independent() {
        let d = DefaultPartitioner::new();
        assert_eq!(d.partition("a", None, 1), 0);
        d.on_new_batch("a", 1, 0);
        assert_eq!(d.partition("a", None, 1), 0);
        let b = d.partition("b", None, 4);
        d.on_new_batch("a", 1, 0);
        assert_eq!(d.partition("b", None, 4), b);
        // Partition count shrinking below the sticky choice re-picks in range.
        assert!((0..2).contains(&d.partition("b", None, 2)) || b < 2);
    }

    #[test]
    fn round_robin_cycles() {
        let r = RoundRobinPartitioner::default();
        let got: Vec<i32> = (0..6).map(|_| r.partition("t", None, 3)).collect();
        assert_eq!(got, vec![0, 1, 2, 0, 1, 2]);
    }
}
