-- Upstream transports (issue 3, docs/decisions/0016-stdio-and-sse-upstreams.md). Keep in step with
-- migrations/sqlite/0011_server_transports.sql.
-- transport: streamableHttp (url is the endpoint), sse (url is the legacy SSE URL) or stdio (url is
-- empty; command_json is {"command": ..., "args": [...], "env": {...}}, NULL otherwise).
ALTER TABLE servers ADD COLUMN transport TEXT NOT NULL DEFAULT 'streamableHttp'
    CHECK (transport IN ('streamableHttp', 'sse', 'stdio'));
ALTER TABLE servers ADD COLUMN command_json TEXT;
