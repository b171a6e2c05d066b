//! Fault: Redis restarts without persistence and loses everything (counters,
//! stream, recent windows, idempotency keys) after the persister caught up.

use crate::conn::Conn;
use crate::harness::{assert_history_holds, eventually, Backend};
use crate::process::Gateway;
use chat_shared::domain::Role;
use chat_shared::protocol::Message;

/// Waits until MongoDB's `last_seq` of `chat` is `seq` (the persister caught up).
async fn persisted_up_to(backend: &Backend, chat: &str, seq: u64) {
    eventually("the persister caught up", &mut || async {
        (backend.stored_last_seq(chat).await == seq).then_some(())
    })
    .await;
}

/// Restarts Redis without persistence and checks that it really lost its data.
async fn wipe_redis(backend: &mut Backend) {
    let before = backend.redis_dbsize().await;
    assert!(before > 1, "Redis held data before");
    backend.redis.restart();
    // At most the persister's freshly recreated, empty stream.
    let after = backend.redis_dbsize().await;
    assert!(
        after <= 1,
        "Redis lost its data: {before} keys before, {after} after"
    );
}

#[tokio::test]
async fn after_redis_loses_its_data_the_next_seq_of_every_chat_is_mongodbs_last_seq_plus_one() {
    let mut backend = Backend::start(false, true).await;
    let node_a = Gateway::spawn(&backend, "wipe-a", &[]).await;
    let node_b = Gateway::spawn(&backend, "wipe-b", &[]).await;

    // Three chats with different lengths; patients on A, doctors on B.
    struct Chat {
        id: String,
        doctor: String,
        patient_conn: Conn,
        doctor_conn: Conn,
        acked: Vec<Message>,
    }
    let mut chats = Vec::new();
    for (i, n) in [2u64, 3, 5].into_iter().enumerate() {
        let (patient, doctor) = (format!("pat-w{i}"), format!("doc-w{i}"));
        let id = backend.create_chat(node_a.port, &patient, &doctor).await;
        let mut chat = Chat {
            patient_conn: Conn::connect(node_a.port, &backend.token(&patient, Role::Patient)).await,
            doctor_conn: Conn::connect(node_b.port, &backend.token(&doctor, Role::Doctor)).await,
            id,
            doctor,
            acked: Vec::new(),
        };
        for k in 1..=n {
            // Both participants write, from both nodes.
            let conn = if k % 2 == 1 {
                &mut chat.patient_conn
            } else {
                &mut chat.doctor_conn
            };
            let m = conn
                .send_until_acked(&chat.id, &format!("w{i}-{k}"), &format!("before {k}"))
                .await;
            assert_eq!(m.seq, k);
            chat.acked.push(m);
        }
        chats.push(chat);
    }
    for (c, n) in chats.iter().zip([2u64, 3, 5]) {
        persisted_up_to(&backend, &c.id, n).await;
    }

    wipe_redis(&mut backend).await;

    for (i, c) in chats.iter_mut().enumerate() {
        let last = c.acked.last().unwrap().seq;
        // The next message continues from MongoDB's last_seq, not from 1.
        let m = c
            .patient_conn
            .send_until_acked(&c.id, &format!("w{i}-after-1"), "after the wipe")
            .await;
        assert_eq!(
            m.seq,
            last + 1,
            "chat {i}: next seq after Redis lost its data"
        );
        c.acked.push(m);
        let m = c
            .doctor_conn
            .send_until_acked(&c.id, &format!("w{i}-after-2"), "and again")
            .await;
        assert_eq!(m.seq, last + 2, "chat {i}: and the one after");
        c.acked.push(m);
        // The doctor (who resumes from the last seq they saw) gets the
        // patient's new message, live or by `sync`.
        c.doctor_conn
            .sync(&c.id, last)
            .await
            .expect("doctor session");
        assert!(
            c.doctor_conn.has(&c.id, last + 1),
            "chat {i}: doctor got seq {}",
            last + 1
        );
    }

    // History and MongoDB are 1..=last+2, each message once (the persister
    // recovered from losing its consumer group).
    for c in &chats {
        let head = c.acked.last().unwrap().seq;
        let history = backend
            .history(node_b.port, &c.id, &c.doctor, Role::Doctor)
            .await;
        assert_history_holds("history after the wipe", &history, &c.acked, head);
        persisted_up_to(&backend, &c.id, head).await;
        let stored = backend.stored(&c.id).await;
        assert_history_holds("MongoDB after the wipe", &stored, &c.acked, head);
    }
}

#[tokio::test]
async fn after_redis_loses_its_data_resending_a_persisted_client_msg_id_returns_the_original_message(
) {
    let mut backend = Backend::start(false, true).await;
    let node = Gateway::spawn(&backend, "wipe-idem", &[]).await;
    let chat = backend.create_chat(node.port, "pat-wi", "doc-wi").await;
    let mut patient = Conn::connect(node.port, &backend.token("pat-wi", Role::Patient)).await;
    let original = patient
        .send_until_acked(&chat, "lost-ack", "did you get this?")
        .await;
    persisted_up_to(&backend, &chat, 1).await;

    wipe_redis(&mut backend).await;

    // The app never saw the ack (say its connection dropped) and re-sends
    // with the same key: guarantee 3 says the original comes back and nothing
    // is stored twice, whatever restarted in between (guarantee 1).
    let again = patient
        .send_until_acked(&chat, "lost-ack", "did you get this?")
        .await;
    let next = patient.send_until_acked(&chat, "next", "next one").await;
    persisted_up_to(&backend, &chat, next.seq).await;
    let stored = backend.stored(&chat).await;
    let copies = stored
        .iter()
        .filter(|m| m.client_msg_id.as_str() == "lost-ack")
        .count();
    assert_eq!(
        (again.seq, again.id, copies, next.seq),
        (original.seq, original.id, 1, 2),
        "re-send after the wipe: (seq, id, copies in MongoDB, next seq); stored: {:?}",
        stored
            .iter()
            .map(|m| (m.seq, m.client_msg_id.as_str()))
            .collect::<Vec<_>>()
    );
}
