//! A small safe wrapper over zlib's C API as implemented by zlib-rs (`libz-rs-sys`).
//!
//! We need what `flate2` does not expose: `Z_BLOCK` (stop at every deflate block
//! boundary), the `data_type` bits that say where the inflater stopped and how many bits
//! of the last byte are still unused, `inflatePrime` and `inflateSetDictionary`.

use libz_rs_sys as z;
use std::ffi::CStr;

/// zlib window bits: raw deflate with a 32 KiB window.
pub(crate) const RAW: i32 = -15;
/// zlib window bits: gzip wrapper only (not zlib), 32 KiB window.
pub(crate) const GZIP: i32 = 15 + 16;

/// What one `inflate` call did.
pub(crate) struct Step {
    pub consumed: usize,
    pub produced: usize,
    pub status: Status,
    /// zlib's `data_type` after the call.
    pub data_type: i32,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Status {
    Ok,
    StreamEnd,
    /// No progress was possible (needs more input or more output space).
    BufError,
    Error(String),
}

/// An initialised inflate stream. Boxed because zlib keeps a pointer back to the
/// `z_stream` and checks it on every call: it must never move.
pub(crate) struct Inflater {
    strm: Box<z::z_stream>,
    /// An `inflate` call of this stream already failed (see [`FAST_PATH_LOST_MESSAGE`]).
    failed: bool,
}

/// What zlib-rs (0.6) says when `inflate` is called in its error state. Its fast decoder
/// (`inflate_fast`, used while at least 258 bytes of output room and 15 of input
/// remain) records the real message ("invalid literal/length code", "invalid distance
/// code", "invalid distance too far back") and enters the error state, but the same
/// `inflate` call then runs the error state's handler, which overwrites that message
/// with this one. We never call `inflate` again after an error, so on a first error this
/// text means one of those three.
const FAST_PATH_LOST_MESSAGE: &str = "repeated call with bad state";

/// What we report instead of [`FAST_PATH_LOST_MESSAGE`] on a stream's first error.
const FAST_PATH_ERROR: &str = "invalid deflate data: an invalid literal/length code, an invalid distance code or a distance too far back (zlib-rs's fast decoder does not say which)";

// SAFETY: the stream owns its state exclusively; nothing is shared between threads.
unsafe impl Send for Inflater {}

impl Inflater {
    pub(crate) fn new(window_bits: i32) -> Result<Self, String> {
        let mut strm: Box<z::z_stream> = Box::default();
        // SAFETY: strm is a valid, default (zeroed allocator fields) z_stream that
        // does not move afterwards (boxed).
        let ret = unsafe {
            z::inflateInit2_(
                &mut *strm,
                window_bits,
                z::zlibVersion(),
                std::mem::size_of::<z::z_stream>() as i32,
            )
        };
        if ret != z::Z_OK {
            return Err(format!("inflateInit2 failed with code {ret}"));
        }
        Ok(Inflater {
            strm,
            failed: false,
        })
    }

    /// Resets for a new stream (the next gzip member), keeping allocations.
    pub(crate) fn reset(&mut self, window_bits: i32) -> Result<(), String> {
        // SAFETY: initialised stream.
        let ret = unsafe { z::inflateReset2(&mut *self.strm, window_bits) };
        if ret != z::Z_OK {
            return Err(format!("inflateReset2 failed with code {ret}"));
        }
        self.failed = false;
        Ok(())
    }

    /// Feeds `bits` (1..=7) bits of `value` before the next input byte.
    pub(crate) fn prime(&mut self, bits: u8, value: u8) -> Result<(), String> {
        // SAFETY: initialised stream.
        let ret = unsafe { z::inflatePrime(&mut *self.strm, i32::from(bits), i32::from(value)) };
        if ret != z::Z_OK {
            return Err(format!("inflatePrime failed with code {ret}"));
        }
        Ok(())
    }

