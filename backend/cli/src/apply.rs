//! `gatehouse export` and `gatehouse apply`: policy as code over the control plane's GraphQL API,
//! authenticated with an API token exactly as any script is (`Authorization: Bearer …`). The file
//! format and the diff are in [`crate::policy_file`]; this side reads the live state, prints the
//! plan and runs its mutations.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use serde_json::{Value, json};

use crate::policy_file::{self, LiveState, Op, OverrideSpec, Plan, PolicyFile, RuleSpec};

/// The environment variable holding the API token, unless `--token-env` names another.
pub const DEFAULT_TOKEN_ENV: &str = "GATEHOUSE_TOKEN";

/// Where to reach the control plane, and as whom.
#[derive(Debug, Args)]
pub struct Connection {
    /// The control plane's URL (e.g. http://control:8080; `/graphql` is appended).
    #[arg(long)]
    url: String,
    /// The environment variable that holds the API token (a tenant admin's for `apply`).
    #[arg(long, default_value = DEFAULT_TOKEN_ENV)]
    pub token_env: String,
}

/// `gatehouse export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// The tenant's slug.
    #[arg(long)]
    tenant: String,
    /// Write the YAML to this file instead of standard output.
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
}

/// `gatehouse apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// The policy file (YAML, as `gatehouse export` writes it); `-` reads standard input.
    #[arg(long, short = 'f')]
    file: PathBuf,
    /// The tenant's slug (default: the file's `tenant`; when both are given they must agree).
    #[arg(long)]
    tenant: Option<String>,
    /// Print the diff and change nothing.
    #[arg(long)]
    dry_run: bool,
}

/// An error the control plane answered with (its stable code, `docs/errors.md`, and its message),
/// or one reaching it (no code).
#[derive(Debug, Clone, PartialEq)]
pub struct GqlError {
    pub code: String,
    pub message: String,
}

impl GqlError {
    fn transport(message: String) -> GqlError {
        GqlError { code: String::new(), message }
    }
}

impl std::fmt::Display for GqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.code.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.code, self.message) }
    }
}

/// An error with its causes (reqwest's own message leaves out why the connection failed).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    s
}

/// A GraphQL client holding an API token.
struct Client {
    http: reqwest::Client,
    endpoint: String,
    token: String,
}

impl Client {
    fn new(connection: &Connection) -> anyhow::Result<Client> {
        let token = std::env::var(&connection.token_env).ok().map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
        let token = token.with_context(|| {
            format!(
                "set {} to an API token of this tenant (a tenant admin's to apply; create one in the console \
                 or with the createToken mutation)",
                connection.token_env
            )
        })?;
        let base = connection.url.trim_end_matches('/');
        let endpoint = if base.ends_with("/graphql") { base.to_owned() } else { format!("{base}/graphql") };
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
        Ok(Client { http, endpoint, token })
    }

    /// Runs one operation; the control plane's first error comes back as [`GqlError`].
    async fn call(&self, query: &str, variables: Value) -> Result<Value, GqlError> {
        let resp = self
            .http
            .post(&self.endpoint)
            .bearer_auth(&self.token)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .map_err(|e| GqlError::transport(format!("cannot reach the control plane: {}", with_causes(&e))))?;
        let status = resp.status();
        let body: Value = resp.json().await.map_err(|e| {
            GqlError::transport(format!("{} answered HTTP {status} without a GraphQL answer: {e}", self.endpoint))
        })?;
        if let Some(e) = body.get("errors").and_then(|e| e.get(0)) {
            return Err(GqlError {
                code: e["extensions"]["code"].as_str().unwrap_or("ERROR").to_owned(),
                message: e["message"].as_str().unwrap_or_default().to_owned(),
            });
        }
        match body.get("data") {
            Some(data) if status.is_success() && !data.is_null() => Ok(data.clone()),
            _ => Err(GqlError::transport(format!("{} answered HTTP {status}: {body}", self.endpoint))),
        }
    }
}

/// Everything the plan compares, in one query.
pub const LIVE_QUERY: &str = "query($t: String!) {
  roles(tenant: $t) {
    slug description grants { server tool } members
    rules { id server effect tools annotation { hint value }
            params { param optional equals oneOf pattern min max maxLength pathPrefixes urlHosts } description
            condition }
  }
  virtualServers(tenant: $t) {
    slug name upstreams mode conflictStrategy prefixes { server prefix }
    overrides { server tool rename description fixed { name value } hidden enums { name values } }
  }
  servers(tenant: $t) { slug tools { name } }
  users(tenant: $t) { email }
  groups(tenant: $t) { slug name members roles }
}";

