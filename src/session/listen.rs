//! LISTEN / NOTIFY for many clients on one engine session.
//!
//! The engine session listens to the union of every client's channels. Each
//! `NotificationResponse` the engine emits (an embedded engine emits them in the output of
//! the unit of work that committed the `NOTIFY`, since every `NOTIFY` comes
//! from this one session) is taken out of that output and handed to exactly
//! the clients listening on its channel, idle ones included, with the process
//! id of the client whose unit sent it. Notifications of a rolled-back
//! transaction are never emitted by the engine, so never delivered.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::sync::Mutex;

use bytes::BytesMut;
use tokio::sync::mpsc;

use crate::engine::EngineSession;
use crate::protocol::backend::push_message;
use crate::protocol::frame::{self, Reader};
use crate::sql::lexer::{mentions_any, statements, tokenize};

use super::cleanup::query;

/// Channel names, as the engine spells them.
pub type Channels = BTreeSet<String>;

struct Listener {
    channels: Channels,
    inbox: mpsc::UnboundedSender<BytesMut>,
}

/// Who listens to what, for one database.
#[derive(Default)]
pub struct Notifier {
    listeners: Mutex<HashMap<i32, Listener>>,
}

impl Notifier {
    /// Registers a client; notifications for it arrive on the returned inbox.
    pub fn register(&self, client: i32) -> mpsc::UnboundedReceiver<BytesMut> {
        let (inbox, received) = mpsc::unbounded_channel();
        self.lock().insert(
            client,
            Listener {
                channels: Channels::new(),
                inbox,
            },
        );
        received
    }

    /// Makes `client` listen on `channel` too; the caller then reconciles
    /// the engine session.
    pub fn add_channel(&self, client: i32, channel: &str) {
        if let Some(listener) = self.lock().get_mut(&client) {
            listener.channels.insert(channel.to_string());
        }
    }

    /// Forgets a client; returns whether it listened to anything.
    pub fn unregister(&self, client: i32) -> bool {
        self.lock()
            .remove(&client)
            .is_some_and(|listener| !listener.channels.is_empty())
    }

    /// Every channel some client listens to.
    pub fn union(&self) -> Channels {
        self.lock()
            .values()
            .flat_map(|listener| listener.channels.iter().cloned())
            .collect()
    }

    /// Drops all of a client's channels (its `UNLISTEN *`); returns whether
    /// it had any.
    pub fn clear(&self, client: i32) -> bool {
        self.lock()
            .get_mut(&client)
            .is_some_and(|listener| !std::mem::take(&mut listener.channels).is_empty())
    }

    /// Takes the `NotificationResponse` messages out of `output`, an answer to
    /// `sender`'s unit of work (`None` for the gateway's own queries). The
    /// sender's own notifications stay in place, as a backend sends them;
    /// everyone else's go to their inboxes. Both carry `sender`'s process id.
    pub fn route(&self, output: BytesMut, sender: Option<i32>) -> BytesMut {
        let mut kept = BytesMut::with_capacity(output.len());
        let mut rest = &output[..];
        while rest.len() >= 5 {
            let len = i32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize + 1;
            let (message, tail) = rest.split_at(len.min(rest.len()));
            rest = tail;
            if message[0] != b'A' {
                kept.extend_from_slice(message);
                continue;
            }
            let Some((channel, notification)) = renumber(message, sender) else {
                continue;
            };
            let listeners = self.lock();
            for (client, listener) in listeners.iter() {
                if !listener.channels.contains(&channel) {
                    continue;
                }
                if Some(*client) == sender {
                    kept.extend_from_slice(&notification);
                } else {
                    let _ = listener.inbox.send(BytesMut::from(&notification[..]));
                }
            }
        }
        kept
    }

    /// After `client`'s unit of work that ran LISTEN or UNLISTEN: learns what
    /// the unit changed from the engine's own list, records it as the
    /// client's, and makes the engine listen to exactly the union again.
    ///
    /// `named` are the channels the unit's LISTEN statements name. One that
    /// another client already listened to leaves no trace on the engine, so it
    /// is taken at its word (even if its transaction rolled back).
    pub async fn reconcile(
        &self,
        engine: &mut EngineSession,
        client: Option<i32>,
        named: &[String],
    ) -> io::Result<()> {
        let before = self.union();
        let now = listening_channels(engine).await?;
        if let Some(client) = client
            && let Some(listener) = self.lock().get_mut(&client)
        {
            listener.channels.extend(now.difference(&before).cloned());
            listener
                .channels
                .retain(|channel| now.contains(channel) || !before.contains(channel));
            listener.channels.extend(
                named
                    .iter()
                    .filter(|channel| before.contains(*channel) && now.contains(*channel))
                    .cloned(),
            );
        }
        let wanted = self.union();
        let mut sql = String::new();
        for channel in wanted.difference(&now) {
            sql.push_str(&format!("LISTEN {};", identifier(channel)));
        }
        for channel in now.difference(&wanted) {
            sql.push_str(&format!("UNLISTEN {};", identifier(channel)));
        }
        if !sql.is_empty() {
            engine.run_collecting(&query(sql.as_bytes())).await?;
        }
        Ok(())
    }

