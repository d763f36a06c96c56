//! `gatehouse-bench`: the performance harness of issue 3 ("Speed"). Not a test: it prints figures
//! and their ratios against the direct path; nothing fails on a number.
//!
//! It starts a fast echo MCP upstream (this binary's `upstream` subcommand, a child process so its
//! CPU and memory are its own) and Gatehouse (`gatehouse serve`, or `--split` for the control plane
//! and a worker as two processes), configures a tenant over GraphQL, then drives `tools/call echo`
//! itself over keep-alive HTTP/1.1 connections, alternating the direct path (the upstream) and the
//! gateway path. It measures throughput at N connections (closed loop), latency at a fixed rate (open
//! loop), CPU time per request of each process (`/proc/PID/stat`), and memory per idle connection
//! and per idle session (`VmRSS`). See docs/performance.md for how to read the output.

mod client;
mod gatehouse;
mod procfs;
mod upstream;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use tokio::time::Instant;

use crate::client::{Conn, Target};

#[derive(Parser)]
#[command(name = "gatehouse-bench", about = "Gatehouse performance harness: direct vs gateway, alternating")]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    #[command(flatten)]
    args: Args,
}

#[derive(Subcommand)]
enum Sub {
    /// Runs only the echo upstream (the harness starts itself this way).
    Upstream {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// Tokio worker threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
}

#[derive(clap::Args, Clone)]
struct Args {
    /// The gatehouse binary (a release build: `cargo build --release -p gatehouse`).
    #[arg(long, default_value = "target/release/gatehouse")]
    gatehouse: PathBuf,
    /// Run the control plane and the worker as two processes (`gatehouse control` + `gatehouse gateway`)
    /// instead of `gatehouse serve`, so the worker's CPU is measured without the control plane's.
    #[arg(long)]
    split: bool,
    /// Connections of the throughput phases (closed loop, one request in flight per connection).
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Request rate of the latency phases (open loop), per second.
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    /// Connections the latency phases spread their paced requests over.
    #[arg(long, default_value_t = 32)]
    rate_connections: usize,
    /// Measured seconds of each phase.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Unmeasured warm-up seconds before each phase.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Rounds of each alternation (direct, gateway, direct, gateway, ...).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Upper bound on the requests of one phase (the loops are bounded by count and by time).
    #[arg(long, default_value_t = 5_000_000)]
    max_requests: u64,
    /// Sessions opened for the memory-per-session figure (0 skips it).
    #[arg(long, default_value_t = 2000)]
    sessions: usize,
    /// Idle connections opened for the memory-per-connection figure (0 skips it).
    #[arg(long, default_value_t = 1000)]
    idle_connections: usize,
    /// Tokio worker threads of the load generator.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// Tokio worker threads of the echo upstream.
    #[arg(long, default_value_t = 2)]
    upstream_threads: usize,
    /// RUST_LOG for gatehouse (default: unset, i.e. the binary's own default, `info`).
    #[arg(long)]
    gatehouse_log: Option<String>,
    /// Folder for the temporary data dir (default: the system temp dir). The audit spool is fsynced there.
    #[arg(long)]
    data_parent: Option<PathBuf>,
    /// Copy gatehouse's output to stderr.
    #[arg(long)]
    verbose: bool,
    /// Profile the worker with `perf record` during each measured gateway phase, into this folder
    /// (adds a few per cent of sampling overhead to the worker's CPU figures).
    #[arg(long)]
    perf: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Sub::Upstream { listen, threads }) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?;
            runtime.block_on(async {
                let listener = tokio::net::TcpListener::bind(&listen).await?;
                println!("echo upstream listening on {}", listener.local_addr()?);
                upstream::serve(listener).await
            })
        }
        None => {
            let args = cli.args;
            let runtime =
                tokio::runtime::Builder::new_multi_thread().worker_threads(args.client_threads).enable_all().build()?;
            runtime.block_on(run(args))
        }
    }
}

