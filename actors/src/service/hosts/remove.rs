//! `removeHost` on this node's own hosts: the work is `host/remove.rs`'s.

use super::Hosts;
use crate::error::ApiError;
use crate::host::HostView;

impl Hosts {
    pub(crate) async fn remove_local(&self, host: &str, force: bool) -> Result<HostView, ApiError> {
        crate::host::remove(&self.fleet, host, force).await
    }
}
