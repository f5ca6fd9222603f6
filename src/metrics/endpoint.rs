//! The `/metrics` HTTP endpoint: a plain hyper service over [`Metrics`], served through
//! [`crate::http_serve`] (no web framework in the daemon).
//!
//! `GET /metrics` answers 200 with the Prometheus text format, after reading the WireGuard device if the
//! last read is older than [`super::MIN_READ_INTERVAL`] ([`Metrics::scrape`]); `HEAD /metrics` the same headers without a
//! body; another method on `/metrics` 405 with `Allow: GET,HEAD`; any other path 404. The query is ignored.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;

use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE};
use hyper::service::Service;
use hyper::{Method, Request, Response, StatusCode};

use super::Metrics;

/// The path the endpoint serves.
const PATH: &str = "/metrics";

/// The hyper service of the endpoint: one per server, cloned for every connection.
#[derive(Clone)]
pub struct Endpoint {
    metrics: Metrics,
}

impl Endpoint {
    /// The endpoint of `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Self { metrics }
    }

    /// The answer to `method` on `path`.
    async fn answer(&self, method: &Method, path: &str) -> Response<String> {
        if path != PATH {
            return status(StatusCode::NOT_FOUND);
        }
        if method != Method::GET && method != Method::HEAD {
            let mut answer = status(StatusCode::METHOD_NOT_ALLOWED);
            answer
                .headers_mut()
                .insert(ALLOW, hyper::header::HeaderValue::from_static("GET,HEAD"));
            return answer;
        }
        // HEAD gets the body too: hyper sends its length and drops it.
        let mut answer = Response::new(self.metrics.scrape().await);
        answer.headers_mut().insert(
            CONTENT_TYPE,
            hyper::header::HeaderValue::from_static(prometheus::TEXT_FORMAT),
        );
        answer
    }
}

impl Service<Request<Incoming>> for Endpoint {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<String>, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let this = self.clone();
        let (method, path) = (request.method().clone(), request.uri().path().to_owned());
        Box::pin(async move { Ok(this.answer(&method, &path).await) })
    }
}

/// An empty answer with `code`.
fn status(code: StatusCode) -> Response<String> {
    let mut answer = Response::new(String::new());
    *answer.status_mut() = code;
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn get_metrics_answers_the_text_format() {
        let endpoint = Endpoint::new(Metrics::new());
        for method in [Method::GET, Method::HEAD] {
            let answer = endpoint.answer(&method, "/metrics").await;
            assert_eq!(answer.status(), StatusCode::OK);
            assert_eq!(answer.headers()[CONTENT_TYPE], prometheus::TEXT_FORMAT);
            assert!(
                answer.body().contains("sdwand_build_info{version="),
                "{}",
                answer.body()
            );
        }
    }

    #[tokio::test]
    async fn other_methods_and_paths_are_refused() {
        let endpoint = Endpoint::new(Metrics::new());
        let answer = endpoint.answer(&Method::POST, "/metrics").await;
        assert_eq!(answer.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(answer.headers()[ALLOW], "GET,HEAD");
        for path in ["/", "/metrics/", "/other"] {
            let answer = endpoint.answer(&Method::GET, path).await;
            assert_eq!(answer.status(), StatusCode::NOT_FOUND, "{path}");
            assert!(answer.body().is_empty());
        }
    }
}
