//! How a notice reaches a channel: a signed webhook (Alertmanager's v4 body, so existing
//! receivers read it; Standard Webhooks' and GitHub-style signature headers), a Slack
//! incoming webhook, or an email over SMTP. Each send is one attempt; the notifier retries.

use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use troupe_runtime::config::outside::{ChannelKind, Smtp};

use super::rules::Status;
use super::Delivery;

/// How long one attempt may take.
const ATTEMPT_WITHIN: Duration = Duration::from_secs(15);

/// Why an attempt failed, and whether another may succeed.
#[derive(Debug, Clone, PartialEq)]
pub struct Failed {
    pub message: String,
    /// Another attempt is pointless (the receiver refused the request itself, or is gone).
    pub permanent: bool,
    /// The receiver asked to wait this long (429 or 503 with Retry-After).
    pub retry_after: Option<Duration>,
}

impl Failed {
    fn transient(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            permanent: false,
            retry_after: None,
        }
    }
}

/// One attempt to deliver `d` through `kind`.
pub async fn send(http: &reqwest::Client, kind: &ChannelKind, d: &Delivery) -> Result<(), Failed> {
    match kind {
        ChannelKind::Webhook { url, secret } => {
            let body = serde_json::to_vec(&webhook_body(d)).map_err(|e| Failed::transient(e.to_string()))?;
            let mut req = http.post(url).header("content-type", "application/json");
            for (name, value) in signature_headers(secret.as_deref(), &d.id, chrono::Utc::now().timestamp(), &body) {
                req = req.header(name, value);
            }
            post(req.body(body)).await
        }
        ChannelKind::Slack { url } => post(http.post(url).json(&slack_body(d))).await,
        ChannelKind::Email(smtp) => email(smtp, d).await,
    }
}

async fn post(req: reqwest::RequestBuilder) -> Result<(), Failed> {
    let res = req
        .timeout(ATTEMPT_WITHIN)
        .send()
        .await
        .map_err(|e| Failed::transient(format!("no answer: {e}")))?;
    let status = res.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let text: String = res.text().await.unwrap_or_default().chars().take(200).collect();
    let code = status.as_u16();
    Err(Failed {
        message: format!("answered {status}: {text}"),
        // 5xx, a timeout and a throttle are worth another try; any other refusal is not.
        permanent: !(status.is_server_error() || code == 408 || code == 429),
        retry_after,
    })
}

/// The headers that sign a webhook: Standard Webhooks' `webhook-id`, `webhook-timestamp` and
/// `webhook-signature` (`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`), and
/// GitHub-style `X-Troupe-Signature-256` (`sha256=<hex HMAC-SHA256 of the body>`). A secret
/// written `whsec_<base64>` is that base64's bytes, as Standard Webhooks has it.
pub fn signature_headers(secret: Option<&[u8]>, id: &str, timestamp: i64, body: &[u8]) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", timestamp.to_string()),
    ];
    let Some(secret) = secret else {
        return headers;
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = match secret.strip_prefix(b"whsec_").map(|s| b64.decode(s)) {
        Some(Ok(decoded)) => decoded,
        _ => secret.to_vec(),
    };
    let mac = |parts: &[&[u8]]| {
        let mut m = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes()
    };
    let signed = mac(&[id.as_bytes(), b".", timestamp.to_string().as_bytes(), b".", body]);
    headers.push(("webhook-signature", format!("v1,{}", b64.encode(signed))));
    let hex: String = mac(&[body]).iter().map(|b| format!("{b:02x}")).collect();
    headers.push(("x-troupe-signature-256", format!("sha256={hex}")));
    headers
}

fn status(d: &Delivery) -> &'static str {
    match d.status {
        Status::Firing => "firing",
        Status::Resolved => "resolved",
    }
}

/// Alertmanager's webhook body (version 4), one alert per notice, with Troupe's own fields
/// under `troupe`.
pub fn webhook_body(d: &Delivery) -> Value {
    let labels = json!({
        "alertname": d.rule,
        "kind": d.alert_kind(),
        "severity": d.severity,
        "subject": d.subject,
        "subjectName": d.subject_name,
    });
    let annotations = json!({ "summary": d.summary, "count": d.count.to_string() });
    let ends_at = match d.status {
        Status::Resolved => d.at.to_rfc3339(),
        Status::Firing => "0001-01-01T00:00:00Z".to_owned(),
    };
    json!({
        "version": "4",
        "groupKey": d.group,
        "truncatedAlerts": 0,
        "status": status(d),
        "receiver": d.channel,
        "groupLabels": { "alertname": d.rule, "subject": d.subject },
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": "",
        "alerts": [{
            "status": status(d),
            "labels": labels,
            "annotations": annotations,
            "startsAt": d.starts_at.to_rfc3339(),
            "endsAt": ends_at,
            "generatorURL": "",
            "fingerprint": d.group,
        }],
        "troupe": {
            "deliveryId": d.id,
            "count": d.count,
            "kind": d.kind,
            "seq": d.seq,
            "at": d.at.to_rfc3339(),
            "data": d.data,
        },
    })
}

