//! The kernel's uevents on a `NETLINK_KOBJECT_UEVENT` socket (multicast group 1).
//!
//! This needs neither udevd nor root on an ordinary kernel: any process may listen to group 1.
//! Only messages whose sender port id is 0 (the kernel) are accepted, so another process
//! cannot inject events.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::sys::socket::{
    AddressFamily, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, getsockname, recvfrom,
    setsockopt, socket, sockopt,
};

use super::{MAX_UEVENT_LEN, Uevent, parse_kernel_uevent};
use crate::Error;

/// The kernel's uevent multicast group.
pub const KERNEL_GROUP: u32 = 1;

/// Receive buffer asked for, so a burst of thousands of events is not dropped while the
/// daemon is busy (the kernel caps it at `net.core.rmem_max` without `CAP_NET_ADMIN`).
pub const RECEIVE_BUFFER: usize = 16 << 20;

/// A socket receiving kernel uevents.
#[derive(Debug)]
pub struct KernelUeventSocket {
    fd: OwnedFd,
    buf: Vec<u8>,
}

/// What one receive produced.
#[derive(Debug)]
pub enum Received {
    /// A kernel uevent.
    Event(Uevent),
    /// A message not from the kernel (ignored).
    Foreign,
    /// Nothing to read now (non-blocking socket).
    WouldBlock,
}

impl KernelUeventSocket {
    /// Opens and binds the socket. `nonblocking` makes [`KernelUeventSocket::receive`]
    /// return [`Received::WouldBlock`] instead of waiting (for use under `poll`).
    pub fn open(nonblocking: bool) -> Result<Self, Error> {
        let mut flags = SockFlag::SOCK_CLOEXEC;
        if nonblocking {
            flags |= SockFlag::SOCK_NONBLOCK;
        }
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Datagram,
            flags,
            SockProtocol::NetlinkKObjectUEvent,
        )
        .map_err(|source| Error::UeventSocket {
            operation: "socket(NETLINK_KOBJECT_UEVENT)",
            source,
        })?;
        // Best effort: a larger buffer only makes overruns less likely.
        if setsockopt(&fd, sockopt::RcvBufForce, &RECEIVE_BUFFER).is_err() {
            let _ = setsockopt(&fd, sockopt::RcvBuf, &RECEIVE_BUFFER);
        }
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, KERNEL_GROUP)).map_err(|source| {
            Error::UeventSocket {
                operation: "bind to the kernel uevent group",
                source,
            }
        })?;
        Ok(KernelUeventSocket {
            fd,
            buf: vec![0u8; MAX_UEVENT_LEN + 1],
        })
    }

    /// The netlink port id the kernel assigned to this socket.
    pub fn port_id(&self) -> Result<u32, Error> {
        getsockname::<NetlinkAddr>(self.fd.as_raw_fd())
            .map(|addr| addr.pid())
            .map_err(|source| Error::UeventSocket {
                operation: "getsockname",
                source,
            })
    }

    /// Receives one message. A malformed kernel message is an error naming it (the daemon
    /// logs it and goes on); a dropped-events overrun (`ENOBUFS`) is an error too, after which
    /// the daemon should rescan.
    pub fn receive(&mut self) -> Result<Received, Error> {
        let (len, from) = match recvfrom::<NetlinkAddr>(self.fd.as_raw_fd(), &mut self.buf) {
            Ok(got) => got,
            Err(nix::errno::Errno::EAGAIN) => return Ok(Received::WouldBlock),
            Err(source) => {
                return Err(Error::UeventSocket {
                    operation: "recvfrom",
                    source,
                });
            }
        };
        if from.is_none_or(|addr| addr.pid() != 0) {
            return Ok(Received::Foreign);
        }
        let message = self.buf.get(..len).unwrap_or_default();
        parse_kernel_uevent(message).map(Received::Event)
    }

    /// Drains every message available now (non-blocking sockets), skipping foreign and
    /// collecting malformed ones as errors.
    pub fn drain(&mut self) -> (Vec<Uevent>, Vec<Error>) {
        let mut events = Vec::new();
        let mut errors = Vec::new();
        loop {
            match self.receive() {
                Ok(Received::Event(event)) => events.push(event),
                Ok(Received::Foreign) => {}
                Ok(Received::WouldBlock) => break,
                Err(e @ Error::UeventSocket { .. }) => {
                    errors.push(e);
                    break;
                }
                Err(e) => errors.push(e),
            }
        }
        (events, errors)
    }
}

impl AsFd for KernelUeventSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
