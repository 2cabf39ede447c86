package trainer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"github.com/causalrm/causalrm/internal/fuzzcheck"
	"testing"

	"github.com/causalrm/causalrm/causal"
	"github.com/causalrm/causalrm/shard"
	"github.com/causalrm/causalrm/sim"
)

func fuzzSnapConfig() Config {
	c := smallConfig()
	c.Hidden = []int{4}
	c.MaxEpochs = 2
	c.Patience = 1
	c.Propensity = "learn"
	c.FlipRates = nil
	return c
}

func fuzzSnapData() (*shard.Dataset, error) {
	c := sim.DefaultConfig()
	c.TrainRows, c.TestRows, c.Dim, c.Seed = 200, 50, 6, 9
	c.Latent = min(c.Latent, c.Dim)
	c.Alpha, c.Rho01, c.Rho10 = 0.3, 0.1, 0.2
	return sim.Generate(c)
}

// fuzzSnapshots trains a small CausalIPS pipeline and marshals the
// trainer's snapshot at the first step of every stage and mid-way through
// the reward stage's second epoch; it returns them with the trainer's
// data and input grid.
func fuzzSnapshots() (snaps [][]byte, ds *shard.Dataset, xexp []int, err error) {
	if ds, err = fuzzSnapData(); err != nil {
		return nil, nil, nil, err
	}
	tr, err := New(fuzzSnapConfig(), ds, nil, nil)
	if err != nil {
		return nil, nil, nil, err
	}
	seen := map[string]bool{}
	tr.SetStepHook(func(_ context.Context, b Boundary) error {
		if seen[b.Stage] && !(b.Stage == StageReward+"/"+string(causal.CausalIPS) && b.Epoch == 2 && b.Step == 1) {
			return nil
		}
		seen[b.Stage] = true
		s, err := tr.Snapshot()
		if err != nil {
			return err
		}
		raw, err := s.MarshalBinary()
		snaps = append(snaps, raw)
		return err
	})
	if _, err := tr.Reward(context.Background(), causal.CausalIPS); err != nil {
		return nil, nil, nil, err
	}
	return snaps, ds, tr.XExp, nil
}

// FuzzCheckpoint decodes a trainer snapshot as a worker restores a state
// blob: UnmarshalSnapshot, then Restore into a fresh trainer of the
// config and data the seeds were taken with. Each input is decoded as
// stored and, so that mutations get past the checksum, with its last 32
// bytes replaced by the sha256 of the rest. A snapshot that decodes must
// encode to the very bytes it came from; Restore must refuse an
// inconsistent one with an error, not a panic.
//
// Allocation bound of UnmarshalSnapshot: 64 KiB + 64 bytes per input byte
// (every length is checked against the bytes left before it is
// allocated).
func FuzzCheckpoint(f *testing.F) {
	snaps, ds, xexp, err := fuzzSnapshots()
	if err != nil {
		f.Fatal(err)
	}
	if len(snaps) < 3 {
		f.Fatalf("%d seed snapshots", len(snaps))
	}
	for _, s := range snaps {
		f.Add(s)
	}
	cfg := fuzzSnapConfig()
	check := func(t *testing.T, b []byte) {
		var s *Snapshot
		var err error
		limit := uint64(64<<10 + 64*len(b))
		n := fuzzcheck.Alloc(limit, nil, func() { s, err = UnmarshalSnapshot(b) })
		if n > limit {
			t.Fatalf("decoding %d bytes allocated %d bytes, bound %d", len(b), n, limit)
		}
		if err != nil {
			if !errors.Is(err, ErrSnapshot) {
				t.Fatalf("error %v does not wrap ErrSnapshot", err)
			}
			return
		}
		again, err := s.MarshalBinary()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("a decoded snapshot does not encode to the bytes it came from (%v)", err)
		}
		tr, err := New(cfg, ds, nil, xexp)
		if err != nil {
			t.Fatal(err)
		}
		tr.Restore(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		check(t, b)
		if len(b) >= sha256.Size {
			body := b[:len(b)-sha256.Size]
			sum := sha256.Sum256(body)
			if fixed := append(bytes.Clone(body), sum[:]...); !bytes.Equal(fixed, b) {
				check(t, fixed)
			}
		}
	})
}
