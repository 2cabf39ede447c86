// The checkpoint commands of Apply: put-checkpoint-chunk and
// commit-checkpoint.

package state

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

func (s *State) putChunk(c Command) error {
	if c.UploadID == "" {
		return argErr("checkpoint chunk without an upload id")
	}
	if c.Offset < 0 {
		return argErr("upload %s: chunk at offset %d", c.UploadID, c.Offset)
	}
	if err := s.needJob(); err != nil {
		return err
	}
	for _, b := range s.Blobs {
		if b.UploadID == c.UploadID {
			return nil // already committed
		}
	}
	i := -1
	for k, u := range s.Uploads {
		if u.ID == c.UploadID {
			i = k
		}
	}
	if i < 0 {
		if c.Offset != 0 {
			return argErr("upload %s: first chunk at offset %d", c.UploadID, c.Offset)
		}
		if len(s.Uploads) >= MaxUploads {
			s.Uploads = append([]Upload(nil), s.Uploads[len(s.Uploads)-MaxUploads+1:]...)
		}
		s.Uploads = append(s.Uploads, Upload{ID: c.UploadID, Time: c.Time})
		i = len(s.Uploads) - 1
	}
	u := &s.Uploads[i]
	switch {
	case c.Offset == u.Size:
		u.Data = append(u.Data, c.Data...)
		u.Size = int64(len(u.Data))
	case c.Offset <= u.Size-int64(len(c.Data)):
		// Replay of a chunk already applied: the same bytes.
		if end := c.Offset + int64(len(c.Data)); end > int64(len(u.Data)) || !bytes.Equal(u.Data[c.Offset:end], c.Data) {
			return fmt.Errorf("%w: upload %s: the chunk at offset %d differs from the bytes it replays", ErrConflict, c.UploadID, c.Offset)
		}
	default:
		return argErr("upload %s: chunk at offset %d, have %d bytes", c.UploadID, c.Offset, u.Size)
	}
	return nil
}

func (s *State) commitCheckpoint(c Command) (any, error) {
	rec := c.Checkpoint
	if rec == nil {
		return nil, argErr("commit without a checkpoint record")
	}
	if err := s.needJob(); err != nil {
		return nil, err
	}
	if c.UploadID != "" {
		for _, b := range s.Blobs {
			if b.UploadID == c.UploadID {
				r, _ := s.Checkpoint(b.ID)
				return r, nil // replay
			}
		}
	}
	r := *rec
	var blob *Blob
	switch {
	case r.Location == LocationRaft:
		i := -1
		for k, u := range s.Uploads {
			if u.ID == c.UploadID {
				i = k
			}
		}
		if i < 0 {
			return nil, argErr("commit of unknown upload %q", c.UploadID)
		}
		u := s.Uploads[i]
		if u.Size != r.Size {
			return nil, fmt.Errorf("%w: checkpoint has %d bytes, record says %d", ErrChecksumMismatch, u.Size, r.Size)
		}
		sum := sha256.Sum256(u.Data)
		if got := hex.EncodeToString(sum[:]); !strings.EqualFold(got, r.SHA256) {
			return nil, fmt.Errorf("%w: checkpoint sha256 is %s, record says %s", ErrChecksumMismatch, got, r.SHA256)
		}
		s.Uploads = append(s.Uploads[:i:i], s.Uploads[i+1:]...)
		blob = &Blob{UploadID: u.ID, Data: u.Data}
	case strings.HasPrefix(r.Location, "dir:") && len(r.Location) > 4:
	default:
		return nil, argErr("checkpoint location %q: want %q or \"dir:<path>\"", r.Location, LocationRaft)
	}
	s.NextCheckpointID++
	r.ID = s.NextCheckpointID
	r.Time = c.Time
	s.Checkpoints = append(s.Checkpoints, r)
	if blob != nil {
		blob.ID = r.ID
		s.Blobs = append(s.Blobs, *blob)
	}
	keep := s.Job.CheckpointKeep
	if keep < 1 {
		keep = DefaultCheckpointKeep
	}
	if n := len(s.Checkpoints) - keep; n > 0 {
		oldest := s.Checkpoints[n].ID
		s.Checkpoints = append([]CheckpointRecord(nil), s.Checkpoints[n:]...)
		var blobs []Blob
		for _, b := range s.Blobs {
			if b.ID >= oldest {
				blobs = append(blobs, b)
			}
		}
		s.Blobs = blobs
	}
	return r, nil
}
