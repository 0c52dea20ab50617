//! CORS as API Gateway's HTTP APIs do it, from the HttpApi's
//! `CorsConfiguration` in template.yaml: the gateway answers preflight
//! `OPTIONS` itself (the function never sees it), and adds
//! `Access-Control-Allow-Origin` and `-Expose-Headers` to the actual
//! responses of an allowed origin. A disallowed origin gets no CORS
//! headers at all, so the browser refuses the response.

use hyper::header::{HeaderMap, HeaderValue};

/// An HTTP API's CORS configuration (header names and methods as
/// configured; compared case-insensitively).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cors {
    pub allow_origins: Vec<String>,
    pub allow_methods: Vec<String>,
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub max_age: Option<u64>,
}

fn any(list: &[String]) -> bool {
    list.iter().any(|v| v == "*")
}

fn contains(list: &[String], value: &str) -> bool {
    any(list) || list.iter().any(|v| v.eq_ignore_ascii_case(value))
}

impl Cors {
    /// The `Access-Control-Allow-Origin` value for a request from `origin`:
    /// `*` when any origin is allowed, the origin itself when it is listed.
    pub fn allowed_origin(&self, origin: &str) -> Option<String> {
        if any(&self.allow_origins) {
            return Some("*".into());
        }
        self.allow_origins
            .iter()
            .any(|o| o.eq_ignore_ascii_case(origin))
            .then(|| origin.to_owned())
    }

    /// The headers of a preflight's answer (204): None when the origin,
    /// the method or one of the requested headers is not allowed, and the
    /// answer carries no CORS headers.
    pub fn preflight(&self, request: &HeaderMap) -> Option<Vec<(&'static str, String)>> {
        let text = |name: &str| request.get(name).and_then(|v| v.to_str().ok());
        let origin = self.allowed_origin(text("origin")?)?;
        let method = text("access-control-request-method")?;
        if !contains(&self.allow_methods, method) {
            return None;
        }
        let requested = text("access-control-request-headers").unwrap_or_default();
        let requested: Vec<&str> = requested
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .collect();
        if !requested.iter().all(|h| contains(&self.allow_headers, h)) {
            return None;
        }
        let mut headers = vec![
            ("access-control-allow-origin", origin),
            ("access-control-allow-methods", self.allow_methods.join(",")),
        ];
        if !self.allow_headers.is_empty() {
            headers.push(("access-control-allow-headers", self.allow_headers.join(",")));
        }
        if let Some(age) = self.max_age {
            headers.push(("access-control-max-age", age.to_string()));
        }
        Some(headers)
    }

    /// Adds the CORS headers of an actual response to a request whose
    /// `Origin` is `origin`; the function's own CORS headers give way, as
    /// API Gateway's configuration overrides them.
    pub fn decorate(&self, origin: Option<&str>, response: &mut HeaderMap) {
        for name in [
            "access-control-allow-origin",
            "access-control-expose-headers",
            "access-control-allow-credentials",
        ] {
            response.remove(name);
        }
        let Some(allowed) = origin.and_then(|o| self.allowed_origin(o)) else {
            return;
        };
        if allowed != "*" {
            response.append("vary", HeaderValue::from_static("Origin"));
        }
        if let Ok(value) = HeaderValue::from_str(&allowed) {
            response.insert("access-control-allow-origin", value);
        }
        if !self.expose_headers.is_empty()
            && let Ok(value) = HeaderValue::from_str(&self.expose_headers.join(","))
        {
            response.insert("access-control-expose-headers", value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(origins: &[&str]) -> Cors {
        Cors {
            allow_origins: origins.iter().map(|s| s.to_string()).collect(),
            allow_methods: vec!["GET".into(), "POST".into()],
            allow_headers: vec!["authorization".into(), "content-type".into()],
            expose_headers: vec!["etag".into()],
            max_age: Some(600),
        }
    }

    fn preflight(origin: &str, method: &str, headers: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert("origin", origin.parse().unwrap());
        map.insert("access-control-request-method", method.parse().unwrap());
        map.insert("access-control-request-headers", headers.parse().unwrap());
        map
    }

    #[test]
    fn preflight_answers_only_what_is_allowed() {
        let cors = config(&["https://a.example"]);
        let ok = cors
            .preflight(&preflight(
                "https://a.example",
                "POST",
                "Authorization, Content-Type",
            ))
            .unwrap();
        assert!(ok.contains(&("access-control-allow-origin", "https://a.example".into())));
        assert!(ok.contains(&("access-control-max-age", "600".into())));
        assert!(
            cors.preflight(&preflight("https://b.example", "POST", ""))
                .is_none()
        );
        assert!(
            cors.preflight(&preflight("https://a.example", "DELETE", ""))
                .is_none()
        );
        assert!(
            cors.preflight(&preflight("https://a.example", "GET", "x-secret"))
                .is_none()
        );
        let star = config(&["*"]);
        let any = star
            .preflight(&preflight("https://b.example", "GET", ""))
            .unwrap();
        assert!(any.contains(&("access-control-allow-origin", "*".into())));
    }
}
