-- The kill switch (issue 4, docs/decisions/0010-kill-switch.md). Keep in step with
-- migrations/sqlite/0005_suspensions.sql.
-- One row per suspension: a user (target_id = user id), a server (target_id = server id, tool = ''),
-- or one tool of a server (tool = its name). Lifting a suspension deletes its row.
CREATE TABLE suspensions (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('user', 'server', 'tool')),
    target_id TEXT NOT NULL,
    tool TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, kind, target_id, tool)
);
