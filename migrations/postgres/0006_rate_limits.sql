-- Rate limits (issue 4, docs/decisions/0011-rate-limits.md). Keep in step with
-- migrations/sqlite/0006_rate_limits.sql.
-- scope: tenant (one bucket for the tenant), role (one bucket per user holding role_id), user (one
-- bucket per user; user_id names one user or, NULL, every user). server_id NULL = every server;
-- tool NULL = every tool (a name or a glob otherwise). requests per per_seconds, bucket size burst
-- (NULL = requests).
CREATE TABLE rate_limits (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    scope TEXT NOT NULL CHECK (scope IN ('tenant', 'role', 'user')),
    role_id TEXT,
    user_id TEXT,
    server_id TEXT,
    tool TEXT,
    requests BIGINT NOT NULL,
    per_seconds BIGINT NOT NULL,
    burst BIGINT,
    description TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, role_id) REFERENCES roles (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, server_id) REFERENCES servers (tenant_id, id) ON DELETE CASCADE
);
