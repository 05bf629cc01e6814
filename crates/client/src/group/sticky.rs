//! Kafka's `AbstractStickyAssignor` without rack awareness: keep what members own, balance the
//! rest. Two builders, as in Kafka: a fast "constrained" one when every member subscribes to the
//! same topics, and the general one (preserve, fill, then move partitions until balanced).
//!
//! Members and partitions are visited in sorted order where Kafka iterates hash maps, so the
//! result is deterministic.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use super::assignor::Assignment;
use super::TopicPartition;

const DEFAULT_GENERATION: i32 = -1;

/// What the sticky algorithm needs of a member's subscription.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub topics: Vec<String>,
    pub owned: Vec<TopicPartition>,
    pub generation: Option<i32>,
}

/// Partition → the member it moves to while another member still owns it (only computed by the
/// constrained builder; `None` asks the caller to compute it).
pub(crate) type Transfers = BTreeMap<TopicPartition, String>;

pub(crate) fn assign(
    partitions_per_topic: &BTreeMap<String, i32>,
    members: &BTreeMap<String, Member>,
) -> (Assignment, Option<Transfers>) {
    if members.is_empty() {
        return (Assignment::new(), Some(Transfers::new()));
    }
    let owned = valid_owned_partitions(partitions_per_topic, members);
    let first: BTreeSet<&String> = members.values().next().expect("non-empty").topics.iter().collect();
    let all_equal = members.values().all(|m| m.topics.iter().collect::<BTreeSet<_>>() == first);
    if all_equal {
        let mut transfers = Transfers::new();
        let a = constrained(partitions_per_topic, owned.owned, &owned.multiply_claimed, &mut transfers);
        (a, Some(transfers))
    } else {
        (General::new(partitions_per_topic, members, owned.owned).build(owned.max_generation), None)
    }
}

struct Owned {
    owned: BTreeMap<String, Vec<TopicPartition>>,
    multiply_claimed: BTreeSet<TopicPartition>,
    max_generation: i32,
}

/// Each member's still-valid owned partitions. A partition claimed by two members of the same
/// generation is invalid for both; between generations the newer claim wins.
fn valid_owned_partitions(partitions_per_topic: &BTreeMap<String, i32>, members: &BTreeMap<String, Member>) -> Owned {
    let mut owned: BTreeMap<String, Vec<TopicPartition>> = BTreeMap::new();
    let mut multiply_claimed = BTreeSet::new();
    let mut owner_of: HashMap<TopicPartition, &str> = HashMap::new();
    let mut max_generation = DEFAULT_GENERATION;
    for (id, m) in members {
        let generation = m.generation.unwrap_or(DEFAULT_GENERATION);
        max_generation = max_generation.max(generation);
        owned.insert(id.clone(), Vec::new());
        for tp in &m.owned {
            if !partitions_per_topic.get(&tp.topic).is_some_and(|&n| tp.partition >= 0 && tp.partition < n) {
                continue;
            }
            match owner_of.get(tp).copied() {
                None => {
                    owned.get_mut(id).expect("inserted").push(tp.clone());
                    owner_of.insert(tp.clone(), id);
                }
                Some(other) => {
                    let other_generation = members[other].generation.unwrap_or(DEFAULT_GENERATION);
                    if generation == other_generation {
                        multiply_claimed.insert(tp.clone());
                        owned.get_mut(other).expect("seen").retain(|p| p != tp);
                        owner_of.insert(tp.clone(), id);
                    } else if generation > other_generation {
                        owned.get_mut(id).expect("inserted").push(tp.clone());
                        owned.get_mut(other).expect("seen").retain(|p| p != tp);
                        owner_of.insert(tp.clone(), id);
                    }
                }
            }
        }
    }
    Owned { owned, multiply_claimed, max_generation }
}

fn all_partitions_sorted(partitions_per_topic: &BTreeMap<String, i32>) -> Vec<TopicPartition> {
    partitions_per_topic.iter().flat_map(|(t, &n)| (0..n).map(move |p| TopicPartition::new(t, p))).collect()
}

