//! Console sessions for `tower-sessions`, kept in the same database as everything else so that any
//! control-plane replica can serve any signed-in browser.

use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};

use crate::{Store, on_pool};

fn backend(e: impl std::fmt::Display) -> session_store::Error {
    session_store::Error::Backend(e.to_string())
}

impl Store {
    async fn upsert_session(&self, record: &Record, insert_only: bool) -> session_store::Result<bool> {
        let data = rmp_serde::to_vec(record).map_err(|e| session_store::Error::Encode(e.to_string()))?;
        let expiry_ms = (record.expiry_date.unix_timestamp_nanos() / 1_000_000) as i64;
        let sql = if insert_only {
            "INSERT INTO console_sessions (id, data, expiry_ms) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING"
        } else {
            "INSERT INTO console_sessions (id, data, expiry_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET data = excluded.data, expiry_ms = excluded.expiry_ms"
        };
        let id = record.id.to_string();
        let n = on_pool!(self, |p| sqlx::query(sql)
            .bind(&id)
            .bind(&data)
            .bind(expiry_ms)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))
        .map_err(backend)?;
        Ok(n == 1)
    }

    /// Deletes expired console sessions; returns how many.
    pub async fn delete_expired_sessions(&self, now_ms: i64) -> crate::Result<u64> {
        Ok(on_pool!(self, |p| sqlx::query("DELETE FROM console_sessions WHERE expiry_ms < $1")
            .bind(now_ms)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?)
    }
}

#[async_trait::async_trait]
impl SessionStore for Store {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        // Ids are random 128-bit values; on the rare collision pick another.
        for _ in 0..8 {
            if self.upsert_session(record, true).await? {
                return Ok(());
            }
            record.id = Id::default();
        }
        Err(backend("could not allocate a unique session id"))
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        self.upsert_session(record, false).await.map(|_| ())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let now_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        let id = id.to_string();
        let data: Option<Vec<u8>> = on_pool!(self, |p| sqlx::query_scalar(
            "SELECT data FROM console_sessions WHERE id = $1 AND expiry_ms > $2"
        )
        .bind(&id)
        .bind(now_ms)
        .fetch_optional(p)
        .await)
        .map_err(backend)?;
        data.map(|d| rmp_serde::from_slice(&d).map_err(|e| session_store::Error::Decode(e.to_string()))).transpose()
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        let id = id.to_string();
        on_pool!(self, |p| sqlx::query("DELETE FROM console_sessions WHERE id = $1")
            .bind(&id)
            .execute(p)
            .await
            .map(|_| ()))
        .map_err(backend)?;
        Ok(())
    }
}
