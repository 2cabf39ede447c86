package gpu

import "testing"

// cudaForTest opens CUDA device 0, or returns nil (and logs why) where
// there is none; the GPU half of each test then does not run.
func cudaForTest(t *testing.T) *Device {
	t.Helper()
	d, err := OpenCUDA(0, "")
	if err != nil {
		t.Logf("no CUDA device, GPU half skipped: %v", err)
		return nil
	}
	t.Cleanup(func() { d.Close() })
	return d
}
