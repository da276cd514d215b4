package forecast

import "syscall"

const hugePage = 2 << 20

// adviseHuge asks for transparent huge pages on the 2 MB-aligned interior of
// b. Failure is harmless: the memory just stays in small pages.
func adviseHuge(b []byte) {
	p := uintptr(unsafePointer(b))
	off := int((hugePage - p%hugePage) % hugePage)
	if off >= len(b) {
		return
	}
	b = b[off:]
	b = b[:len(b)/hugePage*hugePage]
	if len(b) > 0 {
		_ = syscall.Madvise(b, syscall.MADV_HUGEPAGE)
	}
}
