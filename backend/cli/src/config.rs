//! Configuration: defaults → a TOML file (`--config`) → `GATEHOUSE_*` environment → flags.
//! Parsed once into [`Settings`]; secrets are never printed.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use serde::Deserialize;

/// Flags (each also read from its `GATEHOUSE_*` variable).
#[derive(Debug, Args)]
pub struct SettingsArgs {
    /// A TOML file with any of the settings below (snake_case keys).
    #[arg(long, env = "GATEHOUSE_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Data directory: SQLite database, signing key, the worker's bundle copy and audit spool.
    #[arg(long, env = "GATEHOUSE_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Database URL: sqlite://… (default: under the data dir) or postgres://…
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,
    /// Control plane and console address.
    #[arg(long, env = "GATEHOUSE_LISTEN", global = true)]
    listen: Option<String>,
    /// Gateway worker address.
    #[arg(long, env = "GATEHOUSE_GATEWAY_LISTEN", global = true)]
    gateway_listen: Option<String>,
    /// The control plane's public URL (default: http://<listen address>).
    #[arg(long, env = "GATEHOUSE_PUBLIC_URL", global = true)]
    public_url: Option<String>,
    /// The gateway's public URL (default: http://<gateway listen address>).
    #[arg(long, env = "GATEHOUSE_GATEWAY_PUBLIC_URL", global = true)]
    gateway_public_url: Option<String>,
    /// Control plane URL a gateway worker polls.
    #[arg(long, env = "GATEHOUSE_CONTROL_URL", global = true)]
    control_url: Option<String>,
    /// Shared token between control plane and workers.
    #[arg(long, env = "GATEHOUSE_WORKER_TOKEN", global = true, hide_env_values = true)]
    worker_token: Option<String>,
    /// Public signing key(s) a worker trusts (base64), repeatable.
    #[arg(long = "trusted-key", env = "GATEHOUSE_TRUSTED_KEYS", value_delimiter = ',', global = true)]
    trusted_keys: Vec<String>,
    /// Gateway group: the group a worker serves; on the control plane, the group of every tenant
    /// not assigned to another one (`gatehouse groups assign`).
    #[arg(long, env = "GATEHOUSE_GROUP", global = true)]
    group: Option<String>,
    /// The id a gateway worker reports its status under (default: host name plus a random suffix).
    #[arg(long, env = "GATEHOUSE_WORKER_ID", global = true)]
    worker_id: Option<String>,
    /// The control plane's bundle signing key (PEM; default: signing-key.pem in the data dir,
    /// created on first start). Pointing it at a new key is the switch step of a key rotation.
    #[arg(long, env = "GATEHOUSE_SIGNING_KEY_FILE", global = true)]
    signing_key_file: Option<PathBuf>,
    /// Where the console's browser assets (pkg/) are.
    #[arg(long, env = "GATEHOUSE_SITE_ROOT", global = true)]
    site_root: Option<PathBuf>,
    /// E-mail of the bootstrap administrator created on first start.
    #[arg(long, env = "GATEHOUSE_ADMIN_EMAIL", global = true)]
    admin_email: Option<String>,
    /// Password of the bootstrap administrator (generated and printed when not given).
    #[arg(long, env = "GATEHOUSE_ADMIN_PASSWORD", global = true, hide_env_values = true)]
    admin_password: Option<String>,
    /// Timeout for each upstream MCP call, in seconds.
    #[arg(long, env = "GATEHOUSE_UPSTREAM_TIMEOUT_SECS", global = true)]
    upstream_timeout_secs: Option<u64>,
    /// OTLP/HTTP endpoint for the gateway worker's OpenTelemetry traces, e.g. http://otel-collector:4318
    /// (`/v1/traces` is appended). Not set: no tracing.
    #[arg(long, env = "GATEHOUSE_OTLP_ENDPOINT", global = true)]
    otlp_endpoint: Option<String>,
    /// Bearer token the gateway worker's `/metrics` requires. Not set: `/metrics` is open (keep it off the
    /// public network: it names every tenant the worker serves).
    #[arg(long, env = "GATEHOUSE_METRICS_TOKEN", global = true, hide_env_values = true)]
    metrics_token: Option<String>,
    /// A command stdio upstream servers may run on this host (gateway worker and the control plane's
    /// tool discovery), exactly as a server names it: `npx`, `/opt/mcp/bin/server`. Repeatable.
    /// Default: none, so no bundle can launch anything.
    #[arg(long = "stdio-command", env = "GATEHOUSE_STDIO_COMMANDS", value_delimiter = ',', global = true)]
    stdio_commands: Vec<String>,
    /// Redis shared by every gateway worker of the deployment for rate-limit buckets, e.g.
    /// redis://127.0.0.1:6379/0 (`redis://[[user]:password@]host[:port][/db][?timeout_ms=N]`). Not set:
    /// each worker keeps its own buckets. When Redis does not answer within the timeout (default 50 ms)
    /// a call is judged by the worker's own buckets.
    #[arg(long, env = "GATEHOUSE_RATE_LIMIT_STORE", global = true, hide_env_values = true)]
    rate_limit_store: Option<String>,
}

