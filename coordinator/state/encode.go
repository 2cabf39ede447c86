package state

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// ErrCorrupt is returned for undecodable snapshots and commands.
var ErrCorrupt = errors.New("corrupt encoding")

const (
	snapshotMagic   = "CRMS"
	snapshotVersion = 1
	commandVersion  = 1
)

// Encode writes the state as deterministic bytes: a header, the JSON of the
// state (its slices are sorted, it has no maps) and then the raw checkpoint
// and upload data, so binary blobs are not base64-inflated.
func (s *State) Encode(w io.Writer) error {
	js, err := json.Marshal(s)
	if err != nil {
		return err
	}
	var hdr []byte
	hdr = append(hdr, snapshotMagic...)
	hdr = append(hdr, snapshotVersion)
	hdr = binary.AppendUvarint(hdr, uint64(len(js)))
	if _, err := w.Write(hdr); err != nil {
		return err
	}
	if _, err := w.Write(js); err != nil {
		return err
	}
	blobs := make([][]byte, 0, len(s.Blobs)+len(s.Uploads))
	for _, b := range s.Blobs {
		blobs = append(blobs, b.Data)
	}
	for _, u := range s.Uploads {
		blobs = append(blobs, u.Data)
	}
	for _, b := range blobs {
		if _, err := w.Write(binary.AppendUvarint(nil, uint64(len(b)))); err != nil {
			return err
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	return nil
}

// MarshalBinary is Encode into a byte slice.
func (s *State) MarshalBinary() ([]byte, error) {
	var b bytes.Buffer
	err := s.Encode(&b)
	return b.Bytes(), err
}

type byteReader interface {
	io.Reader
	io.ByteReader
}

// Decode reads a state written by Encode.
func Decode(r io.Reader) (*State, error) {
	br, ok := r.(byteReader)
	if !ok {
		br = bufioReader(r)
	}
	magic := make([]byte, len(snapshotMagic)+1)
	if _, err := io.ReadFull(br, magic); err != nil {
		return nil, fmt.Errorf("%w: snapshot header: %v", ErrCorrupt, err)
	}
	if string(magic[:4]) != snapshotMagic || magic[4] != snapshotVersion {
		return nil, fmt.Errorf("%w: not a version %d state snapshot", ErrCorrupt, snapshotVersion)
	}
	js, err := readChunk(br)
	if err != nil {
		return nil, fmt.Errorf("%w: snapshot body: %v", ErrCorrupt, err)
	}
	s := new(State)
	if err := json.Unmarshal(js, s); err != nil {
		return nil, fmt.Errorf("%w: snapshot body: %v", ErrCorrupt, err)
	}
	for i := range s.Blobs {
		if s.Blobs[i].Data, err = readChunk(br); err != nil {
			return nil, fmt.Errorf("%w: checkpoint %d data: %v", ErrCorrupt, s.Blobs[i].ID, err)
		}
	}
	for i := range s.Uploads {
		if s.Uploads[i].Data, err = readChunk(br); err != nil {
			return nil, fmt.Errorf("%w: upload %s data: %v", ErrCorrupt, s.Uploads[i].ID, err)
		}
		if int64(len(s.Uploads[i].Data)) != s.Uploads[i].Size {
			return nil, fmt.Errorf("%w: upload %s has %d bytes, header says %d", ErrCorrupt, s.Uploads[i].ID, len(s.Uploads[i].Data), s.Uploads[i].Size)
		}
	}
	return s, nil
}

// UnmarshalBinary replaces s with the decoded state.
func (s *State) UnmarshalBinary(b []byte) error {
	d, err := Decode(bytes.NewReader(b))
	if err != nil {
		return err
	}
	*s = *d
	return nil
}

const maxChunk = 1 << 40

func readChunk(br byteReader) ([]byte, error) {
	n, err := binary.ReadUvarint(br)
	if err != nil {
		return nil, err
	}
	if n > maxChunk {
		return nil, fmt.Errorf("length %d too large", n)
	}
	// Grow as data arrives rather than trusting the length up front:
	// start with what a small chunk needs and double, so that a chunk's
	// buffers total about 3x its bytes at most (plus 512), however many
	// chunks there are.
	b := make([]byte, min(n, 512))
	read := 0
	for {
		if _, err := io.ReadFull(br, b[read:]); err != nil {
			return nil, err
		}
		if read = len(b); uint64(read) == n {
			return b, nil
		}
		b = append(b, make([]byte, min(n-uint64(read), uint64(read)))...)
	}
}

// EncodeCommand encodes a command: a version byte, the JSON of the command
// and its raw Data.
func EncodeCommand(c Command) ([]byte, error) {
	js, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, 1+binary.MaxVarintLen64+len(js)+len(c.Data))
	b = append(b, commandVersion)
	b = binary.AppendUvarint(b, uint64(len(js)))
	b = append(b, js...)
	return append(b, c.Data...), nil
}

// DecodeCommand decodes EncodeCommand's bytes. Data aliases b.
func DecodeCommand(b []byte) (Command, error) {
	var c Command
	if len(b) < 2 || b[0] != commandVersion {
		return c, fmt.Errorf("%w: command header", ErrCorrupt)
	}
	n, k := binary.Uvarint(b[1:])
	if k <= 0 || uint64(len(b)-1-k) < n {
		return c, fmt.Errorf("%w: command length", ErrCorrupt)
	}
	js := b[1+k : 1+k+int(n)]
	if err := json.Unmarshal(js, &c); err != nil {
		return c, fmt.Errorf("%w: command: %v", ErrCorrupt, err)
	}
	if rest := b[1+k+int(n):]; len(rest) > 0 {
		c.Data = rest
	}
	return c, nil
}
