//! Build provenance: the in-toto statement inside an attestation's DSSE envelope, and what thaw
//! requires of it. The predicate type is enforced here (cosign 2.5.0's `verify-blob-attestation`
//! does not check `--type`, GHSA-w6c6-c85g-mmv6), as is the SLSA v1 builder id.

use serde::Deserialize;

pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
pub const STATEMENT_TYPES: [&str; 2] = ["https://in-toto.io/Statement/v0.1", "https://in-toto.io/Statement/v1"];
pub const SLSA_PROVENANCE_V1: &str = "https://slsa.dev/provenance/v1";

#[derive(Deserialize)]
pub struct Statement {
    #[serde(rename = "_type")]
    statement_type: String,
    #[serde(default)]
    subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    predicate_type: String,
    #[serde(default)]
    predicate: serde_json::Value,
}

#[derive(Deserialize)]
struct Subject {
    #[serde(default)]
    digest: std::collections::BTreeMap<String, String>,
}

impl Statement {
    /// Parses a DSSE payload as an in-toto statement.
    pub fn parse(payload_type: &str, payload: &[u8]) -> Result<Statement, String> {
        if payload_type != IN_TOTO_PAYLOAD_TYPE {
            return Err(format!("payload type `{payload_type}`, not an in-toto statement ({IN_TOTO_PAYLOAD_TYPE})"));
        }
        let statement: Statement = serde_json::from_slice(payload).map_err(|e| format!("not an in-toto statement: {e}"))?;
        if !STATEMENT_TYPES.contains(&statement.statement_type.as_str()) {
            return Err(format!("statement type `{}` is not in-toto's", statement.statement_type));
        }
        Ok(statement)
    }

    /// Whether a subject carries this SHA-256 (hex, case-insensitive).
    pub fn names_sha256(&self, digest: &[u8; 32]) -> bool {
        let want: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        self.subject.iter().any(|s| s.digest.get("sha256").is_some_and(|d| d.eq_ignore_ascii_case(&want)))
    }

    /// The builder id of a SLSA provenance v1 predicate (`runDetails.builder.id`).
    pub fn slsa_v1_builder(&self) -> Result<&str, String> {
        if self.predicate_type != SLSA_PROVENANCE_V1 {
            return Err(format!("predicate type `{}`, not SLSA provenance v1 ({SLSA_PROVENANCE_V1})", self.predicate_type));
        }
        self.predicate
            .pointer("/runDetails/builder/id")
            .and_then(|v| v.as_str())
            .filter(|id| !id.is_empty())
            .ok_or_else(|| "SLSA provenance without runDetails.builder.id".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(predicate_type: &str, digest: &str, builder: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "a.cwasm", "digest": {"sha256": digest}}],
            "predicateType": predicate_type,
            "predicate": {"runDetails": {"builder": {"id": builder}}}
        }))
        .unwrap()
    }

    #[test]
    fn a_slsa_v1_statement_names_its_subject_and_builder() {
        let d = [0xab; 32];
        let s = Statement::parse(IN_TOTO_PAYLOAD_TYPE, &statement(SLSA_PROVENANCE_V1, &"AB".repeat(32), "https://ci/b")).unwrap();
        assert!(s.names_sha256(&d));
        assert!(!s.names_sha256(&[0xac; 32]));
        assert_eq!(s.slsa_v1_builder(), Ok("https://ci/b"));
    }

    #[test]
    fn other_predicates_and_payloads_are_refused() {
        let s = Statement::parse(IN_TOTO_PAYLOAD_TYPE, &statement("https://slsa.dev/provenance/v0.2", "00", "b")).unwrap();
        assert!(s.slsa_v1_builder().unwrap_err().contains("v0.2"));
        let s = Statement::parse(IN_TOTO_PAYLOAD_TYPE, &statement(SLSA_PROVENANCE_V1, "00", "")).unwrap();
        assert!(s.slsa_v1_builder().is_err());
        assert!(Statement::parse("text/plain", b"{}").is_err());
        assert!(Statement::parse(IN_TOTO_PAYLOAD_TYPE, br#"{"_type":"x","predicateType":"p"}"#).is_err());
    }
}
