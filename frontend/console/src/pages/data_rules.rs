//! `/t/{tenant}/data`: data-classification rules: what the gateways look for in arguments and
//! results (card numbers, keys, e-mail addresses, ... or a tenant pattern), and whether they block,
//! redact or only log it, on which servers.

use gatehouse_core::classification::{Action, ClassificationRuleView, Detector, Scope};
use leptos::html::Form;
use leptos::prelude::*;
use leptos_meta::Title;

use crate::api::{AddClassificationRule, DeleteClassificationRule, list_classification_rules};
use crate::components::{ActionStatus, ErrorNote, reset_on_success};
use crate::pages::tenant::{TenantCtx, notify_change, use_tenant};

fn detector_label(d: Detector) -> &'static str {
    match d {
        Detector::CardNumber => "payment card numbers (Luhn-checked)",
        Detector::UsSsn => "US social security numbers",
        Detector::Email => "e-mail addresses",
        Detector::Phone => "phone numbers",
        Detector::Iban => "IBANs (checksum-checked)",
        Detector::ApiKey => "API keys and tokens (AWS, GitHub, Slack, Stripe, Google, JWT, ...)",
        Detector::PrivateKey => "private keys (PEM, OpenSSH)",
        Detector::Pattern => "a pattern of yours (regular expression)",
    }
}

fn scope_label(s: Scope) -> &'static str {
    match s {
        Scope::Params => "arguments",
        Scope::Responses => "results",
        Scope::Both => "arguments and results",
    }
}

fn describe(r: &ClassificationRuleView) -> String {
    let what = match (&r.detector, &r.pattern) {
        (Detector::Pattern, Some(p)) => format!("the pattern {p}"),
        (d, _) => detector_label(*d).to_owned(),
    };
    let verb = match r.action {
        Action::Block => "Block",
        Action::Redact => "Redact",
        Action::Log => "Log",
    };
    let mut targets: Vec<String> = r.servers.clone();
    targets.extend(r.labels.iter().map(|l| format!("servers labelled {l}")));
    let on = if targets.is_empty() { "every server".to_owned() } else { targets.join(", ") };
    format!("{verb} {what} in {} on {on}", scope_label(r.scope))
}

/// The data rules page.
#[component]
pub fn DataRulesPage() -> impl IntoView {
    let TenantCtx { slug, .. } = use_tenant();
    let add = ServerAction::<AddClassificationRule>::new();
    let delete = ServerAction::<DeleteClassificationRule>::new();
    notify_change(add);
    notify_change(delete);
    let rules = Resource::new(
        move || (slug.get(), add.version().get(), delete.version().get()),
        |(t, _, _)| list_classification_rules(t),
    );
    let form = NodeRef::<Form>::new();
    reset_on_success(add, form);

    let list = move || {
        Suspend::new(async move {
            match rules.await {
                Ok(list) if list.is_empty() => {
                    view! { <p class="muted">"No data rules: nothing is scanned."</p> }.into_any()
                }
                Ok(list) => {
                    let items = list
                        .into_iter()
                        .map(|r| {
                            let label = format!("Delete data rule {}", r.name);
                            let text = describe(&r);
                            let action = r.action.wire();
                            view! {
                                <li data-testid=format!("data-rule-{}", r.name)>
                                    <strong>{r.name.clone()}</strong>
                                    " " <span class=format!("badge {action}")>{action.clone()}</span>
                                    " " {text}
                                    " " <code class="slug" title="rule id, named by every finding">{r.id.clone()}</code>
                                    <ActionForm action=delete>
                                        <input type="hidden" name="tenant" value=move || slug.get() />
                                        <input type="hidden" name="id" value=r.id.clone() />
                                        <button type="submit" class="link" aria-label=label>"delete"</button>
                                    </ActionForm>
                                </li>
                            }
                        })
                        .collect_view();
                    view! { <ul class="rules" data-testid="data-rules">{items}</ul> }.into_any()
                }
                Err(e) => view! { <ErrorNote error=e /> }.into_any(),
            }
        })
    };

    let option = |value: String, label: &'static str| view! { <option value=value>{label}</option> };
    view! {
        <Title text="Data rules" />
        <section aria-labelledby="data-h">
            <h2 id="data-h">"Data rules"</h2>
            <p class="muted">
                "The gateways scan arguments (of tools and prompts, and resource URIs) and results (tool results, "
                "prompt messages, resource text; binary data is not scanned) with these rules: block stops the request (or the result), "
                "redact replaces what matched, log only records it. The audit log says which rule found what kind of data "
                "where, never the data itself."
            </p>
            <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>{list}</Transition>
            <ActionStatus action=delete ok=|_| "Data rule deleted." testid="delete-data-rule-error" />
        </section>
        <section class="card" aria-labelledby="new-data-h">
            <h2 id="new-data-h">"Add a data rule"</h2>
            <ActionForm action=add node_ref=form>
                <input type="hidden" name="tenant" value=move || slug.get() />
                <div class="row">
                    <div class="field">
                        <label for="data-name">"Name"</label>
                        <input id="data-name" name="name" required placeholder="no card numbers" data-testid="data-name" />
                    </div>
                    <div class="field">
                        <label for="data-detector">"Look for"</label>
                        <select id="data-detector" name="detector" data-testid="data-detector">
                            {Detector::BUILT_IN
                                .into_iter()
                                .chain([Detector::Pattern])
                                .map(|d| option(d.wire(), detector_label(d)))
                                .collect_view()}
                        </select>
                    </div>
                    <div class="field">
                        <label for="data-pattern">"Pattern (for a pattern of yours)"</label>
                        <input id="data-pattern" name="pattern" placeholder="ACME-[0-9]{6}" data-testid="data-pattern" />
                    </div>
                </div>
                <div class="row">
                    <div class="field">
                        <label for="data-action">"Then"</label>
                        <select id="data-action" name="action" data-testid="data-action">
                            {option(Action::Block.wire(), "block")}
                            {option(Action::Redact.wire(), "redact")}
                            {option(Action::Log.wire(), "log only")}
                        </select>
                    </div>
                    <div class="field">
                        <label for="data-scope">"In"</label>
                        <select id="data-scope" name="scope" data-testid="data-scope">
                            {[Scope::Both, Scope::Params, Scope::Responses].into_iter().map(|s| option(s.wire(), scope_label(s))).collect_view()}
                        </select>
                    </div>
                    <div class="field">
                        <label for="data-servers">"Servers (slugs, comma-separated)"</label>
                        <input id="data-servers" name="servers" placeholder="crm, billing" data-testid="data-servers" />
                    </div>
                    <div class="field">
                        <label for="data-labels">"Or servers labelled"</label>
                        <input id="data-labels" name="labels" placeholder="PCI, PII" data-testid="data-labels" />
                    </div>
                </div>
                <p class="muted">"With neither servers nor labels, the rule applies to every server."</p>
                <button type="submit" data-testid="add-data-rule" disabled=move || add.pending().get()>"Add data rule"</button>
            </ActionForm>
            <ActionStatus
                action=add
                ok=|r: ClassificationRuleView| format!("Added data rule {}.", r.name)
                testid="add-data-rule-error"
            />
        </section>
    }
}
