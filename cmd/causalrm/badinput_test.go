package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The bad-input table: each case is a real command line run as a separate
// process against hostile files or settings. Every case must exit 1 with a
// message (not 0, not a panic), within its time limit, naming what is wrong,
// and must leave its directory exactly as it was: nothing written, nothing
// deleted. CAUSALRM_WRITE_RELIABILITY=1 also writes the table to
// docs/reliability.md (make reliability).

type badCase struct {
	name string
	// setup makes the case's inputs in dir and returns the command line;
	// "OUT" in it stands for dir/out (which must not appear).
	setup func(t *testing.T, dir string) []string
	want  string // a substring of the message
}

// validData is a small simulated file shared by the cases (read-only).
var validData string

func writeSafetensors(t *testing.T, path string, header map[string]any, data []byte) {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, uint64(len(h)))
	b.Write(h)
	b.Write(data)
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// readSafetensors splits a file into its header and data.
func readSafetensors(t *testing.T, path string) (map[string]any, []byte) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(raw)
	var h map[string]any
	if err := json.Unmarshal(raw[8:8+n], &h); err != nil {
		t.Fatal(err)
	}
	return h, raw[8+n:]
}

// editSafetensors copies the valid file with its header changed by edit.
func editSafetensors(edit func(h map[string]any, data []byte) []byte) func(*testing.T, string) []string {
	return func(t *testing.T, dir string) []string {
		h, data := readSafetensors(t, validData)
		data = edit(h, append([]byte(nil), data...))
		p := filepath.Join(dir, "d.safetensors")
		writeSafetensors(t, p, h, data)
		return []string{"train", "--data", p, "--out", "OUT", "--max-epochs", "1"}
	}
}

func tensor(h map[string]any, name string) map[string]any { return h[name].(map[string]any) }

// setFloat overwrites value i of an F32 tensor.
func setFloat(h map[string]any, data []byte, name string, i int, v float32) []byte {
	off := int(tensor(h, name)["data_offsets"].([]any)[0].(float64)) + 4*i
	binary.LittleEndian.PutUint32(data[off:], math.Float32bits(v))
	return data
}

func fileCase(name, content string, args ...string) func(*testing.T, string) []string {
	return func(t *testing.T, dir string) []string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		out := []string{"train", "--data", p, "--out", "OUT", "--max-epochs", "1"}
		return append(out, args...)
	}
}

func jsonlRows(n, d int, edit func(i int, row map[string]any)) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		x := make([]float64, d)
		for j := range x {
			x[j] = float64((i*7+j*3)%11) / 10
		}
		row := map[string]any{"id": fmt.Sprintf("r%d", i), "x": x, "o": i % 2, "y": (i / 2) % 2,
			"split": []string{"train", "train", "train", "val", "test"}[i%5]}
		if i%5 == 4 {
			row["r"] = (i / 5) % 2 // the test split's clean label
		}
		if edit != nil {
			edit(i, row)
		}
		raw, _ := json.Marshal(row)
		b.Write(raw)
		b.WriteByte('\n')
	}
	return b.String()
}

func trainArgs(extra ...string) func(*testing.T, string) []string {
	return func(t *testing.T, dir string) []string {
		return append([]string{"train", "--data", validData, "--out", "OUT", "--max-epochs", "1"}, extra...)
	}
}

func configCase(yaml string) func(*testing.T, string) []string {
	return func(t *testing.T, dir string) []string {
		p := filepath.Join(dir, "job.yaml")
		y := strings.ReplaceAll(yaml, "DATA", validData)
		if err := os.WriteFile(p, []byte(y), 0o644); err != nil {
			t.Fatal(err)
		}
		return []string{"train", "--config", p, "--out", "OUT"}
	}
}

