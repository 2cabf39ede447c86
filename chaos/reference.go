package chaos

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/causalrm/causalrm/job"
)

// Reference is the one-process run of the job every chaos run trains: the
// bytes its reward model must have, and the steps its log must hold.
type Reference struct {
	Data          string         `json:"data"`
	Dir           string         `json:"dir"`
	SHA256        string         `json:"sha256"`
	StepsPerEpoch map[string]int `json:"steps_per_epoch"`
	Epochs        map[string]int `json:"epochs"`
	Steps         int            `json:"steps"` // every stage's epochs times its steps
}

// prepare makes the data (unless given) and trains the reference with
// `causalrm train`, once per invocation.
func prepare(ctx context.Context, cfg *Config) (*Reference, error) {
	data := cfg.Data
	if data == "" {
		data = filepath.Join(cfg.Out, "data.safetensors")
		if _, err := runCLI(ctx, cfg, "simulate", "--rows", strconv.Itoa(cfg.Rows), "--test-rows", strconv.Itoa(cfg.TestRows),
			"--dim", strconv.Itoa(cfg.Dim), "--latent", "4", "--out", data, "--force"); err != nil {
			return nil, err
		}
	}
	abs, err := filepath.Abs(data)
	if err != nil {
		return nil, err
	}
	ref := &Reference{Data: abs, Dir: filepath.Join(cfg.Out, "reference"), StepsPerEpoch: map[string]int{}, Epochs: map[string]int{}}
	if _, err := runCLI(ctx, cfg, append([]string{"train", "--data", abs, "--out", ref.Dir, "--force"}, cfg.Job.args()...)...); err != nil {
		return nil, err
	}
	if ref.SHA256, err = fileSHA256(filepath.Join(ref.Dir, "reward.safetensors")); err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(filepath.Join(ref.Dir, "metrics.json"))
	if err != nil {
		return nil, err
	}
	var m job.RunMetrics
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("reference metrics.json: %w", err)
	}
	for _, s := range m.Stages {
		steps := int(math.Ceil(float64(s.Rows) / float64(cfg.Job.Batch)))
		ref.StepsPerEpoch[s.Name], ref.Epochs[s.Name] = steps, s.Epochs
		ref.Steps += steps * s.Epochs
	}
	return ref, nil
}

// runCLI runs the causalrm binary to completion.
func runCLI(ctx context.Context, cfg *Config, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, cfg.Binary, args...)
	b, err := cmd.CombinedOutput()
	if err != nil {
		return string(b), fmt.Errorf("causalrm %s: %v\n%s", args[0], err, strings.TrimSpace(string(b)))
	}
	return string(b), nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
