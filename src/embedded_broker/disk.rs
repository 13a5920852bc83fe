//! The embedded broker's size bound, `embedded_broker.retention_bytes`: Tansu deletes records by age only, so when
//! its database holds more than the bound, every topic's `retention.ms` is set to a share of the age of the oldest
//! record held (the share the bound is of what is held, less what arrives between two of Tansu's deletions) — the
//! oldest records go first, at Tansu's next maintenance — and lengthened again, up to what each topic was created
//! with, once the database is well under it. SQLite reuses the pages of deleted records, so the file stops growing
//! at about the bound (plus what arrives between two checks).
//!
//! * The sampler's decisions topic, and compacted topics, are left alone: they hold state, not traffic (a
//!   decision tick's decisions in a record or a few), and their own retention is what their readers need — the
//!   decision lookback, which a shortened retention would cut into.
//! * What each topic was created with is kept in `retention-by-topic` beside the database, so that a restart while
//!   topics are shortened does not take the shortened value for the topic's own.
//! * A retention that could not be set is tried again at the next check (and logged), never forgotten.
//!
//! What the database holds is read from its header (page size, page count, free pages), with no connection of
//! our own to Tansu's database: in WAL mode the header lags by what is not yet checkpointed (about 4 MiB of
//! writes), and the WAL file itself is not counted.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::admin::{Admin, RETENTION_MS};

/// Bytes of the database in use: its pages less its free pages, from the header
/// (<https://www.sqlite.org/fileformat.html#the_database_header>).
pub(super) fn used_bytes(db: &Path) -> std::io::Result<u64> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(db)?;
    let length = file.metadata()?.len();
    let mut header = [0u8; 100];
    file.read_exact(&mut header)?;
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65_536,
        size => u64::from(size),
    };
    let word = |at: usize| u64::from(u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]));
    // The page count in the header is valid only while its version number matches the change counter.
    let pages = match word(28) {
        pages if pages > 0 && word(24) == word(92) => pages,
        _ => length / page_size.max(1),
    };
    Ok(pages.saturating_sub(word(36)) * page_size)
}

/// The retention in force for all topics, between a floor and what the config says.
#[derive(Debug)]
pub(super) struct Bound {
    limit: u64,
    configured: Duration,
    /// How long records may outlive their retention: until Tansu's next maintenance.
    lag: Duration,
    effective: Duration,
}

impl Bound {
    pub(super) fn new(limit: u64, configured: Duration, lag: Duration) -> Bound {
        Bound { limit, configured, lag, effective: configured }
    }

    /// Never shorter than a hundredth of the configured retention (nor than a second): past that, what arrives is
    /// more than the bound can hold, and the disk grows rather than data be deleted as soon as it arrives.
    fn floor(&self) -> Duration {
        (self.configured / 100).max(Duration::from_secs(1))
    }

    /// The retention to set after measuring `used` bytes held over `held` (the age of the oldest record, if
    /// known), if it changes: over the bound, what is held is cut to 80% of the bound assuming steady traffic,
    /// less what arrives before Tansu deletes (never lengthened while over); under 60% of it, lengthened by half,
    /// up to the configured retention.
    pub(super) fn next(&mut self, used: u64, held: Option<Duration>) -> Option<Duration> {
        let next = if used > self.limit {
            let share = self.limit as f64 * 0.8 / used as f64;
            let cut = held.unwrap_or(self.effective).mul_f64(share).saturating_sub(self.lag);
            cut.min(self.effective).max(self.floor())
        } else if (used as f64) < self.limit as f64 * 0.6 {
            self.effective.mul_f64(1.5).min(self.configured)
        } else {
            self.effective
        };
        let next = Duration::from_millis(next.as_millis() as u64);
        (next != self.effective).then(|| {
            self.effective = next;
            next
        })
    }
}

/// Each topic's own retention (ms), `None` for a topic left alone, kept in a file beside the database.
struct Own {
    path: PathBuf,
    topics: BTreeMap<String, Option<u64>>,
}

impl Own {
    fn load(path: PathBuf) -> Own {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let topics = text
            .lines()
            .filter_map(|line| line.rsplit_once(' '))
            .map(|(topic, ms)| (topic.to_owned(), ms.parse().ok()))
            .collect();
        Own { path, topics }
    }

