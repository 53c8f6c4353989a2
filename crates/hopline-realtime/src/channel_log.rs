//! The channel log, with no I/O: an append-only sequence of publications, each with the
//! channel's next `offset`, under an `epoch` that names this history. Every transport
//! (short poll, long poll, SSE, WebSocket) reads the same log, so every subscriber of a
//! channel sees the same publications in the same order with the same offsets.
//!
//! History is bounded by count (`history`) and age (`history_ttl`). A subscriber asks
//! *from a position* `(epoch, offset)` and gets every publication after `offset` still in
//! history; when the epoch differs or publications after its offset dropped out of
//! history, the answer says `recovered: false` rather than skipping them silently.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

/// Unix time in milliseconds (a publication's time).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A position in a channel: the history it belongs to and the last offset seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The history's name (changes when history is lost).
    pub epoch: Arc<str>,
    /// The last offset seen (0: before the first publication).
    pub offset: u64,
}

impl Position {
    /// Parse `EPOCH:OFFSET` (what `since=` and `Last-Event-ID` carry).
    pub fn parse(text: &str) -> Option<Position> {
        let (epoch, offset) = text.rsplit_once(':')?;
        if epoch.is_empty()
            || epoch.len() > 64
            || !epoch
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return None;
        }
        if offset.is_empty() || offset.len() > 20 || !offset.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(Position {
            epoch: epoch.into(),
            offset: offset.parse().ok()?,
        })
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.epoch, self.offset)
    }
}

/// Where a reader starts in a channel.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Start {
    /// From now: the next publication (no position given).
    #[default]
    Now,
    /// After a position it was given (`?since=EPOCH:OFFSET`, SSE's `Last-Event-ID`).
    After(Position),
    /// With the latest `n` publications still in history (`?last=N`, a first read).
    Latest(u64),
}

/// One publication.
#[derive(Debug)]
pub struct Event {
    /// Its offset in the channel.
    pub offset: u64,
    /// The published bytes.
    pub data: Bytes,
    /// When it was appended here (history_ttl counts from it).
    pub at: Instant,
    /// Publication time, Unix milliseconds (as the publisher's node saw it).
    pub published_ms: u64,
    /// Bytes published on the channel up to and including this one (a subscriber's lag
    /// in bytes is the difference of two of these).
    pub end_bytes: u64,
    /// The event's frames as each transport sends them, made once for every subscriber.
    pub frames: Frames,
}

/// Encodings of an event shared by all subscribers (made on first use).
#[derive(Debug, Default)]
pub struct Frames {
    /// The WebSocket text frame (uncompressed).
    pub ws: OnceLock<Bytes>,
    /// The SSE `id:`/`data:` block.
    pub sse: OnceLock<Bytes>,
    /// The same block as one HTTP/1.1 chunk (streams written straight to the socket).
    pub sse_chunk: OnceLock<Bytes>,
    /// The JSON object `{"offset":…,"data":…}` of poll answers.
    pub json: OnceLock<Bytes>,
}

/// How a channel's history is bounded.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Publications kept.
    pub history: usize,
    /// How long one is kept.
    pub ttl: Duration,
}

/// What a read from a position gives.
#[derive(Debug)]
pub struct Read {
    /// Every publication after the position was still there (no gap).
    pub recovered: bool,
    /// The publications after the position that are in history, in offset order.
    pub events: Vec<Arc<Event>>,
    /// The position to read from next: the last event's offset, or the channel's current
    /// offset when there is none.
    pub position: Position,
}

/// Why a subscriber cannot simply go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behind {
    /// Publications after its position fell out of history.
    Lost,
    /// More than its queue allows waits for it (a slow consumer).
    Queue,
}

/// An append-only channel log.
#[derive(Debug)]
pub struct ChannelLog {
    epoch: Arc<str>,
    /// The offset of the last publication (0: none yet).
    last: u64,
    history: VecDeque<Arc<Event>>,
    retention: Retention,
    total_bytes: u64,
}

/// A fresh epoch: 12 random characters of `[A-Za-z0-9]`.
pub fn new_epoch() -> Arc<str> {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let s: String = (0..12)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    s.into()
}

impl ChannelLog {
    /// An empty log with a fresh epoch.
    pub fn new(retention: Retention) -> ChannelLog {
        Self::with_epoch(new_epoch(), 0, retention)
    }

    /// A log continuing a history known elsewhere (e.g. in Redis): `epoch`, and `last`
    /// as the offset of its last publication.
    pub fn with_epoch(epoch: Arc<str>, last: u64, retention: Retention) -> ChannelLog {
        ChannelLog {
            epoch,
            last,
            history: VecDeque::new(),
            retention,
            total_bytes: 0,
        }
    }

