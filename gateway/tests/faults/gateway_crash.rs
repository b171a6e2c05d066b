//! Fault: `kill -9` of a gateway process in the middle of traffic
//! (guarantees 1, 2, 3, 6 and "no patient data or tokens in logs").

use crate::conn::{Closed, Conn};
use crate::harness::{
    assert_exactly_once_in_order, assert_history_holds, assert_logs_clean, eventually, Backend,
    WAIT,
};
use crate::process::Gateway;
use chat_shared::domain::Role;
use chat_shared::protocol::{Message, ServerFrame};
use std::time::Instant;

/// A distinctive piece of patient data: it must reach the doctor and history,
/// and never a log line.
const SECRET_SYMPTOM: &str = "zq7-crushing-chest-pain-since-tuesday";

fn body(i: u64) -> String {
    format!("{SECRET_SYMPTOM} #{i}")
}

#[tokio::test]
async fn after_kill_9_of_a_gateway_every_acked_message_reaches_the_doctor_exactly_once_in_order_and_resume_on_another_node_misses_nothing(
) {
    let backend = Backend::start(true, true).await;
    let mut node_a = Gateway::spawn(&backend, "crash-a", &[]).await;
    let mut node_b = Gateway::spawn(&backend, "crash-b", &[]).await;
    let chat = backend.create_chat(node_b.port, "pat-k9", "doc-k9").await;
    let patient_token = backend.token("pat-k9", Role::Patient);
    let doctor_token = backend.token("doc-k9", Role::Doctor);

    let patient = Conn::connect(node_a.port, &patient_token).await;
    // The doctor's desk on the surviving node, and their phone on the doomed one.
    let mut doctor = Conn::connect(node_b.port, &doctor_token).await;
    let mut phone = Conn::connect(node_a.port, &doctor_token).await;
    assert_eq!(
        (patient.node.as_str(), doctor.node.as_str()),
        ("crash-a", "crash-b")
    );

    // The patient sends from node A, one message after another, until the node dies.
    let sender = {
        let chat = chat.clone();
        let mut patient = patient;
        tokio::spawn(async move {
            let mut acked: Vec<Message> = Vec::new();
            for i in 1.. {
                match patient
                    .send_message(&chat, &format!("k9-{i}"), &body(i))
                    .await
                {
                    Ok(ServerFrame::Ack { message, .. }) => acked.push(message),
                    Ok(other) => panic!("send {i} refused: {other:?}"),
                    // The send of `i` was in flight when the node died.
                    Err(_) => return (acked, i),
                }
            }
            unreachable!()
        })
    };
    // The phone reads until its node dies.
    let phone_reader = tokio::spawn(async move {
        let ended = phone.closed_within(WAIT * 3).await;
        (phone, ended)
    });

    doctor
        .wait_for_seq(&chat, 20)
        .await
        .expect("doctor session");
    let killed_at = Instant::now();
    node_a.kill_9();

    let (acked_before, in_flight) = sender.await.unwrap();
    let (phone_before, phone_ended) = phone_reader.await.unwrap();
    assert!(
        acked_before.len() >= 19,
        "the patient was sending when node A died"
    );
    assert_ne!(phone_ended, Closed::Code(1012), "a crash is no drain");
    // Up to the crash, the phone got the chat live, in order, without holes.
    let phone_seen = phone_before.seqs(&chat);
    let phone_last = phone_seen.last().copied().unwrap_or(0);
    assert_exactly_once_in_order("phone before the crash", &phone_seen, phone_last);

    // The patient's app reconnects (the load balancer sends it to node B) and
    // resumes from the last seq it saw acked.
    let last_acked = acked_before.last().map_or(0, |m| m.seq);
    let mut patient = Conn::connect(node_b.port, &patient_token).await;
    patient.sync(&chat, last_acked).await.expect("patient sync");
    let patient_resynced = killed_at.elapsed();
    // What was stored but never acked comes back by `sync`, in order.
    let recovered = patient.seqs(&chat);
    assert_eq!(
        recovered,
        (last_acked + 1..=last_acked + recovered.len() as u64).collect::<Vec<_>>(),
        "sync after {last_acked} answers the following seqs in order"
    );
    assert!(
        recovered.len() <= 1,
        "only the in-flight send can be unacked: {recovered:?}"
    );
    // The app re-sends the unacknowledged message with the same key: it is
    // acked once, as the original if it had been stored.
    let resent = patient
        .send_until_acked(&chat, &format!("k9-{in_flight}"), &body(in_flight))
        .await;
    if let Some(stored) = patient.received.first() {
        assert_eq!(&resent, stored, "the re-send returns the stored original");
    } else {
        assert_eq!(resent.seq, last_acked + 1, "no gap after the crash");
    }
    let mut acked = acked_before;
    acked.push(resent);

    // The phone reconnects to node B and resumes from the last seq it saw.
    let mut phone = Conn::connect(node_b.port, &doctor_token).await;
    phone.sync(&chat, phone_last).await.expect("phone sync");
    let phone_resynced = killed_at.elapsed();

    // Conversation goes on through node B.
    for i in in_flight + 1..=in_flight + 5 {
        acked.push(
            patient
                .send_until_acked(&chat, &format!("k9-{i}"), &body(i))
                .await,
        );
    }
    let head = acked.last().unwrap().seq;
    let acked_seqs: Vec<u64> = acked.iter().map(|m| m.seq).collect();
    assert_exactly_once_in_order("acked seqs", &acked_seqs, head);

    // Every acked message reached both doctor devices exactly once, in order.
    doctor
        .wait_for_seq(&chat, head)
        .await
        .expect("doctor session");
    doctor.ping().await.expect("doctor session");
    assert_exactly_once_in_order("doctor on node B", &doctor.seqs(&chat), head);
    phone
        .wait_for_seq(&chat, head)
        .await
        .expect("phone session");
    phone.ping().await.expect("phone session");
    let mut phone_all = phone_seen.clone();
    phone_all.extend(phone.seqs(&chat));
    assert_exactly_once_in_order(
        "phone: live before the crash + sync + live after",
        &phone_all,
        head,
    );
    let delivered: Vec<&Message> = doctor.received.iter().collect();
    for a in &acked {
        assert!(
            delivered.contains(&a),
            "acked seq {} delivered as acked",
            a.seq
        );
    }

    // Nothing acked is missing from history, nor (eventually) from MongoDB.
    let history = backend
        .history(node_b.port, &chat, "doc-k9", Role::Doctor)
        .await;
    assert_history_holds("history on node B", &history, &acked, head);
    let stored = eventually("MongoDB holds every acked message", &mut || async {
        let s = backend.stored(&chat).await;
        (s.len() as u64 >= head).then_some(s)
    })
    .await;
    assert_history_holds("MongoDB", &stored, &acked, head);

    println!(
        "kill -9 with {} acked: patient resynced on node B {patient_resynced:?} after the kill, \
         doctor's phone {phone_resynced:?}; in-flight send was {}",
        last_acked,
        if recovered.is_empty() {
            "not stored (new seq on re-send)"
        } else {
            "stored (recovered by sync)"
        }
    );

    // No patient data and no token in any log line, at debug level.
    let logs = vec![node_a.final_logs(), node_b.final_logs()];
    assert_logs_clean(&logs, &[SECRET_SYMPTOM], &backend.issued_tokens());
}
