//! GETs of the HTTP endpoints, with ureq.

use std::time::Duration;

/// One answer of the HTTP endpoints.
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The body, as text.
    pub body: String,
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\n{}", self.status, self.body)
    }
}

/// One GET of `http://addr/path`, whatever its status.
pub fn http_get(addr: &str, path: &str) -> Answer {
    get_within(addr, path, None).unwrap()
}

/// A GET that gives up after `limit` instead of waiting on a server that
/// cannot accept: `None` then, or if the GET fails otherwise.
pub fn try_http_get(addr: &str, path: &str, limit: Duration) -> Option<Answer> {
    get_within(addr, path, Some(limit)).ok()
}

fn get_within(addr: &str, path: &str, limit: Option<Duration>) -> Result<Answer, ureq::Error> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(limit)
        .proxy(None)
        .build()
        .into();
    let mut answer = agent.get(format!("http://{addr}{path}")).call()?;
    Ok(Answer {
        status: answer.status().as_u16(),
        body: answer.body_mut().read_to_string()?,
    })
}
