//! The partitions a consumer owns, and the commit rule over them.
//!
//! Each ownership of a partition has an *epoch*: a number never used before in this process. Work started under an
//! epoch (a record fetched, output sent, a request in flight) carries it, and its completion is ignored unless the
//! partition is still owned under that same epoch. So nothing done for a partition before a revoke — and maybe a
//! re-assign — can release offsets or touch state of the ownership that followed.
//!
//! Per owned partition an [`OffsetTracker`] counts the unfinished work of each record; the offset committed is
//! the tracker's safe offset, so a commit never passes a record that still holds work. On revoke the safe offsets
//! of the revoked partitions are committed once more; on a lost assignment (the group moved on without us) nothing
//! is committed: another member may already own the partition.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use rdkafka::{Offset, TopicPartitionList};

use crate::OffsetTracker;

static EPOCH: AtomicU64 = AtomicU64::new(1);

/// One owned partition: its epoch, its tracker, what was last committed, and the role's state `S`.
#[derive(Debug)]
pub struct Partition<S> {
    pub epoch: u64,
    pub tracker: OffsetTracker,
    committed: Option<i64>,
    /// What the fetcher last said about this partition, from librdkafka's statistics.
    pub fetch: Option<Fetch>,
    pub state: S,
}

/// A partition's fetch as librdkafka's statistics last saw it working: the broker it fetches from connected and
/// answering, the fetcher active.
#[derive(Clone, Copy, Debug)]
pub struct Fetch {
    /// The partition's high watermark in the last fetch response.
    pub high_watermark: i64,
    /// When the statistics said so.
    pub at: std::time::Instant,
}

impl Fetch {
    /// Whether the statistics are at most `max_age` old and know the high watermark.
    pub fn fresh(&self, max_age: std::time::Duration) -> bool {
        self.at.elapsed() < max_age && self.high_watermark >= 0
    }
}

/// The partitions of one topic a consumer owns now.
#[derive(Debug)]
pub struct Ownership<S> {
    topic: String,
    partitions: HashMap<i32, Partition<S>>,
}

impl<S> Ownership<S> {
    pub fn new(topic: impl Into<String>) -> Self {
        Ownership { topic: topic.into(), partitions: HashMap::new() }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Takes ownership of `partition` with a new epoch. A partition already owned keeps its ownership: under
    /// cooperative rebalancing an assignment only ever adds partitions.
    pub fn assign(&mut self, partition: i32, state: S) -> u64 {
        let owned = self.partitions.entry(partition).or_insert_with(|| Partition {
            epoch: EPOCH.fetch_add(1, Ordering::Relaxed),
            tracker: OffsetTracker::new(),
            committed: None,
            fetch: None,
            state,
        });
        owned.epoch
    }

    /// Gives up `partitions`. Returns their states and, unless the assignment was `lost`, the offsets to commit for
    /// them: each one's safe offset, committed before or not — an asynchronous commit's failure is not reported back
    /// (see [`Ownership::recommit_all`]), and this is the last word before the next owner reads.
    pub fn revoke(&mut self, partitions: &[i32], lost: bool) -> (Vec<(i32, S)>, TopicPartitionList) {
        let mut commit = TopicPartitionList::new();
        let mut states = Vec::new();
        for partition in partitions {
            let Some(owned) = self.partitions.remove(partition) else { continue };
            if let (false, Some(offset)) = (lost, owned.tracker.safe_offset()) {
                let _ = commit.add_partition_offset(&self.topic, *partition, Offset::Offset(offset));
            }
            states.push((*partition, owned.state));
        }
        (states, commit)
    }

    /// The epoch `partition` is owned under, if it is owned.
    pub fn epoch(&self, partition: i32) -> Option<u64> {
        self.partitions.get(&partition).map(|p| p.epoch)
    }

    pub fn owns(&self, partition: i32) -> bool {
        self.partitions.contains_key(&partition)
    }

    /// `partition`, only if it is still owned under `epoch`: work of an earlier ownership finds nothing.
    pub fn get_mut(&mut self, partition: i32, epoch: u64) -> Option<&mut Partition<S>> {
        self.partitions.get_mut(&partition).filter(|p| p.epoch == epoch)
    }

    /// `partition` under whatever epoch it is owned now.
    pub fn current_mut(&mut self, partition: i32) -> Option<&mut Partition<S>> {
        self.partitions.get_mut(&partition)
    }

    /// The offsets to commit now: each owned partition's safe offset, where it moved since the last commit. They
    /// are marked committed; a commit that fails is retried by [`Ownership::recommit`].
    pub fn commit_due(&mut self) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for (partition, owned) in self.partitions.iter_mut() {
            if let Some(offset) = owned.tracker.safe_offset() {
                if owned.committed != Some(offset) {
                    let _ = tpl.add_partition_offset(&self.topic, *partition, Offset::Offset(offset));
                    owned.committed = Some(offset);
                }
            }
        }
        tpl
    }