/// The same settings as read from a TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    listen: Option<String>,
    gateway_listen: Option<String>,
    public_url: Option<String>,
    gateway_public_url: Option<String>,
    control_url: Option<String>,
    worker_token_file: Option<PathBuf>,
    trusted_keys: Option<Vec<String>>,
    group: Option<String>,
    worker_id: Option<String>,
    signing_key_file: Option<PathBuf>,
    site_root: Option<PathBuf>,
    admin_email: Option<String>,
    upstream_timeout_secs: Option<u64>,
    otlp_endpoint: Option<String>,
    metrics_token_file: Option<PathBuf>,
    stdio_commands: Option<Vec<String>>,
    rate_limit_store: Option<String>,
}

/// Validated settings.
#[derive(Debug)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    pub listen: String,
    pub gateway_listen: String,
    pub public_url: Option<String>,
    pub gateway_public_url: Option<String>,
    pub control_url: Option<String>,
    pub worker_token: Option<String>,
    pub trusted_keys: Vec<String>,
    pub group: String,
    /// The worker's status-report id, if configured.
    pub worker_id: Option<String>,
    /// The signing key file, if not the data dir's.
    pub signing_key_file: Option<PathBuf>,
    pub site_root: PathBuf,
    pub admin_email: String,
    pub admin_password: Option<String>,
    pub upstream_timeout: Duration,
    /// The gateway worker's OTLP/HTTP traces endpoint, if tracing is on.
    pub otlp_endpoint: Option<String>,
    /// The bearer token of the gateway worker's `/metrics`, if it needs one.
    pub metrics_token: Option<String>,
    /// The commands stdio upstream servers may run (empty: stdio servers are refused).
    pub stdio_commands: Vec<String>,
    /// The Redis URL of the gateway worker's shared rate-limit buckets, if any.
    pub rate_limit_store: Option<String>,
}

impl Settings {
    /// Merges file and flags/environment over the defaults.
    pub fn load(args: SettingsArgs) -> anyhow::Result<Settings> {
        let file: FileSettings = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
            }
            None => FileSettings::default(),
        };
        let worker_token = match (args.worker_token, &file.worker_token_file) {
            (Some(t), _) => Some(t),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?.trim().to_owned(),
            ),
            (None, None) => None,
        };
        let metrics_token = match (args.metrics_token, &file.metrics_token_file) {
            (Some(t), _) => Some(t),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?.trim().to_owned(),
            ),
            (None, None) => None,
        };
        if metrics_token.as_deref().is_some_and(str::is_empty) {
            anyhow::bail!("the metrics token is empty; leave it unset to serve /metrics without one");
        }
        let trusted_keys =
            if args.trusted_keys.is_empty() { file.trusted_keys.unwrap_or_default() } else { args.trusted_keys };
        let stdio_commands: Vec<String> =
            if args.stdio_commands.is_empty() { file.stdio_commands.unwrap_or_default() } else { args.stdio_commands };
        let stdio_commands: Vec<String> =
            stdio_commands.into_iter().map(|c| c.trim().to_owned()).filter(|c| !c.is_empty()).collect();
        if let Some(bad) = stdio_commands.iter().find(|c| c.contains('/') && !c.starts_with('/')) {
            anyhow::bail!("stdio command {bad:?}: give a bare program name (looked up on PATH) or an absolute path");
        }
        let rate_limit_store =
            args.rate_limit_store.or(file.rate_limit_store).map(|u| u.trim().to_owned()).filter(|u| !u.is_empty());
        if let Some(url) = &rate_limit_store
            && !url.starts_with("redis://")
        {
            // Never echo the URL: it may hold a password.
            anyhow::bail!("the rate-limit store must be a redis:// URL (redis://host:6379/0)");
        }
        let timeout = args.upstream_timeout_secs.or(file.upstream_timeout_secs).unwrap_or(30);
        if timeout == 0 || timeout > 3600 {
            anyhow::bail!("upstream timeout must be between 1 and 3600 seconds, got {timeout}");
        }
        Ok(Settings {
            data_dir: args.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("data")),
            database_url: args.database_url.or(file.database_url),
            listen: args.listen.or(file.listen).unwrap_or_else(|| "127.0.0.1:8080".into()),
            gateway_listen: args.gateway_listen.or(file.gateway_listen).unwrap_or_else(|| "127.0.0.1:8090".into()),
            public_url: args.public_url.or(file.public_url).map(|u| u.trim_end_matches('/').to_owned()),
            gateway_public_url: args
                .gateway_public_url
                .or(file.gateway_public_url)
                .map(|u| u.trim_end_matches('/').to_owned()),
            control_url: args.control_url.or(file.control_url),
            worker_token,
            trusted_keys,
            group: args.group.or(file.group).unwrap_or_else(|| "default".into()),
            worker_id: args.worker_id.or(file.worker_id).filter(|w| !w.trim().is_empty()),
            signing_key_file: args.signing_key_file.or(file.signing_key_file),
            site_root: args.site_root.or(file.site_root).unwrap_or_else(|| PathBuf::from("target/site")),
            admin_email: args.admin_email.or(file.admin_email).unwrap_or_else(|| "admin@gatehouse.local".into()),
            admin_password: args.admin_password,
            upstream_timeout: Duration::from_secs(timeout),
            otlp_endpoint: args.otlp_endpoint.or(file.otlp_endpoint).filter(|e| !e.trim().is_empty()),
            metrics_token,
            stdio_commands,
            rate_limit_store,
        })
    }
}

