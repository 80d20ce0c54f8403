//! Wire selectors (a `oneof` of a feature service or feature refs, plus an expected
//! fingerprint) -> the domain [`Selector`], validated on receipt.

use quiver_core::selection::Selector;

use crate::convert::ProtocolError;
use crate::v1;

/// The selector of a GetOnlineFeatures (or Echo) request.
pub fn online_selector(request: &v1::GetOnlineFeaturesRequest) -> Result<Selector, ProtocolError> {
    use v1::get_online_features_request::Selector as Wire;
    let (service, refs) = match &request.selector {
        Some(Wire::FeatureService(name)) => (Some(name.as_str()), None),
        Some(Wire::Features(refs)) => (None, Some(refs.refs.as_slice())),
        None => (None, None),
    };
    selector(service, refs, &request.expected_fingerprint)
}

/// The selector of an export request (ExportTrainingData, Flight GetFlightInfo/DoGet).
pub fn export_selector(request: &v1::ExportRequest) -> Result<Selector, ProtocolError> {
    use v1::export_request::Selector as Wire;
    let (service, refs) = match &request.selector {
        Some(Wire::FeatureService(name)) => (Some(name.as_str()), None),
        Some(Wire::Features(refs)) => (None, Some(refs.refs.as_slice())),
        None => (None, None),
    };
    selector(service, refs, &request.expected_fingerprint)
}

fn selector(
    service: Option<&str>,
    refs: Option<&[String]>,
    expected_fingerprint: &str,
) -> Result<Selector, ProtocolError> {
    match (service, refs) {
        (Some(name), None) => Ok(Selector::Service {
            reference: name.to_string(),
            expected_fingerprint: (!expected_fingerprint.is_empty())
                .then(|| expected_fingerprint.to_string()),
        }),
        (None, Some(_)) if !expected_fingerprint.is_empty() => Err(ProtocolError::Invalid {
            field: "expected_fingerprint".into(),
            message: "only feature services have fingerprints; drop it or ask by `feature_service`"
                .into(),
        }),
        (None, Some(refs)) => Ok(Selector::Features(refs.to_vec())),
        _ => Err(ProtocolError::Invalid {
            field: "selector".into(),
            message:
                "set either `feature_service` (name or name@N) or `features` (view:feature refs)"
                    .into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_validate_on_receipt() {
        let mut request = v1::GetOnlineFeaturesRequest::default();
        assert!(matches!(
            online_selector(&request),
            Err(ProtocolError::Invalid { field, .. }) if field == "selector"
        ));
        request.selector = Some(v1::get_online_features_request::Selector::FeatureService(
            "svc@2".into(),
        ));
        request.expected_fingerprint = "abc".into();
        assert_eq!(
            online_selector(&request).ok(),
            Some(Selector::Service {
                reference: "svc@2".into(),
                expected_fingerprint: Some("abc".into())
            })
        );
        let export = v1::ExportRequest {
            selector: Some(v1::export_request::Selector::Features(v1::FeatureRefs {
                refs: vec!["v:f".into()],
            })),
            expected_fingerprint: "abc".into(),
            ..Default::default()
        };
        assert!(matches!(
            export_selector(&export),
            Err(ProtocolError::Invalid { field, .. }) if field == "expected_fingerprint"
        ));
        let export = v1::ExportRequest {
            expected_fingerprint: String::new(),
            ..export
        };
        assert_eq!(
            export_selector(&export).ok(),
            Some(Selector::Features(vec!["v:f".into()]))
        );
    }
}
