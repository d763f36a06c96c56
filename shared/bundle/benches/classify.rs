//! Micro-benchmark of the data classifier: nanoseconds per scan of a typical ~1 KiB `tools/call`
//! argument object with every built-in detector enabled. Plain `std::time`, about a second in all:
//! `cargo bench -p gatehouse-bundle --bench classify`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use gatehouse_bundle::classify::{Action, ClassificationRule, Classifier, Detector, Direction, Scope};
use serde_json::{Value, json};

/// Runs `f` repeatedly for about `budget` and returns the nanoseconds per call of the fastest of 20
/// slices: the least disturbed by other work on the machine.
fn measure(budget: Duration, mut f: impl FnMut()) -> f64 {
    for _ in 0..1_000 {
        f();
    }
    let slice = budget / 20;
    let mut best = f64::INFINITY;
    for _ in 0..20 {
        let mut iterations = 0u64;
        let start = Instant::now();
        while start.elapsed() < slice {
            for _ in 0..64 {
                f();
            }
            iterations += 64;
        }
        best = best.min(start.elapsed().as_nanos() as f64 / iterations as f64);
    }
    best
}

fn rules(action: Action) -> Vec<ClassificationRule> {
    Detector::BUILT_IN
        .iter()
        .map(|d| ClassificationRule {
            id: d.as_str().to_owned(),
            name: d.as_str().to_owned(),
            detector: *d,
            pattern: None,
            action,
            scope: Scope::Both,
            servers: vec![],
        })
        .collect()
}

/// A GitHub `create_issue` call, the kind of arguments an assistant sends: prose, ids, dates,
/// versions, a URL, small numbers; no sensitive data.
fn clean_arguments() -> Value {
    json!({
        "owner": "acme",
        "repo": "payments-service",
        "title": "Checkout fails for some customers after the 2.4.1 release",
        "body": "Since the deploy on 2024-05-14 around 3% of checkout requests fail with HTTP 502 from the \
                 payment provider. Steps to reproduce: add two items to the cart, apply the SPRING24 coupon, \
                 pay with a saved card. The logs show request ids like 7f3c2a9e-1b4d-4e8f-9a6b-2c5d8e1f3a7b \
                 and a timeout after 30000 ms (p99 was 812 ms before). Rolling back to 2.4.0 fixes it. See \
                 https://grafana.internal.example/d/checkout?from=now-24h&to=now and runbook section 4.2 \
                 for the retry policy; build 1.0.0+20240514093112, commit 3f9a1c2e8b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39.",
        "labels": ["bug", "checkout", "p1", "regression"],
        "assignees": ["jdoe", "msmith"],
        "milestone": 42,
        "metadata": {
            "source": "support",
            "ticket": "SUP-18231",
            "priority": "high",
            "customer_tier": "enterprise",
            "created_at": "2024-05-14T09:31:12+02:00",
            "affected_versions": ["2.4.1", "2.4.1-hotfix.1"],
            "environment": {"region": "eu-west-1", "cluster": "prod-3", "replicas": 12}
        }
    })
}

fn main() {
    let budget = Duration::from_millis(300);
    let args = clean_arguments();
    let size = serde_json::to_vec(&args).expect("serialises").len();

    let log = Classifier::new(&rules(Action::Log)).expect("built-in rules are valid");
    assert!(log.scan("github", Direction::Params, &args).is_empty(), "the clean arguments must not match");
    let ns = measure(budget, || {
        black_box(log.scan(black_box("github"), Direction::Params, black_box(&args)));
    });
    println!("scan, {size} B arguments, 7 built-in detectors, no findings: {ns:.0} ns/scan");

    for rule in rules(Action::Log) {
        let one = Classifier::new(std::slice::from_ref(&rule)).expect("built-in rules are valid");
        let ns = measure(Duration::from_millis(100), || {
            black_box(one.scan(black_box("github"), Direction::Params, black_box(&args)));
        });
        println!("  {} alone: {ns:.0} ns/scan", rule.id);
    }

    // The same object with a card number, an e-mail and a GitHub token in the body, redacted.
    let mut dirty = args.clone();
    dirty["body"] = json!(format!(
        "{} Customer alice@example.com paid with 4111 1111 1111 1111; token ghp_16C7e42F292c6912E7710c838347Ae178B4a.",
        args["body"].as_str().unwrap_or_default()
    ));
    let redact = Classifier::new(&rules(Action::Redact)).expect("built-in rules are valid");
    let clone_ns = measure(budget, || {
        black_box(black_box(&dirty).clone());
    });
    let apply_ns = measure(budget, || {
        let mut v = dirty.clone();
        black_box(redact.apply(black_box("github"), Direction::Params, &mut v));
    });
    println!(
        "apply, {} B arguments with 3 secrets, all redacted: {:.0} ns/call (excluding {clone_ns:.0} ns to clone the value)",
        size + 110,
        apply_ns - clone_ns
    );

    let empty = Classifier::new(&[]).expect("no rules is valid");
    let skip_ns = measure(Duration::from_millis(100), || {
        black_box(empty.is_empty_for(black_box("github")));
    });
    println!("is_empty_for with no rules: {skip_ns:.1} ns");
}
