// Package safetensors is a small, dependency-free codec for the safetensors
// format (https://github.com/huggingface/safetensors):
//
//	8 bytes   little-endian uint64 N, the length of the header
//	N bytes   JSON object: name -> {"dtype", "shape", "data_offsets": [begin, end]},
//	          plus an optional "__metadata__" object of string -> string
//	rest      the tensor data, little-endian, offsets relative to the end of the header
//
// Read loads a whole file; Open gives random access to single tensors so that a
// large tensor can be decoded straight into its destination slice
// (File.ReadFloat32Into) without holding the file's bytes as well. Write is
// deterministic (sorted names, so equal inputs give byte-identical files) and
// atomic (temporary file in the same directory, fsync, rename).
package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strconv"

	"github.com/causalrm/causalrm/internal/atomicfile"
	"github.com/causalrm/causalrm/internal/floatbits"
)

// MetadataKey is the reserved header key holding the string metadata map.
const MetadataKey = "__metadata__"

// MaxHeaderSize bounds the JSON header (the reference implementation uses the same limit).
const MaxHeaderSize = 100 << 20

// MaxTensors bounds the number of tensors of a header, so that a small
// header cannot make a reader allocate per-tensor state without end.
const MaxTensors = 4096

// ErrFormat is wrapped by every error about malformed file contents.
var ErrFormat = errors.New("safetensors: malformed file")

// ErrDType is wrapped by conversion errors about an unsupported dtype.
var ErrDType = errors.New("safetensors: unsupported dtype")

var dtypeSizes = map[string]int{
	"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
	"I16": 2, "U16": 2, "F16": 2, "BF16": 2,
	"I32": 4, "U32": 4, "F32": 4,
	"I64": 8, "U64": 8, "F64": 8,
}

// DTypeSize returns the size in bytes of one element of dtype, or 0 if the
// dtype is unknown.
func DTypeSize(dtype string) int { return dtypeSizes[dtype] }

// Tensor is one named array: its dtype (e.g. "F32"), shape and raw
// little-endian bytes.
type Tensor struct {
	DType string
	Shape []int
	Data  []byte
}

// NumElements is the product of the shape (1 for a scalar).
func (t Tensor) NumElements() int {
	n, _ := numElements(t.Shape)
	return n
}

// Info describes a tensor in a file header. Begin and End are byte offsets
// relative to the start of the data section.
type Info struct {
	DType      string
	Shape      []int
	Begin, End int64
}

// NumElements is the product of the shape.
func (i Info) NumElements() int {
	n, _ := numElements(i.Shape)
	return n
}

func numElements(shape []int) (int, bool) {
	n := 1
	for _, d := range shape {
		if d < 0 {
			return 0, false
		}
		if d != 0 && n > math.MaxInt/d {
			return 0, false
		}
		n *= d
	}
	return n, true
}

var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// ---------------------------------------------------------------------------
// Reading

// File is an open safetensors file with a parsed, validated header.
type File struct {
	f         *os.File
	path      string
	dataStart int64
	infos     map[string]Info
	names     []string
	meta      map[string]string
}

// Open opens path and parses and validates its header. The tensor data is
// read on demand. Only regular files are opened: a FIFO, socket or device
// is refused before it is opened (reading one could block forever), a
// directory with an error saying so.
func Open(path string) (*File, error) {
	if err := CheckRegular(path); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	if !st.Mode().IsRegular() { // replaced since CheckRegular
		f.Close()
		return nil, fmt.Errorf("safetensors: %s: %s", path, NotRegular(st.Mode()))
	}
	var lenBuf [8]byte
	if _, err := f.ReadAt(lenBuf[:], 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("%w: %s: file too short for the header length (%d bytes)", ErrFormat, path, st.Size())
	}
	hlen := binary.LittleEndian.Uint64(lenBuf[:])
	if err := checkHeaderLen(path, hlen, st.Size()); err != nil {
		f.Close()
		return nil, err
	}
	hdr := make([]byte, hlen)
	if _, err := f.ReadAt(hdr, 8); err != nil {
		f.Close()
		return nil, fmt.Errorf("safetensors: %s: reading header: %w", path, err)
	}
	dataSize := st.Size() - 8 - int64(hlen)
	infos, names, meta, err := parseHeader(path, hdr, dataSize)
	if err != nil {
		f.Close()
		return nil, err
	}
	return &File{f: f, path: path, dataStart: 8 + int64(hlen), infos: infos, names: names, meta: meta}, nil
}

