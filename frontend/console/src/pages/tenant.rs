//! `/t/{tenant}`: the frame of a tenant's pages (name, active bundle, section tabs) and its
//! overview.

use leptos::prelude::*;
use leptos::server_fn::ServerFn;
use leptos_meta::Title;
use leptos_router::components::{A, Outlet};
use leptos_router::hooks::use_params_map;

use crate::ConsoleError;
use crate::api::tenant_overview;
use crate::components::{ErrorNote, fmt_time};
use crate::pages::gateways::GatewaysCard;
use crate::pages::kill_switch::KillSwitchCard;
use crate::pages::sessions::SessionsCard;

/// What the pages of one tenant share.
#[derive(Clone, Copy)]
pub struct TenantCtx {
    /// The tenant's slug, from the URL.
    pub slug: Memo<String>,
    /// Bumped after every successful change, so the bundle revision in the frame reloads.
    pub changed: RwSignal<u64>,
}

/// The tenant context of the current page (made from the URL if a page is used outside the frame).
pub fn use_tenant() -> TenantCtx {
    use_context::<TenantCtx>().unwrap_or_else(|| {
        let params = use_params_map();
        TenantCtx {
            slug: Memo::new(move |_| params.read().get("tenant").unwrap_or_default()),
            changed: RwSignal::new(0),
        }
    })
}

/// Tells the frame that `action` changed the tenant's state whenever it succeeds.
pub fn notify_change<S>(action: ServerAction<S>)
where
    S: ServerFn<Error = ConsoleError> + Clone + Send + Sync + 'static,
    S::Output: Clone + Send + Sync + 'static,
{
    let changed = use_tenant().changed;
    Effect::new(move |_| {
        if matches!(action.value().get(), Some(Ok(_))) {
            changed.update(|n| *n += 1);
        }
    });
}

/// The frame: tenant name, active bundle revision, tabs, and the section below.
#[component]
pub fn TenantLayout() -> impl IntoView {
    let params = use_params_map();
    let slug = Memo::new(move |_| params.read().get("tenant").unwrap_or_default());
    let changed = RwSignal::new(0u64);
    provide_context(TenantCtx { slug, changed });
    let overview = Resource::new(move || (slug.get(), changed.get()), |(t, _)| tenant_overview(t));

    let head = move || {
        Suspend::new(async move {
            match overview.await {
                Ok((t, bundle)) => {
                    let bundle = match bundle {
                        Some(b) => view! {
                            <p class="bundle" data-testid="bundle">
                                "Active policy bundle: revision "
                                <code title=b.revision.clone() data-testid="bundle-revision">
                                    {b.revision.chars().take(12).collect::<String>()}
                                </code>
                                {format!(" · sequence {} · compiled {}", b.sequence, fmt_time(b.created_at_ms))}
                            </p>
                        }
                        .into_any(),
                        None => view! { <p class="bundle muted">"No policy bundle compiled yet."</p> }.into_any(),
                    };
                    view! {
                        <Title text=t.name.clone() />
                        <h1 data-testid="tenant-title">
                            {t.name} " " <code class="slug">{t.slug}</code>
                        </h1>
                        {bundle}
                    }
                    .into_any()
                }
                Err(e) => view! {
                    <h1>"Tenant " <code>{slug.get_untracked()}</code></h1>
                    <ErrorNote error=e />
                }
                .into_any(),
            }
        })
    };

    let tab = move |section: &'static str, label: &'static str| {
        view! {
            <li>
                <A href=move || format!("/t/{}/{section}", slug.get()) attr:data-testid=format!("tab-{section}")>
                    {label}
                </A>
            </li>
        }
    };

    view! {
        <div class="tenant">
            <Transition fallback=|| view! { <h1>"…"</h1> }>{head}</Transition>
            <nav aria-label="Tenant sections">
                <ul class="tabs">
                    <li>
                        <A href=move || format!("/t/{}", slug.get()) exact=true attr:data-testid="tab-overview">
                            "Overview"
                        </A>
                    </li>
                    {tab("servers", "Servers")}
                    {tab("roles", "Roles")}
                    {tab("users", "Users")}
                    {tab("groups", "Groups")}
                    {tab("virtual-servers", "Virtual servers")}
                    {tab("tokens", "API tokens")}
                    {tab("data", "Data rules")}
                    {tab("limits", "Rate limits")}
                    {tab("audit", "Audit")}
                    {tab("publish", "Publish")}
                </ul>
            </nav>
            <Outlet />
        </div>
    }
}

/// `/t/{tenant}`: what to set up, in order.
#[component]
pub fn TenantOverview() -> impl IntoView {
    let TenantCtx { slug, .. } = use_tenant();
    let link = move |section: &'static str| move || format!("/t/{}/{section}", slug.get());
    view! {
        <section class="card" aria-labelledby="setup-h">
            <h2 id="setup-h">"Setting up a tenant"</h2>
            <ol class="steps">
                <li>
                    <A href=link("servers")>"Register the upstream MCP servers"</A>
                    " by URL; Gatehouse fetches their tools."
                </li>
                <li>
                    <A href=link("roles")>"Create access roles"</A>
                    " and choose which tools each may call."
                </li>
                <li>
                    <A href=link("users")>"Add users"</A>
                    " and bind them to roles."
                </li>
                <li>
                    <A href=link("virtual-servers")>"Create a virtual server"</A>
                    ": the one endpoint an MCP client connects to."
                </li>
                <li>
                    <A href=link("tokens")>"Issue API tokens"</A>
                    " for the users' MCP clients."
                </li>
                <li>
                    "Watch every call in the " <A href=link("audit")>"audit log"</A> "."
                </li>
            </ol>
        </section>
        <KillSwitchCard />
        <SessionsCard />
        <GatewaysCard />
    }
}
