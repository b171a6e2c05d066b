//! Black-box tests of the Redis broker engine against a real `redis-server`:
//! `RedisBroker` (the gateway's side) and `RedisEventLog` (the persister's side).

#![allow(clippy::unwrap_used)]
#![allow(missing_docs)]

use chat_shared::broker::redis::keys::Shard;
use chat_shared::broker::redis::stream::RedisEventLog;
use chat_shared::broker::redis::{RedisBroker, DEFAULT_RECENT_WINDOW};
use chat_shared::broker::{
    Appended, Broker, BrokerError, Envelope, EventLog, Inbox, MessageDraft, Participants,
    SeqWindow, StreamEntry, StreamEvent,
};
use chat_shared::config::RedisSettings;
use chat_shared::domain::{ChatId, ClientMsgId, MessageId, Role, SessionId, Timestamp, UserId};
use chat_shared::protocol::{Message, RequestId, ServerFrame};
use chat_testkit::eventually;
use chat_testkit::RedisServer;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------- helpers

/// How long any single expected delivery may take.
const DELIVERY: Duration = Duration::from_secs(5);

/// Forwards every delivery into a channel and counts re-subscriptions.
struct TestInbox {
    tx: mpsc::UnboundedSender<(UserId, Envelope)>,
    resubscribed: AtomicUsize,
}

impl Inbox for TestInbox {
    fn deliver(&self, user: &UserId, envelope: Envelope) {
        let _ = self.tx.send((user.clone(), envelope));
    }

    fn resubscribed(&self, _since: chat_shared::domain::Timestamp) {
        self.resubscribed.fetch_add(1, Ordering::SeqCst);
    }
}

type Deliveries = mpsc::UnboundedReceiver<(UserId, Envelope)>;

fn settings(server: &RedisServer) -> RedisSettings {
    RedisSettings {
        url: server.url(),
        cluster_nodes: Vec::new(),
        shards: 1,
        timeout: Duration::from_secs(2),
        // One shard: deliveries of all users then arrive in publish order, which
        // lets a sentinel publish prove that nothing else is on its way.
        pubsub_connections: 1,
        wait_replicas: 0,
        wait_timeout: Duration::from_millis(500),
    }
}

async fn connect(server: &RedisServer) -> (Arc<RedisBroker>, Deliveries, Arc<TestInbox>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let inbox = Arc::new(TestInbox {
        tx,
        resubscribed: AtomicUsize::new(0),
    });
    let broker = RedisBroker::connect(
        &settings(server),
        Some(inbox.clone() as Arc<dyn Inbox>),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    (Arc::new(broker), rx, inbox)
}

fn user(id: &str) -> UserId {
    UserId::parse(id).unwrap()
}

struct TestChat {
    id: ChatId,
    patient: UserId,
    doctor: UserId,
}

impl TestChat {
    fn new() -> Self {
        Self {
            id: ChatId::generate(),
            patient: user("patient-1"),
            doctor: user("doctor-1"),
        }
    }

    fn participants(&self) -> Participants {
        Participants {
            patient: self.patient.clone(),
            doctor: self.doctor.clone(),
        }
    }

    fn draft(&self, client_msg_id: &str, body: &str) -> MessageDraft {
        MessageDraft {
            id: MessageId::generate(),
            chat_id: self.id,
            sender_id: self.patient.clone(),
            sender_role: Role::Patient,
            body: body.to_owned(),
            client_msg_id: ClientMsgId::parse(client_msg_id).unwrap(),
            created_at: Timestamp::now(),
        }
    }
}

/// Appends a new message, initialising the counter from 0 if the broker asks.
async fn append(broker: &RedisBroker, chat: &TestChat, client_msg_id: &str) -> Message {
    let draft = chat.draft(client_msg_id, &format!("body of {client_msg_id}"));
    let origin = SessionId::generate();
    let appended = match broker
        .append_message(&draft, &chat.participants(), origin, None)
        .await
    {
        Err(BrokerError::SeqUnknown(_)) => broker
            .append_message(&draft, &chat.participants(), origin, Some(0))
            .await
            .unwrap(),
        other => other.unwrap(),
    };
    match appended {
        Appended::New(m) => m,
        Appended::Duplicate(m) => panic!("{client_msg_id} was unexpectedly a duplicate: {m:?}"),
    }
}

fn frame(envelope: &Envelope) -> ServerFrame {
    serde_json::from_slice(&envelope.frame).unwrap()
}

fn sentinel(n: i64) -> Envelope {
    Envelope::new(
        None,
        &ServerFrame::Pong {
            id: Some(RequestId::Number(n)),
        },
    )
}

/// Publishes a sentinel to `to` and returns every delivery that arrives before
/// it. With one pub/sub shard, anything published before the sentinel has
/// arrived by then, so "not in the result" means "not delivered".
async fn deliveries_before_sentinel(
    broker: &RedisBroker,
    rx: &mut Deliveries,
    to: &UserId,
    n: i64,
) -> Vec<(UserId, Envelope)> {
    let mark = sentinel(n);
    broker.publish(to, mark.clone()).await.unwrap();
    let mut seen = Vec::new();
    loop {
        let (u, env) = tokio::time::timeout(DELIVERY, rx.recv())
            .await
            .expect("sentinel not delivered")
            .expect("inbox closed");
        if &u == to && env == mark {
            return seen;
        }
        seen.push((u, env));
    }
}

async fn event_log(server: &RedisServer, consumer: &str) -> RedisEventLog {
    RedisEventLog::connect(&settings(server), Shard(0), consumer)
        .await
        .unwrap()
}

/// Reads batches of at most `max` until `n` entries arrived (in stream order).
async fn read_entries(log: &RedisEventLog, n: usize, max: usize) -> Vec<StreamEntry> {
    let deadline = Instant::now() + DELIVERY;
    let mut out = Vec::new();
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} stream entries read",
            out.len()
        );
        out.extend(
            log.read_batch(max, Duration::from_millis(100))
                .await
                .unwrap(),
        );
    }
    out
}

