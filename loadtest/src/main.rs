//! `chat-loadtest`: run one load scenario against chat gateways and print a
//! table (or `--json`). See `loadtest/README.md` and the library documentation.

use chat_loadtest::chat::{self, ChatOptions};
use chat_loadtest::idle::{self, IdleOptions};
use chat_loadtest::report::Report;
use chat_loadtest::storm::{self, StormOptions};
use chat_loadtest::{Error, Result, Target, TokenSource};
use clap::{Parser, Subcommand};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Load generator for the chat gateways.
#[derive(Debug, Parser)]
#[command(name = "chat-loadtest", version, about)]
struct Cli {
    /// Gateway node `host:port`; repeat (or comma-separate) for several nodes.
    #[arg(
        long = "gateway",
        env = "LOADTEST_GATEWAYS",
        value_delimiter = ',',
        default_value = "127.0.0.1:8080",
        global = true
    )]
    gateways: Vec<String>,
    /// HS256 secret of the gateways: tokens are minted locally.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true, global = true)]
    jwt_secret: Option<String>,
    /// Get tokens from `POST /dev/token` of a `--dev` gateway instead.
    #[arg(long, global = true)]
    dev_tokens: bool,
    /// Loopback source addresses to spread connections over (127.0.0.2, …).
    #[arg(long, default_value_t = 16, global = true)]
    source_ips: u8,
    /// Prefix of the generated user ids (default: derived from the time).
    #[arg(long, global = true)]
    prefix: Option<String>,
    /// Hard cap on the whole run, seconds.
    #[arg(long, default_value_t = 120, global = true)]
    max_duration: u64,
    /// Print one JSON object instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Open N sessions, hold them, report gateway RSS per connection.
    Idle {
        /// Sessions to open.
        #[arg(long, short = 'n', default_value_t = 1000)]
        connections: usize,
        /// Gateway process id whose RSS is read (repeat for several).
        #[arg(long = "pid")]
        pids: Vec<u32>,
        /// Connection attempts in flight at once.
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
        /// Seconds to wait after connecting before reading RSS.
        #[arg(long, default_value_t = 3)]
        settle: u64,
        /// Seconds to keep holding after that.
        #[arg(long, default_value_t = 2)]
        hold: u64,
    },
    /// Open-loop chat traffic: P pairs, R msg/s in total, T seconds.
    Chat {
        /// Patient–doctor pairs.
        #[arg(long, short = 'p', default_value_t = 50)]
        pairs: usize,
        /// Total sends per second.
        #[arg(long, short = 'r', default_value_t = 1000.0)]
        rate: f64,
        /// Seconds of sending.
        #[arg(long, short = 'd', default_value_t = 20)]
        duration: u64,
        /// Seconds to wait for outstanding acks and deliveries afterwards.
        #[arg(long, default_value_t = 10)]
        drain: u64,
    },
    /// N clients drop and reconnect with `sync` at once.
    Storm {
        /// Clients (two per chat).
        #[arg(long, short = 'n', default_value_t = 500)]
        clients: usize,
        /// Messages per chat while they are away.
        #[arg(long, default_value_t = 2)]
        gap_messages: u32,
        /// Messages per chat racing the reconnect.
        #[arg(long, default_value_t = 1)]
        live_messages: u32,
        /// Set-up connection attempts in flight at once (writers, then
        /// clients); the reconnect itself is all at once.
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
        /// Writer sends waiting for their ack at once (baseline, gap and live
        /// messages; one writer per chat).
        #[arg(long, default_value_t = 256)]
        send_concurrency: usize,
        /// Seconds one writer send may wait for its ack.
        #[arg(long, default_value_t = 30)]
        ack_timeout: u64,
        /// Seconds the reconnect may take (also the most it waits for the
        /// persister before it).
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// Reconnect without first waiting for a standalone gateway's
        /// persister to write the set-up's messages (its `sync` then scans
        /// that backlog).
        #[arg(long)]
        keep_backlog: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    match run(cli).await {
        Ok(report) => {
            if json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.to_table());
            }
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            if json {
                println!("{}", serde_json::json!({ "error": e.to_string() }));
            }
            eprintln!("chat-loadtest: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> Result<Report> {
    let tokens = match (&cli.jwt_secret, cli.dev_tokens) {
        (_, true) => TokenSource::Dev,
        (Some(s), false) => TokenSource::secret(s),
        (None, false) => {
            return Err(Error::new(
                "no way to get tokens: set --jwt-secret (JWT_SECRET) or --dev-tokens",
            ))
        }
    };
    let target = Target::new(cli.gateways, tokens, cli.source_ips)?;
    let prefix = cli.prefix.unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        format!("lt{secs}")
    });
    let cap = Duration::from_secs(cli.max_duration.max(1));
    let deadline = Instant::now() + cap;
    let work = async {
        match cli.scenario {
            Scenario::Idle {
                connections,
                pids,
                concurrency,
                settle,
                hold,
            } => idle::run(
                &target,
                &IdleOptions {
                    connections,
                    pids,
                    concurrency,
                    settle: Duration::from_secs(settle),
                    hold: Duration::from_secs(hold),
                    prefix,
                },
                deadline,
            )
            .await
            .map(Report::Idle),
            Scenario::Chat {
                pairs,
                rate,
                duration,
                drain,
            } => chat::run(
                &target,
                &ChatOptions {
                    pairs,
                    rate,
                    duration: Duration::from_secs(duration),
                    drain: Duration::from_secs(drain),
                    prefix,
                },
                deadline,
            )
            .await
            .map(Report::Chat),
            Scenario::Storm {
                clients,
                gap_messages,
                live_messages,
                concurrency,
                send_concurrency,
                ack_timeout,
                timeout,
                keep_backlog,
            } => storm::run(
                &target,
                &StormOptions {
                    clients,
                    gap_messages,
                    live_messages,
                    concurrency,
                    send_concurrency,
                    ack_timeout: Duration::from_secs(ack_timeout.max(1)),
                    timeout: Duration::from_secs(timeout),
                    drain_backlog: !keep_backlog,
                    prefix,
                },
                deadline,
            )
            .await
            .map(Report::Storm),
        }
    };
    // The scenarios respect the deadline themselves; this is the hard stop.
    tokio::time::timeout(cap + Duration::from_secs(10), work)
        .await
        .map_err(|_| Error::new(format!("hard cap of {} s reached", cap.as_secs())))?
}