// CheckRegular returns an error unless path names a regular file (after
// following symbolic links). It does not open path, so that a FIFO or a
// device is never opened for reading.
func CheckRegular(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("safetensors: %s: %s", path, NotRegular(st.Mode()))
	}
	return nil
}

// NotRegular describes a file mode that is not a regular file's, e.g. "is a
// directory" or "is a named pipe (FIFO), not a regular file".
func NotRegular(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "is a directory"
	case m&os.ModeNamedPipe != 0:
		return "is a named pipe (FIFO), not a regular file"
	case m&os.ModeSocket != 0:
		return "is a socket, not a regular file"
	case m&os.ModeDevice != 0:
		return "is a device, not a regular file"
	}
	return fmt.Sprintf("is not a regular file (mode %v)", m)
}

// DataStart is the file offset of the data section (Info.Begin and End are
// relative to it).
func (f *File) DataStart() int64 { return f.dataStart }

// Close closes the underlying file.
func (f *File) Close() error { return f.f.Close() }

// Path is the path the file was opened with.
func (f *File) Path() string { return f.path }

// Names returns the tensor names in sorted order.
func (f *File) Names() []string { return append([]string(nil), f.names...) }

// Has reports whether the file holds a tensor called name.
func (f *File) Has(name string) bool { _, ok := f.infos[name]; return ok }

// Info returns the header entry of tensor name.
func (f *File) Info(name string) (Info, bool) {
	i, ok := f.infos[name]
	return i, ok
}

// Metadata returns the "__metadata__" map (nil when absent). Do not modify it.
func (f *File) Metadata() map[string]string { return f.meta }

func (f *File) info(name string) (Info, error) {
	i, ok := f.infos[name]
	if !ok {
		return Info{}, fmt.Errorf("safetensors: %s: no tensor %q", f.path, name)
	}
	return i, nil
}

// Tensor reads tensor name into a freshly allocated buffer.
func (f *File) Tensor(name string) (Tensor, error) {
	i, err := f.info(name)
	if err != nil {
		return Tensor{}, err
	}
	data := make([]byte, i.End-i.Begin)
	if _, err := f.f.ReadAt(data, f.dataStart+i.Begin); err != nil {
		return Tensor{}, fmt.Errorf("safetensors: %s: tensor %q: %w", f.path, name, err)
	}
	return Tensor{DType: i.DType, Shape: append([]int(nil), i.Shape...), Data: data}, nil
}

// chunkBytes is the scratch size used when converting while reading.
const chunkBytes = 1 << 20

// ReadFloat32Into decodes tensor name into dst, which must have exactly as
// many elements as the tensor. F32 data is read straight into dst's memory
// (no intermediate copy); other numeric dtypes are converted through a small
// scratch buffer. Accepted dtypes are those of Tensor.Float32s.
func (f *File) ReadFloat32Into(name string, dst []float32) error {
	i, err := f.info(name)
	if err != nil {
		return err
	}
	n := i.NumElements()
	if len(dst) != n {
		return fmt.Errorf("safetensors: %s: tensor %q has %d elements, destination %d", f.path, name, n, len(dst))
	}
	if i.DType == "F32" {
		b := floatbits.Float32Bytes(dst)
		if _, err := f.f.ReadAt(b, f.dataStart+i.Begin); err != nil {
			return fmt.Errorf("safetensors: %s: tensor %q: %w", f.path, name, err)
		}
		if !littleEndian {
			for k := range dst {
				dst[k] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*k:]))
			}
		}
		return nil
	}
	conv, ok := float32Decoders[i.DType]
	if !ok {
		return fmt.Errorf("%w %s for float32 (file %s, tensor %q)", ErrDType, i.DType, f.path, name)
	}
	size := dtypeSizes[i.DType]
	per := chunkBytes / size
	buf := make([]byte, min(per, n)*size)
	for k := 0; k < n; k += per {
		m := min(per, n-k)
		b := buf[:m*size]
		if _, err := f.f.ReadAt(b, f.dataStart+i.Begin+int64(k*size)); err != nil {
			return fmt.Errorf("safetensors: %s: tensor %q: %w", f.path, name, err)
		}
		conv(dst[k:k+m], b)
	}
	return nil
}

// Read loads every tensor of path. The returned tensors share one buffer
// holding the file's data section.
func Read(path string) (map[string]Tensor, map[string]string, error) {
	if err := CheckRegular(path); err != nil {
		return nil, nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("safetensors: %w", err)
	}
	return Decode(path, b)
}