/// Kafka's `ConstrainedAssignmentBuilder`: keep owned partitions up to the quota, then deal the
/// rest round robin to the members below quota.
fn constrained(
    partitions_per_topic: &BTreeMap<String, i32>,
    current: BTreeMap<String, Vec<TopicPartition>>,
    multiply_claimed: &BTreeSet<TopicPartition>,
    transfers: &mut Transfers,
) -> Assignment {
    let total: usize = partitions_per_topic.values().map(|&n| n.max(0) as usize).sum();
    let members = current.len();
    let min_quota = total / members;
    let max_quota = total.div_ceil(members);
    let expected_over_min = total % members;
    let mut over_min = 0;

    let mut assignment: Assignment = current.keys().map(|m| (m.clone(), Vec::with_capacity(max_quota))).collect();
    let mut assigned: HashSet<TopicPartition> = HashSet::new();
    let mut revoked: HashSet<TopicPartition> = HashSet::new();
    let mut under_min: Vec<String> = Vec::new();
    let mut at_min: VecDeque<String> = VecDeque::new();

    for (member, owned) in current {
        let mut owned: Vec<TopicPartition> = owned.into_iter().filter(|tp| !multiply_claimed.contains(tp)).collect();
        owned.sort_by(|a, b| (a.partition, &a.topic).cmp(&(b.partition, &b.topic)));
        let keep = if owned.len() < min_quota {
            under_min.push(member.clone());
            owned.len()
        } else if owned.len() >= max_quota && over_min < expected_over_min {
            over_min += 1;
            if over_min == expected_over_min {
                at_min.clear();
            }
            max_quota
        } else {
            if over_min < expected_over_min {
                at_min.push_back(member.clone());
            }
            min_quota
        };
        revoked.extend(owned.drain(keep..));
        assigned.extend(owned.iter().cloned());
        assignment.get_mut(&member).expect("member").extend(owned);
    }

    let unassigned: Vec<TopicPartition> =
        all_partitions_sorted(partitions_per_topic).into_iter().filter(|tp| !assigned.contains(tp)).collect();
    under_min.sort();
    at_min.make_contiguous().sort();

    // A cursor over `under_min` that wraps around, as Kafka's re-created iterator does.
    let mut cursor = 0;
    for tp in unassigned {
        let (member, from_under) = if cursor < under_min.len() {
            (under_min[cursor].clone(), true)
        } else if !under_min.is_empty() {
            cursor = 0;
            (under_min[0].clone(), true)
        } else if let Some(m) = at_min.pop_front() {
            (m, false)
        } else {
            debug_assert!(false, "no member left below quota for {tp:?}");
            break;
        };
        if revoked.contains(&tp) || multiply_claimed.contains(&tp) {
            transfers.insert(tp.clone(), member.clone());
        }
        let parts = assignment.get_mut(&member).expect("member");
        parts.push(tp);
        let count = parts.len();
        if count == min_quota {
            if from_under {
                under_min.remove(cursor);
            }
            at_min.push_back(member);
        } else {
            if from_under {
                cursor += 1;
            }
            if count == max_quota {
                over_min += 1;
            }
        }
    }
    // Kafka's verifyUnfilledMembers: members left below quota are only allowed at exactly min quota.
    debug_assert!(
        under_min.is_empty() || over_min == expected_over_min,
        "members {under_min:?} left unfilled with {over_min}/{expected_over_min} above min quota"
    );
    assignment
}

/// Kafka's `PartitionMovements`: records moves during the balancing phase so that a partition
/// moving back and forth between two members is swapped for one that already moved, which keeps
/// the result sticky.
#[derive(Default)]
struct Movements {
    by_topic: BTreeMap<String, BTreeMap<(String, String), BTreeSet<TopicPartition>>>,
    moves: HashMap<TopicPartition, (String, String)>,
}

impl Movements {
    fn remove_record(&mut self, tp: &TopicPartition) -> Option<(String, String)> {
        let pair = self.moves.remove(tp)?;
        if let Some(topic) = self.by_topic.get_mut(&tp.topic) {
            if let Some(set) = topic.get_mut(&pair) {
                set.remove(tp);
                if set.is_empty() {
                    topic.remove(&pair);
                }
            }
            if topic.is_empty() {
                self.by_topic.remove(&tp.topic);
            }
        }
        Some(pair)
    }

