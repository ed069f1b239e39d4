//! The gateway's global allocator: mimalloc, called through its plain `mi_malloc` family
//! whenever that already gives the alignment a layout asks for.
//!
//! Why not `mimalloc::MiMalloc` as it is: it sends *every* allocation through
//! `mi_malloc_aligned`. mimalloc v3 serves an aligned call from its fast path only when the
//! block is at most 1 KiB and its size class has a free block at hand; otherwise it takes the
//! generic path, which over-allocates (`size + align - 1`, so a 48-byte box takes a 64-byte
//! block) unless the rounded size is a power of two. Under callgrind that path ran 7.7 times
//! per proxied request at ~165 instructions each, ~2.5% of the request, on top of the
//! refills of the wrong size classes (`bash bench/instructions.sh`; the same finding is
//! reported upstream as purpleprotocol/mimalloc_rust#170).
//!
//! The rule: mimalloc's size classes are multiples of 8, and of 16 above 16, and a page's
//! first block is 16-aligned, so a block of any size `s` is aligned to the largest power of
//! two dividing `s`, up to 16. A layout whose alignment is at most 16 and divides its size
//! is therefore served by `mi_malloc`; any other goes to the `_aligned` entry point. The
//! tests below check the rule on every size up to 64 KiB and beyond.
//!
//! This crate is the one place in the workspace with `unsafe`: `GlobalAlloc` is an unsafe
//! trait. Each block forwards the caller's contract to mimalloc unchanged.

use core::ffi::c_void;
use libmimalloc_sys as mi;
use std::alloc::{GlobalAlloc, Layout};

/// mimalloc's `MI_MAX_ALIGN_SIZE`: what its plain entry points guarantee at most.
const PLAIN_ALIGN: usize = 16;

/// The global allocator (`#[global_allocator] static A: portcullis_alloc::Mimalloc = ...`).
pub struct Mimalloc;

/// Whether `mi_malloc`'s block for `size` bytes is aligned to `align`.
#[inline]
fn plain(size: usize, align: usize) -> bool {
    align <= PLAIN_ALIGN && size % align == 0
}

// SAFETY: every method forwards to mimalloc, whose blocks are valid for `size` bytes and
// aligned as asked (plain entry points only where `plain` holds, see the module docs), and
// `mi_free` / `mi_realloc*` accept any block mimalloc handed out, aligned or not.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: `layout.size()` is non-zero (GlobalAlloc's contract); see the impl comment.
        unsafe {
            if plain(layout.size(), layout.align()) {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe {
            if plain(layout.size(), layout.align()) {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (GlobalAlloc's contract).
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout`; the new block must keep
        // `layout.align()`, which `plain` decides for `new_size` as in `alloc`.
        unsafe {
            if plain(new_size, layout.align()) {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every block honours its layout's alignment, for every size up to 64 KiB (and a few
    /// large ones) and every alignment up to 4 KiB, through alloc, alloc_zeroed and realloc.
    #[test]
    fn blocks_are_aligned_as_asked() {
        let a = Mimalloc;
        let sizes = (1..=65_536usize).chain([1 << 20, (1 << 20) + 24, 3 << 20]);
        for size in sizes {
            for shift in 0..=12 {
                let align = 1usize << shift;
                let Ok(layout) = Layout::from_size_align(size, align) else {
                    continue;
                };
                // Only every 7th size for the larger alignments keeps the test quick.
                if shift > 4 && size % 7 != 0 {
                    continue;
                }
                // SAFETY: non-zero size; each block is freed once with its own layout.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null(), "{layout:?}");
                    assert_eq!(p as usize % align, 0, "alloc {layout:?}");
                    p.write_bytes(0xA5, size);
                    let grown = size + size / 2 + 8;
                    let q = a.realloc(p, layout, grown);
                    assert!(!q.is_null());
                    assert_eq!(q as usize % align, 0, "realloc {layout:?} to {grown}");
                    assert_eq!(*q.add(size - 1), 0xA5, "realloc kept the contents");
                    a.dealloc(q, Layout::from_size_align_unchecked(grown, align));
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0, "alloc_zeroed {layout:?}");
                    assert!((0..size).step_by(61).all(|i| *z.add(i) == 0));
                    a.dealloc(z, layout);
                }
            }
        }
    }
}
