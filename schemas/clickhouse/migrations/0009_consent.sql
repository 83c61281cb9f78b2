-- Consent (schemas/ledger.md "consent"): the ledger's consents in force, as services/access
-- last saw them, one snapshot per ledger height at which they changed. A snapshot is one
-- insert: a marker row (audience and device_id empty) and a row per audience and device in
-- force. The audience views read the newest snapshot (max(height)); older ones are deleted.
CREATE TABLE IF NOT EXISTS {db}.consent_state (
    height    UInt64,
    audience  String,
    device_id String
) ENGINE = MergeTree
ORDER BY (height, audience, device_id);
