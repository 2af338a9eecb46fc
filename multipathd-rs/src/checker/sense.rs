//! Interpretation of a SCSI command's outcome: status byte, host byte, driver byte and sense
//! data (SPC-4 fixed and descriptor formats). Pure functions over bytes, so every case is
//! unit-tested without a device.
//!
//! Values: SCSI status codes (SAM), sense keys and ASC/ASCQ (SPC), host bytes `DID_*` and
//! driver bytes `DRIVER_*` as the Linux SCSI midlayer reports them in `sg_io_hdr`.

use super::{CheckResult, CheckState};

/// SCSI status byte values.
pub mod status {
    pub const GOOD: u8 = 0x00;
    pub const CHECK_CONDITION: u8 = 0x02;
    pub const CONDITION_MET: u8 = 0x04;
    pub const BUSY: u8 = 0x08;
    pub const RESERVATION_CONFLICT: u8 = 0x18;
    pub const TASK_SET_FULL: u8 = 0x28;
    pub const ACA_ACTIVE: u8 = 0x30;
    pub const TASK_ABORTED: u8 = 0x40;
}

/// Host bytes (`host_status`) of the Linux SCSI midlayer.
pub mod host {
    pub const DID_OK: u16 = 0x00;
    pub const DID_NO_CONNECT: u16 = 0x01;
    pub const DID_BUS_BUSY: u16 = 0x02;
    pub const DID_TIME_OUT: u16 = 0x03;
    pub const DID_BAD_TARGET: u16 = 0x04;
    pub const DID_ABORT: u16 = 0x05;
    pub const DID_PARITY: u16 = 0x06;
    pub const DID_ERROR: u16 = 0x07;
    pub const DID_RESET: u16 = 0x08;
    pub const DID_BAD_INTR: u16 = 0x09;
    pub const DID_PASSTHROUGH: u16 = 0x0a;
    pub const DID_SOFT_ERROR: u16 = 0x0b;
    pub const DID_IMM_RETRY: u16 = 0x0c;
    pub const DID_REQUEUE: u16 = 0x0d;
    pub const DID_TRANSPORT_DISRUPTED: u16 = 0x0e;
    pub const DID_TRANSPORT_FAILFAST: u16 = 0x0f;
}

/// Driver bytes (`driver_status`); the low nibble is the driver status, 0x08 flags sense data.
pub mod driver {
    pub const DRIVER_OK: u16 = 0x00;
    pub const DRIVER_BUSY: u16 = 0x01;
    pub const DRIVER_SOFT: u16 = 0x02;
    pub const DRIVER_MEDIA: u16 = 0x03;
    pub const DRIVER_ERROR: u16 = 0x04;
    pub const DRIVER_INVALID: u16 = 0x05;
    pub const DRIVER_TIMEOUT: u16 = 0x06;
    pub const DRIVER_HARD: u16 = 0x07;
    pub const DRIVER_SENSE: u16 = 0x08;
    /// Mask of the status part (the rest are suggestions / the sense flag).
    pub const DRIVER_MASK: u16 = 0x07;
}

/// Sense keys (SPC-4 table 48).
pub mod key {
    pub const NO_SENSE: u8 = 0x0;
    pub const RECOVERED_ERROR: u8 = 0x1;
    pub const NOT_READY: u8 = 0x2;
    pub const MEDIUM_ERROR: u8 = 0x3;
    pub const HARDWARE_ERROR: u8 = 0x4;
    pub const ILLEGAL_REQUEST: u8 = 0x5;
    pub const UNIT_ATTENTION: u8 = 0x6;
    pub const DATA_PROTECT: u8 = 0x7;
    pub const ABORTED_COMMAND: u8 = 0xb;
}

/// The parts of sense data a path checker needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sense {
    pub key: u8,
    pub asc: u8,
    pub ascq: u8,
}

/// Parses fixed-format (response code 0x70/0x71) or descriptor-format (0x72/0x73) sense data.
///
/// Returns `None` for an empty buffer, an unknown response code, or a buffer too short to hold
/// the sense key. ASC/ASCQ read as 0 when the (fixed-format) buffer stops before them.
pub fn parse_sense(buf: &[u8]) -> Option<Sense> {
    let response_code = buf.first()? & 0x7f;
    match response_code {
        0x70 | 0x71 => {
            let key = buf.get(2)? & 0x0f;
            // Byte 7 is the additional sense length; ASC/ASCQ are bytes 12/13 when present.
            let additional = usize::from(*buf.get(7).unwrap_or(&0));
            let present = |index: usize| index < buf.len() && index < 8 + additional;
            let asc = if present(12) { buf[12] } else { 0 };
            let ascq = if present(13) { buf[13] } else { 0 };
            Some(Sense { key, asc, ascq })
        }
        0x72 | 0x73 => {
            let key = buf.get(1)? & 0x0f;
            let asc = *buf.get(2).unwrap_or(&0);
            let ascq = *buf.get(3).unwrap_or(&0);
            Some(Sense { key, asc, ascq })
        }
        _ => None,
    }
}