    /// The last offset (the position's, without its epoch).
    pub fn last(&self) -> u64 {
        self.last
    }

    /// The current position (epoch and last offset).
    pub fn position(&self) -> Position {
        Position {
            epoch: self.epoch.clone(),
            offset: self.last,
        }
    }

    /// The epoch.
    pub fn epoch(&self) -> &Arc<str> {
        &self.epoch
    }

    /// Bytes published so far (the head for lag computations).
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// How history is bounded.
    pub fn retention(&self) -> Retention {
        self.retention
    }

    /// Change how history is bounded (reload); applied at the next append or trim.
    pub fn set_retention(&mut self, retention: Retention) {
        self.retention = retention;
    }

    /// Append a publication; it gets the next offset.
    pub fn publish(&mut self, data: Bytes, now: Instant, published_ms: u64) -> Arc<Event> {
        let offset = self.last + 1;
        self.append_at(offset, data, now, published_ms)
            .expect("the next offset is always accepted")
    }

    /// Append a publication whose offset was given elsewhere (a shared engine). Offsets
    /// at or below the last one are duplicates and ignored (`None`); a jump forward is
    /// accepted (the publications in between are missing here, and readers asking from
    /// before the jump are told `recovered: false`).
    pub fn append_at(
        &mut self,
        offset: u64,
        data: Bytes,
        now: Instant,
        published_ms: u64,
    ) -> Option<Arc<Event>> {
        if offset <= self.last {
            return None;
        }
        if offset > self.last + 1 {
            // a gap: what came before it is not here
            self.history.clear();
        }
        self.last = offset;
        self.total_bytes += data.len() as u64;
        let event = Arc::new(Event {
            offset,
            data,
            at: now,
            published_ms,
            end_bytes: self.total_bytes,
            frames: Frames::default(),
        });
        self.history.push_back(event.clone());
        self.trim(now);
        Some(event)
    }

    /// Drop what history no longer keeps (count and age).
    pub fn trim(&mut self, now: Instant) {
        while self.history.len() > self.retention.history {
            self.history.pop_front();
        }
        while self
            .history
            .front()
            .is_some_and(|e| now.saturating_duration_since(e.at) > self.retention.ttl)
        {
            self.history.pop_front();
        }
    }

    /// What history holds now: publications kept, the oldest one's offset (`last + 1`
    /// when none), and the newest one's publication time (Unix ms).
    pub fn kept(&mut self, now: Instant) -> (usize, u64, Option<u64>) {
        self.trim(now);
        (
            self.history.len(),
            self.first_kept(),
            self.history.back().map(|e| e.published_ms),
        )
    }

    /// The offset of the oldest publication still in history (`last + 1` when empty).
    fn first_kept(&self) -> u64 {
        self.history.front().map_or(self.last + 1, |e| e.offset)
    }

    /// The position a reader starting at `start` reads after: `None` for from now; for
    /// the latest `n`, the offset before the `n`th newest publication still in history
    /// (before the oldest kept when fewer are kept).
    pub fn resolve(&mut self, start: &Start, now: Instant) -> Option<Position> {
        match start {
            Start::Now => None,
            Start::After(p) => Some(p.clone()),
            Start::Latest(n) => {
                self.trim(now);
                Some(Position {
                    epoch: self.epoch.clone(),
                    offset: self.last.saturating_sub(*n).max(self.first_kept() - 1),
                })
            }
        }
    }

    /// Read from a position: `None` means from now (no events, recovered). At most `max`
    /// events are returned; the returned position says where to continue.
    pub fn read(&mut self, since: Option<&Position>, now: Instant, max: usize) -> Read {
        self.trim(now);
        let Some(since) = since else {
            return Read {
                recovered: true,
                events: Vec::new(),
                position: self.position(),
            };
        };
        if since.epoch != self.epoch || since.offset > self.last {
            // another history (or a position this one never had): start from now
            return Read {
                recovered: false,
                events: Vec::new(),
                position: self.position(),
            };
        }
        let recovered = since.offset + 1 >= self.first_kept();
        let events = self.after(since.offset, max);
        let position = Position {
            epoch: self.epoch.clone(),
            offset: events.last().map_or(
                if recovered {
                    since.offset
                } else {
                    self.first_kept() - 1
                },
                |e| e.offset,
            ),
        };
        Read {
            recovered,
            events,
            position,
        }
    }

