//! `chat-gateway`: see the crate documentation.

use chat_gateway::configuration::Args;
use chat_gateway::startup::Application;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Args = chat_shared::config::parse_args("chat-gateway");
    if args.healthcheck {
        return match chat_shared::probe::healthz(args.gateway_addr).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("chat-gateway: unhealthy: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    chat_shared::telemetry::init("info");
    let settings = match args.validate() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("chat-gateway: configuration error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let addr = settings.addr;
    let dev = settings.dev.is_some();
    let node = settings.node_id.clone();
    let draining = CancellationToken::new();
    let app = match Application::build(settings, draining.clone()).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("chat-gateway: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    tracing::info!(%addr, port = app.port(), %node, "chat-gateway listening");
    if dev {
        eprintln!(
            "\n  Demo client: open http://{}:{}/ in two browser windows (one per demo user)\n",
            addr.ip(),
            app.port()
        );
    }
    tokio::spawn(async move {
        chat_shared::telemetry::shutdown_signal().await;
        tracing::info!("shutdown signal received: draining");
        draining.cancel();
    });
    match app.run_until_stopped().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat-gateway: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
