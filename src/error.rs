//! The domain's error: what went wrong, with a stable machine-readable `code` and a message in
//! Simplified Chinese first, English second. The HTTP layer maps it to problem+json in one place.

use serde_json::{Map, Value};

use crate::db::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 401: no valid credentials or session.
    #[error("{message}")]
    Unauthenticated {
        code: &'static str,
        message: String,
        /// Who tried, when known (a login's username), for the audit entry.
        subject: Option<String>,
    },
    /// 403: authenticated, but not allowed.
    #[error("{message}")]
    Forbidden {
        code: &'static str,
        message: String,
        policy_ids: Vec<String>,
    },
    /// 404
    #[error("{what} not found")]
    NotFound { what: &'static str },
    /// 400: the request cannot be read at all.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// 422: readable, but refused by a rule; `extra` adds members to the problem document.
    #[error("{message}")]
    Unprocessable {
        code: &'static str,
        message: String,
        extra: Map<String, Value>,
    },
    /// 409: conflicts with the current state.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// 429: try again after some seconds.
    #[error("too many attempts; retry after {retry_after_secs} s")]
    TooManyRequests {
        retry_after_secs: u64,
        subject: Option<String>,
    },
    /// 500 with a clear, safe message: stored data failed an integrity check (a ciphertext that
    /// does not decrypt) or a key is not available. Carries no secret.
    #[error("{message}")]
    Integrity { code: &'static str, message: String },
    /// 503: a service this one depends on (the bank's directory) does not answer; carries
    /// no detail of the cause (it is logged).
    #[error("{message}")]
    Unavailable {
        code: &'static str,
        message: String,
        subject: Option<String>,
    },
    /// 500: never shown to the client beyond a generic message.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
    /// A refusal whose audit entry the domain already wrote in the deciding transaction (with
    /// its own details): answered like the inner error, never audited twice.
    #[error(transparent)]
    Audited(Box<Error>),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Marks a refusal as audited by the deed that decided it.
    pub fn audited(self) -> Error {
        match self {
            Error::Audited(_) => self,
            other => Error::Audited(Box::new(other)),
        }
    }

    pub fn is_audited(&self) -> bool {
        matches!(self, Error::Audited(_))
    }

    pub fn forbidden(policy_ids: Vec<String>) -> Error {
        Error::Forbidden {
            code: "forbidden",
            message: "没有执行此操作的权限 / You are not permitted to do this".into(),
            policy_ids,
        }
    }

    pub fn invalid(code: &'static str, message: impl Into<String>) -> Error {
        Error::Unprocessable {
            code,
            message: message.into(),
            extra: Map::new(),
        }
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Error {
        Error::Conflict {
            code,
            message: message.into(),
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> u16 {
        match self {
            Error::Unauthenticated { .. } => 401,
            Error::Forbidden { .. } => 403,
            Error::NotFound { .. } => 404,
            Error::BadRequest { .. } => 400,
            Error::Unprocessable { .. } => 422,
            Error::Conflict { .. } => 409,
            Error::TooManyRequests { .. } => 429,
            Error::Integrity { .. } | Error::Internal(_) => 500,
            Error::Unavailable { .. } => 503,
            Error::Audited(e) => e.status(),
        }
    }

    /// What a client is told ("中文 / English"); never the cause of an internal error.
    pub fn detail(&self) -> String {
        match self {
            Error::Unauthenticated { message, .. }
            | Error::Forbidden { message, .. }
            | Error::BadRequest { message, .. }
            | Error::Unprocessable { message, .. }
            | Error::Conflict { message, .. }
            | Error::Integrity { message, .. }
            | Error::Unavailable { message, .. } => message.clone(),
            Error::NotFound { what } => format!("未找到 / Not found: {what}"),
            Error::TooManyRequests {
                retry_after_secs, ..
            } => format!(
                "尝试次数过多，请 {retry_after_secs} 秒后再试 / Too many attempts; retry after {retry_after_secs} s"
            ),
            Error::Internal(_) => "服务器内部错误 / Internal server error".to_string(),
            Error::Audited(e) => e.detail(),
        }
    }

    /// Members the problem document carries besides the standard ones.
    pub fn extra(&self) -> Map<String, Value> {
        match self {
            Error::Unprocessable { extra, .. } => extra.clone(),
            Error::Forbidden { policy_ids, .. } => {
                let mut extra = Map::new();
                extra.insert("policy_ids".into(), Value::from(policy_ids.clone()));
                extra
            }
            Error::Audited(e) => e.extra(),
            _ => Map::new(),
        }
    }

    /// The Cedar policies that decided a refusal.
    pub fn policy_ids(&self) -> &[String] {
        match self {
            Error::Forbidden { policy_ids, .. } => policy_ids,
            Error::Audited(e) => e.policy_ids(),
            _ => &[],
        }
    }

    /// The seconds a 429 asks the client to wait.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Error::TooManyRequests {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            Error::Audited(e) => e.retry_after_secs(),
            _ => None,
        }
    }

    /// Who tried, when known, for the audit entry of a refusal.
    pub fn subject(&self) -> Option<&str> {
        match self {
            Error::Unauthenticated { subject, .. }
            | Error::TooManyRequests { subject, .. }
            | Error::Unavailable { subject, .. } => subject.as_deref(),
            Error::Audited(e) => e.subject(),
            _ => None,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Error::Unauthenticated { code, .. }
            | Error::Forbidden { code, .. }
            | Error::BadRequest { code, .. }
            | Error::Unprocessable { code, .. }
            | Error::Conflict { code, .. }
            | Error::Integrity { code, .. }
            | Error::Unavailable { code, .. } => code,
            Error::NotFound { .. } => "not_found",
            Error::TooManyRequests { .. } => "too_many_requests",
            Error::Internal(_) => "internal_error",
            Error::Audited(e) => e.code(),
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Error::NotFound { what: "record" },
            StoreError::Unique => Error::conflict(
                "already_exists",
                "记录已存在 / A record with this key already exists",
            ),
            StoreError::Busy | StoreError::Sqlx(sqlx::Error::PoolTimedOut) => {
                tracing::warn!("no database turn within the wait: answering 503");
                Error::Unavailable {
                    code: "unavailable",
                    message: "系统繁忙，请稍后重试 / The service is busy; try again shortly".into(),
                    subject: None,
                }
            }
            other => Error::Internal(anyhow::Error::new(other)),
        }
    }
}