/// Reads until an entry satisfies `last`; returns everything up to and including it.
async fn read_through(
    log: &RedisEventLog,
    last: impl Fn(&StreamEvent) -> bool,
) -> Vec<StreamEvent> {
    let deadline = Instant::now() + DELIVERY;
    let mut out = Vec::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "stream entry not found; read {out:?}"
        );
        for entry in log
            .read_batch(100, Duration::from_millis(100))
            .await
            .unwrap()
        {
            let event = entry.event.unwrap();
            let done = last(&event);
            out.push(event);
            if done {
                return out;
            }
        }
    }
}

/// Reads once more (after the pending entries) and expects nothing.
async fn assert_nothing_more(log: &RedisEventLog) {
    for _ in 0..2 {
        let extra = log
            .read_batch(100, Duration::from_millis(50))
            .await
            .unwrap();
        assert!(extra.is_empty(), "unexpected entries: {extra:?}");
    }
}

fn ids(entries: &[StreamEntry]) -> Vec<String> {
    entries.iter().map(|e| e.id.clone()).collect()
}

fn seqs(messages: &[Message]) -> Vec<u64> {
    messages.iter().map(|m| m.seq).collect()
}

// ---------------------------------------------------------------- sequence numbers

#[tokio::test]
async fn first_append_to_a_chat_asks_for_a_floor_then_seqs_run_from_one() {
    let server = RedisServer::start();
    let (broker, _rx, _) = connect(&server).await;
    let chat = TestChat::new();
    let draft = chat.draft("c-1", "hello");
    let origin = SessionId::generate();

    let first = broker
        .append_message(&draft, &chat.participants(), origin, None)
        .await;
    assert!(
        matches!(first, Err(BrokerError::SeqUnknown(id)) if id == chat.id),
        "{first:?}"
    );

    let retried = broker
        .append_message(&draft, &chat.participants(), origin, Some(0))
        .await
        .unwrap();
    let Appended::New(m1) = retried else {
        panic!("retry after SeqUnknown must store the message: {retried:?}")
    };
    assert_eq!(m1.seq, 1);
    assert_eq!(m1.id, draft.id);
    assert_eq!(m1.chat_id, chat.id);
    assert_eq!(m1.sender_id, chat.patient);
    assert_eq!(m1.sender_role, Role::Patient);
    assert_eq!(m1.body, "hello");
    assert_eq!(m1.client_msg_id, draft.client_msg_id);
    assert_eq!(m1.created_at, draft.created_at);

    for (cmid, expected) in [("c-2", 2), ("c-3", 3)] {
        let d = chat.draft(cmid, "more");
        let r = broker
            .append_message(&d, &chat.participants(), origin, None)
            .await
            .unwrap();
        assert!(matches!(r, Appended::New(_)), "{r:?}");
        assert_eq!(r.message().seq, expected);
    }

    // The refused first attempt left nothing in the stream.
    let log = event_log(&server, "reader").await;
    let events = read_through(&log, |e| matches!(e, StreamEvent::Message(m) if m.seq == 3)).await;
    let stream_seqs: Vec<u64> = events
        .iter()
        .map(|e| match e {
            StreamEvent::Message(m) => m.seq,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(stream_seqs, vec![1, 2, 3]);
}

#[tokio::test]
async fn a_floor_after_redis_data_loss_continues_from_the_stores_last_seq() {
    let server = RedisServer::start();
    let (broker, _rx, _) = connect(&server).await;
    let chat = TestChat::new();
    let origin = SessionId::generate();

    // Redis lost the counter; MongoDB says last_seq = 41.
    let d = chat.draft("after-loss-1", "x");
    let r = broker
        .append_message(&d, &chat.participants(), origin, None)
        .await;
    assert!(matches!(r, Err(BrokerError::SeqUnknown(_))), "{r:?}");
    let r = broker
        .append_message(&d, &chat.participants(), origin, Some(41))
        .await
        .unwrap();
    assert_eq!(r.message().seq, 42);

    // Once the counter exists, a floor no longer moves it.
    let d = chat.draft("after-loss-2", "y");
    let r = broker
        .append_message(&d, &chat.participants(), origin, Some(0))
        .await
        .unwrap();
    assert_eq!(r.message().seq, 43);
    let d = chat.draft("after-loss-3", "z");
    let r = broker
        .append_message(&d, &chat.participants(), origin, None)
        .await
        .unwrap();
    assert_eq!(r.message().seq, 44);
}

#[tokio::test]
async fn concurrent_appends_to_one_chat_get_seqs_one_to_n_without_gap_or_duplicate() {
    const TASKS: usize = 8;
    const EACH: usize = 25;
    let server = RedisServer::start();
    // Two gateway nodes, each with its own connections.
    let (node_a, _rx_a, _) = connect(&server).await;
    let (node_b, _rx_b, _) = connect(&server).await;
    let chat = Arc::new(TestChat::new());

    // Nobody initialises the counter beforehand: the tasks race on the floor too.
    let handles: Vec<_> = (0..TASKS)
        .map(|t| {
            let broker = if t % 2 == 0 { &node_a } else { &node_b }.clone();
            let chat = chat.clone();
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..EACH {
                    seqs.push(append(&broker, &chat, &format!("t{t}-m{i}")).await.seq);
                }
                seqs
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    all.sort_unstable();
    let expected: Vec<u64> = (1..=(TASKS * EACH) as u64).collect();
    assert_eq!(all, expected);

    // The durable stream holds them in seq order.
    let log = event_log(&server, "reader").await;
    let entries = read_entries(&log, TASKS * EACH, 1000).await;
    let stream_seqs: Vec<u64> = entries
        .into_iter()
        .map(|e| match e.event.unwrap() {
            StreamEvent::Message(m) => m.seq,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(stream_seqs, expected);
}

// ---------------------------------------------------------------- idempotency

#[tokio::test]
async fn re_appending_a_client_msg_id_returns_the_original_and_stores_and_publishes_nothing() {
    let server = RedisServer::start();
    let (broker, mut rx, _) = connect(&server).await;
    let chat = TestChat::new();
    broker.subscribe(&chat.patient).await.unwrap();
    broker.subscribe(&chat.doctor).await.unwrap();

    let original = append(&broker, &chat, "same-key").await;
    let before = deliveries_before_sentinel(&broker, &mut rx, &chat.patient, 1).await;
    assert_eq!(
        before.len(),
        2,
        "the first append is delivered to both: {before:?}"
    );

    // A re-send: new message id, new body, new time, same client_msg_id.
    let mut resend = chat.draft("same-key", "a different body");
    resend.created_at = Timestamp::from_millis(original.created_at.millis() + 5_000);
    let again = broker
        .append_message(&resend, &chat.participants(), SessionId::generate(), None)
        .await
        .unwrap();
    assert_eq!(again, Appended::Duplicate(original.clone()));
    let m = again.message();
    assert_eq!(
        (m.id, m.seq, m.body.as_str()),
        (original.id, 1, "body of same-key")
    );

    // Not published again.
    let after = deliveries_before_sentinel(&broker, &mut rx, &chat.patient, 2).await;
    assert!(after.is_empty(), "a duplicate was published: {after:?}");

    // Not appended again: the next new message is seq 2, and the stream holds
    // exactly one entry for the key before it.
    let next = append(&broker, &chat, "next-key").await;
    assert_eq!(next.seq, 2);
    let log = event_log(&server, "reader").await;
    let events = read_through(
        &log,
        |e| matches!(e, StreamEvent::Message(m) if m.id == next.id),
    )
    .await;
    assert_eq!(
        events,
        vec![
            StreamEvent::Message(original.clone()),
            StreamEvent::Message(next)
        ]
    );

    // The same key in another chat is another message.
    let other = TestChat::new();
    let elsewhere = append(&broker, &other, "same-key").await;
    assert_eq!(elsewhere.seq, 1);
    assert_ne!(elsewhere.id, original.id);

    // The recent window also holds it once.
    let recent = broker
        .recent(
            chat.id,
            SeqWindow {
                after: None,
                before: None,
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!(seqs(&recent), vec![1, 2]);
    assert_eq!(recent[0], original);
}

// ---------------------------------------------------------------- fan-out

#[tokio::test]
async fn subscribed_participants_receive_the_message_frame_with_its_origin_session() {
    let server = RedisServer::start();
    let (broker, mut rx, _) = connect(&server).await;
    let chat = TestChat::new();
    let bystander = user("bystander");
    broker.subscribe(&chat.patient).await.unwrap();
    broker.subscribe(&chat.doctor).await.unwrap();
    broker.subscribe(&bystander).await.unwrap();

    let origin = SessionId::generate();
    let draft = chat.draft("m-1", "hi doctor");
    let appended = match broker
        .append_message(&draft, &chat.participants(), origin, Some(0))
        .await
        .unwrap()
    {
        Appended::New(m) => m,
        other => panic!("{other:?}"),
    };

    let got = deliveries_before_sentinel(&broker, &mut rx, &bystander, 1).await;
    let mut recipients: Vec<&str> = got.iter().map(|(u, _)| u.as_str()).collect();
    recipients.sort_unstable();
    assert_eq!(recipients, vec!["doctor-1", "patient-1"]);
    for (_, env) in &got {
        assert_eq!(env.origin, Some(origin));
        assert_eq!(
            frame(env),
            ServerFrame::Message {
                message: appended.clone()
            }
        );
    }
}

#[tokio::test]
async fn a_message_appended_on_one_node_reaches_subscribers_on_another() {
    let server = RedisServer::start();
    let (node_a, mut rx_a, _) = connect(&server).await;
    let (node_b, mut rx_b, _) = connect(&server).await;
    let chat = TestChat::new();
    // The patient is connected to node A, the doctor to node B.
    node_a.subscribe(&chat.patient).await.unwrap();
    node_b.subscribe(&chat.doctor).await.unwrap();

    let origin = SessionId::generate();
    let m = node_a
        .append_message(
            &chat.draft("m-1", "across nodes"),
            &chat.participants(),
            origin,
            Some(0),
        )
        .await
        .unwrap();
    let expected = ServerFrame::Message {
        message: m.message().clone(),
    };
    let got_a = deliveries_before_sentinel(&node_a, &mut rx_a, &chat.patient, 1).await;
    let got_b = deliveries_before_sentinel(&node_b, &mut rx_b, &chat.doctor, 2).await;
    for (got, who) in [(got_a, &chat.patient), (got_b, &chat.doctor)] {
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(&got[0].0, who);
        assert_eq!(got[0].1.origin, Some(origin));
        assert_eq!(frame(&got[0].1), expected);
    }
}

#[tokio::test]
async fn with_several_pubsub_connections_every_subscribed_user_gets_their_own_events() {
    const USERS: usize = 24;
    let server = RedisServer::start();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let inbox = Arc::new(TestInbox {
        tx,
        resubscribed: AtomicUsize::new(0),
    });
    let broker = RedisBroker::connect(
        &RedisSettings {
            pubsub_connections: 4,
            wait_replicas: 0,
            wait_timeout: Duration::from_millis(500),
            ..settings(&server)
        },
        Some(inbox as Arc<dyn Inbox>),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let users: Vec<UserId> = (0..USERS).map(|i| user(&format!("user-{i}"))).collect();
    for u in &users {
        broker.subscribe(u).await.unwrap();
    }
    for (i, u) in users.iter().enumerate() {
        broker.publish(u, sentinel(i as i64)).await.unwrap();
    }
    let mut got = Vec::new();
    while got.len() < USERS {
        let d = tokio::time::timeout(DELIVERY, rx.recv())
            .await
            .expect("a delivery is missing")
            .unwrap();
        got.push(d);
    }
    got.sort_by_key(|(u, _)| u.clone());
    let mut expected: Vec<(UserId, Envelope)> = users
        .iter()
        .enumerate()
        .map(|(i, u)| (u.clone(), sentinel(i as i64)))
        .collect();
    expected.sort_by_key(|(u, _)| u.clone());
    assert_eq!(got, expected);
}

#[tokio::test]
async fn users_not_subscribed_or_unsubscribed_receive_nothing() {
    let server = RedisServer::start();
    let (broker, mut rx, _) = connect(&server).await;
    let chat = TestChat::new();
    let watcher = user("watcher");
    // The doctor never subscribes on this node.
    broker.subscribe(&chat.patient).await.unwrap();
    broker.subscribe(&watcher).await.unwrap();

    append(&broker, &chat, "m-1").await;
    let got = deliveries_before_sentinel(&broker, &mut rx, &watcher, 1).await;
    let recipients: Vec<&str> = got.iter().map(|(u, _)| u.as_str()).collect();
    assert_eq!(recipients, vec!["patient-1"]);

    // The patient leaves; a later message reaches nobody here. (Unsubscribe is
    // queued on the same shard before the watcher's re-subscribe, which waits
    // for Redis.)
    broker.unsubscribe(&chat.patient).await.unwrap();
    broker.subscribe(&watcher).await.unwrap();
    append(&broker, &chat, "m-2").await;
    let typing = Envelope::new(
        None,
        &ServerFrame::Typing {
            chat_id: chat.id,
            user_id: chat.doctor.clone(),
            active: true,
        },
    );
    broker.publish(&chat.patient, typing).await.unwrap();
    let got = deliveries_before_sentinel(&broker, &mut rx, &watcher, 2).await;
    assert!(got.is_empty(), "delivered to unsubscribed users: {got:?}");
}

#[tokio::test]
async fn publish_delivers_an_ephemeral_envelope_to_that_user_only() {
    let server = RedisServer::start();
    let (broker, mut rx, _) = connect(&server).await;
    let alice = user("alice");
    let bob = user("bob");
    broker.subscribe(&alice).await.unwrap();
    broker.subscribe(&bob).await.unwrap();

    let origin = SessionId::generate();
    let typing = Envelope::new(
        Some(origin),
        &ServerFrame::Typing {
            chat_id: ChatId::generate(),
            user_id: bob.clone(),
            active: true,
        },
    );
    let unread = Envelope::new(
        None,
        &ServerFrame::Unread {
            chat_id: ChatId::generate(),
            count: 3,
            total: 7,
        },
    );
    broker.publish(&alice, typing.clone()).await.unwrap();
    broker.publish(&alice, unread.clone()).await.unwrap();

    let got = deliveries_before_sentinel(&broker, &mut rx, &bob, 1).await;
    assert_eq!(got, vec![(alice.clone(), typing), (alice, unread)]);
}

// ---------------------------------------------------------------- read marks

#[tokio::test]
async fn append_read_clamps_to_the_current_seq_and_notifies_only_the_peer() {
    let server = RedisServer::start();
    let (broker, mut rx, _) = connect(&server).await;
    let chat = TestChat::new();
    broker.subscribe(&chat.patient).await.unwrap();
    broker.subscribe(&chat.doctor).await.unwrap();

    // No counter yet: the broker asks for the floor.
    let r = broker
        .append_read(chat.id, &chat.doctor, &chat.patient, 5, None)
        .await;
    assert!(
        matches!(r, Err(BrokerError::SeqUnknown(id)) if id == chat.id),
        "{r:?}"
    );
    // An empty chat: nothing to mark, nothing appended, nothing published.
    let mark = broker
        .append_read(chat.id, &chat.doctor, &chat.patient, 5, Some(0))
        .await
        .unwrap();
    assert_eq!(mark, 0);
    let got = deliveries_before_sentinel(&broker, &mut rx, &chat.patient, 1).await;
    assert!(got.is_empty(), "an empty read was published: {got:?}");

    for i in 1..=3 {
        append(&broker, &chat, &format!("m-{i}")).await;
    }
    let got = deliveries_before_sentinel(&broker, &mut rx, &chat.patient, 2).await;
    assert_eq!(got.len(), 6, "3 messages to 2 users: {got:?}");

    // The doctor reads "up to 10" of 3 messages.
    let mark = broker
        .append_read(chat.id, &chat.doctor, &chat.patient, 10, None)
        .await
        .unwrap();
    assert_eq!(mark, 3);
    // Below the current seq, no clamping.
    let mark = broker
        .append_read(chat.id, &chat.doctor, &chat.patient, 2, None)
        .await
        .unwrap();
    assert_eq!(mark, 2);

    let got = deliveries_before_sentinel(&broker, &mut rx, &chat.doctor, 3).await;
    let expected: Vec<(UserId, ServerFrame)> = [3, 2]
        .into_iter()
        .map(|up_to_seq| {
            (
                chat.patient.clone(),
                ServerFrame::Read {
                    chat_id: chat.id,
                    user_id: chat.doctor.clone(),
                    up_to_seq,
                },
            )
        })
        .collect();
    let got: Vec<(UserId, ServerFrame)> = got
        .into_iter()
        .map(|(u, env)| {
            assert_eq!(env.origin, None);
            (u, frame(&env))
        })
        .collect();
    assert_eq!(got, expected, "read frames go to the peer only");

    // The stream: three messages, then the two clamped marks; no mark of 0.
    let log = event_log(&server, "reader").await;
    let events = read_through(&log, |e| {
        matches!(e, StreamEvent::Read { up_to_seq: 2, .. })
    })
    .await;
    let reads: Vec<&StreamEvent> = events
        .iter()
        .filter(|e| matches!(e, StreamEvent::Read { .. }))
        .collect();
    let read = |up_to_seq| StreamEvent::Read {
        chat_id: chat.id,
        user_id: chat.doctor.clone(),
        up_to_seq,
    };
    assert_eq!(reads, vec![&read(3), &read(2)]);
    assert_eq!(events.len(), 5, "{events:?}");
}

// ---------------------------------------------------------------- recent window

#[tokio::test]
async fn recent_returns_ascending_windows_from_the_requested_end() {
    let server = RedisServer::start();
    let (broker, _rx, _) = connect(&server).await;
    let chat = TestChat::new();
    let mut appended = Vec::new();
    for i in 1..=10 {
        appended.push(append(&broker, &chat, &format!("m-{i}")).await);
    }
    let window = |after, before, limit| SeqWindow {
        after,
        before,
        limit,
    };
    let recent = |w| {
        let broker = broker.clone();
        async move { broker.recent(chat.id, w).await.unwrap() }
    };

    // after=N: the first `limit` above N.
    assert_eq!(
        seqs(&recent(window(Some(3), None, 4)).await),
        vec![4, 5, 6, 7]
    );
    assert_eq!(seqs(&recent(window(Some(8), None, 4)).await), vec![9, 10]);
    assert_eq!(
        seqs(&recent(window(Some(10), None, 4)).await),
        Vec::<u64>::new()
    );
    // before=N: the newest `limit` below N.
    assert_eq!(seqs(&recent(window(None, Some(6), 3)).await), vec![3, 4, 5]);
    assert_eq!(seqs(&recent(window(None, Some(3), 5)).await), vec![1, 2]);
    // Neither: the newest `limit`.
    assert_eq!(
        seqs(&recent(window(None, None, 4)).await),
        vec![7, 8, 9, 10]
    );
    // Both bounds, limit taken from the `after` end.
    assert_eq!(
        seqs(&recent(window(Some(2), Some(9), 3)).await),
        vec![3, 4, 5]
    );
    // Whole messages come back as appended.
    assert_eq!(recent(window(None, None, 100)).await, appended);
    // Another chat's window is separate.
    let other = broker
        .recent(ChatId::generate(), window(None, None, 100))
        .await
        .unwrap();
    assert!(other.is_empty());
}

#[tokio::test]
async fn recent_returns_nothing_for_a_zero_limit_and_everything_for_a_huge_one() {
    let server = RedisServer::start();
    let (broker, _rx, _) = connect(&server).await;
    let chat = TestChat::new();
    for i in 1..=3 {
        append(&broker, &chat, &format!("m-{i}")).await;
    }
    for (after, before) in [(None, None), (Some(1), None), (None, Some(3))] {
        let none = broker
            .recent(
                chat.id,
                SeqWindow {
                    after,
                    before,
                    limit: 0,
                },
            )
            .await
            .unwrap();
        assert!(none.is_empty(), "limit 0 gave {none:?}");
    }
    // "No limit" as callers naturally spell it.
    for (after, before, expected) in [
        (None, None, vec![1, 2, 3]),
        (Some(1), None, vec![2, 3]),
        (None, Some(3), vec![1, 2]),
    ] {
        let all = broker
            .recent(
                chat.id,
                SeqWindow {
                    after,
                    before,
                    limit: usize::MAX,
                },
            )
            .await
            .unwrap();
        assert_eq!(seqs(&all), expected);
    }
}

#[tokio::test]
async fn the_recent_window_keeps_only_the_newest_messages() {
    let server = RedisServer::start();
    let (broker, _rx, _) = connect(&server).await;
    let chat = TestChat::new();
    let total = DEFAULT_RECENT_WINDOW + 10;
    for i in 1..=total {
        append(&broker, &chat, &format!("m-{i}")).await;
    }
    let kept = broker
        .recent(
            chat.id,
            SeqWindow {
                after: None,
                before: None,
                limit: total,
            },
        )
        .await
        .unwrap();
    let expected: Vec<u64> = (11..=total as u64).collect();
    assert_eq!(seqs(&kept), expected);
}

// ---------------------------------------------------------------- outages

#[tokio::test]
async fn after_a_redis_restart_the_subscriber_resubscribes_by_itself() {
    let mut server = RedisServer::start();
    let (broker, rx, inbox) = connect(&server).await;
    let alice = user("alice");
    broker.subscribe(&alice).await.unwrap();
    let rx = tokio::sync::Mutex::new(rx);
    let rx = &rx;

    let before = sentinel(1);
    broker.publish(&alice, before.clone()).await.unwrap();
    let got = tokio::time::timeout(DELIVERY, rx.lock().await.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, (alice.clone(), before));
    assert_eq!(inbox.resubscribed.load(Ordering::SeqCst), 0);

    // No AOF: the restarted server knows no subscriptions and no data.
    server.restart();

    let after = sentinel(2);
    let broker = &broker;
    let (u, env) = eventually(
        Duration::from_secs(15),
        "a publish after the restart reaches the subscribed user",
        || {
            let after = after.clone();
            let alice = alice.clone();
            async move {
                // Errors while the command connection reconnects are expected.
                let _ = broker.publish(&alice, after).await;
                tokio::time::timeout(Duration::from_millis(200), rx.lock().await.recv())
                    .await
                    .ok()
                    .flatten()
            }
        },
    )
    .await;
    assert_eq!((u, env), (alice.clone(), after));
    eventually(DELIVERY, "Inbox::resubscribed is called", || async {
        (inbox.resubscribed.load(Ordering::SeqCst) >= 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn while_redis_is_down_appends_fail_as_unavailable_and_work_again_after_it_returns() {
    let mut server = RedisServer::start();
    let (broker, _rx, _) = connect(&server).await;
    let chat = TestChat::new();
    assert_eq!(append(&broker, &chat, "before").await.seq, 1);

    server.kill();
    let started = Instant::now();
    let down = broker
        .append_message(
            &chat.draft("during", "x"),
            &chat.participants(),
            SessionId::generate(),
            Some(1),
        )
        .await;
    assert!(matches!(down, Err(BrokerError::Unavailable(_))), "{down:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "an outage must not hang a send: {:?}",
        started.elapsed()
    );
    assert!(matches!(
        broker.ping().await,
        Err(BrokerError::Unavailable(_))
    ));

    // Back, empty (no AOF): the counter is gone, and the store's last_seq (1)
    // is the floor.
    server.restart();
    let draft = chat.draft("after", "y");
    let m = eventually(Duration::from_secs(15), "appends work again", || {
        let (broker, chat, draft) = (&broker, &chat, &draft);
        async move {
            let origin = SessionId::generate();
            match broker
                .append_message(draft, &chat.participants(), origin, None)
                .await
            {
                Err(BrokerError::SeqUnknown(_)) => broker
                    .append_message(draft, &chat.participants(), origin, Some(1))
                    .await
                    .ok(),
                Err(BrokerError::Unavailable(_)) => None,
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(m, Appended::New(m.message().clone()));
    assert_eq!(m.message().seq, 2);
    broker.ping().await.unwrap();
}

#[tokio::test]
async fn the_event_log_recreates_its_group_after_redis_lost_its_data() {
    let mut server = RedisServer::start();
    let (broker, _rx, _) = connect(&server).await;
    let chat = TestChat::new();
    append(&broker, &chat, "before").await;
    let log = event_log(&server, "persister-1").await;
    let first = read_entries(&log, 1, 100).await;
    log.ack(&ids(&first)).await.unwrap();

    server.restart();

    // Until the log has read once after the restart, the group is missing.
    let _ = eventually(
        Duration::from_secs(15),
        "the log reads again after the restart",
        || async { log.read_batch(100, Duration::from_millis(50)).await.ok() },
    )
    .await;
    let after = eventually(
        Duration::from_secs(15),
        "a gateway appends again",
        || async {
            match broker
                .append_message(
                    &chat.draft("after", "y"),
                    &chat.participants(),
                    SessionId::generate(),
                    Some(1),
                )
                .await
            {
                Ok(a) => Some(a.message().clone()),
                Err(_) => None,
            }
        },
    )
    .await;
    assert_eq!(after.seq, 2);
    let entries = read_entries(&log, 1, 100).await;
    assert_eq!(
        entries
            .into_iter()
            .map(|e| e.event.unwrap())
            .collect::<Vec<_>>(),
        vec![StreamEvent::Message(after)]
    );
}

// ---------------------------------------------------------------- event log

#[tokio::test]
async fn unacknowledged_entries_are_read_again_after_replay_pending_and_acked_ones_are_not() {
    let server = RedisServer::start();
    let (broker, _rx, _) = connect(&server).await;
    let chat = TestChat::new();
    let mut appended = Vec::new();
    for i in 1..=3 {
        appended.push(append(&broker, &chat, &format!("m-{i}")).await);
    }
    let log = event_log(&server, "persister-1").await;
    let first = read_entries(&log, 3, 100).await;
    assert_eq!(first.len(), 3);
    let events: Vec<StreamEvent> = first.iter().map(|e| e.event.clone().unwrap()).collect();
    let expected: Vec<StreamEvent> = appended.iter().cloned().map(StreamEvent::Message).collect();
    assert_eq!(events, expected);

    // Nothing acked: the batch "failed" and is replayed, in order, even in
    // batches smaller than the backlog.
    log.replay_pending();
    let replayed = read_entries(&log, 3, 2).await;
    assert_eq!(ids(&replayed), ids(&first));

    // Ack the first two; a replay yields only the third.
    log.ack(&ids(&first[..2])).await.unwrap();
    log.replay_pending();
    let replayed = read_entries(&log, 1, 100).await;
    assert_eq!(ids(&replayed), ids(&first[2..]));
    assert_nothing_more(&log).await;

    // All acked: a replay yields nothing, and new entries still arrive.
    log.ack(&ids(&first[2..])).await.unwrap();
    log.replay_pending();
    assert_nothing_more(&log).await;
    let fourth = append(&broker, &chat, "m-4").await;
    let next = read_entries(&log, 1, 100).await;
    assert_eq!(
        next.into_iter()
            .map(|e| e.event.unwrap())
            .collect::<Vec<_>>(),
        vec![StreamEvent::Message(fourth)]
    );
}

#[tokio::test]
async fn a_restarted_consumer_with_the_same_name_reads_its_unacknowledged_entries_first() {
    let server = RedisServer::start();
    let (broker, _rx, _) = connect(&server).await;
    let chat = TestChat::new();
    for i in 1..=3 {
        append(&broker, &chat, &format!("m-{i}")).await;
    }
    let crashed = event_log(&server, "persister-1").await;
    let first = read_entries(&crashed, 3, 100).await;
    crashed.ack(&ids(&first[..1])).await.unwrap();
    drop(crashed);

    let restarted = event_log(&server, "persister-1").await;
    let again = read_entries(&restarted, 2, 100).await;
    assert_eq!(ids(&again), ids(&first[1..]));
    restarted.ack(&ids(&again)).await.unwrap();
    assert_nothing_more(&restarted).await;

    // A consumer with another name never sees this consumer's pending entries.
    let other = event_log(&server, "persister-2").await;
    assert_nothing_more(&other).await;
}

#[tokio::test]
async fn two_consumers_in_the_group_split_the_entries_without_overlap() {
    const TOTAL: usize = 20;
    let server = RedisServer::start();
    let (broker, _rx, _) = connect(&server).await;
    let chat = TestChat::new();
    for i in 1..=TOTAL {
        append(&broker, &chat, &format!("m-{i}")).await;
    }
    let a = event_log(&server, "persister-a").await;
    let b = event_log(&server, "persister-b").await;

    let mut got_a = Vec::new();
    let mut got_b = Vec::new();
    let deadline = Instant::now() + DELIVERY;
    while got_a.len() + got_b.len() < TOTAL {
        assert!(Instant::now() < deadline, "entries missing");
        for (log, got) in [(&a, &mut got_a), (&b, &mut got_b)] {
            let batch = log.read_batch(3, Duration::from_millis(50)).await.unwrap();
            log.ack(&ids(&batch)).await.unwrap();
            got.extend(batch);
        }
    }
    assert!(!got_a.is_empty() && !got_b.is_empty());
    let set_a: HashSet<String> = ids(&got_a).into_iter().collect();
    let set_b: HashSet<String> = ids(&got_b).into_iter().collect();
    assert!(
        set_a.is_disjoint(&set_b),
        "overlap: {:?}",
        set_a.intersection(&set_b)
    );
    let mut all_seqs: Vec<u64> = got_a
        .iter()
        .chain(&got_b)
        .map(|e| match e.event.as_ref().unwrap() {
            StreamEvent::Message(m) => m.seq,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    all_seqs.sort_unstable();
    assert_eq!(all_seqs, (1..=TOTAL as u64).collect::<Vec<_>>());
    assert_nothing_more(&a).await;
    assert_nothing_more(&b).await;
}

#[tokio::test]
async fn with_wait_replicas_an_append_is_acknowledged_only_once_a_replica_has_it() {
    let primary = RedisServer::start();
    let broker = RedisBroker::connect(
        &RedisSettings {
            wait_replicas: 1,
            // Generous: on a loaded 2-core machine a replica's acknowledgement
            // can take a while; the refusal below waits this long once.
            wait_timeout: Duration::from_secs(2),
            ..settings(&primary)
        },
        None,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let chat = TestChat::new();
    let draft = chat.draft("c-1", "needs a replica");
    let origin = SessionId::generate();
    // No replica: the append is refused as unavailable (never acknowledged).
    let refused = broker
        .append_message(&draft, &chat.participants(), origin, Some(0))
        .await;
    assert!(
        matches!(refused, Err(BrokerError::Unavailable(_))),
        "{refused:?}"
    );

    // With a replica attached, the client's retry (same client_msg_id) is
    // acknowledged — as the original message, stored once.
    let _replica = RedisServer::replica_of(&primary);
    let acked = eventually(Duration::from_secs(20), "the replica confirms", || async {
        broker
            .append_message(&draft, &chat.participants(), origin, None)
            .await
            .ok()
    })
    .await;
    assert_eq!(acked.message().seq, 1);
    assert!(matches!(acked, Appended::Duplicate(_)));
    let next = append(&broker, &chat, "c-2").await;
    assert_eq!(next.seq, 2);
}

#[tokio::test]
async fn a_blocking_read_longer_than_the_drivers_default_timeout_waits_instead_of_failing() {
    let server = RedisServer::start();
    let log = event_log(&server, "patient-reader").await;
    // First call replays (no) pending entries; the second one blocks.
    assert!(log
        .read_batch(10, Duration::from_millis(10))
        .await
        .unwrap()
        .is_empty());
    let started = Instant::now();
    let entries = log.read_batch(10, Duration::from_millis(1500)).await;
    assert!(entries.is_ok(), "{entries:?}");
    assert!(entries.unwrap().is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "it really blocked"
    );
}