    /// What a subscriber at `offset` (of this epoch) gets next, in one pass and without
    /// allocating for up to four events: `Err(Behind::Lost)` when publications after it
    /// fell out of history, `Err(Behind::Queue)` when more than `queue` bytes wait for it.
    pub fn next_batch(
        &self,
        offset: u64,
        max: usize,
        queue: u64,
        out: &mut smallvec::SmallVec<[Arc<Event>; 4]>,
    ) -> Result<(), Behind> {
        if offset >= self.last {
            return Ok(());
        }
        let first = self.first_kept();
        if offset + 1 < first {
            return Err(Behind::Lost);
        }
        if self.total_bytes - self.bytes_at(offset) > queue {
            return Err(Behind::Queue);
        }
        let skip = (offset + 1 - first) as usize;
        out.extend(self.history.iter().skip(skip).take(max).cloned());
        Ok(())
    }

    /// The events after `offset` still in history, at most `max`.
    pub fn after(&self, offset: u64, max: usize) -> Vec<Arc<Event>> {
        let first = self.first_kept();
        let skip = offset.saturating_add(1).saturating_sub(first) as usize;
        self.history.iter().skip(skip).take(max).cloned().collect()
    }

    /// The cumulative byte count at `offset` (for lag): bytes published up to it.
    pub fn bytes_at(&self, offset: u64) -> u64 {
        if offset >= self.last {
            return self.total_bytes;
        }
        let first = self.first_kept();
        if offset < first {
            // out of history: everything still kept is ahead of it
            return self
                .history
                .front()
                .map_or(self.total_bytes, |e| e.end_bytes - e.data.len() as u64);
        }
        self.history
            .get((offset - first) as usize)
            .map_or(self.total_bytes, |e| e.end_bytes)
    }

    /// Publications in history now.
    pub fn len(&self) -> usize {
        self.history.len()
    }

