-- Gatehouse initial schema (PostgreSQL). Keep in step with migrations/sqlite/0001_initial.sql.
-- Every table but `tenants` and `console_sessions` carries tenant_id, and every query names it.
-- A row that points at another tenant-owned row does so through (tenant_id, id), so it can never
-- point into another tenant.
-- Times are Unix milliseconds (BIGINT), ids are text (UUID v7), so both dialects read the same rows.

CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    slug TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE users (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL,
    display_name TEXT NOT NULL,
    password_hash TEXT,
    console_role TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    UNIQUE (tenant_id, email),
    UNIQUE (tenant_id, id)
);
CREATE INDEX users_email ON users (email);

CREATE TABLE servers (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT PRIMARY KEY,
    slug TEXT NOT NULL,
    name TEXT NOT NULL,
    url TEXT NOT NULL,
    tools_json TEXT NOT NULL,
    tools_fetched_at_ms BIGINT,
    created_at_ms BIGINT NOT NULL,
    UNIQUE (tenant_id, slug),
    UNIQUE (tenant_id, id)
);

CREATE TABLE roles (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT PRIMARY KEY,
    slug TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    UNIQUE (tenant_id, slug),
    UNIQUE (tenant_id, id)
);

CREATE TABLE role_grants (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    role_id TEXT NOT NULL,
    server_id TEXT NOT NULL,
    tool TEXT NOT NULL,
    PRIMARY KEY (tenant_id, role_id, server_id, tool),
    FOREIGN KEY (tenant_id, role_id) REFERENCES roles (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, server_id) REFERENCES servers (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE role_bindings (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    role_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (tenant_id, role_id, user_id),
    FOREIGN KEY (tenant_id, role_id) REFERENCES roles (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE virtual_servers (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT PRIMARY KEY,
    slug TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    UNIQUE (tenant_id, slug),
    UNIQUE (tenant_id, id)
);

CREATE TABLE virtual_server_upstreams (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    virtual_server_id TEXT NOT NULL,
    server_id TEXT NOT NULL,
    position BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, virtual_server_id, server_id),
    FOREIGN KEY (tenant_id, virtual_server_id) REFERENCES virtual_servers (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, server_id) REFERENCES servers (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE api_tokens (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT,
    revoked_at_ms BIGINT,
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE audit_events (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT PRIMARY KEY,
    time_ms BIGINT NOT NULL,
    user_id TEXT,
    user_email TEXT,
    client_name TEXT,
    client_version TEXT,
    session_id TEXT,
    virtual_server TEXT NOT NULL,
    upstream_server TEXT,
    method TEXT NOT NULL,
    tool TEXT,
    outcome TEXT NOT NULL,
    reason TEXT,
    latency_us BIGINT NOT NULL,
    bundle_revision TEXT,
    received_at_ms BIGINT NOT NULL
);
CREATE INDEX audit_events_tenant_time ON audit_events (tenant_id, time_ms DESC);

CREATE TABLE bundles (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    group_name TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    revision TEXT NOT NULL,
    signed_json TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, group_name, sequence)
);

-- Console sessions (tower-sessions records). A session exists before anyone signs in, so it has no
-- tenant; the signed-in user and tenant live inside the record.
CREATE TABLE console_sessions (
    id TEXT PRIMARY KEY,
    data BYTEA NOT NULL,
    expiry_ms BIGINT NOT NULL
);
