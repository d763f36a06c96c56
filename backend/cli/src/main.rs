//! `gatehouse`: the one binary. `serve` runs everything in one process on the embedded default;
//! `control` and `gateway` run the two halves for real deployments; `export` and `apply` keep a
//! tenant's policy in a file (policy as code, over the GraphQL API).

mod apply;
mod config;
mod operator;
mod policy_file;

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use gatehouse_bundle::SigningKey;
use gatehouse_control::{ControlConfig, ControlPlane};
use gatehouse_gateway::{Gateway, GatewayConfig};
use gatehouse_store::Store;
use rand::RngCore;
use tokio::net::TcpListener;

use crate::config::{Settings, SettingsArgs};

#[derive(Parser)]
#[command(name = "gatehouse", version, about = "Gatehouse: the governed gateway for the Model Context Protocol")]
struct Cli {
    #[command(flatten)]
    settings: SettingsArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Control plane, console and one gateway worker in one process (SQLite under the data dir by default).
    Serve,
    /// The control plane and console only (workers connect with `gatehouse gateway`).
    Control,
    /// One gateway worker that takes its policy from a control plane.
    Gateway,
    /// Prints the platform's public signing key (what `gateway --trusted-key` needs).
    PublicKey,
    /// Gateway groups (operator): create, list, and assign a tenant to a group. Acts on the database.
    #[command(subcommand)]
    Groups(operator::GroupsCommand),
    /// Bundle signing keys (operator): generate a new key for a rotation.
    #[command(subcommand)]
    Keys(operator::KeysCommand),
    /// Prints a tenant's access policy (roles, grants, rules, members, virtual servers) as YAML.
    Export(apply::ExportArgs),
    /// Makes a tenant's access policy what a YAML file says, printing the diff (--dry-run: only the diff).
    Apply(apply::ApplyArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,sqlx=warn,tower_sessions=warn".into());
    // The API token's variable is read by `export`/`apply`, not a setting: not a typo to warn about.
    let token_env = match &cli.command {
        Command::Export(a) => Some(a.connection.token_env.clone()),
        Command::Apply(a) => Some(a.connection.token_env.clone()),
        _ => None,
    };
    if token_env.is_some() {
        // `export` prints YAML on standard output: logs go to standard error.
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    config::warn_unknown_env(std::env::vars().filter(|(k, _)| Some(k) != token_env.as_ref()));
    let command = match cli.command {
        Command::Export(args) => return Ok(client_exit(apply::export(args).await)),
        Command::Apply(args) => return Ok(client_exit(apply::apply(args).await)),
        other => other,
    };
    let settings = Settings::load(cli.settings)?;
    match command {
        Command::Serve => serve(settings).await?,
        Command::Control => control(settings).await?,
        Command::Gateway => gateway(settings).await?,
        Command::PublicKey => {
            std::fs::create_dir_all(&settings.data_dir)?;
            println!("{}", load_or_create_key(&settings)?.public_base64());
        }
        // Operator commands: a mistake is one line (`gatehouse: error: …`), not a backtrace.
        Command::Groups(c) => return Ok(client_exit(operator::groups(&settings, c).await.map(|()| ExitCode::SUCCESS))),
        Command::Keys(c) => return Ok(client_exit(operator::keys(c).map(|()| ExitCode::SUCCESS))),
        Command::Export(_) | Command::Apply(_) => unreachable!("handled above"),
    }
    Ok(ExitCode::SUCCESS)
}

/// A client command's mistakes (no token, an unreadable file) are one line, not a backtrace.
fn client_exit(result: anyhow::Result<ExitCode>) -> ExitCode {
    result.unwrap_or_else(|e| {
        eprintln!("gatehouse: error: {e:#}");
        ExitCode::FAILURE
    })
}

/// Loads the platform signing key: the configured `signing_key_file` (which must exist), or the
/// data dir's `signing-key.pem`, created (mode 0600) on first start.
fn load_or_create_key(settings: &Settings) -> anyhow::Result<SigningKey> {
    if let Some(path) = &settings.signing_key_file {
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("reading the signing key file {} (signing_key_file)", path.display()))?;
        return SigningKey::from_pem(&pem).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()));
    }
    let path = settings.data_dir.join("signing-key.pem");
    if path.exists() {
        let pem = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        return SigningKey::from_pem(&pem).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()));
    }
    let key = SigningKey::generate();
    write_key(&path, &key)?;
    println!("gatehouse: created the platform signing key {} (id {})", path.display(), key.key_id());
    Ok(key)
}