const KNOWN_ENV: &[&str] = &[
    "GATEHOUSE_CONFIG",
    "GATEHOUSE_DATA_DIR",
    "GATEHOUSE_LISTEN",
    "GATEHOUSE_GATEWAY_LISTEN",
    "GATEHOUSE_PUBLIC_URL",
    "GATEHOUSE_GATEWAY_PUBLIC_URL",
    "GATEHOUSE_CONTROL_URL",
    "GATEHOUSE_WORKER_TOKEN",
    "GATEHOUSE_TRUSTED_KEYS",
    "GATEHOUSE_GROUP",
    "GATEHOUSE_WORKER_ID",
    "GATEHOUSE_SIGNING_KEY_FILE",
    "GATEHOUSE_SITE_ROOT",
    "GATEHOUSE_ADMIN_EMAIL",
    "GATEHOUSE_ADMIN_PASSWORD",
    "GATEHOUSE_UPSTREAM_TIMEOUT_SECS",
    "GATEHOUSE_OTLP_ENDPOINT",
    "GATEHOUSE_METRICS_TOKEN",
    "GATEHOUSE_STDIO_COMMANDS",
    "GATEHOUSE_RATE_LIMIT_STORE",
    // Read by the test harness, not by the binary; listed so they are not reported as typos.
    "GATEHOUSE_TEST_DATABASE_URL",
    "GATEHOUSE_PEERS_DIR",
    "GATEHOUSE_PYTHON",
];

/// Warns about `GATEHOUSE_*` variables that no setting reads (usually a typo).
pub fn warn_unknown_env(vars: impl Iterator<Item = (String, String)>) -> Vec<String> {
    let unknown: Vec<String> =
        vars.map(|(k, _)| k).filter(|k| k.starts_with("GATEHOUSE_") && !KNOWN_ENV.contains(&k.as_str())).collect();
    for k in &unknown {
        eprintln!("gatehouse: warning: unknown environment variable {k} is ignored");
    }
    unknown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdio_commands_come_from_flags_or_the_file_and_relative_paths_are_refused() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            settings: SettingsArgs,
        }
        let load = |args: &[&str]| {
            let cli = <Cli as clap::Parser>::try_parse_from(std::iter::once("gatehouse").chain(args.iter().copied()))
                .unwrap();
            Settings::load(cli.settings)
        };
        assert!(load(&[]).unwrap().stdio_commands.is_empty(), "off by default");
        let s = load(&["--stdio-command", "npx", "--stdio-command", "/opt/mcp/bin/server"]).unwrap();
        assert_eq!(s.stdio_commands, ["npx", "/opt/mcp/bin/server"]);
        let e = load(&["--stdio-command", "bin/server"]).unwrap_err().to_string();
        assert!(e.contains("bin/server") && e.contains("absolute path"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gatehouse.toml");
        std::fs::write(&file, "stdio_commands = [\"node\"]\n").unwrap();
        assert_eq!(load(&["--config", file.to_str().unwrap()]).unwrap().stdio_commands, ["node"]);
    }

    #[test]
    fn the_rate_limit_store_comes_from_the_flag_or_the_file_and_must_be_redis() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            settings: SettingsArgs,
        }
        let load = |args: &[&str]| {
            let cli = <Cli as clap::Parser>::try_parse_from(std::iter::once("gatehouse").chain(args.iter().copied()))
                .unwrap();
            Settings::load(cli.settings)
        };
        assert_eq!(load(&[]).unwrap().rate_limit_store, None, "off by default");
        let s = load(&["--rate-limit-store", "redis://127.0.0.1:6379/0"]).unwrap();
        assert_eq!(s.rate_limit_store.as_deref(), Some("redis://127.0.0.1:6379/0"));
        let e = load(&["--rate-limit-store", "http://:hunter2@redis:6379"]).unwrap_err().to_string();
        assert!(e.contains("redis://") && !e.contains("hunter2"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gatehouse.toml");
        std::fs::write(&file, "rate_limit_store = \"redis://redis:6379/1\"\n").unwrap();
        let s = load(&["--config", file.to_str().unwrap()]).unwrap();
        assert_eq!(s.rate_limit_store.as_deref(), Some("redis://redis:6379/1"));
    }

    #[test]
    fn unknown_gatehouse_variables_are_reported() {
        let vars = vec![
            ("GATEHOUSE_LISTEN".to_owned(), "x".to_owned()),
            ("GATEHOUSE_LISTN".to_owned(), "x".to_owned()),
            ("PATH".to_owned(), "x".to_owned()),
        ];
        assert_eq!(warn_unknown_env(vars.into_iter()), vec!["GATEHOUSE_LISTN".to_owned()]);
    }
}
