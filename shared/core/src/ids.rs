//! Names users choose (tenant and object slugs) and the rules they follow.

use crate::error::GatehouseError;

/// Checks a slug: 1–63 characters of `a-z`, `0-9` and `-`, starting with a letter, not ending with `-`.
/// Slugs appear in URLs (`/mcp/{tenant}/{virtual-server}`), so they are kept URL-safe and lowercase.
pub fn validate_slug(field: &str, value: &str) -> Result<(), GatehouseError> {
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > 63 {
        return Err(GatehouseError::invalid(field, "must be 1 to 63 characters long"));
    }
    if !bytes[0].is_ascii_lowercase() {
        return Err(GatehouseError::invalid(field, "must start with a lowercase letter (a-z)"));
    }
    if bytes[bytes.len() - 1] == b'-' {
        return Err(GatehouseError::invalid(field, "must not end with '-'"));
    }
    if let Some(bad) = value.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')) {
        return Err(GatehouseError::invalid(field, format!("may contain only a-z, 0-9 and '-', found {bad:?}")));
    }
    Ok(())
}

/// Checks an e-mail address loosely: one `@` with text on both sides, no spaces, at most 254 bytes.
pub fn validate_email(field: &str, value: &str) -> Result<(), GatehouseError> {
    let ok = value.len() <= 254
        && !value.chars().any(char::is_whitespace)
        && matches!(value.split_once('@'), Some((local, domain)) if !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.') && !domain.contains('@'));
    if ok { Ok(()) } else { Err(GatehouseError::invalid(field, "must be an e-mail address such as alice@example.com")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        for ok in ["acme", "a", "team-2", "x1-y2"] {
            assert!(validate_slug("slug", ok).is_ok(), "{ok}");
        }
        for bad in ["", "Acme", "1abc", "abc-", "a_b", "a b", "ä", &"a".repeat(64)] {
            let err = validate_slug("slug", bad).unwrap_err();
            assert!(err.message.starts_with("slug: "), "{bad}: {}", err.message);
        }
    }

    #[test]
    fn emails() {
        assert!(validate_email("email", "alice@example.com").is_ok());
        for bad in ["", "alice", "@example.com", "alice@", "alice@example", "a b@example.com", "a@b@c.com"] {
            assert!(validate_email("email", bad).is_err(), "{bad}");
        }
    }
}