/// How many users' attributes one query reads (aliases of `userAttributes`; the schema's
/// complexity limit is 2,000).
const ATTRIBUTE_BATCH: usize = 100;

/// The attributes query of some users: `u0: userAttributes(tenant: $t, email: $e0) { key value } …`.
fn attributes_query(n: usize) -> String {
    let vars: Vec<String> = (0..n).map(|i| format!("$e{i}: String!")).collect();
    let fields: Vec<String> =
        (0..n).map(|i| format!("u{i}: userAttributes(tenant: $t, email: $e{i}) {{ key value }}")).collect();
    format!("query($t: String!, {}) {{ {} }}", vars.join(", "), fields.join(" "))
}

async fn fetch_live(client: &Client, tenant: &str) -> Result<LiveState, GqlError> {
    let shape = |e: serde_json::Error| {
        GqlError::transport(format!("the control plane's answer does not have the expected shape: {e}"))
    };
    let data = client.call(LIVE_QUERY, json!({ "t": tenant })).await?;
    let mut live: LiveState = serde_json::from_value(data).map_err(shape)?;
    // `UserView` has no attributes: they are read per user, in batches.
    let emails: Vec<String> = live.users.iter().map(|u| u.email.clone()).collect();
    for batch in emails.chunks(ATTRIBUTE_BATCH) {
        let mut variables = json!({ "t": tenant });
        for (i, email) in batch.iter().enumerate() {
            variables[format!("e{i}")] = json!(email);
        }
        let data = client.call(&attributes_query(batch.len()), variables).await?;
        for (i, email) in batch.iter().enumerate() {
            let pairs: Vec<policy_file::LiveAttribute> =
                serde_json::from_value(data[format!("u{i}")].clone()).map_err(shape)?;
            if !pairs.is_empty() {
                live.user_attributes
                    .insert(email.trim().to_lowercase(), pairs.into_iter().map(|a| (a.key, a.value)).collect());
            }
        }
    }
    Ok(live)
}

/// `RuleInput` as GraphQL variables.
fn rule_input(rule: &RuleSpec) -> Value {
    let mut v = json!({
        "server": rule.server,
        "effect": rule.effect.graphql(),
        "tools": rule.tools,
        "params": serde_json::to_value(&rule.params).expect("constraints serialise"),
        "description": rule.description,
    });
    if let Some(a) = rule.annotation {
        v["annotation"] = json!({ "hint": a.hint.graphql(), "value": a.value });
    }
    if let Some(c) = &rule.condition {
        v["condition"] = json!(c);
    }
    v
}

/// `ToolOverrideInput` as GraphQL variables (`fixed` and `enums` as lists of `{ name, … }`).
fn override_input(o: &OverrideSpec) -> Value {
    json!({
        "server": o.server,
        "tool": o.tool,
        "rename": o.rename,
        "description": o.description,
        "fixed": o.fixed.iter().map(|(name, value)| json!({ "name": name, "value": value })).collect::<Vec<_>>(),
        "hidden": o.hidden,
        "enums": o.enums.iter().map(|(name, values)| json!({ "name": name, "values": values })).collect::<Vec<_>>(),
    })
}

