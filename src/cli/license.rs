//! `koogate license public-key`, `license verify`, `license requests` and `license
//! request`: the signed-License key, checking a License offline, and the online License
//! applications with their uploads.

use crate::domain::license_request::LicenseRequestView;
use crate::protocol::license_token::PublicKey;
use crate::store::Store;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The public key, raw (hex and Base64, as most Ed25519 libraries take it) and as PEM.
pub fn public_key(key: &PublicKey) -> String {
    let raw = key.raw();
    format!(
        "Ed25519 public key (32 bytes)\nhex     {}\nbase64  {}\n\n{}",
        hex::encode(raw),
        STANDARD.encode(raw),
        key.to_pem()
    )
}

/// Checks a License token and shows its claims; the error says why it is refused.
pub fn verify(key: &PublicKey, token: &str) -> Result<String, String> {
    let claims = key.verify(token).map_err(|e| e.to_string())?;
    let claims = serde_json::to_string_pretty(&claims).map_err(|e| e.to_string())?;
    Ok(format!("valid License, signed by this key\n{claims}\n"))
}

/// The applications (of one instance, or the newest of all), one a line.
pub async fn requests(
    store: &dyn Store,
    instance_id: Option<&str>,
) -> Result<String, crate::store::StoreError> {
    let requests = store.license_requests(instance_id, 200).await?;
    if requests.is_empty() {
        return Ok("no License applications\n".into());
    }
    let mut out = format!(
        "{:<32} {:<24} {:<16} {:<10} {:<6} received\n",
        "eventId", "instance", "state", "type", "source"
    );
    for r in &requests {
        let view = LicenseRequestView::new(r, false);
        let (kind, source) = view
            .license
            .as_ref()
            .map_or(("-", "-"), |l| (l.kind, l.source.as_str()));
        out.push_str(&format!(
            "{:<32} {:<24} {:<16} {:<10} {:<6} {}\n",
            view.event_id, view.instance_id, view.state, kind, source, view.created_at
        ));
    }
    Ok(out)
}

/// One application: its facts, its License's metadata and every upload attempt.
pub async fn request(
    store: &dyn Store,
    event_id: &str,
) -> Result<Option<String>, crate::store::StoreError> {
    let Some(request) = store.license_request(event_id).await? else {
        return Ok(None);
    };
    let view = LicenseRequestView::new(&request, false);
    let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let mut out = format!(
        "eventId      {}\ninstance     {}\nfingerprint  {}\neffective    {}\nexpires      {}\n\
         test         {}\nstate        {}\nreceived     {}\ndelivered    {}\n",
        view.event_id,
        view.instance_id,
        text(&view.device_fingerprint),
        view.effective_time,
        text(&view.expire_time),
        view.test,
        view.state,
        view.created_at,
        text(&view.delivered_at),
    );
    if let Some(error) = &view.error {
        out.push_str(&format!("parked       {error}\n"));
    }
    match &view.license {
        Some(l) => out.push_str(&format!(
            "License      {} from {}, {} bytes, sha256 {}{}\n",
            l.kind,
            l.source,
            l.size,
            l.sha256,
            l.file_name
                .as_deref()
                .map(|n| format!(", file {n}"))
                .unwrap_or_default()
        )),
        None => out.push_str("License      none yet (waiting for the app)\n"),
    }
    let uploads = store.license_uploads(event_id).await?;
    out.push_str(&format!("uploads      {}\n", uploads.len()));
    for u in uploads {
        out.push_str(&format!(
            "  {}  HTTP {}  {}  {} ms{}\n",
            crate::domain::events::rfc3339(u.attempted_ms),
            u.status.map_or("-".into(), |s| s.to_string()),
            u.code.as_deref().unwrap_or("-"),
            u.duration_ms,
            u.error.map(|e| format!("  {e}")).unwrap_or_default(),
        ));
    }
    Ok(Some(out))
}