/// Slack's mrkdwn needs `&`, `<` and `>` escaped, or a name could ping a channel.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A Slack incoming webhook's body; `text` is what mobile notifications show.
pub fn slack_body(d: &Delivery) -> Value {
    let text = slack_escape(&d.summary);
    let mark = match d.status {
        Status::Resolved => "resolved",
        Status::Firing => d.severity.as_str(),
    };
    json!({
        "text": format!("[{mark}] {text}"),
        "blocks": [{ "type": "section", "text": { "type": "mrkdwn",
            "text": format!("*[{mark}]* {text}\n_rule {}, event {} (#{})_", slack_escape(&d.rule), d.kind, d.seq) } }],
    })
}

async fn email(smtp: &Smtp, d: &Delivery) -> Result<(), Failed> {
    use lettre::message::header::ContentType;
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

    let permanent = |message: String| Failed {
        message,
        permanent: true,
        retry_after: None,
    };
    let mark = match d.status {
        Status::Resolved => "resolved".to_owned(),
        Status::Firing => d.severity.clone(),
    };
    let mut message = Message::builder()
        .from(
            smtp.from
                .parse()
                .map_err(|e| permanent(format!("from {:?}: {e}", smtp.from)))?,
        )
        .subject(format!("[Troupe {mark}] {}", d.summary))
        .header(ContentType::TEXT_PLAIN);
    for to in &smtp.to {
        message = message.to(to.parse().map_err(|e| permanent(format!("to {to:?}: {e}")))?);
    }
    let body = format!(
        "{}\n\nRule: {}\nEvent: {} (#{}) at {}\nSubject: {}\nCount: {}\nFiring since: {}\nDelivery: {}\n\n{}\n",
        d.summary,
        d.rule,
        d.kind,
        d.seq,
        d.at.to_rfc3339(),
        d.subject_name.as_deref().or(d.subject.as_deref()).unwrap_or("-"),
        d.count,
        d.starts_at.to_rfc3339(),
        d.id,
        serde_json::to_string_pretty(&d.data).unwrap_or_default(),
    );
    let message = message.body(body).map_err(|e| permanent(e.to_string()))?;
    let builder = match smtp.tls.as_str() {
        "none" => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host),
        "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host).map_err(|e| permanent(e.to_string()))?,
        _ => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host).map_err(|e| permanent(e.to_string()))?,
    };
    let mut builder = builder.port(smtp.port).timeout(Some(ATTEMPT_WITHIN));
    if let Some((user, password)) = &smtp.credentials {
        builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
    }
    match builder.build().send(message).await {
        Ok(_) => Ok(()),
        Err(e) => Err(Failed {
            message: format!("SMTP: {e}"),
            permanent: e.is_permanent(),
            retry_after: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signatures_are_those_a_receiver_computes() {
        let headers = signature_headers(
            Some(b"It's a Secret to Everybody"),
            "msg_1",
            1_700_000_000,
            b"Hello, World!",
        );
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        // GitHub's own test vector ("Validating webhook deliveries").
        assert_eq!(
            get("x-troupe-signature-256"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
        assert_eq!(get("webhook-id"), "msg_1");
        assert_eq!(get("webhook-timestamp"), "1700000000");
        // Standard Webhooks: HMAC of "{id}.{timestamp}.{body}", base64, "v1," first.
        let mut m = Hmac::<Sha256>::new_from_slice(b"It's a Secret to Everybody").unwrap();
        m.update(b"msg_1.1700000000.Hello, World!");
        let want = base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes());
        assert_eq!(get("webhook-signature"), format!("v1,{want}"));
        // Unsigned without a secret.
        assert_eq!(signature_headers(None, "msg_1", 1, b"x").len(), 2);
    }

    #[test]
    fn slack_text_cannot_ping_a_channel() {
        assert_eq!(slack_escape("<!channel> & co"), "&lt;!channel&gt; &amp; co");
    }
}
