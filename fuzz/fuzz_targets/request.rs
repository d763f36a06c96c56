//! The gateway's request parsing (`gatehouse_core::jsonrpc::parse_body`) and the MCP 2026-07-28 header validation, on arbitrary bytes:
//! `header: value` lines, a blank line, then the JSON-RPC body (or only a body). See
//! `gatehouse_core::headers::fuzz_request` for what is checked.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gatehouse_core::headers::fuzz_request(data);
});
