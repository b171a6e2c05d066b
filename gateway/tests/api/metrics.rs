//! The metric catalogue (`deploy/README.md`) is what the binaries export: the
//! alert rules and dashboards are checked against the catalogue by
//! `scripts/deploy-checks.sh`, and the catalogue against a scrape here — so a
//! renamed metric cannot silently blank a panel or an alert.

use crate::helpers::{Backend, Cluster};
use chat_shared::domain::Role;
use std::collections::BTreeMap;

/// `name → type` of every `chat_` metric in a Prometheus text exposition.
fn exported(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .filter(|(name, _)| name.starts_with("chat_"))
        .map(|(name, kind)| (name.to_owned(), kind.trim().to_owned()))
        .collect()
}

/// `name → type` of every row of the catalogue table.
fn catalogue() -> BTreeMap<String, String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/README.md");
    let text = std::fs::read_to_string(path).expect("deploy/README.md");
    text.lines()
        .filter_map(|l| l.strip_prefix("| `chat_"))
        .filter_map(|l| {
            let (name, rest) = l.split_once('`')?;
            let kind = rest.trim_start_matches(" |").split('|').next()?.trim();
            Some((format!("chat_{name}"), kind.to_owned()))
        })
        .collect()
}

async fn scrape(cluster: &Cluster, port: u16) -> BTreeMap<String, String> {
    let text = cluster
        .http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    exported(&text)
}

#[tokio::test]
async fn the_binaries_export_exactly_the_documented_metrics() {
    let cluster = Cluster::start_in(Backend::Cluster, 1, true).await;
    let chat = cluster.create_chat("pat-m", "doc-m", "a").await;
    let chat_id = chat.id.to_string();
    let mut patient = cluster.connect(0, "pat-m", Role::Patient).await;
    let mut doctor = cluster.connect(0, "doc-m", Role::Doctor).await;
    patient.send_message(&chat_id, "m1", "hello").await;
    doctor.expect_message(&chat_id, 1).await;

    let gateway = scrape(&cluster, cluster.node(0).port).await;
    let persister = scrape(&cluster, cluster.persisters[0].port).await;
    let documented = catalogue();
    assert!(documented.len() > 20, "catalogue parsed: {documented:?}");

    for (name, kind) in &documented {
        let found = gateway.get(name).or_else(|| persister.get(name));
        assert_eq!(
            found,
            Some(kind),
            "{name} ({kind}) is documented but not exported"
        );
    }
    for (name, kind) in gateway.iter().chain(persister.iter()) {
        assert_eq!(
            documented.get(name),
            Some(kind),
            "{name} ({kind}) is exported but not documented in deploy/README.md"
        );
    }
    assert_eq!(gateway.get("chat_ready").map(String::as_str), Some("gauge"));
    assert_eq!(
        persister.get("chat_ready").map(String::as_str),
        Some("gauge")
    );
}