    /// No publication in history.
    pub fn is_empty(&self) -> bool {
        self.history.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn retention(history: usize, ttl_s: u64) -> Retention {
        Retention {
            history,
            ttl: Duration::from_secs(ttl_s),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn offsets_follow_each_other_and_reads_resume() {
        let mut log = ChannelLog::new(retention(100, 300));
        let now = Instant::now();
        let start = log.read(None, now, 100);
        assert!(start.recovered && start.events.is_empty());
        assert_eq!(start.position.offset, 0);
        for i in 1..=5u64 {
            assert_eq!(log.publish(Bytes::from(format!("e{i}")), now, 0).offset, i);
        }
        let r = log.read(Some(&start.position), now, 100);
        assert!(r.recovered);
        assert_eq!(
            r.events.iter().map(|e| e.offset).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        assert_eq!(r.position.offset, 5);
        let r = log.read(Some(&r.position), now, 100);
        assert!(r.recovered && r.events.is_empty());
        // at most `max`, then continue
        let r = log.read(Some(&start.position), now, 2);
        assert_eq!(r.position.offset, 2);
        let r = log.read(Some(&r.position), now, 100);
        assert_eq!(r.events[0].offset, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn lost_history_is_said_not_skipped() {
        let mut log = ChannelLog::new(retention(3, 300));
        let now = Instant::now();
        let zero = log.position();
        for _ in 0..10 {
            log.publish(Bytes::from_static(b"x"), now, 0);
        }
        let r = log.read(Some(&zero), now, 100);
        assert!(!r.recovered, "offsets 1..=7 fell out of history");
        assert_eq!(
            r.events.iter().map(|e| e.offset).collect::<Vec<_>>(),
            [8, 9, 10]
        );
        // another epoch (e.g. a restarted memory engine)
        let other = Position {
            epoch: "other".into(),
            offset: 4,
        };
        let r = log.read(Some(&other), now, 100);
        assert!(!r.recovered && r.events.is_empty());
        assert_eq!(r.position, log.position());
        // a position this history never had
        let future = Position {
            epoch: log.epoch().clone(),
            offset: 99,
        };
        assert!(!log.read(Some(&future), now, 100).recovered);
        // age: everything older than the ttl drops out
        let mut log = ChannelLog::new(retention(100, 60));
        let p = log.position();
        log.publish(Bytes::from_static(b"old"), now, 0);
        let later = now + Duration::from_secs(61);
        log.publish(Bytes::from_static(b"new"), later, 0);
        let r = log.read(Some(&p), later, 100);
        assert!(!r.recovered);
        assert_eq!(r.events.len(), 1);
        assert_eq!(&r.events[0].data[..], b"new");
    }

    #[tokio::test(start_paused = true)]
    async fn shared_offsets_skip_duplicates_and_flag_gaps() {
        let mut log = ChannelLog::with_epoch("e".into(), 0, retention(100, 300));
        let now = Instant::now();
        let p0 = log.position();
        assert!(log.append_at(1, Bytes::from_static(b"a"), now, 0).is_some());
        assert!(log.append_at(1, Bytes::from_static(b"a"), now, 0).is_none());
        assert!(log.append_at(4, Bytes::from_static(b"d"), now, 0).is_some());
        let r = log.read(Some(&p0), now, 100);
        assert!(!r.recovered, "2 and 3 never arrived here");
        let p3 = Position {
            epoch: "e".into(),
            offset: 3,
        };
        let r = log.read(Some(&p3), now, 100);
        assert!(r.recovered);
        assert_eq!(r.events[0].offset, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn the_latest_n_are_what_history_still_holds() {
        let mut log = ChannelLog::new(retention(5, 60));
        let now = Instant::now();
        // nothing published: the latest n is nothing, from the current position
        let p = log.resolve(&Start::Latest(3), now).unwrap();
        assert_eq!(p, log.position());
        assert!(log.read(Some(&p), now, 100).events.is_empty());
        for _ in 0..8 {
            log.publish(Bytes::from_static(b"x"), now, 0);
        }
        let latest = |log: &mut ChannelLog, n: u64, now: Instant| {
            let p = log.resolve(&Start::Latest(n), now).unwrap();
            let r = log.read(Some(&p), now, 100);
            assert!(r.recovered, "the latest {n} are all there");
            assert_eq!(r.position.offset, log.position().offset);
            r.events.iter().map(|e| e.offset).collect::<Vec<_>>()
        };
        assert_eq!(latest(&mut log, 1, now), [8]);
        assert_eq!(latest(&mut log, 3, now), [6, 7, 8]);
        // more than history keeps: what it keeps (4..=8 of 8), still recovered
        assert_eq!(latest(&mut log, 7, now), [4, 5, 6, 7, 8]);
        // aged out: only the young one
        let later = now + Duration::from_secs(61);
        log.publish(Bytes::from_static(b"young"), later, 0);
        assert_eq!(latest(&mut log, 3, later), [9]);
        // the other starts
        assert_eq!(log.resolve(&Start::Now, later), None);
        let p = Position {
            epoch: "e".into(),
            offset: 2,
        };
        assert_eq!(log.resolve(&Start::After(p.clone()), later), Some(p));
    }

    #[test]
    fn positions_parse_strictly() {
        assert_eq!(
            Position::parse("abc:12"),
            Some(Position {
                epoch: "abc".into(),
                offset: 12
            })
        );
        for bad in [
            "",
            ":",
            "abc",
            "abc:",
            ":5",
            "a b:1",
            "abc:-1",
            "abc:1x",
            "abc:99999999999999999999",
        ] {
            assert_eq!(Position::parse(bad), None, "{bad:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn lag_in_bytes() {
        let mut log = ChannelLog::new(retention(100, 300));
        let now = Instant::now();
        for _ in 0..4 {
            log.publish(Bytes::from_static(b"0123456789"), now, 0);
        }
        assert_eq!(log.total_bytes(), 40);
        assert_eq!(log.bytes_at(0), 0);
        assert_eq!(log.bytes_at(1), 10);
        assert_eq!(log.bytes_at(4), 40);
    }

    proptest! {
        /// Any interleaving of publications and reads: a reader that follows the
        /// positions it is given sees every offset exactly once, in order, as long as it
        /// keeps up with history; when it does not, it is told so.
        #[test]
        fn readers_see_every_offset_once_in_order(
            ops in proptest::collection::vec((0u8..3, 1usize..6), 1..200),
            history in 1usize..20,
        ) {
            let mut log = ChannelLog::new(Retention { history, ttl: Duration::from_secs(3600) });
            let now = Instant::now();
            let mut pos = log.read(None, now, usize::MAX).position;
            let mut seen: Vec<u64> = Vec::new();
            let mut gaps = 0;
            for (op, n) in ops {
                if op < 2 {
                    for _ in 0..n {
                        log.publish(Bytes::from_static(b"x"), now, 0);
                    }
                } else {
                    let r = log.read(Some(&pos), now, n);
                    if !r.recovered {
                        gaps += 1;
                    }
                    for e in &r.events {
                        prop_assert!(seen.last().is_none_or(|l| e.offset > *l));
                        seen.push(e.offset);
                    }
                    pos = r.position;
                }
            }
            let r = log.read(Some(&pos), now, usize::MAX);
            if !r.recovered { gaps += 1; }
            seen.extend(r.events.iter().map(|e| e.offset));
            let last = log.position().offset;
            if gaps == 0 {
                prop_assert_eq!(seen, (1..=last).collect::<Vec<_>>());
            } else {
                prop_assert!(seen.windows(2).all(|w| w[0] < w[1]));
                prop_assert_eq!(seen.last().copied().unwrap_or(0), last);
            }
        }
    }
}
