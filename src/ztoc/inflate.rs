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
}

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
        Ok(Inflater { strm })
    }

    /// Resets for a new stream (the next gzip member), keeping allocations.
    pub(crate) fn reset(&mut self, window_bits: i32) -> Result<(), String> {
        // SAFETY: initialised stream.
        let ret = unsafe { z::inflateReset2(&mut *self.strm, window_bits) };
        if ret != z::Z_OK {
            return Err(format!("inflateReset2 failed with code {ret}"));
        }
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
            _ => Status::Error(self.message(ret)),
        };
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
