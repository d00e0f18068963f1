//! Wine: Windows's API on another OS's kernel. The agent built for
//! Windows runs under it (`just wine`), and then the stack under test is
//! the host kernel's, reached through Wine's Winsock: a stack of its own
//! for comparisons, named `wine`, not `windows`.

use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleA, GetProcAddress};

/// Wine's version, if this process runs under Wine: its ntdll exports
/// `wine_get_version`, which Windows's does not.
pub fn version() -> Option<String> {
    // SAFETY: a NUL-terminated module name; ntdll is loaded in every
    // process, and the handle is not freed.
    let ntdll = unsafe { GetModuleHandleA(c"ntdll.dll".as_ptr().cast()) };
    if ntdll.is_null() {
        return None;
    }
    // SAFETY: a NUL-terminated export name on a loaded module.
    let found = unsafe { GetProcAddress(ntdll, c"wine_get_version".as_ptr().cast()) }?;
    // SAFETY: Wine declares it `const char *wine_get_version(void)`
    // (cdecl, which is the only convention on x86_64).
    let get: unsafe extern "C" fn() -> *const std::ffi::c_char =
        unsafe { std::mem::transmute(found) };
    // SAFETY: as declared above; it returns a static string.
    let v = unsafe { get() };
    if v.is_null() {
        return None;
    }
    // SAFETY: a NUL-terminated static string.
    Some(
        unsafe { std::ffi::CStr::from_ptr(v) }
            .to_string_lossy()
            .into_owned(),
    )
}