/// The processes whose CPU is measured.
struct Procs {
    list: Vec<(&'static str, u32)>,
    tck: u64,
}

impl Procs {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            ticks: self.list.iter().map(|(_, pid)| procfs::cpu_ticks(*pid).unwrap_or(0)).collect(),
            machine: machine_busy_ticks().unwrap_or(0),
        }
    }
    fn pids(&self) -> Vec<u32> {
        self.list.iter().map(|(_, p)| *p).collect()
    }
}

struct Snapshot {
    ticks: Vec<u64>,
    /// Busy ticks of the whole machine (all cores), from /proc/stat.
    machine: u64,
}

/// Busy (non-idle, non-iowait) ticks of all CPUs together.
fn machine_busy_ticks() -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...
    Ok(v.iter().take(8).sum::<u64>() - v.get(3).copied().unwrap_or(0) - v.get(4).copied().unwrap_or(0))
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Throughput,
    Rate,
}

/// One measured phase.
struct Phase {
    path: &'static str,
    kind: Kind,
    requests: u64,
    errors: u64,
    first_error: Option<String>,
    secs: f64,
    /// Latencies of the measured requests, nanoseconds, sorted.
    latencies: Vec<u64>,
    /// Requests of an open-loop phase that started more than 5 ms after their scheduled time.
    late: u64,
    /// CPU ticks used by each measured process.
    cpu: Vec<u64>,
    /// CPU ticks used by everything else on the machine during the phase.
    foreign: u64,
}

impl Phase {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.secs
    }
    fn pct(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies.len() as f64 * p).ceil() as usize).clamp(1, self.latencies.len()) - 1;
        self.latencies[i] as f64 / 1e6
    }
    fn cpu_us(&self, procs: &Procs, i: usize) -> f64 {
        self.cpu[i] as f64 * 1e6 / procs.tck as f64 / self.requests.max(1) as f64
    }
}

/// Connects, initializes, lists and calls once (checked), so the measured loop only sends `tools/call`.
async fn ready_connections(target: &Arc<Target>, n: usize) -> anyhow::Result<Vec<Conn>> {
    let setups = (0..n).map(|_| {
        let target = Arc::clone(target);
        async move {
            let mut conn = Conn::connect(target).await?;
            conn.initialize().await?;
            let tools = conn.tools_list().await?;
            if !tools.iter().any(|t| t == "echo") {
                bail!("tools/list has no echo: {tools:?}");
            }
            conn.call_echo_checked().await?;
            anyhow::Ok(conn)
        }
    });
    futures::future::try_join_all(setups).await
}

struct Settings {
    warmup: Duration,
    duration: Duration,
    max: u64,
    /// `perf record` output folder and the worker's pid.
    perf: Option<(PathBuf, u32)>,
}

/// Starts `perf record` on the worker for the measured window of a gateway phase, if asked.
fn start_perf(s: &Settings, target: &Target, label: &str) -> Option<std::process::Child> {
    let (dir, pid) = s.perf.as_ref().filter(|_| target.name == "gateway")?;
    let out = dir.join(format!("{label}.perf.data"));
    std::process::Command::new("perf")
        .args(["record", "-F", "999", "-g", "-p", &pid.to_string(), "-o"])
        .arg(&out)
        .args(["--", "sleep", &format!("{:.1}", s.duration.as_secs_f64())])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .inspect_err(|e| eprintln!("perf record could not start: {e}"))
        .ok()
}

fn stop_perf(perf: Option<std::process::Child>) {
    if let Some(mut child) = perf {
        let _ = child.wait();
    }
}

