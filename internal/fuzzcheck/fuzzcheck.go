// Package fuzzcheck holds what the fuzz targets of several packages share:
// measuring how much a decode allocates, to hold it to a bound stated
// relative to its input.
package fuzzcheck

import "runtime"

// Alloc runs prepare (if set) and then fn, and returns the bytes fn
// allocated: the process's TotalAlloc delta. That counts other goroutines
// too (none run in a fuzz worker, but a test's leftovers may when the
// corpus runs under go test), so a delta over limit is measured again,
// after prepare again, and the smaller one returned. fn must be repeatable.
func Alloc(limit uint64, prepare, fn func()) uint64 {
	var least uint64
	for try := 0; try < 2; try++ {
		if prepare != nil {
			prepare()
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		fn()
		runtime.ReadMemStats(&after)
		n := after.TotalAlloc - before.TotalAlloc
		if try == 0 || n < least {
			least = n
		}
		if least <= limit {
			break
		}
	}
	return least
}