// Decode parses a whole safetensors file held in b; name is used in errors.
// The returned tensors alias b.
func Decode(name string, b []byte) (map[string]Tensor, map[string]string, error) {
	if len(b) < 8 {
		return nil, nil, fmt.Errorf("%w: %s: file too short for the header length (%d bytes)", ErrFormat, name, len(b))
	}
	hlen := binary.LittleEndian.Uint64(b)
	if err := checkHeaderLen(name, hlen, int64(len(b))); err != nil {
		return nil, nil, err
	}
	data := b[8+hlen:]
	infos, _, meta, err := parseHeader(name, b[8:8+hlen], int64(len(data)))
	if err != nil {
		return nil, nil, err
	}
	out := make(map[string]Tensor, len(infos))
	for k, i := range infos {
		out[k] = Tensor{DType: i.DType, Shape: i.Shape, Data: data[i.Begin:i.End:i.End]}
	}
	return out, meta, nil
}

// checkHeaderLen checks the header length read from a file of size bytes
// (size >= 8) before anything is allocated from it.
func checkHeaderLen(path string, hlen uint64, size int64) error {
	if hlen > MaxHeaderSize {
		return fmt.Errorf("%w: %s: header length %d exceeds the limit %d (100 MiB)", ErrFormat, path, hlen, MaxHeaderSize)
	}
	if hlen > uint64(size-8) {
		return fmt.Errorf("%w: %s: header length %d exceeds the file size %d", ErrFormat, path, hlen, size)
	}
	return nil
}

type headerEntry struct {
	DType       *string  `json:"dtype"`
	Shape       *[]int64 `json:"shape"`
	DataOffsets *[]int64 `json:"data_offsets"`
}

func parseHeader(path string, hdr []byte, dataSize int64) (map[string]Info, []string, map[string]string, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrFormat, path, fmt.Sprintf(format, args...))
	}
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(hdr))
	if err := dec.Decode(&raw); err != nil {
		return nil, nil, nil, bad("header is not a JSON object: %v", err)
	}
	if raw == nil {
		return nil, nil, nil, bad("header is not a JSON object")
	}
	if rest := bytes.TrimRight(hdr[dec.InputOffset():], " \t\r\n\x00"); len(rest) > 0 {
		return nil, nil, nil, bad("trailing bytes after the header JSON")
	}
	n := len(raw)
	if _, ok := raw[MetadataKey]; ok {
		n--
	}
	if n > MaxTensors {
		return nil, nil, nil, bad("header lists %d tensors, more than the limit %d", n, MaxTensors)
	}
	var meta map[string]string
	infos := make(map[string]Info, len(raw))
	names := make([]string, 0, len(raw))
	for name, msg := range raw {
		if name == MetadataKey {
			if err := json.Unmarshal(msg, &meta); err != nil {
				return nil, nil, nil, bad("%s must map strings to strings: %v", MetadataKey, err)
			}
			continue
		}
		var e headerEntry
		if err := json.Unmarshal(msg, &e); err != nil {
			return nil, nil, nil, bad("tensor %q: bad header entry: %v", name, err)
		}
		if e.DType == nil || e.Shape == nil || e.DataOffsets == nil {
			return nil, nil, nil, bad("tensor %q: header entry needs dtype, shape and data_offsets", name)
		}
		size := dtypeSizes[*e.DType]
		if size == 0 {
			return nil, nil, nil, bad("tensor %q: unknown dtype %q", name, *e.DType)
		}
		shape := make([]int, len(*e.Shape))
		for k, d := range *e.Shape {
			if d < 0 || d > math.MaxInt32<<20 {
				return nil, nil, nil, bad("tensor %q: invalid shape %v", name, *e.Shape)
			}
			shape[k] = int(d)
		}
		n, ok := numElements(shape)
		if !ok || n > math.MaxInt64/size {
			return nil, nil, nil, bad("tensor %q: shape %v overflows", name, *e.Shape)
		}
		off := *e.DataOffsets
		if len(off) != 2 {
			return nil, nil, nil, bad("tensor %q: data_offsets must have 2 entries, got %d", name, len(off))
		}
		if off[0] < 0 || off[1] < off[0] || off[1] > dataSize {
			return nil, nil, nil, bad("tensor %q: data_offsets [%d, %d] out of range (data size %d)", name, off[0], off[1], dataSize)
		}
		if want := int64(n) * int64(size); off[1]-off[0] != want {
			return nil, nil, nil, bad("tensor %q: data_offsets [%d, %d] span %d bytes, shape %v of %s needs %d", name, off[0], off[1], off[1]-off[0], shape, *e.DType, want)
		}
		infos[name] = Info{DType: *e.DType, Shape: shape, Begin: off[0], End: off[1]}
		names = append(names, name)
	}
	sort.Strings(names)
	// Tensors must not overlap.
	byOff := append([]string(nil), names...)
	sort.Slice(byOff, func(a, b int) bool {
		ia, ib := infos[byOff[a]], infos[byOff[b]]
		if ia.Begin != ib.Begin {
			return ia.Begin < ib.Begin
		}
		return ia.End < ib.End
	})
	for k := 1; k < len(byOff); k++ {
		prev, cur := infos[byOff[k-1]], infos[byOff[k]]
		if cur.Begin < prev.End {
			return nil, nil, nil, bad("tensors %q and %q overlap", byOff[k-1], byOff[k])
		}
	}
	return infos, names, meta, nil
}