    /// Sets the 32 KiB of history a raw stream may refer back to.
    pub(crate) fn set_dictionary(&mut self, dict: &[u8]) -> Result<(), String> {
        // SAFETY: initialised stream; dict is valid for its length during the call.
        let ret =
            unsafe { z::inflateSetDictionary(&mut *self.strm, dict.as_ptr(), dict.len() as u32) };
        if ret != z::Z_OK {
            return Err(format!("inflateSetDictionary failed with code {ret}"));
        }
        Ok(())
    }

    /// One `inflate` call. `flush` is `Z_BLOCK` or `Z_NO_FLUSH`.
    pub(crate) fn inflate(&mut self, input: &[u8], output: &mut [u8], flush: i32) -> Step {
        // zlib counts in u32: never hand it more than that.
        let in_len = input.len().min(u32::MAX as usize);
        let out_len = output.len().min(u32::MAX as usize);
        let strm = &mut *self.strm;
        strm.next_in = input.as_ptr();
        strm.avail_in = in_len as u32;
        strm.next_out = output.as_mut_ptr();
        strm.avail_out = out_len as u32;
        // SAFETY: next_in/next_out point into live slices of the stated lengths, which
        // outlive the call; zlib does not keep these pointers beyond it (we reset them).
        let ret = unsafe { z::inflate(strm, flush) };
        let consumed = in_len - strm.avail_in as usize;
        let produced = out_len - strm.avail_out as usize;
        strm.next_in = std::ptr::null();
        strm.avail_in = 0;
        strm.next_out = std::ptr::null_mut();
        strm.avail_out = 0;
        let status = match ret {
            z::Z_OK => Status::Ok,
            z::Z_STREAM_END => Status::StreamEnd,
            z::Z_BUF_ERROR => Status::BufError,
            z::Z_NEED_DICT => Status::Error("a preset dictionary is required".into()),
            _ => {
                let message = self.message(ret);
                Status::Error(if message == FAST_PATH_LOST_MESSAGE && !self.failed {
                    FAST_PATH_ERROR.into()
                } else {
                    message
                })
            }
        };
        if matches!(status, Status::Error(_)) {
            self.failed = true;
        }
        Step {
            consumed,
            produced,
            status,
            data_type: self.strm.data_type,
        }
    }

    fn message(&self, ret: i32) -> String {
        if self.strm.msg.is_null() {
            format!("zlib error code {ret}")
        } else {
            // SAFETY: zlib sets msg to a static NUL-terminated string.
            unsafe { CStr::from_ptr(self.strm.msg) }
                .to_string_lossy()
                .into_owned()
        }
    }
}

impl Drop for Inflater {
    fn drop(&mut self) {
        // SAFETY: initialised stream, ended exactly once.
        unsafe {
            z::inflateEnd(&mut *self.strm);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random raw deflate streams, each inflated in one call with room enough for
    /// zlib-rs's fast decoder: the first error never carries the error-state message.
    #[test]
    fn first_error_of_the_fast_decoder_names_the_cause() {
        let mut out = vec![0u8; 1 << 20];
        let (mut fast_path_errors, mut errors) = (0, 0);
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..200 {
            let mut data = Vec::with_capacity(4096);
            while data.len() < 4096 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                data.extend_from_slice(&x.to_le_bytes());
            }
            let mut inflater = Inflater::new(RAW).unwrap();
            let step = inflater.inflate(&data, &mut out, z::Z_NO_FLUSH);
            if let Status::Error(message) = step.status {
                errors += 1;
                assert!(!message.contains(FAST_PATH_LOST_MESSAGE), "{message}");
                fast_path_errors += usize::from(message == FAST_PATH_ERROR);
                // A call after the error reports the error state as it is.
                let again = inflater.inflate(&data, &mut out, z::Z_NO_FLUSH);
                assert_eq!(again.status, Status::Error(FAST_PATH_LOST_MESSAGE.into()));
            }
        }
        assert!(
            errors > 0 && fast_path_errors > 0,
            "{errors} errors, {fast_path_errors} from the fast decoder"
        );
    }
}
