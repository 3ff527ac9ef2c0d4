//! Axum's `Query` and `Path` extractors with their rejections turned into problems, so that a
//! malformed query string or path segment gets `application/problem+json` like every other
//! refusal (axum's own rejections are plain text).

use crate::problem::Problem;
use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// The query string, deserialized; a problem naming `query` when it does not fit.
pub struct ProblemQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ProblemQuery<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| Self(q))
            .map_err(|e| Problem::invalid("query", e.body_text()))
    }
}

/// The path parameters, deserialized; a problem naming `path` when they do not fit (e.g. a
/// percent-encoded segment that is not UTF-8).
pub struct ProblemPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ProblemPath<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(p)| Self(p))
            .map_err(|e| Problem::invalid("path", e.body_text()))
    }
}
