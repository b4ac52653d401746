//! References in a task's input: the JSON objects that stand for a file.
//!
//! - `{"$upload": "up_<32 hex>"}`: an upload of the caller.
//! - `{"$url": "https://…", "headers"?: {"Authorization": "Bearer …"},
//!   "name"?: "…"}`: a resource the server fetches before the task runs.
//!
//! An object with either key is a reference and nothing else: any other key
//! in it is `invalid_input`, and the walk does not look inside it. Inputs
//! without the text `"$u` (or a `\u` escape that could spell it) are not
//! parsed at all.

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use serde_json::value::RawValue;

use super::UrlRequest;
use crate::catalog::InvalidInput;
use crate::directory::json_path;

/// Most references one input may hold.
pub const MAX_REFERENCES: usize = 256;
/// Longest `$url`, in bytes.
const MAX_URL_BYTES: usize = 8192;
/// Most headers of one URL reference.
const MAX_HEADERS: usize = 32;
/// Longest header value (and `name`), in bytes.
const MAX_VALUE_BYTES: usize = 8192;

/// Headers a URL reference may not set: the fetcher owns the connection,
/// its framing and its encoding.
const REFUSED_HEADERS: [&str; 12] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "expect",
    "proxy-authorization",
    "proxy-connection",
    "accept-encoding",
];

/// One reference found in an input.
#[derive(Debug)]
pub enum Reference {
    Upload {
        json_path: String,
        id: String,
    },
    Url {
        json_path: String,
        request: UrlRequest,
    },
}

/// Every reference in `input`, in path order: array items in order, the
/// keys of an object sorted (the order is the same for the same input).
pub fn find_references(input: &RawValue) -> Result<Vec<Reference>, InvalidInput> {
    let text = input.get();
    if !text.contains("\"$u") && !text.contains("\\u") {
        return Ok(Vec::new());
    }
    let value: Value =
        serde_json::from_str(text).map_err(|e| InvalidInput::new("$", format!("not JSON: {e}")))?;
    let mut found = Vec::new();
    let mut pointer = String::new();
    walk(&value, &mut pointer, &mut found)?;
    Ok(found)
}

fn walk(
    value: &Value,
    pointer: &mut String,
    found: &mut Vec<Reference>,
) -> Result<(), InvalidInput> {
    match value {
        Value::Object(map) => {
            if map.contains_key("$upload") || map.contains_key("$url") {
                if found.len() >= MAX_REFERENCES {
                    return Err(InvalidInput::new(
                        json_path(pointer),
                        format!("more than {MAX_REFERENCES} file references"),
                    ));
                }
                found.push(reference(map, pointer)?);
                return Ok(());
            }
            for (key, child) in map {
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
                walk(child, pointer, found)?;
                pointer.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&i.to_string());
                walk(child, pointer, found)?;
                pointer.truncate(len);
            }
        }
        _ => {}
    }
    Ok(())
}

fn reference(
    map: &serde_json::Map<String, Value>,
    pointer: &str,
) -> Result<Reference, InvalidInput> {
    let path = json_path(pointer);
    let at = |field: &str| {
        let mut child = pointer.to_owned();
        child.push('/');
        child.push_str(field);
        json_path(&child)
    };
    let name = match map.get("name") {
        None => None,
        Some(Value::String(name)) if name.len() <= MAX_VALUE_BYTES => Some(name.clone()),
        Some(_) => {
            return Err(InvalidInput::new(
                at("name"),
                format!("must be a string of at most {MAX_VALUE_BYTES} bytes"),
            ));
        }
    };
    if let Some(Value::String(id)) = map.get("$upload") {
        if let Some(other) = map.keys().find(|k| k.as_str() != "$upload") {
            return Err(InvalidInput::new(
                path,
                format!(
                    "an upload reference has only `$upload` (the upload keeps its name), not `{}`",
                    shown(other)
                ),
            ));
        }
        return Ok(Reference::Upload {
            json_path: path,
            id: id.clone(),
        });
    }
    if map.contains_key("$upload") {
        return Err(InvalidInput::new(
            at("$upload"),
            "must be an upload id (a string)",
        ));
    }
    let Some(Value::String(url)) = map.get("$url") else {
        return Err(InvalidInput::new(at("$url"), "must be a URL (a string)"));
    };
    if let Some(other) = map
        .keys()
        .find(|k| !matches!(k.as_str(), "$url" | "headers" | "name"))
    {
        return Err(InvalidInput::new(
            path,
            format!(
                "a URL reference has only `$url`, `headers` and `name`, not `{}`",
                shown(other)
            ),
        ));
    }
    let url = parse_url(url).map_err(|why| InvalidInput::new(at("$url"), why))?;
    let headers = match map.get("headers") {
        None | Some(Value::Null) => HeaderMap::new(),
        Some(Value::Object(headers)) => parse_headers(headers, &at("headers"))?,
        Some(_) => {
            return Err(InvalidInput::new(
                at("headers"),
                "must be an object of header names to string values",
            ));
        }
    };
    Ok(Reference::Url {
        json_path: path,
        request: UrlRequest::new(url, headers, name),
    })
}

/// A [`UrlRequest`] from the parts of a plain `{url, headers, name}` object
/// (tasks that fetch as part of their work, e.g. `pdf_check`); the error
/// says which part is wrong, never a header's value.
pub fn url_request(
    url: &str,
    headers: Option<&serde_json::Map<String, Value>>,
    name: Option<String>,
) -> Result<UrlRequest, String> {
    let url = parse_url(url).map_err(|why| format!("url: {why}"))?;
    let headers = match headers {
        None => HeaderMap::new(),
        Some(headers) => parse_headers(headers, "headers").map_err(|e| e.reason)?,
    };
    Ok(UrlRequest::new(url, headers, name))
}

