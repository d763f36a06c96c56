-- Session sealing keys (issue 3, docs/decisions/0006-stateless-sessions.md). Keep in step with
-- migrations/postgres/0002_session_keys.sql.
-- One row per key of a tenant: 32 random bytes (standard base64) that seal and open the
-- client-facing Mcp-Session-Id. The compiler puts every key of the tenant into its bundle; the newest
-- seals, all open. Rotation = insert a newer key, delete the old one after an overlap period.
CREATE TABLE session_keys (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    key_b64 TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
