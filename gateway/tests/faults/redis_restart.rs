//! Fault: Redis (AOF on) goes away under traffic and comes back on the same
//! port, while the gateways keep running (guarantees 1, 2, 10).

use crate::conn::Conn;
use crate::harness::{
    assert_exactly_once, assert_exactly_once_in_order, assert_history_holds, eventually, Backend,
    WAIT,
};
use crate::process::Gateway;
use chat_shared::domain::Role;
use chat_shared::protocol::{ErrorCode, Message, ServerFrame};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One `send` of the steady sender: when it went out, when the reply came,
/// and the acked message (`None`: refused as `unavailable`).
struct Attempt {
    sent: Instant,
    replied: Instant,
    acked: Option<Message>,
}

/// Sends without pause through the outage, as an app does: a refused send is
/// retried with the same `client_msg_id`. The session must never drop.
async fn steady_sender(
    mut conn: Conn,
    chat: String,
    stop: Arc<AtomicBool>,
    refusals: Arc<AtomicU64>,
) -> Vec<Attempt> {
    let mut attempts = Vec::new();
    let mut k = 0;
    while !stop.load(Ordering::Relaxed) {
        k += 1;
        let key = format!("steady-{k}");
        loop {
            let sent = Instant::now();
            let reply = conn.send_message(&chat, &key, &format!("steady {k}")).await;
            let replied = Instant::now();
            match reply {
                Ok(ServerFrame::Ack { message, .. }) => {
                    attempts.push(Attempt {
                        sent,
                        replied,
                        acked: Some(message),
                    });
                    break;
                }
                Ok(ServerFrame::Error {
                    code: ErrorCode::Unavailable,
                    ..
                }) => {
                    attempts.push(Attempt {
                        sent,
                        replied,
                        acked: None,
                    });
                    refusals.fetch_add(1, Ordering::Relaxed);
                    // Retry pacing of an app, not a wait for a condition.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => panic!("steady send {key}: {other:?} (the session must stay open)"),
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    attempts
}

/// One chat whose sender and receiver sit on different nodes.
struct Pair {
    chat: String,
    doctor_id: String,
    sender: Conn,
    receiver: Conn,
    acked: Vec<Message>,
    next: u64,
}

impl Pair {
    async fn send(&mut self) -> Message {
        self.next += 1;
        let key = format!("r-{}", self.next);
        let m = self
            .sender
            .send_until_acked(&self.chat, &key, &format!("message {}", self.next))
            .await;
        self.acked.push(m.clone());
        m
    }
}

#[tokio::test]
async fn a_redis_restart_keeps_sessions_open_refuses_sends_as_unavailable_then_resumes_acks_delivery_and_seq_without_gap(
) {
    let mut backend = Backend::start(true, true).await;
    // The steady sender (and its retries) would exceed the default send rate.
    let rate = [("SEND_RATE_PER_SECOND", "1000"), ("SEND_BURST", "1000")];
    let node_a = Gateway::spawn(&backend, "redis-a", &rate).await;
    let node_b = Gateway::spawn(&backend, "redis-b", &rate).await;
    let nodes = [&node_a, &node_b];

    // Patient on A -> doctor on B, and patient on B -> doctor on A.
    let mut pairs = Vec::new();
    for (i, (from, to)) in [(&node_a, &node_b), (&node_b, &node_a)]
        .into_iter()
        .enumerate()
    {
        let (patient, doctor) = (format!("pat-rr{i}"), format!("doc-rr{i}"));
        let chat = backend.create_chat(from.port, &patient, &doctor).await;
        pairs.push(Pair {
            sender: Conn::connect(from.port, &backend.token(&patient, Role::Patient)).await,
            receiver: Conn::connect(to.port, &backend.token(&doctor, Role::Doctor)).await,
            chat,
            doctor_id: doctor,
            acked: Vec::new(),
            next: 0,
        });
    }
    // And a third conversation sends without pause through the whole fault.
    let steady_chat = backend
        .create_chat(node_a.port, "pat-steady", "doc-steady")
        .await;
    let mut steady_receiver =
        Conn::connect(node_b.port, &backend.token("doc-steady", Role::Doctor)).await;
    let (stop, refusals) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let steady = tokio::spawn(steady_sender(
        Conn::connect(node_a.port, &backend.token("pat-steady", Role::Patient)).await,
        steady_chat.clone(),
        stop.clone(),
        refusals.clone(),
    ));
    for p in &mut pairs {
        for _ in 0..3 {
            p.send().await;
        }
        p.receiver
            .wait_for_seq(&p.chat, 3)
            .await
            .expect("receiver session");
    }

    // Outage.
    backend.redis.kill();
    let killed = Instant::now();
    for n in nodes {
        eventually("/readyz turns 503 while Redis is down", &mut || async {
            (n.status_of(&backend.http, "/readyz").await == 503).then_some(())
        })
        .await;
    }
    for p in &mut pairs {
        for k in 0..3 {
            let key = format!("outage-{k}");
            match p
                .sender
                .send_message(&p.chat, &key, "during the outage")
                .await
            {
                Ok(ServerFrame::Error { code, .. }) => {
                    assert_eq!(code, ErrorCode::Unavailable, "a send during the outage")
                }
                other => panic!("a send during the outage must be refused, got {other:?}"),
            }
        }
        // Sessions stay open (guarantee 10).
        p.sender
            .ping()
            .await
            .expect("sender session survives the outage");
        p.receiver
            .ping()
            .await
            .expect("receiver session survives the outage");
    }

    eventually(
        "the steady sender is refused during the outage",
        &mut || async { (refusals.load(Ordering::Relaxed) >= 2).then_some(()) },
    )
    .await;

    // Redis comes back on the same port, with its AOF. Gateways are not restarted.
    let restarting = Instant::now();
    backend.redis.restart();
    let restarted = Instant::now();
    let mut first_ack = Vec::new();
    for p in &mut pairs {
        let m = p.send().await;
        first_ack.push(restarted.elapsed());
        assert_eq!(
            m.seq, 4,
            "seq continues after the restart: refused sends used none"
        );
    }

    // Live delivery resumes across nodes by itself: keep sending until the
    // receiver on the other node gets a message live.
    let mut live_again = Vec::new();
    for p in &mut pairs {
        let deadline = Instant::now() + WAIT;
        loop {
            let m = p.send().await;
            let got =
                eventually_within(&mut p.receiver, &p.chat, m.seq, Duration::from_millis(250))
                    .await;
            if got {
                live_again.push(restarted.elapsed());
                break;
            }
            assert!(
                Instant::now() < deadline,
                "live delivery did not resume within {WAIT:?}"
            );
        }
    }
    // Whatever was published before the node's pub/sub reconnected, the
    // receiver fetches by `sync` from its last contiguous seq; then traffic flows live.
    let mut missed_live = Vec::new();
    for p in &mut pairs {
        let seen = p.receiver.seqs(&p.chat);
        let contiguous = (1..).take_while(|s| seen.contains(s)).last().unwrap_or(0);
        p.receiver
            .sync(&p.chat, contiguous)
            .await
            .expect("receiver session");
        missed_live.push(p.receiver.seqs(&p.chat).len() - seen.len());
        for _ in 0..3 {
            let m = p.send().await;
            p.receiver
                .wait_for_seq(&p.chat, m.seq)
                .await
                .expect("receiver session");
        }
        p.receiver.ping().await.expect("receiver session");
    }

    // The steady conversation: nothing sent during the outage was acked;
    // acks continue 1, 2, 3, … across it (a retried key acks its message
    // once); the receiver gets each once, by `sync` for what pub/sub missed.
    stop.store(true, Ordering::Relaxed);
    let attempts = steady.await.unwrap();
    let in_outage = attempts
        .iter()
        .filter(|a| a.sent > killed && a.replied < restarting)
        .collect::<Vec<_>>();
    assert!(!in_outage.is_empty());
    assert!(
        in_outage.iter().all(|a| a.acked.is_none()),
        "a send made while Redis was down was acked"
    );
    let mut steady_acked: Vec<Message> = attempts.iter().filter_map(|a| a.acked.clone()).collect();
    let steady_head = steady_acked.len() as u64;
    let seqs: Vec<u64> = steady_acked.iter().map(|m| m.seq).collect();
    assert_exactly_once_in_order(
        "steady sender's acks across the restart",
        &seqs,
        steady_head,
    );
    steady_receiver
        .ping()
        .await
        .expect("steady receiver survives");
    let seen = steady_receiver.seqs(&steady_chat);
    let contiguous = (1..).take_while(|s| seen.contains(s)).last().unwrap_or(0);
    steady_receiver
        .sync(&steady_chat, contiguous)
        .await
        .expect("steady receiver survives");
    assert_exactly_once(
        "steady receiver",
        &steady_receiver.seqs(&steady_chat),
        steady_head,
    );
    steady_acked.dedup_by_key(|m| m.seq);
    let history = backend
        .history(node_b.port, &steady_chat, "doc-steady", Role::Doctor)
        .await;
    assert_history_holds("steady history", &history, &steady_acked, steady_head);

    for p in &pairs {
        // Acks: 1, 2, 3, … (a retried key acks the same message again).
        let mut acked = p.acked.clone();
        acked.dedup_by_key(|m| m.seq);
        let head = acked.last().unwrap().seq;
        let seqs: Vec<u64> = acked.iter().map(|m| m.seq).collect();
        assert_exactly_once_in_order("acked seqs across the restart", &seqs, head);
        // Delivered once each (live or by sync), nothing missing.
        assert_exactly_once(
            "receiver across the restart",
            &p.receiver.seqs(&p.chat),
            head,
        );
        // In history, and in MongoDB once the persister has recovered too.
        let history = backend
            .history(node_b.port, &p.chat, &p.doctor_id, Role::Doctor)
            .await;
        assert_history_holds("history after the restart", &history, &acked, head);
        assert!(
            !history
                .iter()
                .any(|m| m.client_msg_id.as_str().starts_with("outage-")),
            "a refused send was stored"
        );
        let stored = eventually("MongoDB holds every acked message", &mut || async {
            let s = backend.stored(&p.chat).await;
            (s.len() as u64 >= head).then_some(s)
        })
        .await;
        assert_history_holds("MongoDB after the restart", &stored, &acked, head);
        assert!(p.sender.ended().is_none() && p.receiver.ended().is_none());
    }
    for n in nodes {
        assert_eq!(
            n.status_of(&backend.http, "/readyz").await,
            200,
            "ready again"
        );
    }
    let steady_first_ack = attempts
        .iter()
        .find(|a| a.acked.is_some() && a.sent > restarting)
        .map(|a| a.replied - restarting);
    println!(
        "Redis restart: steady sender refused {} times during the outage, {steady_head} acks in \
         all, first ack {steady_first_ack:?} after the restart; first acks of the other pairs \
         {first_ack:?}; live cross-node delivery again {live_again:?}; acked messages not \
         delivered live (recovered by sync): {missed_live:?}",
        refusals.load(Ordering::Relaxed)
    );
}

/// Reads `conn` for up to `within`; whether `seq` of `chat` has been received.
async fn eventually_within(conn: &mut Conn, chat: &str, seq: u64, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while !conn.has(chat, seq) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        conn.read(left).await.expect("receiver session survives");
    }
    true
}

#[tokio::test]
async fn after_a_redis_restart_the_first_message_acked_reaches_the_connected_peer_on_another_node_without_it_asking(
) {
    let mut backend = Backend::start(true, false).await;
    let node_a = Gateway::spawn(&backend, "resub-a", &[]).await;
    let node_b = Gateway::spawn(&backend, "resub-b", &[]).await;
    let chat = backend.create_chat(node_a.port, "pat-rs", "doc-rs").await;
    let mut patient = Conn::connect(node_a.port, &backend.token("pat-rs", Role::Patient)).await;
    let mut doctor = Conn::connect(node_b.port, &backend.token("doc-rs", Role::Doctor)).await;
    patient
        .send_until_acked(&chat, "before", "before the outage")
        .await;
    doctor.wait_for_seq(&chat, 1).await.expect("doctor session");

    backend.redis.kill();
    for n in [&node_a, &node_b] {
        eventually("/readyz turns 503 while Redis is down", &mut || async {
            (n.status_of(&backend.http, "/readyz").await == 503).then_some(())
        })
        .await;
    }
    // The outage lasts two seconds (the length of the fault, not a wait for a
    // condition): long enough for the nodes to be retrying their connections.
    tokio::time::sleep(Duration::from_secs(2)).await;
    backend.redis.restart();

    // One message after the outage, then silence: the doctor, still connected
    // and never told anything was missed, must get it (guarantee 10: delivery
    // resumes by itself). A client only learns of a gap from a later message,
    // so a lost last message is never recovered.
    let m = patient
        .send_until_acked(&chat, "after", "the first message after the outage")
        .await;
    assert_eq!(m.seq, 2);
    let got = eventually_within(&mut doctor, &chat, 2, WAIT).await;
    let pubsub: Vec<String> = node_b
        .logs()
        .lines()
        .filter(|l| l.contains("pub/sub"))
        .map(str::to_owned)
        .collect();
    assert!(
        got,
        "the doctor, connected to node B throughout, never got seq 2 (acked at {}); node B's \
         pub/sub log:\n{}",
        m.created_at,
        pubsub.join("\n")
    );
}