/// A client's text, cut short for an error message.
fn shown(text: &str) -> String {
    text.chars().take(64).collect()
}

/// An `http` or `https` URL with a host.
pub(super) fn parse_url(text: &str) -> Result<reqwest::Url, String> {
    if text.len() > MAX_URL_BYTES {
        return Err(format!("longer than {MAX_URL_BYTES} bytes"));
    }
    let url = reqwest::Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "only http and https URLs are fetched, not {}:",
            shown(url.scheme())
        ));
    }
    if url.host().is_none() {
        return Err("the URL has no host".to_owned());
    }
    Ok(url)
}

fn parse_headers(
    headers: &serde_json::Map<String, Value>,
    path: &str,
) -> Result<HeaderMap, InvalidInput> {
    if headers.len() > MAX_HEADERS {
        return Err(InvalidInput::new(
            path,
            format!("at most {MAX_HEADERS} headers"),
        ));
    }
    let mut map = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        // The value is never echoed: it is the client's secret.
        let bad = |why: &str| InvalidInput::new(path, format!("header `{}`: {why}", shown(name)));
        let header =
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad("not a header name"))?;
        if REFUSED_HEADERS.contains(&header.as_str()) {
            return Err(bad("set by the server, not by an input"));
        }
        let Value::String(value) = value else {
            return Err(bad("the value must be a string"));
        };
        if value.len() > MAX_VALUE_BYTES {
            return Err(bad(&format!(
                "the value is longer than {MAX_VALUE_BYTES} bytes"
            )));
        }
        let mut value = HeaderValue::from_str(value)
            .map_err(|_| bad("the value has characters a header cannot carry"))?;
        value.set_sensitive(true);
        map.append(header, value);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(json: &str) -> Result<Vec<Reference>, InvalidInput> {
        let raw = RawValue::from_string(json.to_owned()).expect("json");
        find_references(&raw)
    }

    fn paths(json: &str) -> Vec<String> {
        refs(json)
            .expect("valid")
            .into_iter()
            .map(|r| match r {
                Reference::Upload { json_path, .. } | Reference::Url { json_path, .. } => json_path,
            })
            .collect()
    }

    #[test]
    fn finds_references_in_path_order() {
        assert!(paths(r#"{"a": 1, "b": ["x"]}"#).is_empty());
        assert_eq!(
            paths(
                r#"{"zip": {"$upload": "up_1"}, "files": [{"$url": "https://a.example/x.pdf", "headers": {"Authorization": "Bearer s"}}, 3, {"deep": {"$upload": "up_2"}}]}"#
            ),
            ["$.files[0]", "$.files[2].deep", "$.zip"]
        );
        assert_eq!(paths(r#"{"$upload": "up_x"}"#), ["$"]);
        assert_eq!(paths(r#"{"a b": {"$url": "http://h/"}}"#), ["$[\"a b\"]"]);
        // A key spelled with an escape is the same key.
        assert_eq!(paths(r#"{"f": {"\u0024upload": "up_x"}}"#), ["$.f"]);
    }

    #[test]
    fn malformed_references_name_their_path() {
        let cases = [
            (r#"{"f": {"$upload": 7}}"#, "$.f[\"$upload\"]", "upload id"),
            (
                r#"{"f": {"$upload": "up_x", "extra": 1}}"#,
                "$.f",
                "only `$upload`",
            ),
            (
                r#"{"f": {"$url": "ftp://h/x"}}"#,
                "$.f[\"$url\"]",
                "only http and https",
            ),
            (
                r#"{"f": {"$url": "not a url"}}"#,
                "$.f[\"$url\"]",
                "not a URL",
            ),
            (
                r#"{"f": {"$url": "https://h/", "headers": {"Host": "x"}}}"#,
                "$.f.headers",
                "set by the server",
            ),
            (
                r#"{"f": {"$url": "https://h/", "headers": {"X": "a\nb"}}}"#,
                "$.f.headers",
                "cannot carry",
            ),
            (
                r#"{"f": {"$url": "https://h/", "headers": {"X": 1}}}"#,
                "$.f.headers",
                "must be a string",
            ),
            (
                r#"{"f": {"$url": "https://h/", "headers": ["x"]}}"#,
                "$.f.headers",
                "must be an object",
            ),
            (
                r#"{"f": {"$url": "https://h/", "method": "POST"}}"#,
                "$.f",
                "only `$url`",
            ),
        ];
        for (json, path, reason) in cases {
            let error = refs(json).expect_err(json);
            assert_eq!(error.path, path, "{json}");
            assert!(error.reason.contains(reason), "{json}: {}", error.reason);
        }
    }

    #[test]
    fn header_values_never_appear_in_errors() {
        let error = refs(
            r#"{"f": {"$url": "https://h/", "headers": {"Authorization": "Bearer sekrit\n"}}}"#,
        )
        .expect_err("bad value");
        assert!(!error.reason.contains("sekrit"), "{}", error.reason);
        assert!(!format!("{error:?}").contains("sekrit"));
    }

    #[test]
    fn too_many_references() {
        let items: Vec<String> = (0..=MAX_REFERENCES)
            .map(|i| format!(r#"{{"$upload": "up_{i}"}}"#))
            .collect();
        let json = format!("[{}]", items.join(","));
        let error = refs(&json).expect_err("too many");
        assert!(error.reason.contains("more than"), "{}", error.reason);
    }
}
