//! `chat-persister`: see the crate documentation.

use chat_persister::configuration::Args;
use chat_persister::startup::Application;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Args = chat_shared::config::parse_args("chat-persister");
    if args.healthcheck {
        return match chat_shared::probe::healthz(args.persister_addr).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("chat-persister: unhealthy: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    chat_shared::telemetry::init("info");
    let settings = match args.validate() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("chat-persister: configuration error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let shutdown = CancellationToken::new();
    let app = match Application::build(settings, shutdown.clone()).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("chat-persister: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    tracing::info!(port = app.port(), "chat-persister started");
    tokio::spawn(async move {
        chat_shared::telemetry::shutdown_signal().await;
        tracing::info!("shutdown signal received");
        shutdown.cancel();
    });
    match app.run_until_stopped().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat-persister: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
