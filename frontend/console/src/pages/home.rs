//! `/`: the tenants the user can see, and (for platform administrators) a form to create one.

use gatehouse_core::views::TenantView;
use leptos::html::Form;
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::components::A;

use crate::api::{CreateTenant, list_tenants};
use crate::app::SessionCtx;
use crate::components::{ActionStatus, ErrorNote, fmt_time, reset_on_success};

/// The console home.
#[component]
pub fn HomePage() -> impl IntoView {
    let SessionCtx { me, .. } = expect_context::<SessionCtx>();
    let create = ServerAction::<CreateTenant>::new();
    let tenants = Resource::new(move || create.version().get(), |_| list_tenants());
    let form = NodeRef::<Form>::new();
    reset_on_success(create, form);

    let list = move || {
        Suspend::new(async move {
            match tenants.await {
                Ok(list) if list.is_empty() => view! { <p class="muted">"No tenants yet."</p> }.into_any(),
                Ok(list) => view! {
                    <ul class="list" data-testid="tenant-list">
                        {list.into_iter().map(tenant_item).collect_view()}
                    </ul>
                }
                .into_any(),
                Err(e) => view! { <ErrorNote error=e /> }.into_any(),
            }
        })
    };

    // Only platform administrators may create tenants; others do not see the form.
    let create_form = move || {
        Suspend::new(async move {
            let is_platform_admin = matches!(me.await, Ok(Some(m)) if m.console_role == "platform_admin");
            is_platform_admin.then(|| {
                view! {
                    <section class="card" aria-labelledby="new-tenant-h">
                        <h2 id="new-tenant-h">"Create a tenant"</h2>
                        <ActionForm action=create node_ref=form>
                            <div class="row">
                                <div class="field">
                                    <label for="tenant-slug">"Slug"</label>
                                    <input
                                        id="tenant-slug"
                                        name="slug"
                                        required
                                        placeholder="acme"
                                        aria-describedby="tenant-slug-hint"
                                        data-testid="tenant-slug"
                                    />
                                    <small id="tenant-slug-hint" class="muted">
                                        "a-z, 0-9 and -; used in URLs"
                                    </small>
                                </div>
                                <div class="field">
                                    <label for="tenant-name">"Name"</label>
                                    <input
                                        id="tenant-name"
                                        name="name"
                                        required
                                        placeholder="Acme Corp"
                                        data-testid="tenant-name"
                                    />
                                </div>
                            </div>
                            <button
                                type="submit"
                                data-testid="create-tenant"
                                disabled=move || create.pending().get()
                            >
                                "Create tenant"
                            </button>
                        </ActionForm>
                        <ActionStatus
                            action=create
                            ok=|t: TenantView| format!("Created tenant {}.", t.slug)
                            testid="create-tenant-error"
                        />
                    </section>
                }
            })
        })
    };

    view! {
        <Title text="Tenants" />
        <h1>"Tenants"</h1>
        <section aria-label="Tenants">
            <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>{list}</Transition>
        </section>
        <Transition fallback=|| ()>{create_form}</Transition>
    }
}

fn tenant_item(t: TenantView) -> impl IntoView {
    let href = format!("/t/{}", t.slug);
    let testid = format!("tenant-{}", t.slug);
    view! {
        <li data-testid=testid>
            <A href=href>{t.name}</A>
            " "
            <code>{t.slug}</code>
            <span class="muted">{format!(" · created {}", fmt_time(t.created_at_ms))}</span>
        </li>
    }
}