    /// Records what a client's transaction on a pooled session did to its
    /// channels: it listened to `listened` and unlistened `unlistened`
    /// (`None` for all). The caller then reconciles the listener session.
    pub fn record(&self, client: i32, listened: &Channels, unlistened: &[Option<String>]) {
        let mut listeners = self.lock();
        let Some(listener) = listeners.get_mut(&client) else {
            return;
        };
        for channel in unlistened {
            match channel {
                Some(channel) => listener.channels.remove(channel),
                None => {
                    listener.channels.clear();
                    true
                }
            };
        }
        listener.channels.extend(listened.iter().cloned());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Listener>> {
        self.listeners
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

async fn listening_channels(engine: &mut EngineSession) -> io::Result<Channels> {
    let reply = engine
        .run_collecting(&query(b"SELECT pg_catalog.pg_listening_channels()"))
        .await?;
    Ok(reply
        .text_rows()
        .into_iter()
        .filter_map(|row| row.into_iter().next().flatten())
        .collect())
}

/// The channel of a `NotificationResponse`, and the message with the process
/// id replaced by `sender`'s.
fn renumber(message: &[u8], sender: Option<i32>) -> Option<(String, Vec<u8>)> {
    let mut reader = Reader::new(frame::body(message));
    let process_id = reader.i32().ok()?;
    let channel = reader.cstr().ok()?;
    let payload = reader.cstr().ok()?;
    let mut body = sender.unwrap_or(process_id).to_be_bytes().to_vec();
    body.extend_from_slice(channel);
    body.push(0);
    body.extend_from_slice(payload);
    body.push(0);
    let mut out = Vec::with_capacity(body.len() + 5);
    push_message(&mut out, b'A', &body);
    Some((String::from_utf8_lossy(channel).into_owned(), out))
}

/// True when running `sql` may change what the session listens to.
pub fn may_change_listens(sql: &[u8]) -> bool {
    if !mentions_any(sql, &["listen", "discard"]) {
        return false;
    }
    let Some(tokens) = tokenize(sql) else {
        return false;
    };
    statements(&tokens).iter().any(|statement| {
        statement[0].is_word(sql, "listen")
            || statement[0].is_word(sql, "unlisten")
            || statement[0].is_word(sql, "discard")
    })
}

/// The channels named by the LISTEN statements in `sql`, as the engine
/// spells them (unquoted names fold to lower case).
pub fn listened_channels(sql: &[u8]) -> Vec<String> {
    named_channels(sql, "listen")
        .into_iter()
        .flatten()
        .collect()
}

/// The channels named by the UNLISTEN statements in `sql`; `None` stands
/// for `UNLISTEN *`.
pub fn unlistened_channels(sql: &[u8]) -> Vec<Option<String>> {
    named_channels(sql, "unlisten")
}

fn named_channels(sql: &[u8], verb: &str) -> Vec<Option<String>> {
    let Some(tokens) = tokenize(sql) else {
        return Vec::new();
    };
    statements(&tokens)
        .iter()
        .filter(|statement| statement[0].is_word(sql, verb))
        .filter_map(|statement| statement.get(1))
        .filter_map(|name| match name.identifier(sql) {
            Some(channel) => Some(Some(channel)),
            None => (name.text(sql) == b"*").then_some(None),
        })
        .collect()
}

/// Takes the LISTENs a transaction committed on a pooled session (which
/// listens to nothing otherwise) off it, and returns their channels: the
/// listener session takes them over.
pub async fn take_listens(engine: &mut EngineSession) -> io::Result<Channels> {
    let channels = listening_channels(engine).await?;
    if !channels.is_empty() {
        engine.run_collecting(&query(b"UNLISTEN *")).await?;
    }
    Ok(channels)
}

fn identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification(pid: i32, channel: &str, payload: &str) -> Vec<u8> {
        let mut body = pid.to_be_bytes().to_vec();
        body.extend_from_slice(channel.as_bytes());
        body.push(0);
        body.extend_from_slice(payload.as_bytes());
        body.push(0);
        let mut out = Vec::new();
        push_message(&mut out, b'A', &body);
        out
    }

    fn listen(notifier: &Notifier, client: i32, channel: &str) {
        notifier
            .lock()
            .get_mut(&client)
            .unwrap()
            .channels
            .insert(channel.to_string());
    }

    #[test]
    fn notifications_reach_exactly_the_listeners_with_the_senders_id() {
        let notifier = Notifier::default();
        let mut a = notifier.register(1);
        let mut b = notifier.register(2);
        let mut c = notifier.register(3);
        listen(&notifier, 1, "jobs");
        listen(&notifier, 2, "jobs");
        listen(&notifier, 3, "other");
        let mut output = BytesMut::from(&b"C\0\0\0\x0bNOTIFY\0"[..]);
        output.extend_from_slice(&notification(77, "jobs", "hi"));
        output.extend_from_slice(b"Z\0\0\0\x05I");
        let kept = notifier.route(output, Some(2));
        // The sender listens too: it keeps its copy in place, renumbered.
        let mut expected = b"C\0\0\0\x0bNOTIFY\0".to_vec();
        expected.extend_from_slice(&notification(2, "jobs", "hi"));
        expected.extend_from_slice(b"Z\0\0\0\x05I");
        assert_eq!(&kept[..], &expected[..]);
        assert_eq!(
            &a.try_recv().unwrap()[..],
            &notification(2, "jobs", "hi")[..]
        );
        assert!(b.try_recv().is_err());
        assert!(c.try_recv().is_err());
    }

    #[test]
    fn listened_channel_names_fold_like_identifiers() {
        assert_eq!(
            listened_channels(b"LISTEN Jobs; LISTEN \"Mixed\"\"Case\"; UNLISTEN x"),
            vec!["jobs".to_string(), "Mixed\"Case".to_string()]
        );
    }

    #[test]
    fn listen_statements_are_recognised() {
        assert!(may_change_listens(b"LISTEN jobs"));
        assert!(may_change_listens(b"SELECT 1; unlisten *"));
        assert!(may_change_listens(b"DISCARD ALL"));
        assert!(!may_change_listens(b"SELECT 'LISTEN x'"));
        assert!(!may_change_listens(b"NOTIFY jobs"));
    }
}
