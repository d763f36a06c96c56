//! Small pieces the pages share: error notes, action status, time formatting.

use leptos::html::Form;
use leptos::prelude::*;
use leptos::server_fn::ServerFn;

use crate::ConsoleError;

/// An error shown inline, as an alert; offers to sign in again when the session is gone.
#[component]
pub fn ErrorNote(error: ConsoleError, #[prop(optional, into)] testid: Option<String>) -> impl IntoView {
    let sign_in = error.is_unauthenticated().then(|| {
        view! {
            " "
            <a href="/login" rel="external">
                "Sign in"
            </a>
        }
    });
    view! {
        <p class="error" role="alert" data-testid=testid.unwrap_or_else(|| "error".into())>
            {error.message}
            {sign_in}
        </p>
    }
}

/// The outcome of a server action: its error next to the form that caused it, or a short success
/// note made from the action's result.
#[component]
pub fn ActionStatus<S, F, IV>(
    action: ServerAction<S>,
    /// What to say on success.
    ok: F,
    /// `data-testid` of the error (default `error`).
    #[prop(optional, into)]
    testid: Option<String>,
) -> impl IntoView
where
    S: ServerFn<Error = ConsoleError> + Clone + Send + Sync + 'static,
    S::Output: Clone + Send + Sync + 'static,
    F: Fn(S::Output) -> IV + Send + Sync + Clone + 'static,
    IV: IntoView + 'static,
{
    let testid = testid.unwrap_or_else(|| "error".into());
    view! {
        <div class="status" aria-live="polite">
            {move || {
                if action.pending().get() {
                    return view! { <p class="muted">"Working…"</p> }.into_any();
                }
                match action.value().get() {
                    Some(Ok(v)) => view! { <p class="ok">{ok.clone()(v)}</p> }.into_any(),
                    Some(Err(e)) => view! { <ErrorNote error=e testid=testid.clone() /> }.into_any(),
                    None => ().into_any(),
                }
            }}
        </div>
    }
}

/// Clears `form` after each successful run of `action`, so the next entry starts empty.
pub fn reset_on_success<S>(action: ServerAction<S>, form: NodeRef<Form>)
where
    S: ServerFn<Error = ConsoleError> + Clone + Send + Sync + 'static,
    S::Output: Clone + Send + Sync + 'static,
{
    Effect::new(move |_| {
        if matches!(action.value().get(), Some(Ok(_)))
            && let Some(form) = form.get()
        {
            form.reset();
        }
    });
}

/// A Unix time in milliseconds as `YYYY-MM-DD HH:MM:SS UTC` (the same text on the server and in
/// the browser, so hydration never sees two versions).
pub fn fmt_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// An optional time, or a dash.
pub fn fmt_opt_time(ms: Option<i64>) -> String {
    ms.map(fmt_time).unwrap_or_else(|| "—".into())
}

/// A latency in microseconds, readable.
pub fn fmt_latency(us: i64) -> String {
    if us >= 10_000 { format!("{} ms", us / 1000) } else { format!("{:.1} ms", us as f64 / 1000.0) }
}

/// An optional text, or a dash.
pub fn or_dash(s: Option<String>) -> String {
    s.filter(|s| !s.is_empty()).unwrap_or_else(|| "—".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times_in_utc() {
        assert_eq!(fmt_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(fmt_time(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(fmt_time(1_767_225_599_000), "2025-12-31 23:59:59 UTC");
    }

    #[test]
    fn formats_latency() {
        assert_eq!(fmt_latency(1500), "1.5 ms");
        assert_eq!(fmt_latency(25_000), "25 ms");
    }
}
