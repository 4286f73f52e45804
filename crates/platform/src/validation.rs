//! Request validation that names every bad field at once. Plain Rust: the
//! gRPC layer turns [`Violations`] into a `BadRequest` detail.

use std::fmt;

/// One bad field: its path in the request (`lines[2].quantity`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The field's path, with proto field names and `[index]` for list items.
    pub field: String,
    /// What is wrong with it, in a sentence a client developer can act on.
    pub description: String,
}

/// Every bad field of one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Violations(Vec<Violation>);

impl Violations {
    /// No violations yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a bad field.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(Violation { field: field.into(), description: description.into() });
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The recorded violations, in the order found.
    pub fn iter(&self) -> impl Iterator<Item = &Violation> {
        self.0.iter()
    }

    /// `Ok(value)` if nothing was recorded, else the violations.
    pub fn into_result<T>(self, value: T) -> Result<T, Violations> {
        if self.0.is_empty() { Ok(value) } else { Err(self) }
    }

    /// Checks a client-chosen id (idempotency key or request id): 1 to 128
    /// characters of ASCII letters, digits, `-` and `_`.
    pub fn check_request_id(&mut self, field: &str, value: &str) {
        if value.is_empty() {
            self.add(field, "is required");
        } else if value.len() > 128 || !value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            self.add(field, "must be 1 to 128 characters of letters, digits, '-' and '_'");
        }
    }

    /// Checks free text: between `min` and `max` characters, no control characters.
    pub fn check_text(&mut self, field: &str, value: &str, min: usize, max: usize) {
        let chars = value.chars().count();
        if chars < min && min == 1 {
            self.add(field, "is required");
        } else if chars < min || chars > max {
            self.add(field, format!("must be {min} to {max} characters, got {chars}"));
        } else if value.chars().any(char::is_control) {
            self.add(field, "must not contain control characters");
        }
    }

    /// Checks a reference to an id (store, item, order): 1 to 64 characters of
    /// ASCII letters, digits, `-` and `_`.
    pub fn check_id(&mut self, field: &str, value: &str) {
        if value.is_empty() {
            self.add(field, "is required");
        } else if value.len() > 64 || !value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            self.add(field, "is not a valid id");
        }
    }
}

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for v in &self.0 {
            if !first {
                f.write_str("; ")?;
            }
            first = false;
            write!(f, "{}: {}", v.field, v.description)?;
        }
        Ok(())
    }
}

impl std::error::Error for Violations {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_field_is_kept_in_order() {
        let mut v = Violations::new();
        v.check_request_id("request_id", "");
        v.check_text("delivery_address", "", 1, 200);
        v.check_id("store_id", "no spaces please");
        v.check_request_id("ok", "0f8a-11_z");
        let fields: Vec<_> = v.iter().map(|x| x.field.as_str()).collect();
        assert_eq!(fields, ["request_id", "delivery_address", "store_id"]);
        assert_eq!(v.clone().into_result(()), Err(v));
    }

    #[test]
    fn text_limits_count_characters_not_bytes() {
        let mut v = Violations::new();
        v.check_text("reason", &"가".repeat(200), 1, 200);
        assert!(v.is_empty(), "{v}");
        v.check_text("reason", &"가".repeat(201), 1, 200);
        v.check_text("note", "line\nbreak", 0, 200);
        assert_eq!(v.iter().count(), 2);
    }

    #[test]
    fn request_ids_are_bounded_and_ascii() {
        let mut v = Violations::new();
        v.check_request_id("a", &"x".repeat(129));
        v.check_request_id("b", "héllo");
        v.check_request_id("c", &"x".repeat(128));
        let fields: Vec<_> = v.iter().map(|x| x.field.as_str()).collect();
        assert_eq!(fields, ["a", "b"]);
    }
}
