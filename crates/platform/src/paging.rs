//! `page_size` / `page_token` handling shared by every list RPC.
//!
//! A page token is an opaque, URL-safe string that encodes where the previous
//! page stopped (a sort key and an id). Clients pass it back unchanged.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};

use crate::validation::Violations;

/// The page size used when the request leaves it at 0.
pub const DEFAULT_PAGE_SIZE: u32 = 20;
/// The largest page a list RPC returns.
pub const MAX_PAGE_SIZE: u32 = 100;

/// Where a page starts: after the row with this sort key and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The sort key of the last row of the previous page (a time or a sequence).
    pub key: i64,
    /// The id of that row, to break ties.
    pub id: String,
}

/// A validated page request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// How many rows to return.
    pub size: u32,
    /// Where to start; `None` for the first page.
    pub after: Option<Cursor>,
}

impl PageRequest {
    /// Validates `page_size` and `page_token`, recording problems in `violations`.
    pub fn parse(page_size: i32, page_token: &str, violations: &mut Violations) -> PageRequest {
        let size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n < 0 => {
                violations.add("page_size", "must not be negative");
                DEFAULT_PAGE_SIZE
            }
            n => u32::try_from(n).unwrap_or(MAX_PAGE_SIZE).min(MAX_PAGE_SIZE),
        };
        let after = if page_token.is_empty() {
            None
        } else {
            let cursor = decode(page_token);
            if cursor.is_none() {
                violations.add("page_token", "is not a token returned by this RPC");
            }
            cursor
        };
        PageRequest { size, after }
    }
}

/// The token for the page after `cursor`.
pub fn encode(cursor: &Cursor) -> String {
    URL_SAFE_NO_PAD.encode(format!("v1|{}|{}", cursor.key, cursor.id))
}

fn decode(token: &str) -> Option<Cursor> {
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let mut parts = text.splitn(3, '|');
    (parts.next()? == "v1").then_some(())?;
    let key = parts.next()?.parse().ok()?;
    let id = parts.next()?.to_owned();
    Some(Cursor { key, id })
}

/// Splits `rows` (fetched with one extra row) into the page and the token of
/// the next page, which is empty when there is none.
pub fn finish<T>(mut rows: Vec<T>, size: u32, cursor_of: impl Fn(&T) -> Cursor) -> (Vec<T>, String) {
    let size = size as usize;
    if rows.len() <= size {
        return (rows, String::new());
    }
    rows.truncate(size);
    let token = rows.last().map(|last| encode(&cursor_of(last))).unwrap_or_default();
    (rows, token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_even_with_separators_in_the_id() {
        let cursor = Cursor { key: -42, id: "a|b".into() };
        let mut v = Violations::new();
        let page = PageRequest::parse(5, &encode(&cursor), &mut v);
        assert!(v.is_empty());
        assert_eq!(page, PageRequest { size: 5, after: Some(cursor) });
    }

    #[test]
    fn sizes_default_and_clamp_and_garbage_tokens_are_violations() {
        let mut v = Violations::new();
        assert_eq!(PageRequest::parse(0, "", &mut v).size, DEFAULT_PAGE_SIZE);
        assert_eq!(PageRequest::parse(10_000, "", &mut v).size, MAX_PAGE_SIZE);
        assert!(v.is_empty());
        PageRequest::parse(-1, "%%%", &mut v);
        let fields: Vec<_> = v.iter().map(|x| x.field.as_str()).collect();
        assert_eq!(fields, ["page_size", "page_token"]);
    }

    #[test]
    fn finish_returns_a_token_only_when_more_rows_exist() {
        let cursor = |n: &i64| Cursor { key: *n, id: n.to_string() };
        let (page, token) = finish(vec![1, 2, 3], 2, cursor);
        assert_eq!(page, [1, 2]);
        assert_eq!(decode(&token), Some(Cursor { key: 2, id: "2".into() }));
        assert_eq!(finish(vec![1, 2], 2, cursor).1, "");
    }
}
