//! Fault: SIGTERM to a gateway process holding 200 sessions under traffic
//! (guarantee 8, and no patient data or tokens in logs).

use crate::conn::{upgrade_status, Closed, Conn};
use crate::harness::{assert_history_holds, assert_logs_clean, eventually, Backend};
use crate::process::Gateway;
use chat_shared::domain::Role;
use chat_shared::protocol::{Message, ServerFrame};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `DRAIN_SECONDS` of the node that gets SIGTERM.
const DRAIN: Duration = Duration::from_secs(2);
/// The node's own grace after the window (`DRAIN_GRACE` in startup.rs) plus
/// slack for a loaded 2-core machine: the process must be gone by
/// `DRAIN + EXIT_GRACE` after SIGTERM.
const EXIT_GRACE: Duration = Duration::from_secs(5);
/// Chats on the draining node.
const CHATS: usize = 10;
/// Sessions each participant of each chat holds there (10 × 2 × 10 = 200).
const DEVICES: usize = 10;

/// Patient data that must never reach a log line.
const SECRET_DIAGNOSIS: &str = "zq7-hypertensive-crisis-dose-doubled";

/// What one session on the draining node saw.
struct Ended {
    closed: Closed,
    acked: Vec<Message>,
    /// The `client_msg_id` of a send without a reply when the session closed.
    in_flight: Option<String>,
    chat: String,
}

#[tokio::test]
async fn sigterm_turns_readyz_503_closes_every_one_of_200_sessions_with_1012_loses_no_acked_message_and_exits_0(
) {
    let backend = Backend::start(true, true).await;
    let limits = [
        ("DRAIN_SECONDS", "2"),
        ("MAX_SESSIONS_PER_USER", "50"),
        ("SEND_RATE_PER_SECOND", "1000"),
        ("SEND_BURST", "1000"),
    ];
    let mut node_a = Gateway::spawn(&backend, "drain-a", &limits).await;
    let mut node_b = Gateway::spawn(&backend, "drain-b", &limits).await;

    let sending_acks = Arc::new(AtomicU64::new(0));
    let mut chats = Vec::new();
    let mut sessions = Vec::new();
    for c in 0..CHATS {
        let (patient, doctor) = (format!("pat-dr{c}"), format!("doc-dr{c}"));
        let chat = backend.create_chat(node_b.port, &patient, &doctor).await;
        for d in 0..DEVICES {
            for (user, role) in [(&patient, Role::Patient), (&doctor, Role::Doctor)] {
                let conn = Conn::connect(node_a.port, &backend.token(user, role)).await;
                // The first device of each patient keeps sending through the drain.
                let sends = d == 0 && role == Role::Patient;
                sessions.push(tokio::spawn(drive(
                    conn,
                    chat.clone(),
                    sends,
                    sending_acks.clone(),
                )));
            }
        }
        chats.push((chat, patient, doctor));
    }
    assert_eq!(sessions.len(), 200);
    assert_eq!(node_a.status_of(&backend.http, "/readyz").await, 200);
    // Each doctor also writes from node B, to sessions on the draining node.
    let stop_b = Arc::new(AtomicBool::new(false));
    let mut b_senders = Vec::new();
    for (chat, _, doctor) in &chats {
        let conn = Conn::connect(node_b.port, &backend.token(doctor, Role::Doctor)).await;
        b_senders.push(tokio::spawn(send_until_stopped(
            conn,
            chat.clone(),
            stop_b.clone(),
        )));
    }
    eventually("traffic flows before SIGTERM", &mut || async {
        (sending_acks.load(Ordering::Relaxed) >= 20).then_some(())
    })
    .await;

    let term = Instant::now();
    node_a.sigterm();
    eventually("/readyz turns 503 on SIGTERM", &mut || async {
        (node_a.status_of(&backend.http, "/readyz").await == 503).then_some(())
    })
    .await;
    let unready_after = term.elapsed();
    let token = backend.token("pat-dr0", Role::Patient);
    assert_eq!(
        upgrade_status(node_a.port, &token).await,
        503,
        "a draining node accepts no new session"
    );

    let mut ended = Vec::new();
    for s in sessions {
        ended.push(s.await.unwrap());
    }
    let all_closed_after = term.elapsed();
    let codes: Vec<&Closed> = ended.iter().map(|e| &e.closed).collect();
    assert!(
        codes.iter().all(|c| **c == Closed::Code(1012)),
        "every session closes with 1012: {codes:?}"
    );
    let left = (term + DRAIN + EXIT_GRACE).saturating_duration_since(Instant::now());
    let status = node_a.exited_within(left).await;
    let exited_after = term.elapsed();
    let status = status
        .unwrap_or_else(|| panic!("the process is still running {exited_after:?} after SIGTERM"));
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after the drain: {status}"
    );
    stop_b.store(true, Ordering::Relaxed);

    // Clients resume on node B: an unanswered send is re-sent with its key.
    let mut acked: Vec<(String, Message)> = Vec::new();
    let mut during_drain = 0;
    for e in &ended {
        for m in &e.acked {
            if m.created_at.millis() >= term_millis(term) {
                during_drain += 1;
            }
            acked.push((e.chat.clone(), m.clone()));
        }
    }
    let patients: Vec<String> = chats.iter().map(|(_, p, _)| p.clone()).collect();
    let mut resent = 0;
    for e in &ended {
        if let Some(key) = &e.in_flight {
            resent += 1;
            let patient = &patients[chats.iter().position(|(c, _, _)| *c == e.chat).unwrap()];
            let mut conn = Conn::connect(node_b.port, &backend.token(patient, Role::Patient)).await;
            let m = conn.send_until_acked(&e.chat, key, &body(key)).await;
            acked.push((e.chat.clone(), m));
        }
    }
    for t in b_senders {
        for m in t.await.unwrap() {
            acked.push((m.chat_id.to_string(), m));
        }
    }
    assert!(
        during_drain > 0,
        "messages were acked on the draining node during the drain"
    );

    // No acked message lost: all in history on node B, and in MongoDB.
    for (chat, _, doctor) in &chats {
        let mut mine: Vec<Message> = acked
            .iter()
            .filter(|(c, _)| c == chat)
            .map(|(_, m)| m.clone())
            .collect();
        mine.sort_by_key(|m| m.seq);
        mine.dedup_by_key(|m| m.seq);
        let history = backend
            .history(node_b.port, chat, doctor, Role::Doctor)
            .await;
        let head = history.last().map_or(0, |m| m.seq);
        assert_history_holds("history after the drain", &history, &mine, head);
        let stored = eventually("MongoDB holds every acked message", &mut || async {
            let s = backend.stored(chat).await;
            (s.len() as u64 >= head).then_some(s)
        })
        .await;
        assert_history_holds("MongoDB after the drain", &stored, &mine, head);
    }
    println!(
        "SIGTERM with 200 sessions (DRAIN_SECONDS=2): unready after {unready_after:?}, all closed \
         with 1012 after {all_closed_after:?}, exit 0 after {exited_after:?}; {during_drain} \
         messages acked on the draining node during the drain, {resent} unanswered sends \
         re-sent on node B"
    );

    let logs = vec![node_a.final_logs(), node_b.final_logs()];
    assert_logs_clean(&logs, &[SECRET_DIAGNOSIS], &backend.issued_tokens());
}

