//! What a channel name may be. Names travel in JSON, URLs, Redis keys and log lines, so the set is
//! kept to characters that need no escaping in any of them.

/// Why a channel name was refused; the text says what is allowed.
pub fn validate(name: &str, max_len: usize) -> Result<(), String> {
    if name.is_empty() {
        return Err("channel name is empty".into());
    }
    if name.len() > max_len {
        return Err(format!("channel name is {} bytes, the limit is {max_len}", name.len()));
    }
    if let Some(bad) = name.chars().find(|c| !allowed(*c)) {
        return Err(format!(
            "channel name {name:?} has {bad:?}; allowed are letters, digits and _ - : . @ / = + , ! #"
        ));
    }
    Ok(())
}

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_-:.@/=+,!#".contains(c)
}

#[cfg(test)]
mod tests {
    use super::validate;

    #[test]
    fn seed_names_pass_odd_ones_fail() {
        for ok in ["status", "sensor_event", "room:1", "user:42", "a.b/c-d"] {
            assert!(validate(ok, 200).is_ok(), "{ok}");
        }
        for bad in ["", "has space", "quote\"", "é", "new\nline"] {
            assert!(validate(bad, 200).is_err(), "{bad:?}");
        }
        assert!(validate(&"x".repeat(201), 200).is_err());
    }
}
