// The Client's checkpoint transfer: in the coordinator group (chunked
// through raft) or as a file in ClientConfig.CheckpointDir.

package coordinator

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/causalrm/causalrm/coordinator/state"
	pb "github.com/causalrm/causalrm/proto/coordinatorpb"
)

func hexSHA(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// writeAtomic writes data to dir/name via a temp file, fsync and rename.
func writeAtomic(dir, name string, data []byte) error {
	f, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// PutCheckpoint stores a checkpoint: in the coordinator group (chunked raft
// entries), or as a file in CheckpointDir with only its record replicated.
// rec's Size, SHA256 and Location are filled in; its ID is assigned by the
// group.
func (c *Client) PutCheckpoint(ctx context.Context, rec state.CheckpointRecord, data []byte) error {
	rec.Size = int64(len(data))
	rec.SHA256 = hexSHA(data)
	rec.Location = state.LocationRaft
	if c.cfg.CheckpointDir != "" {
		if err := os.MkdirAll(c.cfg.CheckpointDir, 0o755); err != nil {
			return err
		}
		name := fmt.Sprintf("checkpoint-%012d-%s.bin", rec.GlobalStep, rec.SHA256[:16])
		if err := writeAtomic(c.cfg.CheckpointDir, name, data); err != nil {
			return fmt.Errorf("checkpoint file: %w", err)
		}
		rec.Location = "dir:" + name
		data = nil
	}
	return c.do(ctx, func(ctx context.Context, cl pb.CoordinatorClient) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stream, err := cl.PutCheckpoint(ctx)
		if err != nil {
			return err
		}
		rest := data
		first := &pb.CheckpointChunk{Record: recToPB(rec)}
		for {
			k := min(len(rest), chunkBytes)
			m := &pb.CheckpointChunk{Data: rest[:k]}
			if first != nil {
				first.Data, m, first = rest[:k], first, nil
			}
			if err := stream.Send(m); err != nil {
				if errors.Is(err, io.EOF) {
					_, err = stream.CloseAndRecv()
				}
				return err
			}
			rest = rest[k:]
			if len(rest) == 0 {
				break
			}
		}
		_, err = stream.CloseAndRecv()
		return err
	})
}

// LatestCheckpoint returns the newest checkpoint and its data (sha256
// verified), ErrNoCheckpoint if there is none.
func (c *Client) LatestCheckpoint(ctx context.Context) (state.CheckpointRecord, []byte, error) {
	return c.GetCheckpoint(ctx, 0)
}

// GetCheckpoint returns checkpoint id (0: the latest) and its data.
func (c *Client) GetCheckpoint(ctx context.Context, id uint64) (state.CheckpointRecord, []byte, error) {
	var rec state.CheckpointRecord
	var data []byte
	err := c.do(ctx, func(ctx context.Context, cl pb.CoordinatorClient) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stream, err := cl.GetCheckpoint(ctx, &pb.GetCheckpointRequest{Id: id})
		if err != nil {
			return err
		}
		data = data[:0]
		for first := true; ; first = false {
			m, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			if first {
				rec = recFromPB(m.Record)
				if rec.Location == state.LocationRaft {
					data = make([]byte, 0, rec.Size)
				}
			}
			data = append(data, m.Data...)
		}
	})
	if err != nil {
		return rec, nil, err
	}
	if name, ok := strings.CutPrefix(rec.Location, "dir:"); ok {
		if c.cfg.CheckpointDir == "" {
			return rec, nil, fmt.Errorf("checkpoint %d is stored in a shared directory (%s), and the client has no CheckpointDir", rec.ID, name)
		}
		if data, err = os.ReadFile(filepath.Join(c.cfg.CheckpointDir, filepath.Base(name))); err != nil {
			return rec, nil, fmt.Errorf("checkpoint %d: %w", rec.ID, err)
		}
	}
	if int64(len(data)) != rec.Size || hexSHA(data) != rec.SHA256 {
		return rec, nil, fmt.Errorf("%w: checkpoint %d: got %d bytes with sha256 %s, record says %d bytes, %s",
			state.ErrChecksumMismatch, rec.ID, len(data), hexSHA(data), rec.Size, rec.SHA256)
	}
	return rec, data, nil
}