    fn save(&self) {
        let text: String = self
            .topics
            .iter()
            .map(|(topic, ms)| format!("{topic} {}\n", ms.map_or("-".to_owned(), |ms| ms.to_string())))
            .collect();
        if let Err(error) = std::fs::write(&self.path, text) {
            tracing::warn!(%error, path = %self.path.display(), "cannot record the topics' own retention");
        }
    }
}

/// Checks the database every `every` and keeps every topic's `retention.ms` at what the bound allows. Runs for as
/// long as the broker does.
pub(super) async fn keep_within(
    db: PathBuf,
    broker: SocketAddr,
    mut bound: Bound,
    every: Duration,
    own_retention: Vec<String>,
) {
    let mut own = Own::load(db.with_file_name("retention-by-topic"));
    // What was last set on each topic: set again whenever it differs from what the bound allows.
    let mut applied: HashMap<String, u64> = HashMap::new();
    // The first check one interval after the start: the broker is not listening yet when this begins.
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut warned_floor, mut failing) = (false, false);
    loop {
        interval.tick().await;
        let check = check(&db, broker, &mut bound, &mut own, &own_retention, &mut applied, &mut warned_floor);
        match tokio::time::timeout(Duration::from_secs(30), check).await {
            Ok(Ok(())) => failing = false,
            Ok(Err(error)) if !failing => {
                failing = true;
                tracing::warn!(%error, "cannot apply the embedded broker's size bound (embedded_broker.retention_bytes); trying again");
            }
            Err(_) if !failing => {
                failing = true;
                tracing::warn!("the embedded broker did not answer the size bound's requests within 30s; trying again");
            }
            _ => {}
        }
    }
}

async fn check(
    db: &Path,
    broker: SocketAddr,
    bound: &mut Bound,
    own: &mut Own,
    own_retention: &[String],
    applied: &mut HashMap<String, u64>,
    warned_floor: &mut bool,
) -> Result<(), String> {
    let mut admin = Admin::connect(broker).await?;
    // New topics: what they were created with, once.
    let mut learned = false;
    for topic in admin.topics().await? {
        if own.topics.contains_key(&topic) {
            continue;
        }
        let config = admin.topic_config(&topic).await?;
        let left_alone = own_retention.contains(&topic)
            || config.get("cleanup.policy").is_some_and(|policy| policy.contains("compact"));
        // A topic without retention.ms keeps its records for Tansu's default, a week.
        let retention = config.get(RETENTION_MS).and_then(|ms| ms.parse().ok()).unwrap_or(7 * 24 * 3_600_000);
        own.topics.insert(topic, (!left_alone).then_some(retention));
        learned = true;
    }
    if learned {
        own.save();
    }
    let managed: Vec<(&String, u64)> = own.topics.iter().filter_map(|(topic, ms)| Some((topic, (*ms)?))).collect();

    let used = used_bytes(db).map_err(|e| format!("reading {}: {e}", db.display()))?;
    let held = if used > bound.limit {
        oldest_record_age(broker, managed.iter().map(|(topic, _)| (*topic).clone()).collect()).await
    } else {
        None
    };
    if let Some(retention) = bound.next(used, held) {
        tracing::warn!(
            used_bytes = used,
            retention_bytes = bound.limit,
            ?retention,
            "the embedded broker's data is {} its size bound (embedded_broker.retention_bytes): \
             records are kept for {retention:?}",
            if used > bound.limit { "over" } else { "well under" }
        );
    }
    if used > bound.limit && bound.effective == bound.floor() && !*warned_floor {
        *warned_floor = true;
        tracing::warn!(
            used_bytes = used,
            "the embedded broker's data is over embedded_broker.retention_bytes with records kept only {:?}: \
             the pipeline's traffic is more than the bound holds; raise it, or move to Kafka",
            bound.effective
        );
    }
    let effective = bound.effective.as_millis() as u64;
    for (topic, topic_own) in managed {
        let target = effective.min(topic_own);
        // Set once at start (the topic may hold a value from before a restart), then on every change.
        if applied.get(topic) != Some(&target) {
            admin.set_retention_ms(topic, target).await?;
            applied.insert(topic.clone(), target);
        }
    }
    Ok(())
}