fn body(key: &str) -> String {
    format!("{SECRET_DIAGNOSIS} ({key})")
}

/// Wall-clock milliseconds of `at` (messages carry wall-clock `created_at`).
fn term_millis(at: Instant) -> i64 {
    chat_shared::domain::Timestamp::now().millis() - at.elapsed().as_millis() as i64
}

/// Reads (and, with `sends`, keeps sending) until the node closes the session.
async fn drive(mut conn: Conn, chat: String, sends: bool, acks: Arc<AtomicU64>) -> Ended {
    let mut acked = Vec::new();
    let within = DRAIN + EXIT_GRACE + Duration::from_secs(30);
    if !sends {
        let closed = conn.closed_within(within).await;
        return Ended {
            closed,
            acked,
            in_flight: None,
            chat,
        };
    }
    let mut k = 0;
    loop {
        k += 1;
        let key = format!("{chat}-a-{k}");
        match conn.send_message(&chat, &key, &body(&key)).await {
            Ok(ServerFrame::Ack { message, .. }) => {
                acked.push(message);
                acks.fetch_add(1, Ordering::Relaxed);
            }
            Ok(other) => panic!("send on the draining node refused: {other:?}"),
            Err(closed) => {
                return Ended {
                    closed,
                    acked,
                    in_flight: Some(key),
                    chat,
                }
            }
        }
        // A person types: a few messages a second, not a flood.
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Take in what arrived meanwhile: an app does not send on a session it
        // has seen closed.
        while let Ok(Some(_)) = conn.read(Duration::ZERO).await {}
        if let Some(closed) = conn.ended() {
            return Ended {
                closed,
                acked,
                in_flight: None,
                chat,
            };
        }
    }
}

/// Sends from node B until `stop`; the acked messages.
async fn send_until_stopped(mut conn: Conn, chat: String, stop: Arc<AtomicBool>) -> Vec<Message> {
    let mut acked = Vec::new();
    let mut k = 0;
    while !stop.load(Ordering::Relaxed) {
        k += 1;
        let key = format!("{chat}-b-{k}");
        acked.push(conn.send_until_acked(&chat, &key, &body(&key)).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    acked
}