async fn run(client: &Client, tenant: &str, op: &Op) -> Result<(), GqlError> {
    let (query, variables) = match op {
        Op::CreateRole { role, description } => (
            "mutation($t: String!, $s: String!, $d: String!) { createRole(tenant: $t, slug: $s, description: $d) { slug } }",
            json!({ "t": tenant, "s": role, "d": description }),
        ),
        Op::SetGrants { role, grants } => (
            "mutation($t: String!, $r: String!, $g: [GrantInput!]!) { setRoleGrants(tenant: $t, role: $r, grants: $g) { slug } }",
            json!({ "t": tenant, "r": role, "g": grants }),
        ),
        Op::AddRule { role, rule } => (
            "mutation($t: String!, $r: String!, $rule: RuleInput!) { addRule(tenant: $t, role: $r, rule: $rule) { id } }",
            json!({ "t": tenant, "r": role, "rule": rule_input(rule) }),
        ),
        Op::DeleteRule { id } => (
            "mutation($t: String!, $id: String!) { deleteRule(tenant: $t, id: $id) }",
            json!({ "t": tenant, "id": id }),
        ),
        Op::BindRole { role, email } => (
            "mutation($t: String!, $r: String!, $e: String!) { bindRole(tenant: $t, role: $r, email: $e) { slug } }",
            json!({ "t": tenant, "r": role, "e": email }),
        ),
        Op::UnbindRole { role, email } => (
            "mutation($t: String!, $r: String!, $e: String!) { unbindRole(tenant: $t, role: $r, email: $e) { slug } }",
            json!({ "t": tenant, "r": role, "e": email }),
        ),
        Op::CreateVirtualServer { slug, name, upstreams } => (
            "mutation($t: String!, $s: String!, $n: String!, $u: [String!]!) { createVirtualServer(tenant: $t, slug: $s, name: $n, servers: $u) { slug } }",
            json!({ "t": tenant, "s": slug, "n": name, "u": upstreams }),
        ),
        Op::SetPolicyMode { virtual_server, mode } => (
            "mutation($t: String!, $v: String!, $m: PolicyMode!) { setPolicyMode(tenant: $t, virtualServer: $v, mode: $m) { mode } }",
            json!({ "t": tenant, "v": virtual_server, "m": mode.graphql() }),
        ),
        Op::SetConflictStrategy { virtual_server, strategy, prefixes } => (
            "mutation($t: String!, $v: String!, $s: ConflictStrategy!, $p: [UpstreamPrefixInput!]!) { setConflictStrategy(tenant: $t, virtualServer: $v, strategy: $s, prefixes: $p) { slug } }",
            json!({ "t": tenant, "v": virtual_server, "s": strategy.graphql(),
                    "p": prefixes.iter().map(|(server, prefix)| json!({ "server": server, "prefix": prefix })).collect::<Vec<_>>() }),
        ),
        Op::SetToolOverride { virtual_server, over } => (
            "mutation($t: String!, $v: String!, $o: ToolOverrideInput!) { setToolOverride(tenant: $t, virtualServer: $v, override: $o) { slug } }",
            json!({ "t": tenant, "v": virtual_server, "o": override_input(over) }),
        ),
        Op::DeleteToolOverride { virtual_server, server, tool } => (
            "mutation($t: String!, $v: String!, $s: String!, $n: String!) { deleteToolOverride(tenant: $t, virtualServer: $v, server: $s, tool: $n) { slug } }",
            json!({ "t": tenant, "v": virtual_server, "s": server, "n": tool }),
        ),
        Op::CreateGroup { group, name } => (
            "mutation($t: String!, $s: String!, $n: String!) { createGroup(tenant: $t, slug: $s, name: $n) { slug } }",
            json!({ "t": tenant, "s": group, "n": name }),
        ),
        Op::DeleteGroup { group } => (
            "mutation($t: String!, $s: String!) { deleteGroup(tenant: $t, slug: $s) }",
            json!({ "t": tenant, "s": group }),
        ),
        Op::AddGroupMember { group, email } => (
            "mutation($t: String!, $g: String!, $e: String!) { addGroupMember(tenant: $t, group: $g, email: $e) { slug } }",
            json!({ "t": tenant, "g": group, "e": email }),
        ),
        Op::RemoveGroupMember { group, email } => (
            "mutation($t: String!, $g: String!, $e: String!) { removeGroupMember(tenant: $t, group: $g, email: $e) { slug } }",
            json!({ "t": tenant, "g": group, "e": email }),
        ),
        Op::BindGroupRole { group, role } => (
            "mutation($t: String!, $g: String!, $r: String!) { bindGroupRole(tenant: $t, group: $g, role: $r) { slug } }",
            json!({ "t": tenant, "g": group, "r": role }),
        ),
        Op::UnbindGroupRole { group, role } => (
            "mutation($t: String!, $g: String!, $r: String!) { unbindGroupRole(tenant: $t, group: $g, role: $r) { slug } }",
            json!({ "t": tenant, "g": group, "r": role }),
        ),
        Op::SetUserAttributes { email, attributes } => (
            "mutation($t: String!, $e: String!, $a: [UserAttributeInput!]!) { setUserAttributes(tenant: $t, email: $e, attributes: $a) { key } }",
            json!({ "t": tenant, "e": email,
                    "a": attributes.iter().map(|(key, value)| json!({ "key": key, "value": value })).collect::<Vec<_>>() }),
        ),
    };
    client.call(query, variables).await.map(|_| ())
}

