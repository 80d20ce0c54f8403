//! The command of a Flight descriptor (and a DoGet ticket): a serialized
//! `quiver.v1.ExportRequest`, or the same request as a JSON object, so that any Flight client
//! (pyarrow, DuckDB, Java, Go) can ask for a training set without protobuf:
//!
//! ```json
//! {"feature_service": "driver_model", "labels_upload": "my_labels", "full_names": true}
//! ```
//!
//! The JSON keys are the proto's field names (`features` is a list of `view:feature`
//! references); unknown keys are refused, naming the key.

use prost::Message;
use quiver_proto::v1;
use serde::Deserialize;

use crate::error::{Error, Result};

/// An `ExportRequest` as JSON: see the module docs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct JsonExportRequest {
    feature_service: Option<String>,
    features: Option<Vec<String>>,
    labels_path: String,
    labels_upload: String,
    timestamp_column: String,
    full_names: bool,
    as_known_at: bool,
    expected_fingerprint: String,
    start_micros: i64,
    end_micros: i64,
    from_served_log: Option<JsonServedLogJoin>,
}

/// `ServedLogJoin` as JSON: `{"join_on": "keys", "max_age_micros": 3600000000}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct JsonServedLogJoin {
    join_on: String,
    request_id_column: String,
    max_age_micros: i64,
}

impl JsonExportRequest {
    fn into_wire(self, field: &str) -> Result<v1::ExportRequest> {
        use v1::export_request::Selector;
        let selector = match (self.feature_service, self.features) {
            (Some(service), None) => Selector::FeatureService(service),
            (None, Some(refs)) => Selector::Features(v1::FeatureRefs { refs }),
            _ => {
                return Err(Error::invalid(
                    field,
                    "give exactly one of `feature_service` and `features` in the JSON command",
                ));
            }
        };
        Ok(v1::ExportRequest {
            selector: Some(selector),
            labels_path: self.labels_path,
            labels_upload: self.labels_upload,
            timestamp_column: self.timestamp_column,
            full_names: self.full_names,
            as_known_at: self.as_known_at,
            expected_fingerprint: self.expected_fingerprint,
            start_micros: self.start_micros,
            end_micros: self.end_micros,
            from_served_log: self.from_served_log.map(|log| v1::ServedLogJoin {
                join_on: log.join_on,
                request_id_column: log.request_id_column,
                max_age_micros: log.max_age_micros,
            }),
            ..Default::default()
        })
    }
}

/// The export request in `bytes` (the descriptor's `cmd` or a ticket, named by `field`).
pub(crate) fn decode(bytes: &[u8], field: &str) -> Result<v1::ExportRequest> {
    if bytes.trim_ascii_start().first() == Some(&b'{') {
        let request: JsonExportRequest = serde_json::from_slice(bytes).map_err(|e| {
            Error::invalid(
                field,
                format!(
                    "not a JSON export request: {e} (keys: the fields of quiver.v1.ExportRequest)"
                ),
            )
        })?;
        return request.into_wire(field);
    }
    v1::ExportRequest::decode(bytes).map_err(|e| {
        Error::invalid(
            field,
            format!("not a serialized quiver.v1.ExportRequest nor a JSON object: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_protobuf_commands_decode_to_the_same_request() -> Result<()> {
        let json = br#" {"feature_service": "model", "labels_upload": "labels", "full_names": true,
            "as_known_at": true, "start_micros": 5, "end_micros": 9,
            "from_served_log": {"join_on": "keys", "max_age_micros": 7}}"#;
        let wire = v1::ExportRequest {
            selector: Some(v1::export_request::Selector::FeatureService("model".into())),
            labels_upload: "labels".into(),
            full_names: true,
            as_known_at: true,
            start_micros: 5,
            end_micros: 9,
            from_served_log: Some(v1::ServedLogJoin {
                join_on: "keys".into(),
                max_age_micros: 7,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(decode(json, "cmd")?, wire);
        assert_eq!(decode(&wire.encode_to_vec(), "cmd")?, wire);
        let refs = decode(br#"{"features": ["v:a", "v:b"]}"#, "cmd")?;
        assert_eq!(
            refs.selector,
            Some(v1::export_request::Selector::Features(v1::FeatureRefs {
                refs: vec!["v:a".into(), "v:b".into()]
            }))
        );
        Ok(())
    }

    #[test]
    fn bad_json_commands_name_the_problem() {
        let message = |bytes: &[u8]| match decode(bytes, "descriptor.cmd") {
            Err(Error::InvalidArgument { field, message }) => format!("{field}: {message}"),
            other => panic!("{other:?}"),
        };
        assert!(
            message(br#"{"feature_service": "m", "label_upload": "x"}"#).contains("label_upload")
        );
        assert!(message(br#"{"labels_upload": "x"}"#).contains("exactly one of"));
        assert!(
            message(br#"{"feature_service": "m", "features": ["v:a"]}"#).contains("exactly one of")
        );
        assert!(message(b"{not json").starts_with("descriptor.cmd: not a JSON export request"));
    }
}