/// Closed loop: every connection sends `tools/call echo` back to back.
async fn throughput(
    target: &Arc<Target>,
    conns: usize,
    s: &Settings,
    procs: &Procs,
    label: &str,
) -> anyhow::Result<Phase> {
    let clients = ready_connections(target, conns).await?;
    let start = Instant::now() + Duration::from_millis(20);
    let from = start + s.warmup;
    let end = from + s.duration;
    let budget = Arc::new(AtomicU64::new(0));
    let per_conn = (s.duration.as_secs_f64() * 100_000.0 / conns as f64) as usize;
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut conn| {
            let budget = Arc::clone(&budget);
            let max = s.max;
            tokio::spawn(async move {
                tokio::time::sleep_until(start).await;
                let mut latencies = Vec::with_capacity(per_conn);
                let mut error = None;
                loop {
                    let t0 = Instant::now();
                    if t0 >= end || budget.fetch_add(1, Ordering::Relaxed) >= max {
                        break;
                    }
                    match conn.call_echo().await {
                        Ok(_) if t0 >= from => latencies.push((Instant::now() - t0).as_nanos() as u64),
                        Ok(_) => {}
                        Err(e) => {
                            // The connection is unusable after a failed exchange.
                            error = Some(e.to_string());
                            break;
                        }
                    }
                }
                (latencies, error)
            })
        })
        .collect();
    tokio::time::sleep_until(from).await;
    let before = procs.snapshot();
    let perf = start_perf(s, target, label);
    tokio::time::sleep_until(end).await;
    let results = futures::future::join_all(tasks).await;
    procfs::settle(&procs.pids(), Duration::from_secs(15)).await;
    let after = procs.snapshot();
    stop_perf(perf);
    finish(target.name, Kind::Throughput, s.duration, results, 0, &before, &after)
}

/// Open loop: request i is due at `start + i / rate`, spread round-robin over the connections.
/// Latency is measured from when the request is written (tokio's timer has 1 ms granularity, so the
/// schedule itself is only met to within about a millisecond); `late` counts requests that could not
/// start within 5 ms of their slot, which would mean the path fell behind the rate.
async fn fixed_rate(
    target: &Arc<Target>,
    conns: usize,
    rate: u64,
    s: &Settings,
    procs: &Procs,
    label: &str,
) -> anyhow::Result<Phase> {
    let clients = ready_connections(target, conns).await?;
    let start = Instant::now() + Duration::from_millis(20);
    let from = start + s.warmup;
    let end = from + s.duration;
    let period = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let late_counter = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(k, mut conn)| {
            let late_counter = Arc::clone(&late_counter);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut error = None;
                for j in 0u64.. {
                    let due = start + period * (k as u32) + period.saturating_mul((j * conns as u64) as u32);
                    if due >= end {
                        break;
                    }
                    tokio::time::sleep_until(due).await;
                    let t0 = Instant::now();
                    if let Err(e) = conn.call_echo().await {
                        error = Some(e.to_string());
                        break;
                    }
                    if due >= from {
                        latencies.push((Instant::now() - t0).as_nanos() as u64);
                        if t0 - due > Duration::from_millis(5) {
                            late_counter.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                (latencies, error)
            })
        })
        .collect();
    tokio::time::sleep_until(from).await;
    let before = procs.snapshot();
    let perf = start_perf(s, target, label);
    tokio::time::sleep_until(end).await;
    let results = futures::future::join_all(tasks).await;
    procfs::settle(&procs.pids(), Duration::from_secs(15)).await;
    let after = procs.snapshot();
    stop_perf(perf);
    let late = late_counter.load(Ordering::Relaxed);
    finish(target.name, Kind::Rate, s.duration, results, late, &before, &after)
}

type TaskResult = Result<(Vec<u64>, Option<String>), tokio::task::JoinError>;

fn finish(
    path: &'static str,
    kind: Kind,
    duration: Duration,
    results: Vec<TaskResult>,
    late: u64,
    before: &Snapshot,
    after: &Snapshot,
) -> anyhow::Result<Phase> {
    let mut latencies = Vec::new();
    let (mut errors, mut first_error) = (0, None);
    for r in results {
        let (l, e) = r?;
        latencies.extend(l);
        if let Some(e) = e {
            errors += 1;
            first_error.get_or_insert(e);
        }
    }
    latencies.sort_unstable();
    let cpu: Vec<u64> = before.ticks.iter().zip(&after.ticks).map(|(b, a)| a.saturating_sub(*b)).collect();
    let ours: u64 = cpu.iter().sum();
    let foreign = after.machine.saturating_sub(before.machine).saturating_sub(ours);
    Ok(Phase {
        path,
        kind,
        requests: latencies.len() as u64,
        errors,
        first_error,
        secs: duration.as_secs_f64(),
        latencies,
        late,
        cpu,
        foreign,
    })
}

