-- Ended sessions (issue 3, docs/decisions/0006-stateless-sessions.md, "Ending sessions"). Keep in
-- step with migrations/sqlite/0012_session_cutoffs.sql.
-- A tenant admin ends every session of one user (user_id = the user's id) or of the whole tenant
-- (user_id = ''): sessions initialized before not_before_ms are refused on every worker with the
-- next bundle. One row per target; ending again moves the cutoff forward.
CREATE TABLE session_cutoffs (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    not_before_ms BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);