    /// Forgets which offsets were committed: the next [`Ownership::commit_due`] sends every owned partition's safe
    /// offset again, moved or not. An asynchronous commit's failure is not reported back (rust-rdkafka's `commit`
    /// sets no offset-commit callback; librdkafka only logs `COMMITFAIL`), so without this the last commit before a
    /// quiet spell, if it failed, would stay failed until the next record — Kafka's Java consumer, likewise,
    /// auto-commits its positions every interval whether they moved or not.
    pub fn recommit_all(&mut self) {
        for owned in self.partitions.values_mut() {
            owned.committed = None;
        }
    }

    /// A commit of these offsets failed: forget that they were committed, so the next [`Ownership::commit_due`]
    /// sends them again.
    pub fn recommit(&mut self, failed: &TopicPartitionList) {
        for element in failed.elements() {
            if let (Some(owned), Offset::Offset(offset)) =
                (self.partitions.get_mut(&element.partition()), element.offset())
            {
                if owned.committed == Some(offset) {
                    owned.committed = None;
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.partitions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.partitions.is_empty()
    }

    pub fn partitions(&self) -> impl Iterator<Item = i32> + '_ {
        self.partitions.keys().copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = (i32, &Partition<S>)> {
        self.partitions.iter().map(|(p, owned)| (*p, owned))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (i32, &mut Partition<S>)> {
        self.partitions.iter_mut().map(|(p, owned)| (*p, owned))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What the tests do to one partition.
    #[derive(Clone, Debug)]
    enum Op {
        /// The group assigns the partition (a no-op if owned).
        Assign,
        /// The group revokes it, cleanly or lost.
        Revoke { lost: bool },
        /// The owner reads the next record, which holds this many units of work (one per trace in it, say).
        Read(u32),
        /// One unit of the n-th (mod count) read with work left finishes — possibly long after its ownership ended,
        /// like an acknowledgement of output sent before a revoke — and is reported under the epoch it began in.
        Finish(usize),
        /// A periodic commit.
        Commit,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            1 => Just(Op::Assign),
            1 => any::<bool>().prop_map(|lost| Op::Revoke { lost }),
            4 => (0..4u32).prop_map(Op::Read),
            4 => any::<usize>().prop_map(Op::Finish),
            2 => Just(Op::Commit),
        ]
    }

    /// One read of a record by one ownership, and its work still unfinished.
    #[derive(Debug)]
    struct Read {
        offset: i64,
        epoch: u64,
        units_left: u32,
    }

    /// A record is safe once some ownership that read it finished all its work.
    fn check(tpl: &TopicPartitionList, committed: &mut i64, reads: &[Read]) -> Result<(), TestCaseError> {
        for element in tpl.elements() {
            let Offset::Offset(offset) = element.offset() else { panic!("only offsets are committed") };
            for o in reads.iter().map(|r| r.offset).filter(|o| *o < offset) {
                let finished = reads.iter().any(|r| r.offset == o && r.units_left == 0);
                prop_assert!(finished, "commit {} passes record {} whose work no ownership finished", offset, o);
            }
            prop_assert!(offset >= *committed || reads.is_empty(), "commit went back from {} to {}", committed, offset);
            *committed = offset;
        }
        Ok(())
    }

    proptest! {
        /// Against a model of the broker's committed offset and every read's work: no commit — periodic or on
        /// revoke — passes a record whose work no ownership finished; nothing is committed for a lost assignment;
        /// a completion of an earlier ownership releases nothing in a later one.
        #[test]
        fn commits_never_pass_unfinished_work(ops in prop::collection::vec(op(), 0..400)) {
            let mut ownership: Ownership<()> = Ownership::new("t");
            let mut committed: i64 = 0;
            let mut reads: Vec<Read> = Vec::new();
            // Where the current owner reads next: from the committed offset after each assignment.
            let mut next: i64 = 0;
            for op in ops {
                match op {
                    Op::Assign => {
                        if !ownership.owns(0) {
                            ownership.assign(0, ());
                            next = committed;
                        }
                    }
                    Op::Revoke { lost } => {
                        let owned = ownership.owns(0);
                        let (_, tpl) = ownership.revoke(&[0], lost);
                        if lost {
                            prop_assert_eq!(tpl.count(), 0, "a lost assignment commits nothing");
                        }
                        if owned {
                            check(&tpl, &mut committed, &reads)?;
                        }
                    }
                    Op::Read(units) => {
                        if let Some(epoch) = ownership.epoch(0) {
                            ownership.get_mut(0, epoch).expect("owned").tracker.read(next, units);
                            reads.push(Read { offset: next, epoch, units_left: units });
                            next += 1;
                        }
                    }
                    Op::Finish(n) => {
                        let open: Vec<usize> = (0..reads.len()).filter(|i| reads[*i].units_left > 0).collect();
                        if open.is_empty() { continue; }
                        let read = &mut reads[open[n % open.len()]];
                        read.units_left -= 1;
                        if let Some(owned) = ownership.get_mut(0, read.epoch) {
                            owned.tracker.release(read.offset);
                        }
                    }
                    Op::Commit => {
                        let tpl = ownership.commit_due();
                        check(&tpl, &mut committed, &reads)?;
                    }
                }
            }
        }
    }

    #[test]
    fn stale_epochs_find_nothing() {
        let mut ownership: Ownership<u8> = Ownership::new("t");
        let first = ownership.assign(3, 1);
        assert_eq!(ownership.assign(3, 2), first, "assigning an owned partition keeps its ownership");
        ownership.revoke(&[3], false);
        let second = ownership.assign(3, 3);
        assert_ne!(first, second);
        assert!(ownership.get_mut(3, first).is_none());
        assert_eq!(ownership.get_mut(3, second).map(|p| p.state), Some(3));
    }

    #[test]
    fn failed_commits_are_sent_again() {
        let mut ownership: Ownership<()> = Ownership::new("t");
        let epoch = ownership.assign(0, ());
        ownership.get_mut(0, epoch).unwrap().tracker.read(5, 0);
        let tpl = ownership.commit_due();
        assert_eq!(tpl.count(), 1);
        assert_eq!(ownership.commit_due().count(), 0, "nothing moved");
        ownership.recommit(&tpl);
        assert_eq!(ownership.commit_due().count(), 1, "the failed commit is due again");
    }

    #[test]
    fn every_safe_offset_is_due_again_after_recommit_all() {
        let mut ownership: Ownership<()> = Ownership::new("t");
        for partition in 0..3 {
            let epoch = ownership.assign(partition, ());
            ownership.get_mut(partition, epoch).unwrap().tracker.read(5, 0);
        }
        assert_eq!(ownership.commit_due().count(), 3);
        assert_eq!(ownership.commit_due().count(), 0, "nothing moved");
        ownership.recommit_all();
        assert_eq!(ownership.commit_due().count(), 3, "every partition's offset is sent again");
    }
}
