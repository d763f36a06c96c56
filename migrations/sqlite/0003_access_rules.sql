-- Access rules, policy mode, and the deciding rule in audit (issue 4,
-- docs/decisions/0007-access-rules.md). Keep in step with migrations/postgres/0003_access_rules.sql.

-- A rule of an access role beyond plain grants: tools by name, glob or annotation; allow or deny;
-- parameter constraints on allow rules. annotation_json and params_json hold the gatehouse-core
-- shapes (AnnotationMatch, [ParamConstraint]) as JSON text, validated by the control plane.
CREATE TABLE access_rules (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    role_id TEXT NOT NULL,
    server_id TEXT NOT NULL,
    effect TEXT NOT NULL CHECK (effect IN ('allow', 'deny')),
    tools TEXT NOT NULL,
    annotation_json TEXT,
    params_json TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, role_id) REFERENCES roles (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, server_id) REFERENCES servers (tenant_id, id) ON DELETE CASCADE
);

-- enforce: refusals are enforced; monitor: audited as would_deny, not enforced.
ALTER TABLE virtual_servers ADD COLUMN policy_mode TEXT NOT NULL DEFAULT 'enforce';

-- The rule that decided a tools/call (rule id, grant:{role}:{server}:{tool}, or default-deny).
ALTER TABLE audit_events ADD COLUMN rule_id TEXT;