// ---------------------------------------------------------------------------
// Writing

// Encode writes tensors and meta in safetensors format to w. Names are laid
// out in sorted order and the header is padded with spaces to a multiple of
// 8 bytes, so equal inputs give identical bytes.
func Encode(w io.Writer, tensors map[string]Tensor, meta map[string]string) error {
	hdr, names, err := buildHeader(tensors, meta)
	if err != nil {
		return err
	}
	var lenBuf [8]byte
	binary.LittleEndian.PutUint64(lenBuf[:], uint64(len(hdr)))
	if _, err := w.Write(lenBuf[:]); err != nil {
		return err
	}
	if _, err := w.Write(hdr); err != nil {
		return err
	}
	for _, name := range names {
		if _, err := w.Write(tensors[name].Data); err != nil {
			return err
		}
	}
	return nil
}

func buildHeader(tensors map[string]Tensor, meta map[string]string) ([]byte, []string, error) {
	names := make([]string, 0, len(tensors))
	for name, t := range tensors {
		if name == "" || name == MetadataKey {
			return nil, nil, fmt.Errorf("safetensors: invalid tensor name %q", name)
		}
		size := dtypeSizes[t.DType]
		if size == 0 {
			return nil, nil, fmt.Errorf("%w %q (tensor %q)", ErrDType, t.DType, name)
		}
		n, ok := numElements(t.Shape)
		if !ok {
			return nil, nil, fmt.Errorf("safetensors: tensor %q: invalid shape %v", name, t.Shape)
		}
		if len(t.Data) != n*size {
			return nil, nil, fmt.Errorf("safetensors: tensor %q: shape %v of %s needs %d bytes, have %d", name, t.Shape, t.DType, n*size, len(t.Data))
		}
		names = append(names, name)
	}
	sort.Strings(names)
	var h bytes.Buffer
	h.WriteByte('{')
	first := true
	if len(meta) > 0 {
		keys := make([]string, 0, len(meta))
		for k := range meta {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		h.WriteString(`"` + MetadataKey + `":{`)
		for i, k := range keys {
			if i > 0 {
				h.WriteByte(',')
			}
			writeJSONString(&h, k)
			h.WriteByte(':')
			writeJSONString(&h, meta[k])
		}
		h.WriteByte('}')
		first = false
	}
	var off int64
	for _, name := range names {
		t := tensors[name]
		if !first {
			h.WriteByte(',')
		}
		first = false
		writeJSONString(&h, name)
		h.WriteString(`:{"dtype":`)
		writeJSONString(&h, t.DType)
		h.WriteString(`,"shape":[`)
		for i, d := range t.Shape {
			if i > 0 {
				h.WriteByte(',')
			}
			h.WriteString(strconv.Itoa(d))
		}
		end := off + int64(len(t.Data))
		fmt.Fprintf(&h, `],"data_offsets":[%d,%d]}`, off, end)
		off = end
	}
	h.WriteByte('}')
	for (8+h.Len())%8 != 0 {
		h.WriteByte(' ')
	}
	return h.Bytes(), names, nil
}

func writeJSONString(b *bytes.Buffer, s string) {
	enc, _ := json.Marshal(s) // cannot fail for a string
	b.Write(enc)
}

// Write writes tensors and meta to path atomically: the bytes go to a
// temporary file in the same directory, which is fsynced and renamed over
// path. Output is deterministic (see Encode).
func Write(path string, tensors map[string]Tensor, meta map[string]string) error {
	if _, _, err := buildHeader(tensors, meta); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return atomicfile.Write(path, func(w io.Writer) error { return Encode(w, tensors, meta) })
}
