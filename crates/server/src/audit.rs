//! The audit trail: every state-changing call (apply, push, materialize, cancel, export,
//! upload) is one structured log event on target `quiver::audit`, with the principal, the
//! call, the objects it touched and the outcome. The log filter selects it like any target
//! (`--log info,quiver::audit=info`).

use quiver_core::selection::Selector;

use crate::auth::Principal;
use crate::error::Result;

/// Records the outcome of `call` by `principal` on `objects`, and passes the result on.
pub(crate) fn audited<T>(
    principal: &Principal,
    call: &'static str,
    objects: &str,
    result: Result<T>,
) -> Result<T> {
    let request_id = crate::transport::request_id();
    match &result {
        Ok(_) => tracing::info!(
            target: "quiver::audit",
            %request_id,
            principal = principal.name,
            role = %principal.role,
            call,
            objects,
            outcome = "ok",
        ),
        Err(error) => tracing::info!(
            target: "quiver::audit",
            %request_id,
            principal = principal.name,
            role = %principal.role,
            call,
            objects,
            outcome = ?error.code(),
            error = %error,
        ),
    }
    result
}

/// What a selector names, for the audit log: `service:NAME` or the feature refs.
pub(crate) fn describe_selector(selector: &Selector) -> String {
    match selector {
        Selector::Service { reference, .. } => format!("service:{reference}"),
        Selector::Features(refs) => refs.join(","),
    }
}
