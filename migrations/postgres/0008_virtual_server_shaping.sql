-- Virtual-server shaping (issue 3, docs/decisions/0013-virtual-server-shaping.md). Keep in step with
-- migrations/sqlite/0008_virtual_server_shaping.sql.
-- One row per virtual server that is not on the defaults: conflict_strategy is auto, prefix,
-- priority or explicit; prefixes_json is a JSON object {server id: prefix} (servers not named use
-- their slug).
CREATE TABLE virtual_server_shaping (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    virtual_server_id TEXT NOT NULL,
    conflict_strategy TEXT NOT NULL CHECK (conflict_strategy IN ('auto', 'prefix', 'priority', 'explicit')),
    prefixes_json TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, virtual_server_id),
    FOREIGN KEY (tenant_id, virtual_server_id) REFERENCES virtual_servers (tenant_id, id) ON DELETE CASCADE
);
-- Per-tool overrides: keyed by virtual server, upstream server and the tool's upstream name;
-- override_json is gatehouse_core::shaping::ToolOverride without server and tool (rename,
-- description, fixed, hidden, enums), validated by the control plane before it is stored.
CREATE TABLE tool_overrides (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    virtual_server_id TEXT NOT NULL,
    server_id TEXT NOT NULL,
    tool TEXT NOT NULL,
    override_json TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, virtual_server_id, server_id, tool),
    FOREIGN KEY (tenant_id, virtual_server_id) REFERENCES virtual_servers (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, server_id) REFERENCES servers (tenant_id, id) ON DELETE CASCADE
);