    fn add_record(&mut self, tp: &TopicPartition, pair: (String, String)) {
        self.moves.insert(tp.clone(), pair.clone());
        self.by_topic.entry(tp.topic.clone()).or_default().entry(pair).or_default().insert(tp.clone());
    }

    fn move_partition(&mut self, tp: &TopicPartition, old: &str, new: &str) {
        match self.remove_record(tp) {
            // Moving back to where it came from cancels the earlier move.
            Some((src, _)) if src == new => {}
            Some((src, _)) => self.add_record(tp, (src, new.to_owned())),
            None => self.add_record(tp, (old.to_owned(), new.to_owned())),
        }
    }

    fn partition_to_move(&self, tp: &TopicPartition, old: &str, new: &str) -> TopicPartition {
        let Some(topic) = self.by_topic.get(&tp.topic) else {
            return tp.clone();
        };
        let old = self.moves.get(tp).map_or(old, |(src, _)| src.as_str());
        match topic.get(&(new.to_owned(), old.to_owned())).and_then(|s| s.first()) {
            Some(other) => other.clone(),
            None => tp.clone(),
        }
    }
}

/// Kafka's `GeneralAssignmentBuilder`, for members with different subscriptions.
struct General<'a> {
    partitions_per_topic: &'a BTreeMap<String, i32>,
    members: &'a BTreeMap<String, Member>,
    topic_consumers: BTreeMap<String, Vec<String>>,
    consumer_topics: BTreeMap<String, Vec<String>>,
    current: BTreeMap<String, Vec<TopicPartition>>,
    partition_consumer: HashMap<TopicPartition, String>,
    sorted_partitions: Vec<TopicPartition>,
    /// (assigned count, member): Kafka's `sortedCurrentSubscriptions`. Updated around every change
    /// of a member's assignment.
    by_size: BTreeSet<(usize, String)>,
    movements: Movements,
    revocation_required: bool,
    total: usize,
}

impl<'a> General<'a> {
    fn new(
        partitions_per_topic: &'a BTreeMap<String, i32>,
        members: &'a BTreeMap<String, Member>,
        current: BTreeMap<String, Vec<TopicPartition>>,
    ) -> Self {
        let mut topic_consumers: BTreeMap<String, Vec<String>> =
            partitions_per_topic.keys().map(|t| (t.clone(), Vec::new())).collect();
        let mut consumer_topics = BTreeMap::new();
        for (id, m) in members {
            let mut topics = Vec::new();
            for t in &m.topics {
                if let Some(c) = topic_consumers.get_mut(t) {
                    if !topics.contains(t) {
                        topics.push(t.clone());
                        c.push(id.clone());
                    }
                }
            }
            consumer_topics.insert(id.clone(), topics);
        }
        let partition_consumer =
            current.iter().flat_map(|(c, ps)| ps.iter().map(move |tp| (tp.clone(), c.clone()))).collect();
        let mut topics: Vec<&String> = topic_consumers.keys().collect();
        topics.sort_by_key(|t| (topic_consumers[*t].len(), *t));
        let sorted_partitions = topics
            .into_iter()
            .flat_map(|t| (0..partitions_per_topic[t]).map(move |p| TopicPartition::new(t, p)))
            .collect();
        General {
            partitions_per_topic,
            members,
            topic_consumers,
            consumer_topics,
            current,
            partition_consumer,
            sorted_partitions,
            by_size: BTreeSet::new(),
            movements: Movements::default(),
            revocation_required: false,
            total: partitions_per_topic.values().map(|&n| n.max(0) as usize).sum(),
        }
    }

    fn build(mut self, max_generation: i32) -> Assignment {
        let prev = self.previous_owners(max_generation);
        let assigned = self.keep_owned_partitions();
        let unassigned: Vec<TopicPartition> =
            self.sorted_partitions.iter().filter(|tp| !assigned.contains(*tp)).cloned().collect();
        self.by_size = self.current.iter().map(|(c, ps)| (ps.len(), c.clone())).collect();
        self.balance(&prev, unassigned);
        self.current
    }

