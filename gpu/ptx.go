package gpu

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"
)

// ptxParams lists each .entry of a PTX module with its parameters' PTX
// types (".u64", ".u32", ".f64", ...), in order. The host backend checks
// every launch's arguments against it, so an argument list that does not
// match the compiled kernel fails without a GPU.
func ptxParams(ptx []byte) (map[string][]string, error) {
	out := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(ptx))
	var cur string
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, ".visible .entry "):
			cur = strings.TrimSuffix(strings.TrimPrefix(line, ".visible .entry "), "(")
			out[cur] = []string{}
		case cur != "" && strings.HasPrefix(line, ".param "):
			f := strings.Fields(line)
			if len(f) < 3 {
				return nil, fmt.Errorf("gpu: PTX entry %s: bad parameter line %q", cur, line)
			}
			out[cur] = append(out[cur], f[1])
		case cur != "" && strings.HasPrefix(line, ")"):
			cur = ""
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("gpu: no .entry in the PTX module")
	}
	return out, sc.Err()
}

// checkArgs reports whether args fit a kernel's PTX parameter types: a
// pointer (Ptr) for .u64/.b64, int32 for .u32/.s32/.b32, float64 for .f64
// and float32 for .f32.
func checkArgs(kernel string, params []string, args []any) error {
	if len(args) != len(params) {
		return fmt.Errorf("gpu: kernel %s takes %d arguments, got %d", kernel, len(params), len(args))
	}
	for i, a := range args {
		var ok bool
		switch params[i] {
		case ".u64", ".b64", ".s64":
			_, ok = a.(Ptr)
		case ".u32", ".s32", ".b32":
			_, ok = a.(int32)
		case ".f64":
			_, ok = a.(float64)
		case ".f32":
			_, ok = a.(float32)
		}
		if !ok {
			return fmt.Errorf("gpu: kernel %s argument %d is %T, the PTX declares %s", kernel, i, a, params[i])
		}
	}
	return nil
}
