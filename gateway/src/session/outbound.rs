//! What goes out on one session, and in which order.
//!
//! Replies, live broker events and `sync` answers share one bounded queue. The
//! [`Sequencer`] at its far end makes resume exact (guarantee 6):
//!
//! - while a chat is being synced, live `message` events for it are held back
//!   and released after the sync's pages, so the client sees that chat in
//!   `seq` order;
//! - a message already sent on this session (live before the sync began, or
//!   live during it) is not sent again — each `seq` reaches the client once.
//!
//! Per chat it remembers the runs of sequence numbers the client has been sent
//! (or acknowledged, for its own messages): a few `[first, last]` intervals,
//! nothing for idle sessions. Live events arrive in `seq` order, so normally
//! there is one run that just grows; a jump means events were missed (a broker
//! reconnect), which opens a new run, so a later `sync` or catch-up fills the
//! hole instead of skipping it — and nothing already sent is sent twice.

use super::wire::Outgoing;
use bytes::Bytes;
use bytestring::ByteString;
use chat_shared::domain::ChatId;
use std::collections::HashMap;
use tokio::sync::mpsc;

/// The sending half of a session's queue (held by the session and the hub).
///
/// Items are boxed because a tokio channel allocates its first block of 32
/// slots as soon as it is created: boxed, an idle session's block is 32 × 8
/// bytes instead of 32 × `size_of::<Outbound>()` (64), for one small
/// allocation per queued item.
pub type QueueSender = mpsc::Sender<Box<Outbound>>;

/// The receiving half of a session's queue (drained by its writer).
pub type QueueReceiver = mpsc::Receiver<Box<Outbound>>;

/// A session's bounded outbound queue.
pub fn queue(capacity: usize) -> (QueueSender, QueueReceiver) {
    mpsc::channel(capacity)
}

/// One item on a session's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// A reply or ephemeral event, sent as is.
    Frame(ByteString),
    /// The `ack` of this session's own message: sent as is, and remembered so
    /// the message itself is never sent back to this session.
    Ack {
        /// Its chat.
        chat: ChatId,
        /// Its `seq`.
        seq: u64,
        /// The `ack` frame's JSON.
        frame: ByteString,
    },
    /// A `message` event: from the broker (`live`) or answering `sync`.
    Message {
        /// Its chat.
        chat: ChatId,
        /// Its `seq`.
        seq: u64,
        /// The frame's JSON.
        frame: ByteString,
        /// From the broker (true) or from `sync` (false).
        live: bool,
    },
    /// The answer to a client's ping (a control frame, outside any order).
    Pong(Bytes),
    /// A `sync` of this chat begins: hold live messages for it.
    SyncStart(ChatId),
    /// The `sync` of this chat sent everything up to its end.
    SyncEnd(ChatId),
}

/// Runs kept per chat; older (lower) ones are forgotten beyond this.
const MAX_RUNS: usize = 8;

#[derive(Debug, Default)]
struct Cursor {
    /// Disjoint, non-adjacent, ascending `first..=last` runs already sent.
    runs: Vec<(u64, u64)>,
    /// Live messages held back during a sync.
    held: Option<Vec<(u64, ByteString)>>,
}

impl Cursor {
    fn sent(&self, seq: u64) -> bool {
        self.runs.iter().any(|(a, b)| (*a..=*b).contains(&seq))
    }

    fn record(&mut self, seq: u64) {
        self.add_run(seq, seq);
    }

    /// Adds `lo..=hi`, merging overlapping and adjacent runs.
    fn add_run(&mut self, lo: u64, hi: u64) {
        let (mut lo, mut hi) = (lo, hi);
        self.runs.retain(|&(a, b)| {
            let touches = a <= hi.saturating_add(1) && lo <= b.saturating_add(1);
            if touches {
                lo = lo.min(a);
                hi = hi.max(b);
            }
            !touches
        });
        let at = self.runs.partition_point(|&(a, _)| a < lo);
        self.runs.insert(at, (lo, hi));
        if self.runs.len() > MAX_RUNS {
            self.runs.remove(0);
        }
    }

    fn highest(&self) -> u64 {
        self.runs.last().map_or(0, |&(_, b)| b)
    }
}

/// The queue held back more live messages than allowed: the client is too slow.
#[derive(Debug, PartialEq, Eq)]
pub struct Overflow;

/// Decides what is sent, in which order, and what is dropped as already sent.
#[derive(Debug)]
pub struct Sequencer {
    cursors: HashMap<ChatId, Cursor>,
    max_held: usize,
}

impl Sequencer {
    /// `max_held` bounds the live messages held back per chat during a sync.
    pub fn new(max_held: usize) -> Self {
        Self {
            cursors: HashMap::new(),
            max_held,
        }
    }

