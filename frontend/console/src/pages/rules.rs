//! The rules of one access role, inside its card on the roles page: the list (in words, with the
//! id every decision names) and a form for a new rule. Plain forms: they work before the
//! WebAssembly loads.

use gatehouse_core::rules::RuleView;
use gatehouse_core::views::ServerView;
use leptos::html::Form;
use leptos::prelude::*;

use crate::api::{AddRule, DeleteRule};
use crate::components::{ActionStatus, reset_on_success};
use crate::pages::tenant::notify_change;
use crate::rule_form::describe;

/// The annotation choices of the form: (value posted, label).
const ANNOTATIONS: [(&str, &str); 5] = [
    ("", "any tool"),
    ("readOnlyHint=true", "read-only tools (readOnlyHint)"),
    ("readOnlyHint=false", "tools that are not read-only"),
    ("destructiveHint=true", "destructive tools (destructiveHint)"),
    ("openWorldHint=true", "open-world tools (openWorldHint)"),
];

/// A role's rules and the form to add one.
#[component]
pub fn RoleRules(tenant: String, role: String, rules: Vec<RuleView>, servers: Vec<ServerView>) -> impl IntoView {
    let add = ServerAction::<AddRule>::new();
    let delete = ServerAction::<DeleteRule>::new();
    notify_change(add);
    notify_change(delete);
    let form = NodeRef::<Form>::new();
    reset_on_success(add, form);

    // The rules shown: what the server last confirmed, kept in step with this card's actions.
    let shown = RwSignal::new(rules);
    Effect::new(move |_| {
        if let Some(Ok(r)) = add.value().get() {
            shown.update(|rules| {
                if !rules.iter().any(|x| x.id == r.id) {
                    rules.push(r);
                }
            });
        }
    });
    Effect::new(move |_| {
        if let Some(Ok(id)) = delete.value().get() {
            shown.update(|rules| rules.retain(|r| r.id != id));
        }
    });
    let list = {
        let (tenant, role) = (tenant.clone(), role.clone());
        move || {
            let rules = shown.get();
            if rules.is_empty() {
                return view! { <p class="muted">"No rules. Plain grants above cover whole tools; rules add globs, annotations, denies and parameter limits."</p> }
                    .into_any();
            }
            let items = rules
                .into_iter()
                .map(|r| {
                    let label = format!("Delete rule {}", r.id);
                    let text = describe(&r);
                    let testid = format!("rule-{role}-{}", r.tools);
                    let tenant = tenant.clone();
                    view! {
                        <li data-testid=testid>
                            <span class=format!("badge {}", r.effect.as_str())>{r.effect.as_str()}</span>
                            " " {text}
                            {(!r.description.is_empty()).then(|| view! { <span class="muted">{format!(" — {}", r.description)}</span> })}
                            " " <code class="slug" title="rule id, named by every decision it makes">{r.id.clone()}</code>
                            <ActionForm action=delete>
                                <input type="hidden" name="tenant" value=tenant />
                                <input type="hidden" name="id" value=r.id.clone() />
                                <button type="submit" class="link" aria-label=label>"delete"</button>
                            </ActionForm>
                        </li>
                    }
                })
                .collect_view();
            view! { <ul class="rules" data-testid=format!("rules-{role}")>{items}</ul> }.into_any()
        }
    };

    // Parameter names from the tools' input schemas, offered while typing.
    let mut params: Vec<String> = servers
        .iter()
        .flat_map(|s| &s.tools)
        .filter_map(|t| {
            t.input_schema.as_ref()?.get("properties")?.as_object().map(|p| p.keys().cloned().collect::<Vec<_>>())
        })
        .flatten()
        .collect();
    params.sort();
    params.dedup();
    let mut tools: Vec<String> = servers.iter().flat_map(|s| s.tools.iter().map(|t| t.name.clone())).collect();
    tools.sort();
    tools.dedup();
    let (tools_list, params_list) = (format!("rule-tools-{role}"), format!("rule-params-{role}"));
    let id = {
        let role = role.clone();
        move |f: &str| format!("rule-{role}-{f}")
    };
    let server_options =
        servers.iter().map(|s| view! { <option value=s.slug.clone()>{s.slug.clone()}</option> }).collect_view();

    let testid = |what: &str| format!("{what}-{role}");
    let (delete_error, open, submit, add_error) =
        (testid("delete-rule-error"), testid("add-rule-open"), testid("add-rule"), testid("add-rule-error"));
    view! {
        <h4>"Rules"</h4>
        {list}
        <ActionStatus action=delete ok=|_| "Rule deleted." testid=delete_error />
        <details class="add-rule">
            <summary data-testid=open>"Add a rule"</summary>
            <ActionForm action=add node_ref=form>
                <input type="hidden" name="tenant" value=tenant.clone() />
                <input type="hidden" name="role" value=role.clone() />
                <div class="row">
                    <div class="field">
                        <label for=id("effect")>"Effect"</label>
                        <select id=id("effect") name="effect" data-testid=id("effect")>
                            <option value="allow">"allow"</option>
                            <option value="deny">"deny (wins over every allow)"</option>
                        </select>
                    </div>
                    <div class="field">
                        <label for=id("server")>"Server"</label>
                        <select id=id("server") name="server" data-testid=id("server")>{server_options}</select>
                    </div>
                    <div class="field">
                        <label for=id("tools")>"Tools (name or glob)"</label>
                        <input id=id("tools") name="tools" required placeholder="read_*" list=tools_list.clone() data-testid=id("tools") />
                        <datalist id=tools_list>{tools.into_iter().map(|t| view! { <option value=t /> }).collect_view()}</datalist>
                    </div>
                    <div class="field">
                        <label for=id("annotation")>"Only"</label>
                        <select id=id("annotation") name="annotation" data-testid=id("annotation")>
                            {ANNOTATIONS.iter().map(|(v, l)| view! { <option value=*v>{*l}</option> }).collect_view()}
                        </select>
                    </div>
                </div>
                <fieldset>
                    <legend>"Parameter constraint (allow rules; leave the parameter empty for none)"</legend>
                    <div class="row">
                        <div class="field">
                            <label for=id("param")>"Parameter"</label>
                            <input id=id("param") name="param" list=params_list.clone() data-testid=id("param") />
                            <datalist id=params_list>{params.into_iter().map(|p| view! { <option value=p /> }).collect_view()}</datalist>
                        </div>
                        <div class="field">
                            <label for=id("pattern")>"Pattern (whole value)"</label>
                            <input id=id("pattern") name="pattern" placeholder="[a-z0-9-]+" data-testid=id("pattern") />
                        </div>
                        <div class="field">
                            <label for=id("max-length")>"Max length"</label>
                            <input id=id("max-length") name="max_length" inputmode="numeric" data-testid=id("max-length") />
                        </div>
                        <div class="field">
                            <label for=id("one-of")>"One of (comma-separated)"</label>
                            <input id=id("one-of") name="one_of" data-testid=id("one-of") />
                        </div>
                    </div>
                    <div class="row">
                        <div class="field">
                            <label for=id("min")>"Min"</label>
                            <input id=id("min") name="min" inputmode="decimal" />
                        </div>
                        <div class="field">
                            <label for=id("max")>"Max"</label>
                            <input id=id("max") name="max" inputmode="decimal" />
                        </div>
                        <div class="field">
                            <label for=id("paths")>"Inside directories"</label>
                            <input id=id("paths") name="path_prefixes" placeholder="/srv/data, /tmp" data-testid=id("paths") />
                        </div>
                        <div class="field">
                            <label for=id("hosts")>"URL hosts"</label>
                            <input id=id("hosts") name="url_hosts" placeholder="api.example.com, *.corp.io" />
                        </div>
                    </div>
                    <label><input type="checkbox" name="optional" /> " A call may leave the parameter out"</label>
                </fieldset>
                <div class="field grow">
                    <label for=id("condition")>"Only when (CEL condition, optional)"</label>
                    <textarea
                        id=id("condition")
                        name="condition"
                        rows="2"
                        placeholder="inCidr(client.ip, '10.0.0.0/8') && request.time.getHours('Europe/Berlin') < 18"
                        data-testid=id("condition")
                    ></textarea>
                    <p class="muted">
                        "Variables: user.id, user.email, user.groups, user.attributes, client.ip, client.app, "
                        "request.time, tool.name, tool.server; inCidr(ip, cidr) checks a network."
                    </p>
                </div>
                <div class="field grow">
                    <label for=id("description")>"Why (shown with every refusal)"</label>
                    <input id=id("description") name="description" data-testid=id("description") />
                </div>
                <button type="submit" data-testid=submit disabled=move || add.pending().get()>"Add rule"</button>
            </ActionForm>
            <ActionStatus
                action=add
                ok=|r: RuleView| format!("Added rule {}.", r.id)
                testid=add_error
            />
        </details>
    }
}
