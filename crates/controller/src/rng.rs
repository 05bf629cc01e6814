//! A seeded random source (SplitMix64), so that the controller stays deterministic: placement
//! and topic ids are a function of the seed and the requests.

use tern_metadata::Uuid;

#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }

    /// A version-4 UUID that Kafka would accept as a topic id: not zero, not the metadata
    /// topic's id (1), and not one whose base64 form starts with '-' (Kafka's `randomUuid`).
    pub fn topic_id(&mut self) -> Uuid {
        loop {
            let id = uuid_v4(self.next_u64(), self.next_u64());
            let bytes = id.as_bytes();
            if id.as_u128() > 1 && bytes[0] >> 2 != 62 {
                return id;
            }
        }
    }
}

fn uuid_v4(hi: u64, lo: u64) -> Uuid {
    let hi = (hi & !0xF000) | 0x4000;
    let lo = (lo & !(0xC000_u64 << 48)) | (0x8000_u64 << 48);
    Uuid::from_u64_pair(hi, lo)
}