    /// Takes one queue item; appends the frames to send now to `out`.
    pub fn push(&mut self, item: Outbound, out: &mut Vec<Outgoing>) -> Result<(), Overflow> {
        match item {
            Outbound::Frame(f) => out.push(Outgoing::Text(f)),
            Outbound::Pong(p) => out.push(Outgoing::Pong(p)),
            Outbound::Ack { chat, seq, frame } => {
                self.cursors.entry(chat).or_default().record(seq);
                out.push(Outgoing::Text(frame));
            }
            Outbound::Message {
                chat,
                seq,
                frame,
                live,
            } => {
                let cursor = self.cursors.entry(chat).or_default();
                if live {
                    if let Some(held) = cursor.held.as_mut() {
                        if held.len() >= self.max_held {
                            return Err(Overflow);
                        }
                        held.push((seq, frame));
                        return Ok(());
                    }
                }
                if !cursor.sent(seq) {
                    cursor.record(seq);
                    out.push(Outgoing::Text(frame));
                }
            }
            Outbound::SyncStart(chat) => {
                self.cursors
                    .entry(chat)
                    .or_default()
                    .held
                    .get_or_insert_with(Vec::new);
            }
            Outbound::SyncEnd(chat) => {
                let cursor = self.cursors.entry(chat).or_default();
                let mut held = cursor.held.take().unwrap_or_default();
                held.sort_by_key(|(seq, _)| *seq);
                // The client now has everything up to the sync's end: whatever it
                // held before (it asked from there) plus what the sync sent.
                let highest = cursor.highest();
                if highest > 0 {
                    cursor.add_run(1, highest);
                }
                for (seq, frame) in held {
                    if !cursor.sent(seq) {
                        cursor.record(seq);
                        out.push(Outgoing::Text(frame));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(chat: ChatId, seq: u64, live: bool) -> Outbound {
        Outbound::Message {
            chat,
            seq,
            frame: ByteString::from(format!("{seq}")),
            live,
        }
    }

    fn run(items: Vec<Outbound>) -> Vec<String> {
        let mut s = Sequencer::new(100);
        let mut out = Vec::new();
        for i in items {
            s.push(i, &mut out).unwrap();
        }
        out.into_iter()
            .map(|o| match o {
                Outgoing::Text(b) => b.to_string(),
                Outgoing::Pong(p) => format!("pong {p:?}"),
            })
            .collect()
    }

    #[test]
    fn live_messages_pass_through_in_order() {
        let c = ChatId::generate();
        assert_eq!(run(vec![msg(c, 1, true), msg(c, 2, true)]), ["1", "2"]);
    }

    #[test]
    fn a_message_sent_live_before_the_sync_is_not_sent_again_by_it() {
        let c = ChatId::generate();
        let out = run(vec![
            msg(c, 6, true),
            Outbound::SyncStart(c),
            msg(c, 5, false),
            msg(c, 6, false),
            Outbound::SyncEnd(c),
        ]);
        assert_eq!(out, ["6", "5"]);
    }

    #[test]
    fn live_messages_during_a_sync_wait_for_it_and_duplicates_are_dropped() {
        let c = ChatId::generate();
        let out = run(vec![
            Outbound::SyncStart(c),
            msg(c, 4, false),
            msg(c, 6, true),
            msg(c, 5, false),
            msg(c, 7, true),
            msg(c, 6, false),
            Outbound::SyncEnd(c),
            msg(c, 8, true),
        ]);
        assert_eq!(out, ["4", "5", "6", "7", "8"]);
    }

    #[test]
    fn other_chats_are_not_held_by_a_sync() {
        let (a, b) = (ChatId::generate(), ChatId::generate());
        let out = run(vec![
            Outbound::SyncStart(a),
            msg(b, 1, true),
            msg(a, 1, true),
            Outbound::SyncEnd(a),
        ]);
        assert_eq!(out, ["1", "1"]);
    }

    #[test]
    fn a_gap_in_live_delivery_does_not_hide_the_missing_messages_from_a_later_sync() {
        let c = ChatId::generate();
        let out = run(vec![
            msg(c, 1, true),
            msg(c, 2, true),
            // 3 and 4 were lost (broker reconnect)
            msg(c, 5, true),
            Outbound::SyncStart(c),
            msg(c, 3, false),
            msg(c, 4, false),
            msg(c, 5, false),
            Outbound::SyncEnd(c),
        ]);
        assert_eq!(out, ["1", "2", "5", "3", "4"]);
    }

    #[test]
    fn a_catch_up_after_a_gap_sends_only_the_missing_messages() {
        let c = ChatId::generate();
        let out = run(vec![
            msg(c, 5, true),
            msg(c, 6, true),
            // 7 and 8 missed during a broker reconnect; 9 arrives live
            msg(c, 9, true),
            // the catch-up re-delivers the recent window
            msg(c, 5, true),
            msg(c, 6, true),
            msg(c, 7, true),
            msg(c, 8, true),
            msg(c, 9, true),
        ]);
        assert_eq!(out, ["5", "6", "9", "7", "8"]);
    }

    #[test]
    fn a_sessions_own_acked_message_is_never_sent_back_to_it() {
        let c = ChatId::generate();
        let out = run(vec![
            Outbound::Ack {
                chat: c,
                seq: 3,
                frame: ByteString::from("ack3"),
            },
            msg(c, 3, true),
            msg(c, 4, true),
        ]);
        assert_eq!(out, ["ack3", "4"]);
    }

    #[test]
    fn a_pong_is_sent_at_once_even_while_a_chat_is_held_back() {
        let c = ChatId::generate();
        let out = run(vec![
            Outbound::SyncStart(c),
            msg(c, 1, true),
            Outbound::Pong(Bytes::from_static(b"x")),
            Outbound::SyncEnd(c),
        ]);
        assert_eq!(out, ["pong b\"x\"", "1"]);
    }

    #[test]
    fn holding_back_is_bounded() {
        let c = ChatId::generate();
        let mut s = Sequencer::new(2);
        let mut out = Vec::new();
        s.push(Outbound::SyncStart(c), &mut out).unwrap();
        s.push(msg(c, 1, true), &mut out).unwrap();
        s.push(msg(c, 2, true), &mut out).unwrap();
        assert_eq!(s.push(msg(c, 3, true), &mut out), Err(Overflow));
    }
}
