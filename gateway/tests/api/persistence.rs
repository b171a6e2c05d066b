//! The persister under faults: dead replicas, poison entries, trimming, and
//! MongoDB outages.

use crate::helpers::Cluster;
use chat_shared::broker::redis::keys::Shard;
use chat_shared::broker::redis::stream::RedisEventLog;
use chat_shared::broker::{EventLog, SeqWindow};
use chat_shared::domain::{ChatId, Role, UserId};
use chat_shared::store::mongo::MongoStore;
use chat_shared::store::Store;
use chat_testkit::TcpProxy;
use std::time::Duration;

/// The event stream of the single shard these tests run with.
const STREAM: &str = "chat:{s0}:events";

async fn store(cluster: &Cluster) -> MongoStore {
    MongoStore::connect(&cluster.mongo_settings(), Duration::from_secs(5))
        .await
        .unwrap()
}

async fn stored_seqs(store: &MongoStore, chat: ChatId) -> Vec<u64> {
    store
        .messages(
            chat,
            SeqWindow {
                after: Some(0),
                before: None,
                limit: 10_000,
            },
        )
        .await
        .unwrap()
        .iter()
        .map(|m| m.seq)
        .collect()
}

async fn redis(cluster: &Cluster) -> redis::aio::MultiplexedConnection {
    redis::Client::open(cluster.redis().url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

fn fast_chores(s: &mut chat_persister::configuration::Settings) {
    s.worker.claim_idle = Duration::from_millis(300);
    s.worker.claim_every = Duration::from_millis(100);
    s.worker.trim_every = Duration::from_millis(100);
}

#[tokio::test]
async fn a_dead_replicas_unacknowledged_entries_are_taken_over_by_another() {
    let mut cluster = Cluster::start_with(1, false).await;
    let chat = cluster.create_chat("pat-k", "doc-k", "a").await;
    let chat_id = chat.id.to_string();
    let mut doctor = cluster.connect(0, "doc-k", Role::Doctor).await;
    for i in 1..=4 {
        doctor.send_message(&chat_id, &format!("d{i}"), "x").await;
    }
    // Replica "doomed" receives the entries, then dies without acknowledging.
    let doomed = RedisEventLog::connect(&cluster.redis_settings(), Shard(0), "doomed")
        .await
        .unwrap();
    let _ = doomed
        .read_batch(100, Duration::from_millis(50))
        .await
        .unwrap();
    let held = doomed
        .read_batch(100, Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(held.len(), 4);
    drop(doomed);

    // Another replica, with another name, takes them over.
    cluster.start_persister_with("survivor", fast_chores).await;
    doctor.send_message(&chat_id, "d5", "x").await;
    let store = store(&cluster).await;
    let seqs = cluster
        .eventually("all five persisted", || async {
            let s = stored_seqs(&store, chat.id).await;
            (s.len() == 5).then_some(s)
        })
        .await;
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    // The taken-over entries may be applied after the newer one: the counters
    // converge to the exact value either way.
    let patient = UserId::parse("pat-k").unwrap();
    let record = cluster
        .eventually("counters caught up", || async {
            let c = store.chat(chat.id).await.unwrap().unwrap();
            (c.unread_of(&patient) == 5).then_some(c)
        })
        .await;
    assert_eq!(record.last_seq, 5);
    assert_eq!(record.last_message.map(|m| m.seq), Some(5));
}

#[tokio::test]
async fn an_undecodable_entry_goes_to_the_dead_letter_stream_and_the_stream_keeps_flowing() {
    let mut cluster = Cluster::start_with(1, false).await;
    cluster.start_persister_with("p", fast_chores).await;
    let chat = cluster.create_chat("pat-dl", "doc-dl", "a").await;
    let mut conn = redis(&cluster).await;
    let poison: String = redis::cmd("XADD")
        .arg(STREAM)
        .arg("*")
        .arg("t")
        .arg("m")
        .arg("d")
        .arg("{not json")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut patient = cluster.connect(0, "pat-dl", Role::Patient).await;
    patient
        .send_message(&chat.id.to_string(), "k", "after the poison")
        .await;
    let store = store(&cluster).await;
    cluster
        .eventually("the good message persisted", || async {
            (stored_seqs(&store, chat.id).await == [1]).then_some(())
        })
        .await;
    let dead: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("chat:events:dead")
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(dead.ids.len(), 1);
    assert_eq!(dead.ids[0].get::<String>("entry").unwrap(), poison);
    assert_eq!(dead.ids[0].get::<String>("f:d").unwrap(), "{not json");
    // …and nothing stays pending (the good message's entry is acknowledged
    // right after its counters are written).
    cluster
        .eventually("nothing pending", || {
            let mut conn = conn.clone();
            async move {
                let pending: (u64, Option<String>, Option<String>, redis::Value) =
                    redis::cmd("XPENDING")
                        .arg(STREAM)
                        .arg("persisters")
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                (pending.0 == 0).then_some(())
            }
        })
        .await;
}

#[tokio::test]
async fn the_stream_is_trimmed_but_never_past_an_unpersisted_entry() {
    let mut cluster = Cluster::start_with(1, false).await;
    let chat = cluster.create_chat("pat-tr", "doc-tr", "a").await;
    let chat_id = chat.id.to_string();
    let mut doctor = cluster.connect(0, "doc-tr", Role::Doctor).await;
    let mut conn = redis(&cluster).await;
    let xlen = |mut conn: redis::aio::MultiplexedConnection| async move {
        redis::cmd("XLEN")
            .arg(STREAM)
            .query_async::<u64>(&mut conn)
            .await
            .unwrap()
    };

    // Persisted and acknowledged entries are trimmed away.
    cluster.start_persister_with("first", fast_chores).await;
    for i in 1..=5 {
        doctor.send_message(&chat_id, &format!("a{i}"), "x").await;
    }
    cluster
        .eventually("everything trimmed", || {
            let c = conn.clone();
            async move { (xlen(c).await == 0).then_some(()) }
        })
        .await;
    cluster.stop_persisters().await;

    // A replica holds two entries unacknowledged (it is stuck, not dead: the
    // others must not take them over yet), two more arrive later.
    doctor.send_message(&chat_id, "b1", "x").await;
    doctor.send_message(&chat_id, "b2", "x").await;
    let stuck = RedisEventLog::connect(&cluster.redis_settings(), Shard(0), "stuck")
        .await
        .unwrap();
    let _ = stuck
        .read_batch(100, Duration::from_millis(50))
        .await
        .unwrap();
    let held = stuck
        .read_batch(100, Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(held.len(), 2);
    doctor.send_message(&chat_id, "c1", "x").await;
    doctor.send_message(&chat_id, "c2", "x").await;
    cluster
        .start_persister_with("second", |s| {
            fast_chores(s);
            s.worker.claim_idle = Duration::from_secs(3600);
        })
        .await;
    let store = store(&cluster).await;
    cluster
        .eventually("the later two persisted", || async {
            let s = stored_seqs(&store, chat.id).await;
            (s.contains(&9)).then_some(())
        })
        .await;
    // Several trim rounds (every 100 ms) later the held entries are still there.
    let first_held = held[0].id.clone();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let still: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(STREAM)
            .arg(&first_held)
            .arg(&first_held)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(still.ids.len(), 1, "a pending entry was trimmed");
    }
    assert_eq!(xlen(conn.clone()).await, 4);
    // Once it is acknowledged, it goes too.
    stuck
        .ack(&held.iter().map(|e| e.id.clone()).collect::<Vec<_>>())
        .await
        .unwrap();
    cluster
        .eventually("trimmed after the ack", || {
            let c = conn.clone();
            async move { (xlen(c).await == 0).then_some(()) }
        })
        .await;
}

/// `mongodb://host:port/...` → (`host:port`, URL with the proxy's port).
fn through_proxy(url: &str, proxy_port: u16) -> (String, String) {
    let rest = url
        .strip_prefix("mongodb://")
        .expect("a mongodb:// URL can be proxied");
    let (hostport, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    assert!(
        !hostport.contains(['@', ',']),
        "proxying needs a single host without credentials"
    );
    (
        hostport.to_owned(),
        format!("mongodb://127.0.0.1:{proxy_port}{tail}"),
    )
}

#[tokio::test]
async fn while_mongodb_is_unreachable_sends_are_acked_and_everything_is_persisted_once_afterwards()
{
    let mut cluster = Cluster::start_with(1, false).await;
    let chat = cluster.create_chat("pat-mo", "doc-mo", "a").await;
    let chat_id = chat.id.to_string();
    let mut doctor = cluster.connect(0, "doc-mo", Role::Doctor).await;
    doctor.send_message(&chat_id, "before", "x").await;

    // The persister reaches MongoDB through a proxy we can cut.
    let url = cluster.mongo().url().to_owned();
    let probe = TcpProxy::start("127.0.0.1:1").await;
    let (target, _) = through_proxy(&url, probe.port());
    drop(probe);
    let proxy = TcpProxy::start(&target).await;
    let (_, proxied) = through_proxy(&url, proxy.port());
    cluster
        .start_persister_with("p", |s| {
            s.mongo.url = proxied.clone();
            s.mongo_timeout = Duration::from_millis(500);
            s.worker.max_backoff = Duration::from_millis(500);
        })
        .await;
    let store = store(&cluster).await;
    cluster
        .eventually("the first message persisted", || async {
            (stored_seqs(&store, chat.id).await == [1]).then_some(())
        })
        .await;

    proxy.cut();
    let started = std::time::Instant::now();
    let mut acked = vec![1];
    for i in 0..20 {
        acked.push(
            doctor
                .send_message(&chat_id, &format!("during-{i}"), "x")
                .await
                .seq,
        );
    }
    // Keep MongoDB away for a few persister retry rounds.
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.restore();
    let seqs = cluster
        .eventually("everything persisted after the outage", || async {
            let s = stored_seqs(&store, chat.id).await;
            (s.len() == acked.len()).then_some(s)
        })
        .await;
    println!(
        "MongoDB outage: caught up {:?} after the cut began",
        started.elapsed()
    );
    assert_eq!(seqs, acked);
    let patient = UserId::parse("pat-mo").unwrap();
    let record = cluster
        .eventually("counters caught up", || async {
            let c = store.chat(chat.id).await.unwrap().unwrap();
            (c.unread_of(&patient) == 21).then_some(c)
        })
        .await;
    assert_eq!(record.last_seq, 21);
}

/// A counter's value in the persister's `/metrics`.
async fn persister_counter(cluster: &Cluster, name: &str) -> u64 {
    let text = cluster
        .http
        .get(format!(
            "http://127.0.0.1:{}/metrics",
            cluster.persisters[0].port
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in the persister's metrics"))
}

#[tokio::test]
async fn a_batch_too_big_for_the_stores_timeout_is_written_in_smaller_pieces_exactly_once() {
    let mut cluster = Cluster::start_with(1, false).await;
    // A backlog while no persister runs: 10 chats, 10 messages from each
    // side (1000-character bodies), and a read mark by each patient.
    let body = "x".repeat(1000);
    let mut chats = Vec::new();
    let mut sessions = Vec::new();
    for c in 0..10 {
        let (p, d) = (format!("pat-big{c}"), format!("doc-big{c}"));
        let chat = cluster.create_chat(&p, &d, "a").await;
        let mut patient = cluster.connect(0, &p, Role::Patient).await;
        let mut doctor = cluster.connect(0, &d, Role::Doctor).await;
        let id = chat.id.to_string();
        for i in 0..10 {
            patient.send_message(&id, &format!("p{i}"), &body).await;
            doctor.send_message(&id, &format!("d{i}"), &body).await;
        }
        patient
            .send_json(serde_json::json!({"type": "read", "chat_id": id, "up_to_seq": 4}))
            .await;
        patient.ping().await;
        chats.push((
            chat.id,
            UserId::parse(p).unwrap(),
            UserId::parse(d).unwrap(),
        ));
        sessions.push((patient, doctor));
    }

    // The persister's MongoDB never answers a request over 32 KiB: the whole
    // backlog (≈ 200 KiB of inserts) times out every time at full size, and
    // only pieces of a few dozen events get through.
    let url = cluster.mongo().url().to_owned();
    let probe = TcpProxy::start("127.0.0.1:1").await;
    let (target, _) = through_proxy(&url, probe.port());
    drop(probe);
    let proxy = TcpProxy::mongo_stalling_over(&target, 32 * 1024).await;
    let (_, proxied) = through_proxy(&url, proxy.port());
    cluster
        .start_persister_with("p", |s| {
            s.mongo.url = proxied.clone();
            s.mongo_timeout = Duration::from_millis(500);
            s.worker.max_backoff = Duration::from_millis(200);
        })
        .await;

    let store = store(&cluster).await;
    chat_testkit::eventually(
        Duration::from_secs(90),
        "every chat's counters written",
        || {
            let store = &store;
            let chats = &chats;
            async move {
                for (chat, _, _) in chats {
                    if store.chat(*chat).await.ok()??.last_seq != 20 {
                        return None;
                    }
                }
                Some(())
            }
        },
    )
    .await;

    assert!(
        proxy.stalled() > 0,
        "no request was ever too big: nothing tested"
    );
    assert!(persister_counter(&cluster, "chat_persister_batch_splits_total").await > 0);
    for (chat, patient, doctor) in &chats {
        assert_eq!(
            stored_seqs(&store, *chat).await,
            (1..=20).collect::<Vec<_>>()
        );
        let record = store.chat(*chat).await.unwrap().unwrap();
        // The doctor's messages are the even seqs; 2 and 4 are read.
        assert_eq!(record.unread_of(patient), 8, "{chat}");
        assert_eq!(record.unread_of(doctor), 10, "{chat}");
        assert_eq!(record.read_seq_of(patient), 4, "{chat}");
    }
    // Each message inserted once: pieces that timed out never reached MongoDB
    // (and a replay would count as replayed, not written).
    assert_eq!(
        persister_counter(&cluster, "chat_persister_messages_written_total").await,
        200
    );
    drop(sessions);
}
