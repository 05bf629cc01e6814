//! Replica placement: Kafka's `StripedReplicaPlacer`. Replicas go round-robin over racks
//! (sorted by name, a random starting rack, advancing by one per partition) and, within a
//! rack, round-robin over its brokers, unfenced before fenced. The first replica (the
//! preferred leader) is always unfenced. Once every unfenced broker has led one partition of
//! the round, racks and brokers are shuffled so that the next round differs.

use std::collections::BTreeMap;

use tern_metadata::BrokerId;

use crate::rng::Rng;

/// A broker that may hold new replicas: registered and not in controlled shutdown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsableBroker {
    pub id: BrokerId,
    pub rack: Option<String>,
    pub fenced: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("invalid replication factor {0}: the replication factor must be positive")]
    NonPositive(i32),
    #[error("the target replication factor of {wanted} cannot be reached because only {registered} broker(s) are registered")]
    TooFewBrokers { wanted: i32, registered: usize },
    #[error("all brokers are currently fenced")]
    AllFenced,
}

#[derive(Debug, Default)]
struct BrokerList {
    brokers: Vec<BrokerId>,
    index: usize,
    offset: usize,
    epoch: u64,
}

impl BrokerList {
    fn initialize(&mut self, rng: &mut Rng) {
        if !self.brokers.is_empty() {
            self.brokers.sort_unstable();
            self.offset = rng.below(self.brokers.len());
        }
    }

    fn next(&mut self, epoch: u64) -> Option<BrokerId> {
        if self.brokers.is_empty() {
            return None;
        }
        if self.epoch != epoch {
            self.epoch = epoch;
            self.index = 0;
            self.offset = (self.offset + 1) % self.brokers.len();
        }
        if self.index >= self.brokers.len() {
            return None;
        }
        let broker = self.brokers[(self.index + self.offset) % self.brokers.len()];
        self.index += 1;
        Some(broker)
    }
}

#[derive(Debug, Default)]
struct Rack {
    unfenced: BrokerList,
    fenced: BrokerList,
}

impl Rack {
    fn next(&mut self, epoch: u64) -> Option<BrokerId> {
        self.unfenced.next(epoch).or_else(|| self.fenced.next(epoch))
    }
}

/// Places the replicas of one or more partitions. Kafka keeps one placer per request; so
/// does the controller, with its own seeded random source.
pub struct Placer<'r> {
    rng: &'r mut Rng,
    racks: Vec<Rack>,
    total: usize,
    unfenced: usize,
    epoch: u64,
    offset: usize,
}

impl<'r> Placer<'r> {
    pub fn new(rng: &'r mut Rng, brokers: impl IntoIterator<Item = UsableBroker>) -> Self {
        let mut by_rack: BTreeMap<Option<String>, Rack> = BTreeMap::new();
        let (mut total, mut unfenced) = (0, 0);
        for b in brokers {
            let rack = by_rack.entry(b.rack).or_default();
            if b.fenced {
                rack.fenced.brokers.push(b.id);
            } else {
                rack.unfenced.brokers.push(b.id);
                unfenced += 1;
            }
            total += 1;
        }
        // Sorted by name with no rack first, as Kafka's OptionalStringComparator sorts.
        let mut racks: Vec<Rack> = by_rack.into_values().collect();
        for rack in &mut racks {
            rack.unfenced.initialize(rng);
            rack.fenced.initialize(rng);
        }
        let offset = if racks.is_empty() { 0 } else { rng.below(racks.len()) };
        Placer { rng, racks, total, unfenced, epoch: 0, offset }
    }

    /// Checks a replication factor before placing anything.
    pub fn check(&self, replication_factor: i32) -> Result<(), PlacementError> {
        if replication_factor <= 0 {
            return Err(PlacementError::NonPositive(replication_factor));
        }
        if replication_factor as usize > self.total {
            return Err(PlacementError::TooFewBrokers { wanted: replication_factor, registered: self.total });
        }
        if self.unfenced == 0 {
            return Err(PlacementError::AllFenced);
        }
        Ok(())
    }

    /// The replicas of the next partition, preferred leader first.
    pub fn place(&mut self, replication_factor: i32) -> Result<Vec<BrokerId>, PlacementError> {
        self.check(replication_factor)?;
        // A single unfenced broker never starts a new round, or the loop below never ends.
        if self.epoch as usize == self.unfenced && self.unfenced > 1 {
            self.shuffle();
            self.epoch = 0;
        }
        if self.offset == self.racks.len() {
            self.offset = 0;
        }
        let n = self.racks.len();
        let mut replicas = Vec::with_capacity(replication_factor as usize);
        let mut first_rack = self.offset;
        loop {
            if let Some(b) = self.racks[first_rack].unfenced.next(self.epoch) {
                replicas.push(b);
                break;
            }
            first_rack = (first_rack + 1) % n;
        }
        let mut first_rack = Some(first_rack);
        let mut rack = self.offset;
        for _ in 1..replication_factor {
            loop {
                let found = if first_rack == Some(rack) {
                    first_rack = None;
                    None
                } else {
                    self.racks[rack].next(self.epoch)
                };
                rack = (rack + 1) % n;
                if let Some(b) = found {
                    replicas.push(b);
                    break;
                }
            }
        }
        self.epoch += 1;
        self.offset += 1;
        Ok(replicas)
    }

    fn shuffle(&mut self) {
        self.rng.shuffle(&mut self.racks);
        for rack in &mut self.racks {
            self.rng.shuffle(&mut rack.unfenced.brokers);
            self.rng.shuffle(&mut rack.fenced.brokers);
        }
    }
}