/// Writes a signing key to `path` (mode 0600) through a temporary file and a rename.
fn write_key(path: &Path, key: &SigningKey) -> anyhow::Result<()> {
    let tmp = path.with_extension("pem.tmp");
    std::fs::write(&tmp, key.to_pem()).with_context(|| format!("writing {}", tmp.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn http_url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

struct ControlHandle {
    router: axum::Router,
    control: ControlPlane,
}

/// Opens the store, bootstraps the first administrator and builds the control plane + console.
async fn build_control(
    settings: &Settings,
    public_url: String,
    gateway_public_url: String,
    worker_token: String,
) -> anyhow::Result<ControlHandle> {
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating the data dir {}", settings.data_dir.display()))?;
    let url = settings
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", settings.data_dir.join("gatehouse.db").display()));
    let store = Store::connect(&url).await.with_context(|| format!("opening {}", gatehouse_store::redact_url(&url)))?;
    let key = load_or_create_key(settings)?;
    let control = ControlPlane::new(
        ControlConfig {
            gateway_public_url,
            public_url: public_url.clone(),
            worker_token,
            group: settings.group.clone(),
            secure_cookies: public_url.starts_with("https://"),
        },
        store,
        key,
    )
    .await?;
    // Tool discovery of stdio servers uses the same allow-list as the gateway workers.
    control.services().set_stdio_commands(settings.stdio_commands.clone());
    let email = settings.admin_email.clone();
    match control.services().ensure_bootstrap_admin(&email, settings.admin_password.as_deref()).await? {
        Some(password) => println!(
            "gatehouse: created the bootstrap administrator. Sign in at {public_url}/login as {email} with password {password}\n\
             gatehouse: (set GATEHOUSE_ADMIN_EMAIL / GATEHOUSE_ADMIN_PASSWORD before the first start to choose them)"
        ),
        None if settings.admin_password.is_some() => {
            println!("gatehouse: bootstrap administrator ready. Sign in at {public_url}/login as {email}")
        }
        None => println!("gatehouse: sign in at {public_url}/login"),
    }
    let router = control.router().merge(gatehouse_console::router(control.clone(), settings.site_root.clone()));
    let router = gatehouse_control::auth::layers(&control, router);
    Ok(ControlHandle { router, control })
}

async fn bind(addr: &str, what: &str) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await.with_context(|| format!("binding the {what} to {addr}"))?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let (control_listener, control_addr) = bind(&settings.listen, "control plane").await?;
    let (gateway_listener, gateway_addr) = bind(&settings.gateway_listen, "gateway").await?;
    let public_url = settings.public_url.clone().unwrap_or_else(|| http_url(control_addr));
    let gateway_public_url = settings.gateway_public_url.clone().unwrap_or_else(|| http_url(gateway_addr));
    // One process: the worker token never leaves it.
    let worker_token = random_token();
    let handle = build_control(&settings, public_url.clone(), gateway_public_url.clone(), worker_token.clone()).await?;
    let control_task = tokio::spawn(run_http(control_listener, handle.router));
    println!("gatehouse: control plane and console listening on {public_url}");

    let gateway = Gateway::start_with(
        GatewayConfig {
            // The worker talks to the control plane over HTTP even in one process, so `serve` exercises
            // exactly the path a separate worker uses.
            control_url: http_url(control_addr),
            worker_token,
            group: settings.group.clone(),
            trusted_keys: vec![handle.control.services().bundles().public_key_base64()],
            data_dir: settings.data_dir.join("gateway"),
            public_url: gateway_public_url.clone(),
            upstream_timeout: settings.upstream_timeout,
            poll_wait: Duration::from_secs(25),
            otlp_endpoint: settings.otlp_endpoint.clone(),
            metrics_token: settings.metrics_token.clone(),
            stdio_commands: settings.stdio_commands.clone(),
            rate_limit_store: settings.rate_limit_store.clone(),
        },
        operator::worker_options(&settings),
    )
    .await?;
    let gateway_task = tokio::spawn(run_http(gateway_listener, gateway.router()));
    println!(
        "gatehouse: gateway worker listening on {gateway_public_url} (MCP endpoints: {gateway_public_url}/mcp/{{tenant}}/{{virtual-server}})"
    );
    tokio::select! {
        r = control_task => r??,
        r = gateway_task => r??,
        _ = shutdown_signal() => println!("gatehouse: shutting down"),
    }
    Ok(())
}

async fn control(settings: Settings) -> anyhow::Result<()> {
    let worker_token = settings
        .worker_token
        .clone()
        .context("the control plane needs GATEHOUSE_WORKER_TOKEN (or --worker-token) for its workers")?;
    let (listener, addr) = bind(&settings.listen, "control plane").await?;
    let public_url = settings.public_url.clone().unwrap_or_else(|| http_url(addr));
    let gateway_public_url = settings.gateway_public_url.clone().unwrap_or_else(|| "http://127.0.0.1:8090".into());
    let handle = build_control(&settings, public_url.clone(), gateway_public_url, worker_token).await?;
    println!("gatehouse: control plane and console listening on {public_url}");
    tokio::select! {
        r = run_http(listener, handle.router) => r?,
        _ = shutdown_signal() => println!("gatehouse: shutting down"),
    }
    Ok(())
}

async fn gateway(settings: Settings) -> anyhow::Result<()> {
    let control_url =
        settings.control_url.clone().context("the gateway needs --control-url (or GATEHOUSE_CONTROL_URL)")?;
    let worker_token =
        settings.worker_token.clone().context("the gateway needs GATEHOUSE_WORKER_TOKEN (or --worker-token)")?;
    if settings.trusted_keys.is_empty() {
        anyhow::bail!(
            "the gateway needs at least one --trusted-key (print it with `gatehouse public-key` on the control plane)"
        );
    }
    let (listener, addr) = bind(&settings.gateway_listen, "gateway").await?;
    let public_url = settings.gateway_public_url.clone().unwrap_or_else(|| http_url(addr));
    let gateway = Gateway::start_with(
        GatewayConfig {
            control_url: control_url.trim_end_matches('/').to_owned(),
            worker_token,
            group: settings.group.clone(),
            trusted_keys: settings.trusted_keys.clone(),
            data_dir: settings.data_dir.join("gateway"),
            public_url: public_url.clone(),
            upstream_timeout: settings.upstream_timeout,
            poll_wait: Duration::from_secs(25),
            otlp_endpoint: settings.otlp_endpoint.clone(),
            metrics_token: settings.metrics_token.clone(),
            stdio_commands: settings.stdio_commands.clone(),
            rate_limit_store: settings.rate_limit_store.clone(),
        },
        operator::worker_options(&settings),
    )
    .await?;
    println!("gatehouse: gateway worker listening on {public_url}");
    tokio::select! {
        r = run_http(listener, gateway.router()) => r?,
        _ = shutdown_signal() => println!("gatehouse: shutting down"),
    }
    Ok(())
}

async fn run_http(listener: TcpListener, router: axum::Router) -> anyhow::Result<()> {
    axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return ctrl_c.await.unwrap_or(()),
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or(());
}
