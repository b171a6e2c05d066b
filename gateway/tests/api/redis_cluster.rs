//! Scale-out on a Redis Cluster: the work really is spread over the masters.
//!
//! (Every `both_backends!` test of this suite also runs on a three-master
//! cluster as `…::redis_cluster`; these tests check what is specific to it.)

use crate::helpers::{Backend, Cluster, REDIS_CLUSTER_SHARDS};
use chat_shared::broker::redis::keys::Keyspace;
use chat_shared::broker::SeqWindow;
use chat_shared::domain::{ChatId, Role};
use chat_shared::store::mongo::MongoStore;
use chat_shared::store::Store;
use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

async fn node_conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Chats until every shard has at least one.
async fn chats_on_every_shard(cluster: &Cluster) -> Vec<(ChatId, String, String)> {
    let keys = Keyspace::new(REDIS_CLUSTER_SHARDS);
    let mut shards = HashSet::new();
    let mut chats = Vec::new();
    for i in 0.. {
        let (patient, doctor) = (format!("pat-sh{i}"), format!("doc-sh{i}"));
        let chat = cluster.create_chat(&patient, &doctor, "a").await;
        shards.insert(keys.shard_of(chat.id));
        chats.push((chat.id, patient, doctor));
        if shards.len() == usize::from(REDIS_CLUSTER_SHARDS) && chats.len() >= 8 {
            break;
        }
        assert!(i < 200, "chat ids never covered every shard");
    }
    chats
}

#[tokio::test]
async fn chats_on_every_shard_are_delivered_across_nodes_and_persisted_once_by_two_persisters() {
    let mut cluster = Cluster::start_in(Backend::RedisCluster, 2, true).await;
    cluster.start_persister("persister-1").await;
    let chats = chats_on_every_shard(&cluster).await;

    for (chat, patient, doctor) in &chats {
        let chat_id = chat.to_string();
        let mut p = cluster.connect(0, patient, Role::Patient).await;
        let mut d = cluster.connect(1, doctor, Role::Doctor).await;
        for i in 1..=3u64 {
            let sent = p.send_message(&chat_id, &format!("m{i}"), "hello").await;
            assert_eq!(sent.seq, i);
            assert_eq!(d.expect_message(&chat_id, i).await, sent);
        }
        let reply = d.send_message(&chat_id, "r", "hi").await;
        assert_eq!(p.expect_message(&chat_id, 4).await, reply);
    }

    // MongoDB gets every message exactly once, whichever replica and
    // whichever shard worker wrote it.
    let store = MongoStore::connect(&cluster.mongo_settings(), Duration::from_secs(5))
        .await
        .unwrap();
    for (chat, _, _) in &chats {
        let chat = *chat;
        let store = &store;
        cluster
            .eventually("every message persisted once", || async move {
                let seqs: Vec<u64> = store
                    .messages(
                        chat,
                        SeqWindow {
                            after: Some(0),
                            before: None,
                            limit: 100,
                        },
                    )
                    .await
                    .ok()?
                    .iter()
                    .map(|m| m.seq)
                    .collect();
                (seqs == vec![1, 2, 3, 4]).then_some(())
            })
            .await;
    }

    // The shard streams live on more than one master, and each has both
    // replicas in its consumer group.
    let mut masters_with_streams = BTreeSet::new();
    let keys = Keyspace::new(REDIS_CLUSTER_SHARDS);
    for node in cluster.redis_cluster().nodes() {
        let mut conn = node_conn(&node.url()).await;
        for shard in keys.shards() {
            let stream = shard.stream();
            let slot: u16 = redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(&stream)
                .query_async(&mut conn)
                .await
                .unwrap();
            let owned: Vec<redis::Value> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(1000)
                .query_async(&mut conn)
                .await
                .unwrap_or_default();
            if owned.is_empty() {
                continue;
            }
            masters_with_streams.insert(node.port());
            let consumers: Vec<std::collections::HashMap<String, redis::Value>> =
                redis::cmd("XINFO")
                    .arg("CONSUMERS")
                    .arg(&stream)
                    .arg("persisters")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
            assert_eq!(consumers.len(), 2, "{stream}: both replicas read it");
        }
    }
    assert!(
        masters_with_streams.len() >= 2,
        "shard streams spread over masters: {masters_with_streams:?}"
    );
}

#[tokio::test]
async fn a_node_with_another_shard_count_refuses_to_start() {
    let cluster = Cluster::start_in(Backend::RedisCluster, 1, false).await;
    let mut settings = cluster.redis_settings();
    settings.shards = REDIS_CLUSTER_SHARDS + 1;
    let err = chat_shared::broker::redis::RedisBroker::connect(
        &settings,
        None,
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .err()
    .expect("a different REDIS_SHARDS is refused");
    assert!(err.to_string().contains("REDIS_SHARDS"), "{err}");
}

#[tokio::test]
async fn subscriptions_are_sharded_over_the_masters() {
    let cluster = Cluster::start_in(Backend::RedisCluster, 1, false).await;
    let _doctor = cluster.connect(0, "doc-subs", Role::Doctor).await;
    let keys = Keyspace::new(REDIS_CLUSTER_SHARDS);
    let user = chat_shared::domain::UserId::parse("doc-subs").unwrap();
    let mut subscribed_on = BTreeSet::new();
    for node in cluster.redis_cluster().nodes() {
        let mut conn = node_conn(&node.url()).await;
        let channels: Vec<String> = redis::cmd("PUBSUB")
            .arg("SHARDCHANNELS")
            .query_async(&mut conn)
            .await
            .unwrap();
        for c in channels {
            assert!(keys.user_channels(&user).contains(&c), "unexpected {c}");
            subscribed_on.insert((node.port(), c));
        }
    }
    let channels: HashSet<&String> = subscribed_on.iter().map(|(_, c)| c).collect();
    assert_eq!(
        channels.len(),
        usize::from(REDIS_CLUSTER_SHARDS),
        "one channel per shard"
    );
    let masters: HashSet<u16> = subscribed_on.iter().map(|(p, _)| *p).collect();
    assert!(masters.len() >= 2, "spread over masters: {subscribed_on:?}");
}