func badCases() []badCase {
	return []badCase{
		// Data files: safetensors.
		{"missing data file", func(t *testing.T, dir string) []string {
			return []string{"train", "--data", filepath.Join(dir, "nope.safetensors"), "--out", "OUT"}
		}, "nope.safetensors"},
		{"empty safetensors", fileCase("d.safetensors", ""), "d.safetensors"},
		{"safetensors shorter than its length prefix", fileCase("d.safetensors", "\x05\x00\x00"), "d.safetensors"},
		{"safetensors header length past the end", fileCase("d.safetensors", "\xff\xff\x00\x00\x00\x00\x00\x00{}"), "d.safetensors"},
		{"safetensors header length 2^60", fileCase("d.safetensors", "\x00\x00\x00\x00\x00\x00\x00\x10{}"), "d.safetensors"},
		{"safetensors header not JSON", fileCase("d.safetensors", "\x04\x00\x00\x00\x00\x00\x00\x00nope"), "d.safetensors"},
		{"safetensors with no tensors", fileCase("d.safetensors", "\x02\x00\x00\x00\x00\x00\x00\x00{}"), "d.safetensors"},
		{"X of dimension 0", editSafetensors(func(h map[string]any, data []byte) []byte {
			for _, s := range []string{"train", "val", "test"} {
				x := tensor(h, "X_"+s)
				x["shape"] = []any{x["shape"].([]any)[0], 0}
				off := x["data_offsets"].([]any)[0]
				x["data_offsets"] = []any{off, off}
			}
			return data
		}), "dimension"},
		{"X dtype F16", editSafetensors(func(h map[string]any, data []byte) []byte {
			tensor(h, "X_train")["dtype"] = "BF16"
			return data
		}), "X_train"},
		{"data offsets past the end", editSafetensors(func(h map[string]any, data []byte) []byte {
			tensor(h, "y_train_binary")["data_offsets"] = []any{float64(len(data) - 4), float64(len(data) + 60)}
			return data
		}), "y_train_binary"},
		{"shape disagrees with offsets", editSafetensors(func(h map[string]any, data []byte) []byte {
			tensor(h, "mask_train")["shape"] = []any{float64(1 << 40)}
			return data
		}), "mask_train"},
		{"NaN in an embedding", editSafetensors(func(h map[string]any, data []byte) []byte {
			return setFloat(h, data, "X_train", 5, float32(math.NaN()))
		}), "X_train"},
		{"Inf in an embedding", editSafetensors(func(h map[string]any, data []byte) []byte {
			return setFloat(h, data, "X_train", 7, float32(math.Inf(1)))
		}), "X_train"},
		{"o = 2", editSafetensors(func(h map[string]any, data []byte) []byte {
			return setFloat(h, data, "mask_train", 3, 2)
		}), "mask_train"},
		{"y = 0.5 on an observed row", editSafetensors(func(h map[string]any, data []byte) []byte {
			mask := tensor(h, "mask_train")["data_offsets"].([]any)[0].(float64)
			for i := 0; ; i++ {
				if binary.LittleEndian.Uint32(data[int(mask)+4*i:]) == math.Float32bits(1) {
					return setFloat(h, data, "y_train_binary", i, 0.5)
				}
			}
		}), "y_train_binary"},
		{"propensity 0", editSafetensors(func(h map[string]any, data []byte) []byte {
			return setFloat(h, data, "propensity_train", 2, 0)
		}), "propensity_train"},
		{"row counts disagree", editSafetensors(func(h map[string]any, data []byte) []byte {
			m := tensor(h, "mask_train")
			m["shape"] = []any{m["shape"].([]any)[0].(float64) - 1}
			o := m["data_offsets"].([]any)
			m["data_offsets"] = []any{o[0], o[1].(float64) - 4}
			return data
		}), "mask_train"},
		{"id offsets out of range", editSafetensors(func(h map[string]any, data []byte) []byte {
			off := int(tensor(h, "id_train_offsets")["data_offsets"].([]any)[0].(float64))
			binary.LittleEndian.PutUint64(data[off+8:], 1<<40)
			return data
		}), "id"},
		{"a directory named x.safetensors", func(t *testing.T, dir string) []string {
			p := filepath.Join(dir, "x.safetensors")
			os.Mkdir(p, 0o755)
			return []string{"train", "--data", p, "--out", "OUT"}
		}, "directory"},
		{"a FIFO as --data", func(t *testing.T, dir string) []string {
			p := filepath.Join(dir, "fifo.safetensors")
			if err := syscall.Mkfifo(p, 0o644); err != nil {
				t.Skip(err)
			}
			return []string{"train", "--data", p, "--out", "OUT"}
		}, "fifo.safetensors"},
		{"a character device as --data", func(t *testing.T, dir string) []string {
			return []string{"train", "--data", "/dev/zero", "--out", "OUT"}
		}, "/dev/zero"},
		// Data files: JSONL.
		{"JSONL line not JSON", fileCase("d.jsonl", jsonlRows(8, 3, nil)+"{nope\n"), "line 9"},
		{"JSONL x not an array", fileCase("d.jsonl", jsonlRows(8, 3, func(i int, r map[string]any) {
			if i == 4 {
				r["x"] = "abc"
			}
		})), "line 5"},
		{"JSONL x holds a string", fileCase("d.jsonl", jsonlRows(8, 3, func(i int, r map[string]any) {
			if i == 2 {
				r["x"] = []any{0.1, "a", 0.3}
			}
		})), "line 3"},
		{"JSONL rows of different dimension", fileCase("d.jsonl", jsonlRows(8, 3, func(i int, r map[string]any) {
			if i == 6 {
				r["x"] = []float64{1, 2}
			}
		})), "line 7"},
		{"JSONL x empty", fileCase("d.jsonl", jsonlRows(8, 3, func(i int, r map[string]any) { r["x"] = []float64{} })), "x"},
		{"JSONL without id", fileCase("d.jsonl", jsonlRows(8, 3, func(i int, r map[string]any) {
			if i == 1 {
				delete(r, "id")
			}
		})), "line 2"},
		{"JSONL duplicate id", fileCase("d.jsonl", jsonlRows(8, 3, func(i int, r map[string]any) {
			if i == 5 {
				r["id"] = "r1"
			}
		})), "r1"},
		{"JSONL without o", fileCase("d.jsonl", jsonlRows(8, 3, func(i int, r map[string]any) {
			if i == 3 {
				delete(r, "o")
			}
		})), "line 4"},
		{"JSONL bad split name", fileCase("d.jsonl", jsonlRows(8, 3, func(i int, r map[string]any) {
			if i == 0 {
				r["split"] = "tarin"
			}
		})), "tarin"},
		{"JSONL NaN as a string", fileCase("d.jsonl", strings.Replace(jsonlRows(8, 3, nil), "[", `["NaN",`, 1)), "line 1"},
		{"JSONL.gz corrupt", fileCase("d.jsonl.gz", "\x1f\x8b\x08\x00garbage"), "d.jsonl.gz"},
		{"JSONL.gz truncated", func(t *testing.T, dir string) []string {
			var b bytes.Buffer
			zw := gzip.NewWriter(&b)
			zw.Write([]byte(jsonlRows(40, 3, nil)))
			zw.Close()
			p := filepath.Join(dir, "d.jsonl.gz")
			os.WriteFile(p, b.Bytes()[:b.Len()/2], 0o644)
			return []string{"train", "--data", p, "--out", "OUT", "--max-epochs", "1"}
		}, "d.jsonl.gz"},
		{"JSONL line over the length limit", func(t *testing.T, dir string) []string {
			p := filepath.Join(dir, "d.jsonl")
			f, _ := os.Create(p)
			f.WriteString(jsonlRows(4, 3, nil))
			f.WriteString(`{"id":"long","x":[`)
			chunk := []byte(strings.Repeat("0.1,", 1<<18))
			for i := 0; i < 66; i++ { // 66 MiB of numbers
				f.Write(chunk)
			}
			f.WriteString("0.1],\"o\":0}\n")
			f.Close()
			return []string{"train", "--data", p, "--out", "OUT", "--max-epochs", "1"}
		}, "line 5"},
		// Data files: Parquet.
		{"Parquet that is not Parquet", fileCase("d.parquet", "PAR1 not really PAR1"), "d.parquet"},
		{"Parquet truncated", func(t *testing.T, dir string) []string {
			p := filepath.Join(dir, "d.parquet")
			if out, err := run(t, "simulate", "--rows", "200", "--test-rows", "50", "--dim", "4", "--latent", "2", "--out", p); err != nil {
				t.Skipf("simulate cannot write Parquet: %v %s", err, out)
			}
			raw, _ := os.ReadFile(p)
			os.WriteFile(p, raw[:len(raw)*2/3], 0o644)
			return []string{"train", "--data", p, "--out", "OUT", "--max-epochs", "1"}
		}, "d.parquet"},
		{"unknown data extension", fileCase("d.csv", "id,x\n"), "d.csv"},
		// Job files and flags.
		{"--config missing", func(t *testing.T, dir string) []string {
			return []string{"train", "--config", filepath.Join(dir, "nope.yaml"), "--out", "OUT"}
		}, "nope.yaml"},
		{"job file not YAML", configCase("data: [unclosed\n"), "job.yaml"},
		{"job file batch 1.5", configCase("data: {train: DATA}\nbatch: 1.5\n"), "batch"},
		{"job file unknown key", configCase("data: {train: DATA}\nbatchsize: 64\n"), "batchsize"},
		{"job file flip_rates without rho10", configCase("data: {train: DATA}\nflip_rates: {rho01: 0.1}\n"), "rho10"},
		{"job file hidden 1e9", configCase("data: {train: DATA}\nhidden: [1000000000]\n"), "hidden"},
		{"job file lr a string", configCase("data: {train: DATA}\nlr: fast\n"), "lr"},
		{"--hidden 0", trainArgs("--hidden", "0"), "hidden"},
		{"--hidden 1e9", trainArgs("--hidden", "1000000000"), "hidden"},
		{"--batch 0", trainArgs("--batch", "0"), "batch"},
		{"--batch -5", trainArgs("--batch", "-5"), "batch"},
		{"--lr -1", trainArgs("--lr", "-1"), "lr"},
		{"--lr NaN", trainArgs("--lr", "NaN"), "lr"},
		{"--max-epochs 0", trainArgs("--max-epochs", "0"), "max-epochs"},
		{"--method bogus", trainArgs("--method", "bogus"), "bogus"},
		{"--workers -1", trainArgs("--workers", "-1"), "workers"},
		{"--threads -1", trainArgs("--threads", "-1"), "threads"},
		{"--codec bogus", trainArgs("--codec", "bogus"), "codec"},
		{"--reduce bogus", trainArgs("--reduce", "bogus"), "reduce"},
		{"--propensity bogus", trainArgs("--propensity", "bogus"), "propensity"},
		{"--flip-rates in the wrong form", trainArgs("--flip-rates", "rho01=0.1"), "flip-rates"},
		{"--flip-rates summing past 1", trainArgs("--flip-rates", "0.6,0.5"), "flip"},
		{"--device bogus", trainArgs("--device", "tpu"), "device"},
		{"an unknown flag", trainArgs("--learning-rate", "0.1"), "learning-rate"},
		// Outputs.
		{"--out is a file", func(t *testing.T, dir string) []string {
			p := filepath.Join(dir, "out-file")
			os.WriteFile(p, []byte("keep me"), 0o644)
			return []string{"train", "--data", validData, "--out", p, "--max-epochs", "1"}
		}, "out-file"},
		{"--out not empty, no --force", func(t *testing.T, dir string) []string {
			p := filepath.Join(dir, "results")
			os.Mkdir(p, 0o755)
			os.WriteFile(filepath.Join(p, "notes.txt"), []byte("mine"), 0o644)
			return []string{"train", "--data", validData, "--out", p, "--max-epochs", "1"}
		}, "results"},
		{"--out holds the input, with --force", func(t *testing.T, dir string) []string {
			raw, _ := os.ReadFile(validData)
			p := filepath.Join(dir, "d.safetensors")
			os.WriteFile(p, raw, 0o644)
			os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o644)
			return []string{"train", "--data", p, "--out", dir, "--force", "--max-epochs", "1"}
		}, "d.safetensors"},
		{"--out with someone else's files, with --force", func(t *testing.T, dir string) []string {
			p := filepath.Join(dir, "results")
			os.Mkdir(p, 0o755)
			os.WriteFile(filepath.Join(p, "thesis.tex"), []byte("mine"), 0o644)
			return []string{"train", "--data", validData, "--out", p, "--force", "--max-epochs", "1"}
		}, "thesis.tex"},
		{"--out . with --force", func(t *testing.T, dir string) []string {
			return []string{"-C", dir, "train", "--data", validData, "--out", ".", "--force", "--max-epochs", "1"}
		}, "--out"},
		// simulate, eval, compare, status.
		{"simulate --latent above --dim", func(t *testing.T, dir string) []string {
			return []string{"simulate", "--dim", "8", "--latent", "16", "--rows", "100", "--out", "OUT.safetensors"}
		}, "--latent"},
		{"simulate --rows 0", func(t *testing.T, dir string) []string {
			return []string{"simulate", "--rows", "0", "--out", "OUT.safetensors"}
		}, "--rows"},
		{"simulate --obs-rate 0", func(t *testing.T, dir string) []string {
			return []string{"simulate", "--obs-rate", "0", "--rows", "100", "--out", "OUT.safetensors"}
		}, "--obs-rate"},
		{"simulate --alpha 0", func(t *testing.T, dir string) []string {
			return []string{"simulate", "--alpha", "0", "--rows", "100", "--out", "OUT.safetensors"}
		}, "--alpha"},
		{"simulate to an unknown extension", func(t *testing.T, dir string) []string {
			return []string{"simulate", "--rows", "100", "--out", "OUT.xlsx"}
		}, "xlsx"},
		{"eval --model missing", func(t *testing.T, dir string) []string {
			return []string{"eval", "--model", filepath.Join(dir, "nope.json"), "--data", validData, "--scores", "OUT.jsonl"}
		}, "nope.json"},
		{"eval --model claiming 10^9 hidden units", func(t *testing.T, dir string) []string {
			p := filepath.Join(dir, "reward.json")
			os.WriteFile(p, []byte(`{"architecture":"mlp-leakyrelu","config":{"dims":[8,1000000000,1],"leaky_slope":0.01},"weights":"reward.safetensors"}`), 0o644)
			writeSafetensors(t, filepath.Join(dir, "reward.safetensors"), map[string]any{}, nil)
			return []string{"eval", "--model", p, "--data", validData, "--scores", "OUT.jsonl"}
		}, "1000000000"},
		{"compare --seeds 0", func(t *testing.T, dir string) []string {
			return []string{"compare", "--data", validData, "--seeds", "0", "--out", "OUT"}
		}, "seeds"},
		{"status with no coordinator", func(t *testing.T, dir string) []string {
			return []string{"status", "--coordinators", "127.0.0.1:1"}
		}, "127.0.0.1:1"},
	}
}

