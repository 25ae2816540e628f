//! Running rtnetlink requests, on the host or inside a network namespace.
//!
//! `setns(2)` changes the namespace of the calling *thread*, so work inside a
//! container's namespace runs on a short-lived thread of its own, with its own
//! current-thread tokio runtime and its own netlink socket opened after the
//! switch. The caller's threads, and any runtime the caller runs, never change
//! namespace. Host work runs on the calling thread when it is outside any
//! tokio runtime (start-up, `Networks::cleanup`'s repairs): handing it to
//! another thread costs a scheduling delay per request on a busy machine,
//! which is most of what a no-op `moor apply` would wait for. The public API is plain
//! blocking functions that an async caller wraps in `spawn_blocking`.

use std::fs::File;
use std::future::Future;
use std::path::Path;

use futures_util::TryStreamExt;
use nix::sched::CloneFlags;
use rtnetlink::Handle;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};

use super::error::{NetError, Result};

/// `ENODEV`, the kernel's answer for a missing link.
const ENODEV: i32 = 19;

/// Runs `f` with a netlink handle in the namespace at `netns` (the host's
/// when `None`): on a thread of its own, or on this one for the host's
/// namespace when no tokio runtime is current here (a runtime cannot be
/// started inside another's context).
pub(crate) fn run<T, F, Fut>(netns: Option<&Path>, f: F) -> Result<T>
where
    T: Send,
    F: FnOnce(Handle) -> Fut + Send,
    Fut: Future<Output = Result<T>>,
{
    if netns.is_none() && tokio::runtime::Handle::try_current().is_err() {
        return on_this_thread(f);
    }
    let ns = netns
        .map(|p| File::open(p).map_err(|e| NetError::io("open network namespace", p, e)))
        .transpose()?;
    let ns_path = netns.map(Path::to_path_buf);
    std::thread::scope(|s| {
        s.spawn(move || {
            if let (Some(ns), Some(path)) = (&ns, &ns_path) {
                nix::sched::setns(ns, CloneFlags::CLONE_NEWNET)
                    .map_err(|e| NetError::io("enter network namespace", path, e.into()))?;
            }
            on_this_thread(f)
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Runs `f` with a netlink handle on a current-thread runtime of this thread.
fn on_this_thread<T, F, Fut>(f: F) -> Result<T>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| NetError::io("start netlink runtime", "", e))?;
    rt.block_on(async move {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|e| NetError::io("open netlink socket", "", e))?;
        tokio::spawn(conn);
        f(handle).await
    })
}

/// The link called `name`, if there is one.
pub(crate) async fn find_link(handle: &Handle, name: &str) -> Result<Option<LinkMessage>> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code().abs() == ENODEV => Ok(None),
        Err(e) => Err(NetError::netlink(format!("look up link {name}"))(e)),
    }
}

/// A link's alias.
pub(crate) fn link_alias(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfAlias(n) => Some(n.as_str()),
        _ => None,
    })
}

/// Deletes the link called `name`; a missing link is not an error.
pub(crate) async fn delete_link(handle: &Handle, name: &str) -> Result<()> {
    let Some(link) = find_link(handle, name).await? else {
        return Ok(());
    };
    match handle.link().del(link.header.index).execute().await {
        Ok(()) => Ok(()),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code().abs() == ENODEV => Ok(()),
        Err(e) => Err(NetError::netlink(format!("delete link {name}"))(e)),
    }
}

/// Writes `value` to a file under `/proc/sys`.
pub(crate) fn sysctl(path: &str, value: &str) -> Result<()> {
    let current = std::fs::read_to_string(path).unwrap_or_default();
    if current.trim() == value {
        return Ok(());
    }
    std::fs::write(path, value).map_err(|e| NetError::io("write sysctl", path, e))
}
