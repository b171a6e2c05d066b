//! A bad or missing required value stops start-up with one clear line naming
//! the variable — never a panic backtrace.

#![allow(clippy::unwrap_used, missing_docs)]

use std::process::Command;

fn start(env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_chat-gateway"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const OK: &[(&str, &str)] = &[
    ("REDIS_URL", "redis://127.0.0.1:1"),
    ("MONGODB_URL", "mongodb://127.0.0.1:1"),
    ("JWT_SECRET", "a-long-enough-secret-for-tests"),
];

fn with(over: (&'static str, &'static str)) -> Vec<(&'static str, &'static str)> {
    let mut env: Vec<_> = OK.iter().filter(|(k, _)| *k != over.0).copied().collect();
    if !over.1.is_empty() {
        env.push(over);
    }
    env
}

#[test]
fn each_bad_variable_is_named_in_one_line_and_the_exit_code_is_2() {
    let cases = [
        (("JWT_SECRET", ""), "JWT_SECRET"),
        (("JWT_SECRET", "short"), "JWT_SECRET"),
        (
            ("JWT_PUBLIC_KEY_FILE", "/nonexistent.pem"),
            "JWT_PUBLIC_KEY_FILE",
        ),
        (("REDIS_URL", "http://nope"), "REDIS_URL"),
        (
            ("REDIS_URL", "redis://127.0.0.1:1,http://nope"),
            "REDIS_URL",
        ),
        (("REDIS_URL", " , "), "REDIS_URL"),
        (("REDIS_SHARDS", "0"), "REDIS_SHARDS"),
        (("REDIS_SHARDS", "257"), "REDIS_SHARDS"),
        (("REDIS_CLUSTER", "maybe"), "REDIS_CLUSTER"),
        (("MONGODB_URL", "postgres://nope"), "MONGODB_URL"),
        (("GATEWAY_ADDR", "not-an-address"), "GATEWAY_ADDR"),
        (("MAX_MESSAGE_CHARS", "0"), "MAX_MESSAGE_CHARS"),
        (("SESSION_QUEUE", "lots"), "SESSION_QUEUE"),
        (("ALLOWED_ORIGINS", "ftp://x"), "ALLOWED_ORIGINS"),
    ];
    for (over, var) in cases {
        let (code, stderr) = start(&with(over));
        assert_eq!(code, 2, "{over:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{over:?}: {stderr}");
        assert!(stderr.contains(var), "{over:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn waiting_for_replicas_is_refused_on_a_redis_cluster() {
    let mut env = OK.to_vec();
    env.push(("REDIS_CLUSTER", "1"));
    env.push(("REDIS_WAIT_REPLICAS", "1"));
    let (code, stderr) = start(&env);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("REDIS_WAIT_REPLICAS"), "{stderr}");
}
