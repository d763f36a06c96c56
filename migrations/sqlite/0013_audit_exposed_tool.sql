-- The tool name the client called (as the virtual server exposes it), beside the upstream name in
-- `tool` (docs/decisions/0019-observability.md).
ALTER TABLE audit_events ADD COLUMN exposed_tool TEXT;
