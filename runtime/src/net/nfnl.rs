//! One question to nftables over netlink, without running `nft`: the
//! handle of a table, or that it does not exist.
//!
//! The kernel numbers tables as they are created (per network namespace,
//! from boot), and moor replaces its table whole on every load, so "the
//! table still has the handle it got when we last loaded it" proves nobody
//! deleted, flushed or reloaded it since — a firewall reload (`nft flush
//! ruleset`) included. [`super::Networks`] uses that to skip reloading an
//! unchanged ruleset at start-up, which costs a run of `nft` (about 10 ms).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_GETTABLE: u16 = 1;
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_HANDLE: u16 = 4;
const NLMSG_ERROR: u16 = 2;
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;

/// The handle of table `name` of family `ip`, `None` when there is none.
pub fn table_handle(name: &str) -> io::Result<Option<u64>> {
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_NETFILTER,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let request = get_table(name, 1);
    // SAFETY: sends a buffer we own, of its length, to the kernel (pid 0).
    let sent = unsafe {
        let mut to: libc::sockaddr_nl = std::mem::zeroed();
        to.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        libc::sendto(
            sock.as_raw_fd(),
            request.as_ptr().cast(),
            request.len(),
            0,
            (&to as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 8192];
    // SAFETY: receives into a buffer we own, at most its length.
    let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    parse_reply(&buf[..n as usize])
}

/// An `NFT_MSG_GETTABLE` request for table `name`, family `ip`.
fn get_table(name: &str, seq: u32) -> Vec<u8> {
    let mut attr_value = name.as_bytes().to_vec();
    attr_value.push(0);
    let attr_len = 4 + attr_value.len();
    let len = NLMSG_HDRLEN + NFGENMSG_LEN + align(attr_len);
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE).to_ne_bytes());
    m.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    // nfgenmsg: family, version, resource id (big-endian).
    m.extend_from_slice(&[libc::AF_INET as u8, 0, 0, 0]);
    m.extend_from_slice(&(attr_len as u16).to_ne_bytes());
    m.extend_from_slice(&NFTA_TABLE_NAME.to_ne_bytes());
    m.extend_from_slice(&attr_value);
    m.resize(len, 0);
    m
}

/// The handle in a `NEWTABLE` reply; `None` for an `ENOENT` error.
fn parse_reply(mut buf: &[u8]) -> io::Result<Option<u64>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed nftables reply");
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(buf[0..4].try_into().map_err(|_| bad())?) as usize;
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Err(bad());
        }
        let body = &buf[NLMSG_HDRLEN..len];
        if kind == NLMSG_ERROR {
            let code = i32::from_ne_bytes(
                body.get(0..4)
                    .ok_or_else(bad)?
                    .try_into()
                    .map_err(|_| bad())?,
            );
            match -code {
                0 => {}
                libc::ENOENT => return Ok(None),
                errno => return Err(io::Error::from_raw_os_error(errno)),
            }
        } else if kind == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWTABLE {
            let mut attrs = body.get(NFGENMSG_LEN..).ok_or_else(bad)?;
            while attrs.len() >= 4 {
                let alen = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
                let atype = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
                if alen < 4 || alen > attrs.len() {
                    return Err(bad());
                }
                if atype == NFTA_TABLE_HANDLE && alen == 12 {
                    let v: [u8; 8] = attrs[4..12].try_into().map_err(|_| bad())?;
                    return Ok(Some(u64::from_be_bytes(v)));
                }
                attrs = &attrs[align(alen).min(attrs.len())..];
            }
            return Err(bad());
        }
        buf = &buf[align(len).min(buf.len())..];
    }
    Err(bad())
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_a_padded_gettable_for_the_name() {
        let m = get_table("moor", 7);
        assert_eq!(m.len(), 16 + 4 + 12);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 32);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), (10 << 8) | 1);
        assert_eq!(&m[24..29], b"moor\0");
    }

    #[test]
    fn replies_are_parsed() {
        // ENOENT.
        let mut err = Vec::new();
        err.extend_from_slice(&36u32.to_ne_bytes());
        err.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        err.extend_from_slice(&[0; 10]);
        err.extend_from_slice(&(-libc::ENOENT).to_ne_bytes());
        err.extend_from_slice(&[0; 16]);
        assert_eq!(parse_reply(&err).unwrap(), None);
        // A table with a name and a handle.
        let mut ok = Vec::new();
        ok.extend_from_slice(&40u32.to_ne_bytes());
        ok.extend_from_slice(&((10u16 << 8) | NFT_MSG_NEWTABLE).to_ne_bytes());
        ok.extend_from_slice(&[0; 10]);
        ok.extend_from_slice(&[2, 0, 0, 0]);
        ok.extend_from_slice(&8u16.to_ne_bytes());
        ok.extend_from_slice(&NFTA_TABLE_NAME.to_ne_bytes());
        ok.extend_from_slice(b"abc\0");
        ok.extend_from_slice(&12u16.to_ne_bytes());
        ok.extend_from_slice(&NFTA_TABLE_HANDLE.to_ne_bytes());
        ok.extend_from_slice(&42u64.to_be_bytes());
        assert_eq!(parse_reply(&ok).unwrap(), Some(42));
        assert!(parse_reply(&ok[..20]).is_err());
    }

    #[test]
    fn a_real_table_has_a_handle_that_changes_when_it_is_replaced() {
        let table = format!("moor_nfnl_{}", std::process::id());
        let load = |rules: &str| {
            let mut c = std::process::Command::new("nft")
                .args(["-f", "-"])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .expect("nft");
            use std::io::Write;
            c.stdin.take().unwrap().write_all(rules.as_bytes()).unwrap();
            assert!(c.wait().unwrap().success());
        };
        assert_eq!(table_handle(&table).unwrap(), None);
        let replace = format!("table ip {table}\ndelete table ip {table}\ntable ip {table} {{}}\n");
        load(&replace);
        let first = table_handle(&table).unwrap().expect("created");
        load(&replace);
        let second = table_handle(&table).unwrap().expect("replaced");
        load(&format!("delete table ip {table}\n"));
        assert_ne!(first, second);
        assert_eq!(table_handle(&table).unwrap(), None);
    }
}