    /// Partition → (member, generation) from members of older generations: where a partition
    /// was before the latest owner got it.
    fn previous_owners(&self, max_generation: i32) -> HashMap<TopicPartition, (String, i32)> {
        let mut prev: HashMap<TopicPartition, (String, i32)> = HashMap::new();
        for (id, m) in self.members {
            let generation = match m.generation {
                Some(g) if g < max_generation => g,
                None if max_generation > DEFAULT_GENERATION => DEFAULT_GENERATION,
                _ => continue,
            };
            for tp in &m.owned {
                match prev.get(tp) {
                    Some((_, g)) if *g >= generation => {}
                    _ => {
                        prev.insert(tp.clone(), (id.clone(), generation));
                    }
                }
            }
        }
        prev
    }

    /// Drops owned partitions of topics a member no longer subscribes to; returns the rest.
    fn keep_owned_partitions(&mut self) -> HashSet<TopicPartition> {
        let mut assigned = HashSet::new();
        for (c, parts) in self.current.iter_mut() {
            let subscribed = &self.members[c].topics;
            parts.retain(|tp| {
                if !self.topic_consumers.contains_key(&tp.topic) {
                    self.partition_consumer.remove(tp);
                    false
                } else if !subscribed.contains(&tp.topic) {
                    self.revocation_required = true;
                    false
                } else {
                    assigned.insert(tp.clone());
                    true
                }
            });
        }
        assigned
    }

    fn size(&self, c: &str) -> usize {
        self.current.get(c).map_or(0, Vec::len)
    }

    fn subscribes(&self, c: &str, topic: &str) -> bool {
        self.consumer_topics.get(c).is_some_and(|ts| ts.iter().any(|t| t == topic))
    }

    fn max_assignment_size(&self, c: &str) -> usize {
        let topics = &self.consumer_topics[c];
        if topics.len() == self.partitions_per_topic.len() {
            self.total
        } else {
            topics.iter().map(|t| self.partitions_per_topic[t].max(0) as usize).sum()
        }
    }

    fn add_to(&mut self, c: &str, tp: TopicPartition) {
        self.by_size.remove(&(self.size(c), c.to_owned()));
        self.current.get_mut(c).expect("participating member").push(tp.clone());
        self.partition_consumer.insert(tp, c.to_owned());
        self.by_size.insert((self.size(c), c.to_owned()));
    }

    /// Balanced when sizes differ by at most one, or no member could take a partition from a
    /// member with at least two more.
    fn is_balanced(&self) -> bool {
        let (Some(first), Some(last)) = (self.by_size.first(), self.by_size.last()) else {
            return true;
        };
        if first.0 + 1 >= last.0 {
            return true;
        }
        let owner: HashMap<&TopicPartition, &str> =
            self.current.iter().flat_map(|(c, ps)| ps.iter().map(move |tp| (tp, c.as_str()))).collect();
        for (count, c) in &self.by_size {
            if *count == self.max_assignment_size(c) {
                continue;
            }
            let mine = &self.current[c];
            for t in &self.consumer_topics[c] {
                for p in 0..self.partitions_per_topic[t] {
                    let tp = TopicPartition::new(t, p);
                    if mine.contains(&tp) {
                        continue;
                    }
                    if let Some(other) = owner.get(&tp) {
                        if count + 1 < self.size(other) {
                            return false;
                        }
                    }
                }
            }
        }
        true
    }

    /// Sum over member pairs of the difference in assignment sizes; 0 is perfectly balanced.
    fn balance_score(assignment: &BTreeMap<String, Vec<TopicPartition>>) -> usize {
        let sizes: Vec<usize> = assignment.values().map(Vec::len).collect();
        let mut score = 0;
        for (i, a) in sizes.iter().enumerate() {
            for b in &sizes[i + 1..] {
                score += a.abs_diff(*b);
            }
        }
        score
    }

    fn can_topic_move(&self, topic: &str) -> bool {
        self.topic_consumers.get(topic).is_some_and(|c| c.len() >= 2)
    }

    fn can_consumer_move(&self, c: &str) -> bool {
        self.size(c) < self.max_assignment_size(c) || self.current[c].iter().any(|tp| self.can_topic_move(&tp.topic))
    }