/// The name of a sense key, for messages.
pub fn sense_key_name(key: u8) -> &'static str {
    match key {
        0x0 => "NO SENSE",
        0x1 => "RECOVERED ERROR",
        0x2 => "NOT READY",
        0x3 => "MEDIUM ERROR",
        0x4 => "HARDWARE ERROR",
        0x5 => "ILLEGAL REQUEST",
        0x6 => "UNIT ATTENTION",
        0x7 => "DATA PROTECT",
        0x8 => "BLANK CHECK",
        0x9 => "VENDOR SPECIFIC",
        0xa => "COPY ABORTED",
        0xb => "ABORTED COMMAND",
        0xd => "VOLUME OVERFLOW",
        0xe => "MISCOMPARE",
        _ => "RESERVED",
    }
}

fn host_byte_name(host_status: u16) -> &'static str {
    match host_status {
        host::DID_NO_CONNECT => "DID_NO_CONNECT (could not connect to the target)",
        host::DID_BUS_BUSY => "DID_BUS_BUSY",
        host::DID_TIME_OUT => "DID_TIME_OUT",
        host::DID_BAD_TARGET => "DID_BAD_TARGET",
        host::DID_ABORT => "DID_ABORT",
        host::DID_PARITY => "DID_PARITY",
        host::DID_ERROR => "DID_ERROR",
        host::DID_RESET => "DID_RESET",
        host::DID_BAD_INTR => "DID_BAD_INTR",
        host::DID_PASSTHROUGH => "DID_PASSTHROUGH",
        host::DID_SOFT_ERROR => "DID_SOFT_ERROR",
        host::DID_IMM_RETRY => "DID_IMM_RETRY",
        host::DID_REQUEUE => "DID_REQUEUE",
        host::DID_TRANSPORT_DISRUPTED => "DID_TRANSPORT_DISRUPTED",
        host::DID_TRANSPORT_FAILFAST => "DID_TRANSPORT_FAILFAST (remote port gone)",
        _ => "unknown host byte",
    }
}

/// The verdict on one TEST UNIT READY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurVerdict {
    /// A final answer.
    Final(CheckResult),
    /// A transient condition (UNIT ATTENTION, ABORTED COMMAND, bus busy, requeue): send the
    /// command once more; if it persists the result is the enclosed one.
    Retry(CheckResult),
}

/// Interprets the outcome of a TEST UNIT READY from the fields `SG_IO` filled in.
///
/// `sense` is the part of the sense buffer the kernel wrote (`sb_len_wr` bytes).
pub fn interpret_tur(status: u8, host_status: u16, driver_status: u16, sense: &[u8]) -> TurVerdict {
    use TurVerdict::{Final, Retry};
    let final_ = |state, message: String| Final(CheckResult::new(state, message));

    // Transport first: if the command never reached the LUN, the status byte means nothing.
    match host_status {
        host::DID_OK => {}
        host::DID_TIME_OUT => {
            return final_(
                CheckState::Timeout,
                "TEST UNIT READY timed out in the host adapter (DID_TIME_OUT)".into(),
            );
        }
        host::DID_BUS_BUSY
        | host::DID_SOFT_ERROR
        | host::DID_IMM_RETRY
        | host::DID_REQUEUE
        | host::DID_TRANSPORT_DISRUPTED
        | host::DID_RESET => {
            return Retry(CheckResult::new(
                CheckState::Pending,
                format!(
                    "transient transport condition {} persists",
                    host_byte_name(host_status)
                ),
            ));
        }
        other => {
            return final_(
                CheckState::Down,
                format!(
                    "TEST UNIT READY failed in the transport: host byte 0x{other:02x} {}",
                    host_byte_name(other)
                ),
            );
        }
    }

    let driver_code = driver_status & driver::DRIVER_MASK;
    if driver_code == driver::DRIVER_TIMEOUT {
        return final_(
            CheckState::Timeout,
            "TEST UNIT READY timed out (DRIVER_TIMEOUT)".into(),
        );
    }
    let has_sense = !sense.is_empty() || driver_status & driver::DRIVER_SENSE != 0;

    match status & 0xfe {
        status::GOOD | status::CONDITION_MET if !has_sense && driver_code == driver::DRIVER_OK => {
            final_(CheckState::Up, "TEST UNIT READY: good".into())
        }
        status::GOOD | status::CONDITION_MET if !has_sense => final_(
            CheckState::Down,
            format!("TEST UNIT READY: driver error 0x{driver_status:02x}"),
        ),
        status::GOOD | status::CONDITION_MET | status::CHECK_CONDITION => interpret_sense(sense),
        status::BUSY | status::TASK_SET_FULL | status::ACA_ACTIVE | status::TASK_ABORTED => {
            Retry(CheckResult::new(
                CheckState::Pending,
                format!("target stays busy (SCSI status 0x{status:02x})"),
            ))
        }
        // The LUN answered; a reservation held by another initiator does not make the path bad.
        status::RESERVATION_CONFLICT => final_(
            CheckState::Up,
            "TEST UNIT READY: reservation conflict (the LUN answers)".into(),
        ),
        _ => final_(
            CheckState::Down,
            format!("TEST UNIT READY: unexpected SCSI status 0x{status:02x}"),
        ),
    }
}