fn print_phase(p: &Phase, procs: &Procs) {
    let what = match p.kind {
        Kind::Throughput => "throughput",
        Kind::Rate => "fixed rate",
    };
    let cpu: Vec<String> =
        procs.list.iter().enumerate().map(|(i, (name, _))| format!("{name} {:.1}", p.cpu_us(procs, i))).collect();
    println!(
        "  {what:10} {:7}  {:>9.0} req/s  p50 {:.3} ms  p99 {:.3} ms  CPU µs/req: {}  (other processes: {:.0}% of a core){}{}",
        p.path,
        p.rps(),
        p.pct(0.50),
        p.pct(0.99),
        cpu.join(", "),
        p.foreign as f64 * 100.0 / procs.tck as f64 / p.secs,
        if p.kind == Kind::Rate { format!("  late starts {}", p.late) } else { String::new() },
        match &p.first_error {
            Some(e) => format!("  ERRORS {} (first: {e})", p.errors),
            None => String::new(),
        },
    );
}

/// Memory of the worker per idle connection and per idle session.
struct Memory {
    per_connection: Option<f64>,
    per_session: Option<f64>,
    per_used_session: Option<f64>,
    connections: usize,
    sessions: usize,
}

async fn memory(gateway: &Arc<Target>, pid: u32, args: &Args) -> anyhow::Result<Memory> {
    let mut m = Memory {
        per_connection: None,
        per_session: None,
        per_used_session: None,
        connections: args.idle_connections,
        sessions: args.sessions,
    };
    let pids = [pid];
    let settle = || procfs::settle(&pids, Duration::from_secs(10));
    if args.idle_connections > 0 {
        settle().await;
        let before = procfs::rss_kib(pid)?;
        let mut open = Vec::with_capacity(args.idle_connections);
        for batch in (0..args.idle_connections).collect::<Vec<_>>().chunks(100) {
            let opened =
                futures::future::try_join_all(batch.iter().map(|_| client::idle_connection(gateway.addr, "/healthz")))
                    .await?;
            open.extend(opened);
        }
        settle().await;
        let after = procfs::rss_kib(pid)?;
        m.per_connection = Some((after as f64 - before as f64) * 1024.0 / args.idle_connections as f64);
        drop(open);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if args.sessions > 0 {
        settle().await;
        let before = procfs::rss_kib(pid)?;
        let lanes = 4.min(args.sessions);
        let per_lane = args.sessions.div_ceil(lanes);
        let lanes = (0..lanes).map(|lane| {
            let target = Arc::clone(gateway);
            let n = per_lane.min(args.sessions - lane * per_lane);
            async move {
                let mut conn = Conn::connect(target).await?;
                let mut ids = Vec::with_capacity(n);
                for _ in 0..n {
                    conn.initialize().await?;
                    ids.push(conn.session.clone().context("no session")?);
                }
                anyhow::Ok((conn, ids))
            }
        });
        let lanes = futures::future::try_join_all(lanes).await?;
        settle().await;
        let opened = procfs::rss_kib(pid)?;
        m.per_session = Some((opened as f64 - before as f64) * 1024.0 / args.sessions as f64);
        // One tools/call in each: the worker then also holds an upstream session and the tool map.
        let used = lanes.into_iter().map(|(mut conn, ids)| async move {
            for id in ids {
                conn.session = Some(id);
                conn.call_echo().await?;
            }
            anyhow::Ok(())
        });
        futures::future::try_join_all(used).await?;
        settle().await;
        let after = procfs::rss_kib(pid)?;
        m.per_used_session = Some((after as f64 - before as f64) * 1024.0 / args.sessions as f64);
    }
    Ok(m)
}

fn machine_description() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "{model}, {cores} cores, Linux {}, load average at start {}",
        kernel.trim(),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    )
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = values.collect();
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn verdict(ok: bool) -> &'static str {
    if ok { "meets" } else { "MISSES" }
}

