-- Publishing as a deliberate step (issue 4, docs/decisions/0015-publishing-and-rollback.md). Keep in
-- step with migrations/sqlite/0010_publishing.sql.
-- A tenant without a row publishes automatically (every change goes to the workers at once).
CREATE TABLE publishing_modes (
    tenant_id TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    mode TEXT NOT NULL CHECK (mode IN ('automatic', 'reviewed')),
    updated_by TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
-- Every publication of a tenant's policy content, numbered from 1. kind: automatic (a change in
-- automatic mode), publish (an admin published the draft), rollback (an admin re-published the
-- content of publication restores_number). content_json is the policy part of the bundle content
-- (no tokens, session keys or kill list; those always go out at once); revision is its SHA-256.
CREATE TABLE publications (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    number BIGINT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('automatic', 'publish', 'rollback')),
    revision TEXT NOT NULL,
    content_json TEXT NOT NULL,
    restores_number BIGINT,
    published_by TEXT,
    note TEXT NOT NULL,
    published_at_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, number)
);