/// Interprets the sense data of a CHECK CONDITION answer to TEST UNIT READY.
pub fn interpret_sense(sense: &[u8]) -> TurVerdict {
    use TurVerdict::{Final, Retry};
    let Some(s) = parse_sense(sense) else {
        return Final(CheckResult::new(
            CheckState::Down,
            format!(
                "CHECK CONDITION without usable sense data ({} bytes)",
                sense.len()
            ),
        ));
    };
    let described = format!(
        "sense {} ASC/ASCQ 0x{:02x}/0x{:02x}",
        sense_key_name(s.key),
        s.asc,
        s.ascq
    );
    let result = |state, what: &str| CheckResult::new(state, format!("{what} ({described})"));
    match (s.key, s.asc, s.ascq) {
        (key::NO_SENSE | key::RECOVERED_ERROR, _, _) => Final(result(CheckState::Up, "path ready")),
        (key::UNIT_ATTENTION, _, _) => Retry(result(
            CheckState::Pending,
            "unit attention persists after a retry",
        )),
        (key::ABORTED_COMMAND, _, _) => Retry(result(
            CheckState::Pending,
            "command aborted twice by the target",
        )),
        // LOGICAL UNIT NOT ACCESSIBLE, TARGET PORT IN STANDBY STATE.
        (key::NOT_READY, 0x04, 0x0b) => Final(result(
            CheckState::Ghost,
            "target port in ALUA standby state",
        )),
        // LOGICAL UNIT NOT ACCESSIBLE, ASYMMETRIC ACCESS STATE TRANSITION.
        (key::NOT_READY, 0x04, 0x0a) => Final(result(
            CheckState::Pending,
            "target port group in ALUA state transition",
        )),
        // LOGICAL UNIT NOT ACCESSIBLE, TARGET PORT IN UNAVAILABLE STATE.
        (key::NOT_READY, 0x04, 0x0c) => Final(result(
            CheckState::Down,
            "target port in ALUA unavailable state",
        )),
        // LOGICAL UNIT IS IN PROCESS OF BECOMING READY.
        (key::NOT_READY, 0x04, 0x01) => Final(result(
            CheckState::Pending,
            "logical unit is becoming ready",
        )),
        (key::NOT_READY, _, _) => Final(result(CheckState::Down, "logical unit not ready")),
        _ => Final(result(CheckState::Down, "TEST UNIT READY failed")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(key: u8, asc: u8, ascq: u8) -> Vec<u8> {
        let mut buf = vec![0u8; 18];
        buf[0] = 0x70;
        buf[2] = key;
        buf[7] = 10;
        buf[12] = asc;
        buf[13] = ascq;
        buf
    }

    fn descriptor(key: u8, asc: u8, ascq: u8) -> Vec<u8> {
        vec![0x72, key, asc, ascq, 0, 0, 0, 0]
    }

    fn state_of(verdict: &TurVerdict) -> (CheckState, bool) {
        match verdict {
            TurVerdict::Final(r) => (r.state, false),
            TurVerdict::Retry(r) => (r.state, true),
        }
    }

    #[test]
    fn parses_both_sense_formats() {
        let s = parse_sense(&fixed(key::NOT_READY, 0x04, 0x0b)).expect("fixed");
        assert_eq!((s.key, s.asc, s.ascq), (2, 0x04, 0x0b));
        let s = parse_sense(&descriptor(key::UNIT_ATTENTION, 0x29, 0x00)).expect("descriptor");
        assert_eq!((s.key, s.asc, s.ascq), (6, 0x29, 0));
        // Deferred errors (0x71 / 0x73) and the valid bit (0x80) parse the same way.
        let mut deferred = fixed(key::MEDIUM_ERROR, 0x11, 0x00);
        deferred[0] = 0xf1;
        assert_eq!(
            parse_sense(&deferred).map(|s| s.key),
            Some(key::MEDIUM_ERROR)
        );
    }

    #[test]
    fn short_or_garbage_sense() {
        assert_eq!(parse_sense(&[]), None);
        assert_eq!(parse_sense(&[0x70, 0]), None, "no sense key byte");
        assert_eq!(parse_sense(&[0x12, 0, 2, 0]), None, "unknown response code");
        // Fixed format cut before ASC: key only.
        let s = parse_sense(&[0x70, 0, 0x06, 0, 0, 0, 0, 0]).expect("short fixed");
        assert_eq!((s.key, s.asc, s.ascq), (6, 0, 0));
        // Additional length says ASC is not there even if the buffer is long.
        let mut buf = fixed(key::NOT_READY, 0x04, 0x0b);
        buf[7] = 2;
        assert_eq!(parse_sense(&buf).map(|s| s.asc), Some(0));
    }

    #[test]
    fn good_status_is_up() {
        let v = interpret_tur(status::GOOD, host::DID_OK, driver::DRIVER_OK, &[]);
        assert_eq!(state_of(&v), (CheckState::Up, false));
    }

    #[test]
    fn standby_is_ghost_in_both_formats() {
        for sense in [fixed(2, 0x04, 0x0b), descriptor(2, 0x04, 0x0b)] {
            let v = interpret_tur(
                status::CHECK_CONDITION,
                host::DID_OK,
                driver::DRIVER_SENSE,
                &sense,
            );
            assert_eq!(state_of(&v), (CheckState::Ghost, false), "{v:?}");
        }
    }

    #[test]
    fn alua_states_and_not_ready() {
        let cc = |sense: Vec<u8>| {
            state_of(&interpret_tur(
                status::CHECK_CONDITION,
                host::DID_OK,
                driver::DRIVER_SENSE,
                &sense,
            ))
        };
        assert_eq!(cc(fixed(2, 0x04, 0x0a)), (CheckState::Pending, false));
        assert_eq!(cc(fixed(2, 0x04, 0x0c)), (CheckState::Down, false));
        assert_eq!(cc(fixed(2, 0x04, 0x01)), (CheckState::Pending, false));
        assert_eq!(cc(fixed(2, 0x3a, 0x00)), (CheckState::Down, false));
        assert_eq!(
            cc(fixed(key::HARDWARE_ERROR, 0x44, 0)),
            (CheckState::Down, false)
        );
        assert_eq!(
            cc(fixed(key::RECOVERED_ERROR, 0x17, 1)),
            (CheckState::Up, false)
        );
        assert_eq!(cc(vec![]), (CheckState::Down, false), "no sense at all");
    }

    #[test]
    fn unit_attention_and_aborts_ask_for_a_retry() {
        let v = interpret_tur(
            status::CHECK_CONDITION,
            host::DID_OK,
            driver::DRIVER_SENSE,
            &fixed(key::UNIT_ATTENTION, 0x29, 0x00),
        );
        assert_eq!(state_of(&v), (CheckState::Pending, true));
        let TurVerdict::Retry(r) = v else {
            panic!("expected retry")
        };
        assert!(r.message.contains("UNIT ATTENTION"), "{}", r.message);
        let v = interpret_tur(
            status::CHECK_CONDITION,
            host::DID_OK,
            driver::DRIVER_SENSE,
            &descriptor(key::ABORTED_COMMAND, 0x47, 0),
        );
        assert_eq!(state_of(&v), (CheckState::Pending, true));
    }

    #[test]
    fn transport_failures() {
        let v = interpret_tur(0, host::DID_NO_CONNECT, 0, &[]);
        assert_eq!(state_of(&v), (CheckState::Down, false));
        let v = interpret_tur(0, host::DID_TRANSPORT_FAILFAST, 0, &[]);
        assert_eq!(state_of(&v), (CheckState::Down, false));
        let v = interpret_tur(0, host::DID_TIME_OUT, 0, &[]);
        assert_eq!(state_of(&v), (CheckState::Timeout, false));
        let v = interpret_tur(0, host::DID_TRANSPORT_DISRUPTED, 0, &[]);
        assert_eq!(state_of(&v), (CheckState::Pending, true));
        let v = interpret_tur(0, host::DID_OK, driver::DRIVER_TIMEOUT, &[]);
        assert_eq!(state_of(&v), (CheckState::Timeout, false));
        let v = interpret_tur(0, host::DID_OK, driver::DRIVER_ERROR, &[]);
        assert_eq!(state_of(&v), (CheckState::Down, false));
    }

    #[test]
    fn busy_and_reservation_conflict() {
        let v = interpret_tur(status::BUSY, host::DID_OK, 0, &[]);
        assert_eq!(state_of(&v), (CheckState::Pending, true));
        let v = interpret_tur(status::TASK_SET_FULL, host::DID_OK, 0, &[]);
        assert_eq!(state_of(&v), (CheckState::Pending, true));
        let v = interpret_tur(status::RESERVATION_CONFLICT, host::DID_OK, 0, &[]);
        assert_eq!(state_of(&v), (CheckState::Up, false));
    }
}