    fn balance(&mut self, prev: &HashMap<TopicPartition, (String, i32)>, mut unassigned: Vec<TopicPartition>) {
        let initializing = self.by_size.last().is_none_or(|(n, _)| *n == 0);

        for tp in &unassigned {
            let target = self.by_size.iter().map(|(_, c)| c).find(|c| self.subscribes(c, &tp.topic)).cloned();
            if let Some(c) = target {
                self.add_to(&c, tp.clone());
            }
        }

        // Only partitions with two or more candidates, and members that can change, take part.
        let fixed_topics: HashSet<String> =
            self.topic_consumers.keys().filter(|t| !self.can_topic_move(t)).cloned().collect();
        self.sorted_partitions.retain(|tp| !fixed_topics.contains(&tp.topic));
        unassigned.retain(|tp| !fixed_topics.contains(&tp.topic));
        let fixed_members: Vec<String> =
            self.consumer_topics.keys().filter(|c| !self.can_consumer_move(c)).cloned().collect();
        let mut fixed = BTreeMap::new();
        for c in fixed_members {
            self.by_size.remove(&(self.size(&c), c.clone()));
            let parts = self.current.remove(&c).expect("member");
            fixed.insert(c, parts);
        }

        let before = self.current.clone();
        let before_owners = self.partition_consumer.clone();
        if !self.revocation_required {
            self.reassign_partitions(&unassigned, prev);
        }
        let sorted = std::mem::take(&mut self.sorted_partitions);
        let moved = self.reassign_partitions(&sorted, prev);
        self.sorted_partitions = sorted;
        // Moving existing assignments must pay off in balance; otherwise keep them where they were.
        if !initializing && moved && Self::balance_score(&self.current) >= Self::balance_score(&before) {
            self.current = before;
            self.partition_consumer = before_owners;
            self.by_size = self.current.iter().map(|(c, ps)| (ps.len(), c.clone())).collect();
        }
        for (c, parts) in fixed {
            self.by_size.insert((parts.len(), c.clone()));
            self.current.insert(c, parts);
        }
    }

    fn reassign_partitions(
        &mut self,
        partitions: &[TopicPartition],
        prev: &HashMap<TopicPartition, (String, i32)>,
    ) -> bool {
        let mut performed = false;
        loop {
            let mut modified = false;
            for tp in partitions {
                if self.is_balanced() {
                    break;
                }
                let Some(owner) = self.partition_consumer.get(tp).cloned() else { continue };
                // Kafka also requires the previous owner to still be a candidate for the topic
                // implicitly; checked here so a member that unsubscribed is never chosen.
                if let Some((prev_owner, _)) = prev.get(tp) {
                    if self.current.contains_key(prev_owner)
                        && self.subscribes(prev_owner, &tp.topic)
                        && self.size(&owner) > self.size(prev_owner) + 1
                    {
                        let prev_owner = prev_owner.clone();
                        self.reassign_to(tp, &prev_owner);
                        performed = true;
                        modified = true;
                        continue;
                    }
                }
                let candidates = self.topic_consumers[&tp.topic].clone();
                if candidates.iter().any(|other| self.size(&owner) > self.size(other) + 1) {
                    let target = self.by_size.iter().map(|(_, c)| c).find(|c| self.subscribes(c, &tp.topic)).cloned();
                    if let Some(target) = target {
                        self.reassign_to(tp, &target);
                        performed = true;
                        modified = true;
                    }
                }
            }
            if !modified {
                return performed;
            }
        }
    }

    fn reassign_to(&mut self, tp: &TopicPartition, new: &str) {
        let owner = self.partition_consumer[tp].clone();
        let tp = self.movements.partition_to_move(tp, &owner, new);
        let old = self.partition_consumer[&tp].clone();
        self.by_size.remove(&(self.size(&old), old.clone()));
        self.by_size.remove(&(self.size(new), new.to_owned()));
        self.movements.move_partition(&tp, &old, new);
        if let Some(parts) = self.current.get_mut(&old) {
            if let Some(i) = parts.iter().position(|p| *p == tp) {
                parts.remove(i);
            }
        }
        self.current.get_mut(new).expect("participating member").push(tp.clone());
        self.partition_consumer.insert(tp, new.to_owned());
        self.by_size.insert((self.size(new), new.to_owned()));
        self.by_size.insert((self.size(&old), old));
    }
}
