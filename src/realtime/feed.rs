//! The messages of one live query, kept for the sockets that read them.
//!
//! The hub appends each message once; every subscriber (a WebSocket or an
//! event stream) reads them at its own pace from a shared log, by position.
//! A subscriber that falls more than its queue bound behind, or behind what
//! the log still holds, skips to the newest message and gets one `overflow`
//! instead: one slow socket never makes the hub wait or hold more. The log
//! keeps at least the last `KEEP_MESSAGES` messages or `KEEP_FOR`, so that a
//! client that reconnects with `since` gets what it missed instead of a
//! snapshot.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::frames;

/// A message's text, shared by every subscriber that sends it (a WebSocket
/// sends it without copying).
pub type Text = axum::extract::ws::Utf8Bytes;

/// Messages the log keeps at least.
const KEEP_MESSAGES: usize = 1024;
/// How long the log keeps messages at least.
const KEEP_FOR: Duration = Duration::from_secs(60);
/// Bytes the log holds at most beyond that (oldest go first).
const MAX_LOG_BYTES: u64 = 64 << 20;

/// What subscribers of this registration get besides deltas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Rows that entered and left; a snapshot first.
    Delta,
    /// Only that the result changed; no snapshot.
    Notify,
}

/// The whole result as of `seq`, its frame made when first asked for.
pub struct Snapshot {
    pub seq: i64,
    pub rows: Vec<Arc<str>>,
    frame: OnceLock<Text>,
}

