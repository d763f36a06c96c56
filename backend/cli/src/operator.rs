//! Operator commands that act on the deployment rather than on one tenant: gateway groups
//! (`gatehouse groups …`, on the database directly, like a control-plane replica) and signing keys
//! (`gatehouse keys …`). See `docs/decisions/0014-gateway-groups.md`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use gatehouse_bundle::SigningKey;
use gatehouse_control::bundles::Bundles;
use gatehouse_control::gateways;
use gatehouse_gateway::WorkerOptions;
use gatehouse_store::Store;

use crate::config::Settings;

/// `gatehouse groups …`
#[derive(Debug, Subcommand)]
pub enum GroupsCommand {
    /// Creates a gateway group (workers serve it with `--group <slug>`).
    Create {
        /// The group's slug (a-z, 0-9, '-').
        slug: String,
    },
    /// Lists the groups and their tenants (unassigned tenants are in the configured `--group`).
    List,
    /// Moves a tenant to a group: its bundle leaves the old group's workers and reaches the new one's.
    Assign {
        /// Tenant slug.
        #[arg(long)]
        tenant: String,
        /// Group slug (created with `groups create`, or the configured group).
        #[arg(long)]
        group: String,
    },
}

/// `gatehouse keys …`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Writes a new Ed25519 signing key (PEM, mode 0600) and prints its public half: step 1 of a
    /// rotation (trust it on the workers, then point `signing_key_file` at it).
    Generate {
        /// Where to write the key; an existing file is not overwritten.
        #[arg(long)]
        out: PathBuf,
    },
}

async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    let file = settings.data_dir.join("gatehouse.db");
    if settings.database_url.is_none() && !file.exists() {
        // An operator command never creates a deployment: a wrong data dir is a mistake to report.
        anyhow::bail!("no database at {} (set --data-dir or DATABASE_URL to the control plane's)", file.display());
    }
    let url = settings.database_url.clone().unwrap_or_else(|| format!("sqlite://{}", file.display()));
    Store::connect(&url).await.with_context(|| format!("opening {}", gatehouse_store::redact_url(&url)))
}

/// Runs a `groups` command.
pub async fn groups(settings: &Settings, command: GroupsCommand) -> anyhow::Result<()> {
    let store = open_store(settings).await?;
    // Note: `assign --group` is the global `--group` flag too, so in `assign` `settings.group` is the
    // target, not the configured default. Nothing here creates a group implicitly: the configured
    // group exists since the control plane's first start.
    match command {
        GroupsCommand::Create { slug } => {
            gateways::create_group(&store, &slug).await?;
            println!("gatehouse: created gateway group '{slug}'");
        }
        GroupsCommand::List => {
            for g in gateways::list_groups(&store, &settings.group).await? {
                let default = if g.default { " (default)" } else { "" };
                println!(
                    "{}{default}: {}",
                    g.slug,
                    if g.tenants.is_empty() { "-".into() } else { g.tenants.join(", ") }
                );
            }
        }
        GroupsCommand::Assign { tenant, group } => {
            // The tenant's bundle is re-signed for its new group here, with the platform key, so the
            // new group's workers can take it at once; replicas on PostgreSQL are notified.
            let key = crate::load_or_create_key(settings)?;
            let bundles = Bundles::new(store.clone(), key, settings.group.clone());
            gateways::assign(&store, &bundles, &tenant, &group).await?;
            let t = store.tenant_by_slug(&tenant).await?.context("the tenant disappeared")?;
            let latest = match bundles.latest(&t.id).await? {
                Some(b) => {
                    format!(" (bundle sequence {}, revision {})", b.sequence, &b.revision[..12.min(b.revision.len())])
                }
                None => String::new(),
            };
            println!("gatehouse: tenant '{tenant}' is in gateway group '{group}'{latest}");
        }
    }
    Ok(())
}

/// Runs a `keys` command.
pub fn keys(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Generate { out } => {
            if out.exists() {
                anyhow::bail!("{} exists; choose a new file for the new key", out.display());
            }
            let key = SigningKey::generate();
            crate::write_key(&out, &key)?;
            eprintln!("gatehouse: wrote a new signing key {} (id {})", out.display(), key.key_id());
            eprintln!(
                "gatehouse: next: add the public key below to every worker's trusted keys, then set signing_key_file"
            );
            println!("{}", key.public_base64());
        }
    }
    Ok(())
}

/// The worker's status-report identity from the settings.
pub fn worker_options(settings: &Settings) -> WorkerOptions {
    let mut options = WorkerOptions::default();
    if let Some(id) = &settings.worker_id {
        options.worker_id = id.clone();
    }
    options
}