// snapshot lists every path under dir, files with their size and
// modification time.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if info, err := d.Info(); err == nil && !d.IsDir() {
			out[p] = fmt.Sprintf("%v %d %d", info.Mode(), info.Size(), info.ModTime().UnixNano())
		} else if err == nil {
			out[p] = "dir" // a directory's time changes when a staging entry comes and goes
		}
		return nil
	})
	return out
}

type badResult struct {
	name, cmd, msg string
}

func TestBadInputTable(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	base := t.TempDir()
	validData = filepath.Join(base, "valid.safetensors")
	if out, err := run(t, "simulate", "--rows", "400", "--test-rows", "100", "--dim", "8", "--latent", "4", "--out", validData); err != nil {
		t.Fatalf("simulate: %v\n%s", err, out)
	}
	var results []badResult
	for i, c := range badCases() {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(base, fmt.Sprintf("case%02d", i))
			os.Mkdir(dir, 0o755)
			args := c.setup(t, dir)
			for k, a := range args {
				args[k] = strings.ReplaceAll(a, "OUT", filepath.Join(dir, "out"))
			}
			cwd := ""
			if len(args) > 1 && args[0] == "-C" {
				cwd, args = args[1], args[2:]
			}
			before := snapshot(t, base)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], args...)
			cmd.Env = append(os.Environ(), "CAUSALRM_TEST_AS_CLI=1")
			cmd.Dir = cwd
			var stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stderr, &stderr
			err := cmd.Run()
			msg := strings.TrimSpace(stderr.String())
			shown := strings.ReplaceAll(strings.Join(args, " "), base, "$TMP")
			switch {
			case ctx.Err() != nil:
				t.Errorf("%s: hung (killed after 60 s)\n%s", shown, msg)
			case strings.Contains(msg, "panic:") || strings.Contains(msg, "goroutine "):
				t.Errorf("%s: panicked:\n%s", shown, msg)
			case err == nil:
				t.Errorf("%s: exited 0, want a refusal\n%s", shown, msg)
			case !errors.As(err, new(*exec.ExitError)) || err.(*exec.ExitError).ExitCode() != 1:
				t.Errorf("%s: %v, want exit status 1\n%s", shown, err, msg)
			case !strings.Contains(msg, c.want):
				t.Errorf("%s: message does not name %q:\n%s", shown, c.want, msg)
			}
			after := snapshot(t, base)
			var changed []string
			for p, v := range after {
				if before[p] != v {
					changed = append(changed, strings.TrimPrefix(p, base))
				}
			}
			for p := range before {
				if _, ok := after[p]; !ok {
					changed = append(changed, "deleted "+strings.TrimPrefix(p, base))
				}
			}
			sort.Strings(changed)
			if len(changed) > 0 {
				t.Errorf("%s: wrote or deleted %v", shown, changed)
			}
			line := msg
			if k := strings.LastIndex(msg, "\n"); k >= 0 {
				line = msg[k+1:]
			}
			results = append(results, badResult{c.name, "causalrm " + shown, strings.ReplaceAll(line, base, "$TMP")})
		})
	}
	if len(results) < 60 {
		t.Errorf("%d cases, want at least 60", len(results))
	}
	if os.Getenv("CAUSALRM_WRITE_RELIABILITY") == "1" && !t.Failed() {
		writeReliability(t, results)
	}
}

// writeReliability rewrites the table between the markers of
// docs/reliability.md.
func writeReliability(t *testing.T, results []badResult) {
	const path = "../../docs/reliability.md"
	const begin, end = "<!-- bad-input table: begin -->", "<!-- bad-input table: end -->"
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	i, j := strings.Index(doc, begin), strings.Index(doc, end)
	if i < 0 || j < i {
		t.Fatalf("%s has no %s ... %s markers", path, begin, end)
	}
	var b strings.Builder
	b.WriteString(begin + "\n\n| # | case | command | message (last line of stderr) | written |\n|---|---|---|---|---|\n")
	esc := func(s string) string { return strings.ReplaceAll(strings.ReplaceAll(s, "|", `\|`), "\n", " ") }
	for k, r := range results {
		if len(r.msg) > 240 {
			r.msg = r.msg[:240] + "..."
		}
		fmt.Fprintf(&b, "| %d | %s | `%s` | %s | nothing |\n", k+1, esc(r.name), esc(r.cmd), esc(r.msg))
	}
	b.WriteString("\n")
	if err := os.WriteFile(path, []byte(doc[:i]+b.String()+doc[j:]), 0o644); err != nil {
		t.Fatal(err)
	}
}