/// `gatehouse export`: the tenant's policy as YAML.
pub async fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.connection)?;
    let live = match fetch_live(&client, &args.tenant).await {
        Ok(live) => live,
        Err(e) => {
            eprintln!("gatehouse: error: reading the policy of tenant {}: {e}", args.tenant);
            return Ok(ExitCode::FAILURE);
        }
    };
    let yaml =
        policy_file::to_yaml(&policy_file::export(&live, &args.tenant), args.connection.url.trim_end_matches('/'));
    match &args.output {
        Some(path) => {
            std::fs::write(path, yaml).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("gatehouse: wrote the policy of tenant {} to {}", args.tenant, path.display());
        }
        None => print!("{yaml}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn read_file(args: &ApplyArgs) -> Result<PolicyFile, Vec<String>> {
    let name = args.file.display().to_string();
    let text = if name == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| vec![format!("reading standard input: {e}")])?
    } else {
        std::fs::read_to_string(&args.file).map_err(|e| vec![format!("reading {name}: {e}")])?
    };
    let file = policy_file::parse(&text).map_err(|e| vec![format!("{name}: {e}")])?;
    let errors = policy_file::validate(&file);
    if errors.is_empty() { Ok(file) } else { Err(errors.into_iter().map(|e| format!("{name}: {e}")).collect()) }
}

fn print_plan(plan: &Plan) {
    for line in &plan.lines {
        println!("{line}");
    }
    for p in plan.warnings().chain(plan.errors()) {
        eprintln!("gatehouse: {p}");
    }
}

/// `gatehouse apply`: makes the tenant's live policy what the file says, printing the diff.
pub async fn apply(args: ApplyArgs) -> anyhow::Result<ExitCode> {
    let file = match read_file(&args) {
        Ok(f) => f,
        Err(errors) => {
            for e in errors {
                eprintln!("gatehouse: error: {e}");
            }
            eprintln!("gatehouse: nothing was applied");
            return Ok(ExitCode::FAILURE);
        }
    };
    let tenant = match (&args.tenant, &file.tenant) {
        (Some(flag), Some(in_file)) if flag != in_file => {
            eprintln!(
                "gatehouse: error: the file describes tenant {in_file}, not {flag} (--tenant); nothing was applied"
            );
            return Ok(ExitCode::FAILURE);
        }
        (Some(t), _) | (None, Some(t)) => t.clone(),
        (None, None) => anyhow::bail!("name the tenant with --tenant (or `tenant:` in the file)"),
    };
    let client = Client::new(&args.connection)?;
    let live = match fetch_live(&client, &tenant).await {
        Ok(live) => live,
        Err(e) => {
            eprintln!("gatehouse: error: reading the live policy of tenant {tenant}: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let plan = policy_file::plan(&file, &live);
    print_plan(&plan);
    let errors = plan.errors().count();
    if errors > 0 {
        eprintln!("gatehouse: {errors} error(s): nothing was applied");
        return Ok(ExitCode::FAILURE);
    }
    if plan.is_empty() {
        println!("no changes");
        return Ok(ExitCode::SUCCESS);
    }
    let n = plan.steps.len();
    if args.dry_run {
        println!("dry run: {n} change(s) not applied");
        return Ok(ExitCode::SUCCESS);
    }
    for (i, step) in plan.steps.iter().enumerate() {
        if let Err(e) = run(&client, &tenant, &step.op).await {
            eprintln!("gatehouse: error: {}: {e}", step.item);
            eprintln!(
                "gatehouse: stopped: {i} of {n} change(s) were applied before it (changes that remove access \
                 run first); fix the file and apply again"
            );
            return Ok(ExitCode::FAILURE);
        }
    }
    // Read back: what the control plane stored must now be what the file says.
    let after = match fetch_live(&client, &tenant).await {
        Ok(live) => live,
        Err(e) => {
            eprintln!("gatehouse: error: reading the policy back after applying: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let rest = policy_file::plan(&file, &after);
    if !rest.is_empty() {
        eprintln!("gatehouse: error: applied {n} change(s), but the control plane still differs from the file:");
        for line in &rest.lines {
            eprintln!("gatehouse:   {line}");
        }
        return Ok(ExitCode::FAILURE);
    }
    println!("applied {n} change(s)");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy_file::{AnnotationSpec, Effect, Hint, ParamSpec};

    #[test]
    fn rule_inputs_use_the_graphql_enum_values() {
        let rule = RuleSpec {
            server: "everything".into(),
            effect: Effect::Allow,
            tools: "get-*".into(),
            annotation: Some(AnnotationSpec { hint: Hint::ReadOnly, value: true }),
            params: vec![ParamSpec { param: "a".into(), max: Some(3.0), ..Default::default() }],
            description: "why".into(),
            condition: None,
        };
        assert_eq!(
            rule_input(&rule),
            json!({ "server": "everything", "effect": "ALLOW", "tools": "get-*",
                    "annotation": { "hint": "READ_ONLY", "value": true },
                    "params": [{ "param": "a", "max": 3.0 }], "description": "why" })
        );
        let conditional = RuleSpec { condition: Some("'oncall' in user.groups".into()), ..rule };
        assert_eq!(rule_input(&conditional)["condition"], "'oncall' in user.groups", "the condition travels");
    }
}
