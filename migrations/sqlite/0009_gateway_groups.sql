-- Gateway groups and worker status reports (issue 4, docs/decisions/0014-gateway-groups.md). Keep in
-- step with migrations/postgres/0009_gateway_groups.sql.
-- A gateway group is a set of workers that serve the same tenants. Groups are created by an
-- operator (`gatehouse groups create`); the control plane's configured group is created at start.
CREATE TABLE gateway_groups (
    slug TEXT PRIMARY KEY,
    created_at_ms BIGINT NOT NULL
);
-- The group a tenant's bundles go to. A tenant without a row is in the control plane's configured
-- (default) group.
CREATE TABLE tenant_gateway_groups (
    tenant_id TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    group_slug TEXT NOT NULL REFERENCES gateway_groups(slug),
    assigned_at_ms BIGINT NOT NULL
);
-- The latest status report of each worker (POST /v1/workers/status): its group, version and its own
-- last error talking to the control plane. Replaced whole by each report.
CREATE TABLE worker_reports (
    worker_id TEXT PRIMARY KEY,
    group_slug TEXT NOT NULL,
    version TEXT NOT NULL,
    contact_error TEXT,
    reported_at_ms BIGINT NOT NULL
);
-- Per tenant of a report: the bundle the worker runs for it and its last error about that tenant.
-- Read only for one tenant at a time: a tenant never sees another tenant's rows.
CREATE TABLE worker_tenant_reports (
    worker_id TEXT NOT NULL REFERENCES worker_reports(worker_id) ON DELETE CASCADE,
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    revision TEXT,
    sequence BIGINT,
    error TEXT,
    PRIMARY KEY (worker_id, tenant_id)
);
CREATE INDEX worker_tenant_reports_tenant ON worker_tenant_reports (tenant_id);