impl Snapshot {
    pub fn new(seq: i64, rows: Vec<Arc<str>>) -> Self {
        Self {
            seq,
            rows,
            frame: OnceLock::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Carries a seq: a delta, an overflow or an invalidation.
    Numbered(i64),
    /// The query_id was registered again; sockets of older generations
    /// get this and close.
    Resubscribed,
}

struct Entry {
    kind: Kind,
    generation: i64,
    at: Instant,
    /// Bytes of all entries up to and including this one.
    end: u64,
    frame: Text,
}

struct State {
    generation: i64,
    mode: Mode,
    /// The seq of the newest message of any generation.
    seq: i64,
    /// `None` while the result is not known (mode notify, or the query
    /// fails).
    snapshot: Option<Arc<Snapshot>>,
    /// Why the result is not known, for those who ask for it.
    broken: Option<String>,
    entries: VecDeque<Entry>,
    /// Position of `entries[0]`.
    first: u64,
    /// Bytes of all entries ever appended.
    end: u64,
    /// Set when the query is unsubscribed or its database goes away.
    closed: Option<&'static str>,
}

/// One live query's log.
pub struct Feed {
    query_id: String,
    /// Subscribers reading it now.
    subscribers: AtomicUsize,
    state: Mutex<State>,
    /// The position after the newest entry.
    head: watch::Sender<u64>,
}

/// Why a subscriber cannot join now.
#[derive(Debug)]
pub enum NotReady {
    /// The result could not be computed; the reason is the engine's.
    Broken(String),
    /// The result was not computed yet.
    Pending,
}

/// A subscriber's read position.
pub struct Subscriber {
    feed: Arc<Feed>,
    generation: i64,
    position: u64,
    /// Bytes of all entries before `position`.
    read_end: u64,
    head: watch::Receiver<u64>,
    queue_bound: u64,
    /// Its generation is over: it closes after what it sent.
    over: bool,
}

/// A message's text, with its seq when it has one (for an event stream's
/// `id:`).
pub type Frame = (Text, Option<i64>);

/// What a subscriber sends next.
pub enum Next {
    /// A message, with its seq when it has one (for an event stream's
    /// `id:`).
    Frame(Text, Option<i64>),
    /// The socket is to close, for this reason.
    Close(&'static str),
}

impl Feed {
    pub fn new(query_id: String, generation: i64, mode: Mode, seq: i64) -> Arc<Self> {
        Arc::new(Self {
            query_id,
            subscribers: AtomicUsize::new(0),
            state: Mutex::new(State {
                generation,
                mode,
                seq,
                snapshot: None,
                broken: None,
                entries: VecDeque::new(),
                first: 0,
                end: 0,
                closed: None,
            }),
            head: watch::Sender::new(0),
        })
    }

    pub fn query_id(&self) -> &str {
        &self.query_id
    }

    /// Subscribers reading it now.
    pub fn subscribers(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }

    /// The current registration's generation and mode.
    pub fn registration(&self) -> (i64, Mode) {
        let state = self.lock();
        (state.generation, state.mode)
    }

    /// A new registration of the query_id: sockets of the old one get
    /// `resubscribed` and close.
    pub fn reregister(&self, generation: i64, mode: Mode, seq: i64) {
        let mut state = self.lock();
        if generation == state.generation {
            return;
        }
        let frame = frames::resubscribed(&self.query_id, generation);
        let old = state.generation;
        state.generation = generation;
        state.mode = mode;
        state.seq = state.seq.max(seq);
        state.snapshot = None;
        state.broken = None;
        self.append(&mut state, Kind::Resubscribed, old, frame);
    }

    /// Records the result as of the newest message, without a message
    /// (the first computation, or the query works again).
    pub fn set_snapshot(&self, rows: Option<Vec<Arc<str>>>, broken: Option<String>) {
        let mut state = self.lock();
        state.snapshot = rows.map(|rows| Arc::new(Snapshot::new(state.seq, rows)));
        state.broken = broken;
    }

    /// Appends a message of the current registration that took `seq`, with
    /// the result after it (`None`: not known, as after an invalidation of
    /// mode notify, or one that says the query fails).
    pub fn publish(
        &self,
        seq: i64,
        frame: String,
        rows: Option<Vec<Arc<str>>>,
        broken: Option<String>,
    ) {
        let mut state = self.lock();
        state.seq = state.seq.max(seq);
        state.snapshot = rows.map(|rows| Arc::new(Snapshot::new(seq, rows)));
        state.broken = broken;
        let generation = state.generation;
        self.append(&mut state, Kind::Numbered(seq), generation, frame);
    }

    /// Ends every subscriber: the query was unsubscribed or its database
    /// went away.
    pub fn close(&self, reason: &'static str) {
        self.lock().closed = Some(reason);
        self.head.send_modify(|_| {});
    }

    fn append(&self, state: &mut State, kind: Kind, generation: i64, frame: String) {
        state.end += frame.len() as u64;
        state.entries.push_back(Entry {
            kind,
            generation,
            at: Instant::now(),
            end: state.end,
            frame: Text::from(frame),
        });
        let now = Instant::now();
        while let Some(oldest) = state.entries.front() {
            let held = state.end - (oldest.end - oldest.frame.len() as u64);
            let old = state.entries.len() > KEEP_MESSAGES && now - oldest.at > KEEP_FOR;
            if !(old || held > MAX_LOG_BYTES && state.entries.len() > 1) {
                break;
            }
            state.entries.pop_front();
            state.first += 1;
        }
        let head = state.first + state.entries.len() as u64;
        self.head.send_replace(head);
    }

    /// Joins the feed: the frames to send first (`subscribed`, then the
    /// snapshot unless the messages after `since` can be replayed or the
    /// mode is notify), and the subscriber that reads on from there.
    pub fn join(
        self: &Arc<Self>,
        since: Option<(i64, i64)>,
        queue_bound: u64,
    ) -> Result<(Vec<Frame>, Subscriber), NotReady> {
        let (first_frames, position, read_end, generation) = {
            let state = self.lock();
            let head = state.first + state.entries.len() as u64;
            let mut first_frames: Vec<Frame> = vec![(
                Text::from(frames::subscribed(&self.query_id, state.generation)),
                None,
            )];
            let replay = since
                .filter(|(_, generation)| *generation == state.generation)
                .and_then(|(seq, _)| replay_from(&state, seq));
            let (position, read_end) = match replay {
                Some(found) => found,
                None => {
                    if state.mode == Mode::Delta {
                        match &state.snapshot {
                            Some(snapshot) => {
                                let snapshot = snapshot.clone();
                                let frame = snapshot
                                    .frame
                                    .get_or_init(|| {
                                        Text::from(frames::snapshot(
                                            &self.query_id,
                                            snapshot.seq,
                                            state.generation,
                                            &snapshot.rows,
                                        ))
                                    })
                                    .clone();
                                first_frames.push((frame, Some(snapshot.seq)));
                            }
                            None => {
                                return Err(match &state.broken {
                                    Some(reason) => NotReady::Broken(reason.clone()),
                                    None => NotReady::Pending,
                                });
                            }
                        }
                    }
                    (head, state.end)
                }
            };
            (first_frames, position, read_end, state.generation)
        };
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        Ok((
            first_frames,
            Subscriber {
                feed: self.clone(),
                generation,
                position,
                read_end,
                head: self.head.subscribe(),
                queue_bound,
                over: false,
            },
        ))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Where a subscriber that has seen every message up to `seq` reads on,
/// when the log still holds everything after it.
fn replay_from(state: &State, seq: i64) -> Option<(u64, u64)> {
    let head = state.first + state.entries.len() as u64;
    if seq == state.seq {
        return Some((head, state.end));
    }
    if seq > state.seq {
        return None;
    }
    let index = state.entries.iter().position(|entry| {
        matches!(entry.kind, Kind::Numbered(n) if n > seq) && entry.generation == state.generation
    })?;
    // Nothing between seq and the first one found may be missing.
    let Kind::Numbered(found) = state.entries[index].kind else {
        return None;
    };
    let before = index
        .checked_sub(1)
        .map(|i| state.entries[i].end)
        .unwrap_or(state.entries[index].end - state.entries[index].frame.len() as u64);
    (found == seq + 1).then_some((state.first + index as u64, before))
}

impl Subscriber {
    /// Waits for the next frame this subscriber is to send.
    pub async fn next(&mut self) -> Next {
        loop {
            if let Some(next) = self.take() {
                return next;
            }
            if self.head.changed().await.is_err() {
                return Next::Close("the database closed");
            }
        }
    }

    /// The next frame, if one is there now.
    pub fn ready(&mut self) -> Option<Next> {
        self.take()
    }

    fn take(&mut self) -> Option<Next> {
        if self.over {
            return Some(Next::Close("re-registered"));
        }
        let feed = self.feed.clone();
        let state = feed.lock();
        let head = state.first + state.entries.len() as u64;
        if self.position >= head {
            return state.closed.map(Next::Close);
        }
        if self.position < state.first || state.end - self.read_end > self.queue_bound {
            // Fell behind: skip to the newest, and say so once.
            self.position = head;
            self.read_end = state.end;
            let seq = state
                .entries
                .iter()
                .rev()
                .find_map(|entry| match entry.kind {
                    Kind::Numbered(seq) if entry.generation == self.generation => Some(seq),
                    _ => None,
                })
                .unwrap_or(state.seq);
            return Some(Next::Frame(
                Text::from(frames::overflow(&self.feed.query_id, seq, self.generation)),
                Some(seq),
            ));
        }
        let entry = &state.entries[(self.position - state.first) as usize];
        self.position += 1;
        self.read_end = entry.end;
        if entry.generation != self.generation {
            // Only a newer generation's messages follow its resubscribed.
            return Some(Next::Close("re-registered"));
        }
        Some(match entry.kind {
            Kind::Resubscribed => {
                // Sent, then the socket closes: its generation is over.
                self.over = true;
                Next::Frame(entry.frame.clone(), None)
            }
            Kind::Numbered(seq) if entry.frame.len() as u64 > self.queue_bound => Next::Frame(
                Text::from(frames::overflow(&self.feed.query_id, seq, self.generation)),
                Some(seq),
            ),
            Kind::Numbered(seq) => Next::Frame(entry.frame.clone(), Some(seq)),
        })
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.feed.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(texts: &[&str]) -> Vec<Arc<str>> {
        texts.iter().map(|text| Arc::from(*text)).collect()
    }

    fn frame(next: Option<Next>) -> serde_json::Value {
        match next {
            Some(Next::Frame(text, _)) => serde_json::from_str(&text).unwrap(),
            Some(Next::Close(why)) => panic!("closed: {why}"),
            None => serde_json::Value::Null,
        }
    }

    fn parse(frame: &Frame) -> serde_json::Value {
        serde_json::from_str(&frame.0).unwrap()
    }

    fn delta(feed: &Feed, seq: i64, row: &str) {
        let body = frames::rows_body(&rows(&[row]), &[]);
        feed.publish(
            seq,
            frames::delta("q", seq, 1, &body),
            Some(rows(&[row])),
            None,
        );
    }

    #[test]
    fn a_subscriber_gets_the_snapshot_then_each_delta_in_order() {
        let feed = Feed::new("q".into(), 1, Mode::Delta, 4);
        feed.set_snapshot(Some(rows(&[r#"{"a":1}"#])), None);
        let (first, mut sub) = feed.join(None, 1 << 20).unwrap();
        assert_eq!(parse(&first[0])["type"], "subscribed");
        assert_eq!(parse(&first[1])["seq"], 4);
        assert_eq!(parse(&first[1])["inserted"][0]["a"], 1);
        delta(&feed, 5, r#"{"a":2}"#);
        delta(&feed, 6, r#"{"a":3}"#);
        assert_eq!(frame(sub.take())["seq"], 5);
        assert_eq!(frame(sub.take())["seq"], 6);
        assert!(sub.take().is_none());
    }

    #[test]
    fn since_replays_what_was_missed_instead_of_a_snapshot() {
        let feed = Feed::new("q".into(), 1, Mode::Delta, 0);
        feed.set_snapshot(Some(Vec::new()), None);
        for seq in 1..=5 {
            delta(&feed, seq, &format!(r#"{{"a":{seq}}}"#));
        }
        let (first, mut sub) = feed.join(Some((3, 1)), 1 << 20).unwrap();
        assert_eq!(first.len(), 1, "no snapshot");
        assert_eq!(frame(sub.take())["seq"], 4);
        assert_eq!(frame(sub.take())["seq"], 5);
        // Up to date already: nothing to replay, no snapshot.
        let (first, mut sub) = feed.join(Some((5, 1)), 1 << 20).unwrap();
        assert_eq!(first.len(), 1);
        assert!(sub.take().is_none());
        // Another generation, or a seq from the future: a snapshot.
        assert_eq!(feed.join(Some((3, 2)), 1 << 20).unwrap().0.len(), 2);
        assert_eq!(feed.join(Some((9, 1)), 1 << 20).unwrap().0.len(), 2);
    }

    #[test]
    fn a_subscriber_that_falls_behind_gets_one_overflow_and_reads_on() {
        let feed = Feed::new("q".into(), 1, Mode::Delta, 0);
        feed.set_snapshot(Some(Vec::new()), None);
        let (_, mut sub) = feed.join(None, 200).unwrap();
        for seq in 1..=10 {
            delta(
                &feed,
                seq,
                r#"{"padding":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#,
            );
        }
        let overflow = frame(sub.take());
        assert_eq!(overflow["type"], "overflow");
        assert_eq!(overflow["seq"], 10);
        assert!(sub.take().is_none());
        delta(&feed, 11, r#"{"a":1}"#);
        assert_eq!(frame(sub.take())["seq"], 11);
    }

    #[test]
    fn a_message_bigger_than_the_queue_bound_arrives_as_an_overflow() {
        let feed = Feed::new("q".into(), 1, Mode::Delta, 0);
        feed.set_snapshot(Some(Vec::new()), None);
        let (_, mut sub) = feed.join(None, 64).unwrap();
        delta(&feed, 1, &format!(r#"{{"big":"{}"}}"#, "y".repeat(100)));
        let overflow = frame(sub.take());
        assert_eq!(overflow["type"], "overflow");
        assert_eq!(overflow["seq"], 1);
    }

    #[test]
    fn a_new_registration_sends_resubscribed_and_closes_older_sockets() {
        let feed = Feed::new("q".into(), 1, Mode::Delta, 2);
        feed.set_snapshot(Some(Vec::new()), None);
        let (_, mut old) = feed.join(None, 1 << 20).unwrap();
        feed.reregister(2, Mode::Delta, 2);
        let message = frame(old.take());
        assert_eq!(message["type"], "resubscribed");
        assert_eq!(message["gen"], 2);
        assert!(
            matches!(old.take(), Some(Next::Close(_))),
            "nothing of generation 2 reaches a generation 1 socket"
        );
        // The new generation's result is not known before it is computed.
        assert!(matches!(feed.join(None, 1 << 20), Err(NotReady::Pending)));
        feed.set_snapshot(Some(Vec::new()), None);
        let (first, _) = feed.join(None, 1 << 20).unwrap();
        assert_eq!(parse(&first[0])["gen"], 2);
    }

    #[test]
    fn mode_notify_sends_no_snapshot_and_replays_invalidations() {
        let feed = Feed::new("q".into(), 1, Mode::Notify, 0);
        let (first, _) = feed.join(None, 1 << 20).unwrap();
        assert_eq!(first.len(), 1);
        feed.publish(1, frames::invalidated("q", 1, 1), None, None);
        feed.publish(2, frames::invalidated("q", 2, 1), None, None);
        let (_, mut sub) = feed.join(Some((1, 1)), 1 << 20).unwrap();
        let message = frame(sub.take());
        assert_eq!(message["type"], "invalidated");
        assert_eq!(message["seq"], 2);
    }

    #[test]
    fn subscribers_are_counted_while_they_read() {
        let feed = Feed::new("q".into(), 1, Mode::Notify, 0);
        let (_, first) = feed.join(None, 1 << 20).unwrap();
        let (_, second) = feed.join(None, 1 << 20).unwrap();
        assert_eq!(feed.subscribers(), 2);
        drop(first);
        drop(second);
        assert_eq!(feed.subscribers(), 0);
    }

    #[test]
    fn closing_ends_every_subscriber() {
        let feed = Feed::new("q".into(), 1, Mode::Notify, 0);
        let (_, mut sub) = feed.join(None, 1 << 20).unwrap();
        feed.close("unsubscribed");
        assert!(matches!(sub.take(), Some(Next::Close("unsubscribed"))));
    }
}
