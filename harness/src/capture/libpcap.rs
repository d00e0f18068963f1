//! Live capture with libpcap: immediate mode on an mmap'd ring.

use pcap::{Active, Capture as PcapCapture};

use super::{CaptureError, Point, RawPacket, SNAPLEN};
use crate::sandbox::Namespace;

pub(crate) struct LibpcapCapture {
    handle: PcapCapture<Active>,
}

impl LibpcapCapture {
    /// Opens `point` in the calling thread's namespace, filtered to TCP.
    ///
    /// Takes 10-25 ms here, nearly all of it idle: setting up the packet
    /// ring (`PACKET_RX_RING`) waits for an RCU grace period in the kernel
    /// (`packet_set_ring` -> `synchronize_net`), whatever the buffer size.
    pub fn start(
        _ns: &Namespace,
        point: Point,
        buffer: usize,
    ) -> Result<LibpcapCapture, CaptureError> {
        let open = |e: pcap::Error| {
            let text = format!("{}: {e}", point.device());
            if text.contains("permitted") || text.contains("permission") {
                CaptureError::NotPermitted(text)
            } else {
                CaptureError::Open(text)
            }
        };
        let snaplen = i32::try_from(SNAPLEN).expect("a small snaplen");
        let mut handle = PcapCapture::from_device(point.device())
            .map_err(open)?
            .immediate_mode(true)
            .snaplen(snaplen)
            .buffer_size(i32::try_from(buffer).unwrap_or(i32::MAX))
            .open()
            .map_err(open)?;
        handle.filter(&point.filter(), true).map_err(open)?;
        let handle = handle.setnonblock().map_err(open)?;
        Ok(LibpcapCapture { handle })
    }

    pub fn linktype(&self) -> i32 {
        self.handle.get_datalink().0
    }

    /// Appends every packet the kernel has delivered so far; never blocks.
    pub fn drain(&mut self, out: &mut Vec<RawPacket>) -> Result<(), CaptureError> {
        loop {
            match self.handle.next_packet() {
                Ok(p) => out.push(RawPacket {
                    ts_us: p.header.ts.tv_sec * 1_000_000 + p.header.ts.tv_usec,
                    orig_len: p.header.len,
                    data: p.data.to_vec(),
                }),
                Err(pcap::Error::TimeoutExpired) | Err(pcap::Error::NoMorePackets) => {
                    return Ok(());
                }
                Err(e) => return Err(CaptureError::Read(e.to_string())),
            }
        }
    }

    /// Packets the kernel dropped (buffer full) or the interface dropped.
    pub fn dropped(&mut self) -> Option<u64> {
        self.handle
            .stats()
            .ok()
            .map(|s| u64::from(s.dropped) + u64::from(s.if_dropped))
    }
}