/// How old the oldest record of `topics` is: the first record of each of their partitions that holds any, read
/// with a consumer of no group.
async fn oldest_record_age(broker: SocketAddr, topics: Vec<String>) -> Option<Duration> {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use rdkafka::Message as _;
    let read = move || -> Option<Duration> {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", broker.to_string())
            .set("group.id", "tailgate-embedded-broker-size-bound")
            .set("enable.auto.commit", "false")
            .set("max.partition.fetch.bytes", "1024")
            .set("log_level", "3")
            .create()
            .ok()?;
        let metadata = consumer.fetch_metadata(None, Duration::from_secs(5)).ok()?;
        let mut partitions = rdkafka::TopicPartitionList::new();
        for topic in metadata.topics().iter().filter(|topic| topics.iter().any(|t| t == topic.name())) {
            for partition in topic.partitions() {
                let (low, high) =
                    consumer.fetch_watermarks(topic.name(), partition.id(), Duration::from_secs(5)).ok()?;
                if high > low {
                    partitions.add_partition_offset(topic.name(), partition.id(), rdkafka::Offset::Offset(low)).ok()?;
                }
            }
        }
        let mut waiting = partitions.count();
        consumer.assign(&partitions).ok()?;
        let mut oldest: Option<i64> = None;
        let mut seen = std::collections::HashSet::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while waiting > 0 && std::time::Instant::now() < deadline {
            let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) else { continue };
            if seen.insert((message.topic().to_owned(), message.partition())) {
                waiting -= 1;
                if let Some(at) = message.timestamp().to_millis() {
                    oldest = Some(oldest.map_or(at, |oldest| oldest.min(at)));
                }
            }
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as i64;
        oldest.map(|at| Duration::from_millis(now.saturating_sub(at).max(0) as u64))
    };
    tokio::task::spawn_blocking(read).await.ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn over_the_bound_retention_shrinks_in_proportion_and_grows_back_to_the_configured() {
        let day = Duration::from_secs(24 * 3600);
        let minute = Duration::from_secs(60);
        let mut bound = Bound::new(100 * MIB, day, minute);
        assert_eq!(bound.next(50 * MIB, None), None, "under the bound at the configured retention");
        // Twice the bound over a day: to 80% of it, less the minute records outlive their retention.
        assert_eq!(bound.next(200 * MIB, Some(day)), Some(day.mul_f64(0.4) - minute));
        // Records older than the retention not deleted yet: never lengthened while over.
        assert_eq!(bound.next(110 * MIB, Some(day * 2)), None);
        assert_eq!(bound.next(70 * MIB, None), None, "between 60% and 100%: kept");
        let step = |d: Duration| Duration::from_millis(d.mul_f64(1.5).as_millis() as u64);
        let lengthened = step(day.mul_f64(0.4) - minute);
        assert_eq!(bound.next(50 * MIB, None), Some(lengthened));
        assert_eq!(bound.next(10 * MIB, None), Some(step(lengthened)));
        assert_eq!(bound.next(10 * MIB, None), Some(day), "never past the configured retention");
        assert_eq!(bound.next(10 * MIB, None), None);
        // A young database (its oldest record 2 hours old) twice over: what is held is halved, and a bit more.
        let hour = Duration::from_secs(3600);
        assert_eq!(bound.next(200 * MIB, Some(hour * 2)), Some(hour.mul_f64(0.8) - minute));
        // Far over: never below a hundredth of the configured retention.
        assert_eq!(bound.next(100_000 * MIB, Some(day)), Some(day / 100));
        assert_eq!(bound.next(100_000 * MIB, Some(day)), None);
    }

    #[test]
    fn the_used_size_is_read_from_the_sqlite_header() {
        let dir = std::env::temp_dir().join(format!("tailgate-sqlite-header-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("tansu.db");
        // A 4 KiB-page database of 10 pages, 3 of them free, its page count valid (version = change counter).
        let mut header = vec![0u8; 10 * 4096];
        header[16..18].copy_from_slice(&4096u16.to_be_bytes());
        header[24..28].copy_from_slice(&7u32.to_be_bytes());
        header[28..32].copy_from_slice(&10u32.to_be_bytes());
        header[36..40].copy_from_slice(&3u32.to_be_bytes());
        header[92..96].copy_from_slice(&7u32.to_be_bytes());
        std::fs::write(&db, &header).unwrap();
        assert_eq!(used_bytes(&db).unwrap(), 7 * 4096);
        // A stale page count: the file's length says how many pages there are.
        header[92..96].copy_from_slice(&6u32.to_be_bytes());
        header.resize(12 * 4096, 0);
        std::fs::write(&db, &header).unwrap();
        assert_eq!(used_bytes(&db).unwrap(), 9 * 4096);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
