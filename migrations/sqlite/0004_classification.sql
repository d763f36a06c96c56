-- Data classification (issue 4, docs/decisions/0009-data-classification.md). Keep in step with
-- migrations/postgres/0004_classification.sql.

-- A tenant's data-classification rule. detector/action/scope hold the gatehouse-core wire names;
-- servers_json and labels_json are JSON lists of server slugs and labels (validated by the control
-- plane; the compiler resolves labels to servers).
CREATE TABLE classification_rules (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    detector TEXT NOT NULL,
    pattern TEXT,
    action TEXT NOT NULL CHECK (action IN ('block', 'redact', 'log')),
    scope TEXT NOT NULL CHECK (scope IN ('params', 'responses', 'both')),
    servers_json TEXT NOT NULL,
    labels_json TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

-- Labels of a server (PHI, PCI, PII, a region ...), a JSON list.
ALTER TABLE servers ADD COLUMN labels_json TEXT NOT NULL DEFAULT '[]';

-- What the data-classification rules found in a request or its response (a JSON list of
-- AuditFinding: rule, detector, action, direction, JSON pointer, count; never the data itself).
ALTER TABLE audit_events ADD COLUMN findings_json TEXT;
