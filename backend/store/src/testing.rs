//! Fresh databases for tests (feature `testing`): a SQLite file in a temporary folder, or a new
//! database in the PostgreSQL cluster named by `GATEHOUSE_TEST_DATABASE_URL` (which `scripts/test.sh`
//! starts). Without that variable PostgreSQL tests print a "skipped" line, unless `CI` is set: then they
//! fail, because a CI run that silently skips PostgreSQL proves nothing.

use std::io::Write;

use sqlx::Connection;
use sqlx::postgres::PgConnection;

use crate::Store;

/// The variable naming the test cluster's admin URL.
pub const PG_URL_VAR: &str = "GATEHOUSE_TEST_DATABASE_URL";

/// One test's database; `finish` closes the pool and removes the database.
pub struct TestDb {
    /// The store over the fresh database.
    pub store: Store,
    /// Keeps the SQLite file's folder alive until the test ends.
    _dir: Option<tempfile::TempDir>,
    /// For PostgreSQL: the admin URL and the name of the database to drop.
    pg: Option<(String, String)>,
}

impl TestDb {
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temporary folder");
        let url = format!("sqlite://{}/t.db?mode=rwc", dir.path().display());
        let store = Store::connect(&url).await.unwrap_or_else(|e| panic!("connect to {url}: {e}"));
        assert_eq!(store.kind(), "sqlite");
        TestDb { store, _dir: Some(dir), pg: None }
    }

    /// A fresh database in the test cluster, or `None` (after saying so) when there is no cluster
    /// and this is not CI.
    pub async fn postgres(test: &str) -> Option<TestDb> {
        let admin_url = match std::env::var(PG_URL_VAR) {
            Ok(url) if !url.trim().is_empty() => url,
            _ => {
                if std::env::var_os("CI").is_some() {
                    panic!(
                        "{test}: {PG_URL_VAR} is not set but CI is: the PostgreSQL contract tests must run in CI \
                         (scripts/test.sh starts a throwaway cluster and sets it)"
                    );
                }
                // Straight to stderr, past the test harness's output capture, so it shows.
                let _ = writeln!(
                    std::io::stderr(),
                    "{test}: skipped: set {PG_URL_VAR} (e.g. postgres://postgres@127.0.0.1:5432/postgres) to run it"
                );
                return None;
            }
        };
        let name = format!("gh_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin =
            PgConnection::connect(&admin_url).await.unwrap_or_else(|e| panic!("{test}: connect to {PG_URL_VAR}: {e}"));
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("{test}: create database {name}: {e}"));
        let _ = admin.close().await;
        let url = with_database(&admin_url, &name);
        let store = Store::connect(&url).await.unwrap_or_else(|e| panic!("{test}: connect to {name}: {e}"));
        assert_eq!(store.kind(), "postgres");
        Some(TestDb { store, _dir: None, pg: Some((admin_url, name)) })
    }

    /// The PostgreSQL URL of this test's database (for a second pool, as another replica would open).
    pub fn postgres_url(&self) -> Option<String> {
        self.pg.as_ref().map(|(admin, name)| with_database(admin, name))
    }

    /// Runs one contract case on a task of its own, so that the database is removed even when the
    /// case panics; the panic is then passed on.
    pub async fn run<F, Fut>(self, case: F)
    where
        F: FnOnce(Store) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let outcome = tokio::spawn(case(self.store.clone())).await;
        self.finish().await;
        if let Err(e) = outcome {
            match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(e) => panic!("the contract case did not finish: {e}"),
            }
        }
    }

    /// Closes the pool and drops the PostgreSQL database (best effort).
    pub async fn finish(self) {
        match &self.store {
            Store::Sqlite(p) => p.close().await,
            Store::Postgres(p) => p.close().await,
        }
        if let Some((admin_url, name)) = &self.pg {
            match PgConnection::connect(admin_url).await {
                Ok(mut admin) => {
                    if let Err(e) = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .execute(&mut admin)
                        .await
                    {
                        eprintln!("warning: could not drop test database {name}: {e}");
                    }
                    let _ = admin.close().await;
                }
                Err(e) => eprintln!("warning: could not drop test database {name}: {e}"),
            }
        }
    }
}

/// `url` with its database (path) replaced by `db`, query string kept.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.find('?') {
        Some(q) => url.split_at(q),
        None => (url, ""),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[authority_start..].find('/').map_or(base.len(), |i| authority_start + i);
    format!("{}/{db}{query}", &base[..authority_end])
}