async fn run(args: Args) -> anyhow::Result<()> {
    if !args.gatehouse.exists() {
        bail!(
            "{} does not exist: build it with `cargo build --release -p gatehouse` or pass --gatehouse",
            args.gatehouse.display()
        );
    }
    let machine = machine_description();
    println!("gatehouse-bench on {machine}");
    let data = match &args.data_parent {
        Some(parent) => tempfile::tempdir_in(parent)?,
        None => tempfile::tempdir()?,
    };
    let (upstream_proc, upstream_url) = gatehouse::start_upstream(args.upstream_threads)?;
    println!("echo upstream {upstream_url} (pid {})", upstream_proc.pid());
    let gh = if args.split {
        gatehouse::start_split(&args.gatehouse, data.path(), args.gatehouse_log.as_deref(), args.verbose)?
    } else {
        gatehouse::start_serve(&args.gatehouse, data.path(), args.gatehouse_log.as_deref(), args.verbose)?
    };
    let configured = gatehouse::configure(&gh.control_url, &upstream_url).await?;
    println!(
        "gatehouse {} (pid {}{}), endpoint {}",
        if args.split { "gateway worker" } else { "serve" },
        gh.worker.pid(),
        gh.control.as_ref().map(|c| format!(", control plane pid {}", c.pid())).unwrap_or_default(),
        configured.endpoint
    );
    let direct = Arc::new(Target::parse("direct", &upstream_url, Some(configured.token.clone()))?);
    let gateway = Arc::new(Target::parse("gateway", &configured.endpoint, Some(configured.token.clone()))?);

    // The bundle reaches the worker asynchronously: wait (bounded) until the endpoint serves.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match ready_connections(&gateway, 1).await {
            Ok(_) => break,
            Err(e) if Instant::now() > deadline => return Err(e.context("the gateway never served the tenant")),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }

    let worker_label = if args.split { "gateway worker" } else { "gatehouse serve" };
    let mut list = vec![(worker_label, gh.worker.pid()), ("upstream", upstream_proc.pid())];
    if let Some(control) = &gh.control {
        list.push(("control plane", control.pid()));
    }
    list.push(("load generator", std::process::id()));
    let procs = Procs { list, tck: procfs::clock_ticks_per_second() };

    println!("\nmemory ({worker_label}, VmRSS deltas):");
    let mem = memory(&gateway, gh.worker.pid(), &args).await?;
    if let Some(b) = mem.per_connection {
        println!(
            "  per idle connection: {:.1} KiB ({} connections, one GET /healthz each)",
            b / 1024.0,
            mem.connections
        );
    }
    if let Some(b) = mem.per_session {
        println!("  per idle session (initialize only): {:.1} KiB ({} sessions)", b / 1024.0, mem.sessions);
    }
    if let Some(b) = mem.per_used_session {
        println!("  per idle session after one tools/call: {:.1} KiB", b / 1024.0);
    }

    let s = Settings {
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs_f64(args.duration),
        max: args.max_requests,
        perf: args.perf.clone().map(|dir| (dir, gh.worker.pid())),
    };
    if let Some((dir, _)) = &s.perf {
        std::fs::create_dir_all(dir)?;
    }
    let mut phases = Vec::new();
    println!(
        "\nphases ({:.0} s measured after {:.0} s warm-up each; CPU µs per request per process: {})",
        args.duration,
        args.warmup,
        procs.list.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
    );
    for round in 0..args.rounds {
        println!("round {} — throughput at {} connections", round + 1, args.connections);
        for target in [&direct, &gateway] {
            let p = throughput(target, args.connections, &s, &procs, &format!("throughput-round{}", round + 1)).await?;
            print_phase(&p, &procs);
            phases.push(p);
        }
    }
    for round in 0..args.rounds {
        println!("round {} — fixed rate {} req/s over {} connections", round + 1, args.rate, args.rate_connections);
        for target in [&direct, &gateway] {
            let label = format!("fixed-rate-round{}", round + 1);
            let p = fixed_rate(target, args.rate_connections, args.rate, &s, &procs, &label).await?;
            print_phase(&p, &procs);
            phases.push(p);
        }
    }

    // Summary: means over the rounds.
    let select = |path: &'static str, kind: Kind| phases.iter().filter(move |p| p.path == path && p.kind == kind);
    let tp_direct = mean(select("direct", Kind::Throughput).map(Phase::rps));
    let tp_gateway = mean(select("gateway", Kind::Throughput).map(Phase::rps));
    let cpu = |path: &'static str, kind: Kind, i: usize| mean(select(path, kind).map(|p| p.cpu_us(&procs, i)));
    let lat = |path: &'static str, q: f64| mean(select(path, Kind::Rate).map(|p| p.pct(q)));
    let (d50, d99, g50, g99) = (lat("direct", 0.5), lat("direct", 0.99), lat("gateway", 0.5), lat("gateway", 0.99));
    let worker_cpu_tp = cpu("gateway", Kind::Throughput, 0);
    let worker_cpu_rate = cpu("gateway", Kind::Rate, 0);
    let errors: u64 = phases.iter().map(|p| p.errors).sum();

    println!("\nsummary (means over {} rounds)", args.rounds);
    println!("  machine: {machine}");
    println!("  throughput at {} connections:", args.connections);
    println!("    direct  {tp_direct:.0} req/s");
    println!("    gateway {tp_gateway:.0} req/s");
    let ratio = tp_gateway / tp_direct;
    println!("    ratio   {:.1} % of direct   (target ≥ 40 %: {})", ratio * 100.0, verdict(ratio >= 0.40));
    println!("  CPU per tools/call, µs (throughput phases | fixed-rate phases):");
    for (i, (name, _)) in procs.list.iter().enumerate() {
        if *name == "upstream" {
            println!(
                "    upstream        direct path {:.1} | {:.1}; gateway path {:.1} | {:.1}",
                cpu("direct", Kind::Throughput, i),
                cpu("direct", Kind::Rate, i),
                cpu("gateway", Kind::Throughput, i),
                cpu("gateway", Kind::Rate, i)
            );
        } else if *name == "load generator" {
            println!(
                "    load generator  direct path {:.1} | {:.1}; gateway path {:.1} | {:.1}",
                cpu("direct", Kind::Throughput, i),
                cpu("direct", Kind::Rate, i),
                cpu("gateway", Kind::Throughput, i),
                cpu("gateway", Kind::Rate, i)
            );
        } else {
            println!("    {name:15} {:.1} | {:.1}", cpu("gateway", Kind::Throughput, i), cpu("gateway", Kind::Rate, i));
        }
    }
    println!(
        "    {worker_label}: {worker_cpu_tp:.1} | {worker_cpu_rate:.1} µs   (target ≤ 40 µs: {})",
        verdict(worker_cpu_tp.max(worker_cpu_rate) <= 40.0)
    );
    println!("  latency at {} req/s (from write to full answer):", args.rate);
    println!("    direct  p50 {d50:.3} ms  p99 {d99:.3} ms");
    println!("    gateway p50 {g50:.3} ms  p99 {g99:.3} ms");
    println!(
        "    added   p50 {:.3} ms (target ≤ 0.2: {})  p99 {:.3} ms (target ≤ 1: {})",
        g50 - d50,
        verdict(g50 - d50 <= 0.2),
        g99 - d99,
        verdict(g99 - d99 <= 1.0)
    );
    if let (Some(c), Some(s), Some(u)) = (mem.per_connection, mem.per_session, mem.per_used_session) {
        println!(
            "  memory ({worker_label}): {:.1} KiB per idle connection, {:.1} KiB per idle session, {:.1} KiB per session after one tools/call",
            c / 1024.0,
            s / 1024.0,
            u / 1024.0
        );
    }
    if errors > 0 {
        println!("  WARNING: {errors} connections failed during the phases (see ERRORS above)");
    }
    let busiest = phases.iter().map(|p| p.foreign as f64 * 100.0 / procs.tck as f64 / p.secs).fold(0.0, f64::max);
    if busiest > 10.0 {
        println!(
            "  WARNING: other processes used up to {busiest:.0}% of a core during a phase; throughput and latency are disturbed (CPU per request much less so)"
        );
    }
    drop(gh);
    drop(upstream_proc);
    Ok(())
}
