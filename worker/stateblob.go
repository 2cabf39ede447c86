package worker

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/causalrm/causalrm/coordinator/state"
	"github.com/causalrm/causalrm/trainer"
)

// joinBlob is the state a joining worker takes from a live peer and a
// checkpoint holds: the runtime's counters and the trainer's snapshot.
type joinBlob struct {
	Done       uint64            `json:"done"`
	Last       []int64           `json:"-"`
	Pending    []state.StepRange `json:"pending"`
	Reported   uint64            `json:"reported"`
	Agreed     bool              `json:"agreed"`
	Snapshot   []byte            `json:"-"`
	GlobalStep uint64            `json:"global_step"`
}

const blobMagic = "CRMW1\n"

// blob encodes the runtime's counters and the trainer's snapshot at this
// boundary. agreed says whether the boundary's agreement call is done.
func (e *Elastic) blob(b trainer.Boundary, agreed bool) ([]byte, error) {
	snap, err := e.tr.Snapshot()
	if err != nil {
		return nil, err
	}
	data, err := snap.MarshalBinary()
	if err != nil {
		return nil, err
	}
	hdr, err := json.Marshal(joinBlob{Done: e.done, Pending: e.progress.unreported(), Reported: e.progress.reported, Agreed: agreed,
		GlobalStep: b.GlobalStep})
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	buf.WriteString(blobMagic)
	_ = binary.Write(&buf, binary.LittleEndian, uint32(len(hdr)))
	buf.Write(hdr)
	buf.Write(data)
	return buf.Bytes(), nil
}

// restore takes a blob made by blob into a fresh trainer and this runtime.
func (e *Elastic) restore(data []byte) error {
	if len(data) < len(blobMagic)+4 || string(data[:len(blobMagic)]) != blobMagic {
		return errors.New("worker: state blob: bad header")
	}
	data = data[len(blobMagic):]
	n := binary.LittleEndian.Uint32(data)
	data = data[4:]
	if uint64(n) > uint64(len(data)) {
		return errors.New("worker: state blob: truncated")
	}
	var jb joinBlob
	if err := json.Unmarshal(data[:n], &jb); err != nil {
		return fmt.Errorf("worker: state blob: %w", err)
	}
	snap, err := trainer.UnmarshalSnapshot(data[n:])
	if err != nil {
		return err
	}
	if err := e.tr.Restore(snap); err != nil {
		return err
	}
	e.done = jb.Done
	e.progress.restored(jb.Pending, jb.Reported)
	e.skipAgree = -1
	if jb.Agreed {
		e.skipAgree = int64(jb.GlobalStep)
	}
	return nil
}
