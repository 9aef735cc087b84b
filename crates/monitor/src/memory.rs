//! A monitor lives as long as its pod and is idle nearly all that time, but
//! creating a container with libcontainer is deep and allocation-heavy: it
//! touches ~100 kB of stack and leaves freed heap behind. Both are given
//! back to the kernel after each such operation, so that every pod costs
//! what an idle monitor needs, not what its busiest moment needed.
#![allow(unsafe_code)]

/// Stack kept resident below the current frame (the event loop's own
/// calls, signal delivery, the ABI's red zone).
const MARGIN: usize = 16 * 1024;

/// The lowest address of the main thread's stack mapping, read each time:
/// the mapping grows down as deep calls touch it.
fn stack_low() -> Option<usize> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let line = maps.lines().find(|l| l.ends_with("[stack]"))?;
    let range = line.split_whitespace().next()?;
    usize::from_str_radix(range.split('-').next()?, 16).ok()
}

/// Returns freed heap and the unused part of the stack to the kernel.
/// Must be called from the main thread (the only one a monitor has).
#[inline(never)]
pub fn give_back() {
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe {
        libc::malloc_trim(0);
    }
    let Some(low) = stack_low() else {
        return;
    };
    let marker = 0u8;
    let sp = std::ptr::addr_of!(marker) as usize;
    let page = rustix::param::page_size();
    let end = sp.saturating_sub(MARGIN) & !(page - 1);
    if end > low {
        // SAFETY: [low, end) lies in the main thread's stack mapping, below
        // the current frame by MARGIN: no live frame, local or red zone is
        // there (the stack grows down and this is the deepest frame now).
        // MADV_DONTNEED only drops the pages; touching them again later
        // maps fresh zero pages, which is what an unused stack holds.
        unsafe {
            libc::madvise(low as *mut libc::c_void, end - low, libc::MADV_DONTNEED);
        }
    }
}
